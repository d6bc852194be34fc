"""Lockstep, seeded, batched episode evaluation with observation / action hooks.

Data flow: ``Policy`` -> :func:`run_episodes` (one batched policy call per step for all live
episodes; attacks and smoothing plug in as hooks) -> :class:`EpisodeResult` per episode ->
certificates / stats / results file.

Reproducibility contract: episode ``i`` of a run with master seed ``s`` draws everything from
``numpy.random.SeedSequence(s, spawn_key=(i, stream))``:

=======  ==============================================================
stream   used for
=======  ==============================================================
0        the environment seed passed to ``env.reset(seed=...)``
1        stochastic-policy sampling noise (``--stochastic``)
2        smoothing noise (:mod:`certrl.smoothing`)
3..      attacks (each hook names its stream)
=======  ==============================================================

so an episode's return depends only on ``(s, i)`` and the configuration — never on the batch
size, on which worker ran it, or on which other hooks are active (a smoothed episode sees the
same noise with and without an attack: common random numbers, so "drop vs clean" compares like
with like). Combined with the batch-invariant policy forward (``Policy`` pads small batches),
returns are bit-identical for any ``batch_size`` and any number of workers (tested).

Gymnasium conventions: ``reset(seed=)``, ``terminated`` / ``truncated`` (the ``TimeLimit`` of
``gymnasium.make`` truncates at the horizon); no vector-env autoreset step is ever counted
because every slot owns a plain environment that is reset explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from certrl.engines.base import (  # noqa: F401 - re-exported: the evaluator's engine API
    ENGINES,
    EnvBatch,
    default_batch_size,
    engine_class,
    make_batch,
)
from certrl.envs import EnvSpec
from certrl.errors import EvaluationError  # noqa: F401 - re-exported
from certrl.policies.base import Policy

STREAM_ENV = 0
STREAM_POLICY = 1
STREAM_SMOOTHING = 2
STREAM_ATTACK = 3


def episode_rng(seed: int, episode: int, stream: int) -> np.random.Generator:
    """The generator of ``stream`` for episode ``episode`` of a run with master ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(episode, stream)))


def episode_env_seed(seed: int, episode: int) -> int:
    ss = np.random.SeedSequence(seed, spawn_key=(episode, STREAM_ENV))
    return int(ss.generate_state(1, dtype=np.uint32)[0])


class RowGenerators(Sequence):
    """The row-aligned generators of one hook (``rngs[j]`` for row ``j``), looked up only when
    a hook uses them: most steps of most hooks never do (smoothing noise comes in blocks)."""

    __slots__ = ("_table", "_slots")

    def __init__(self, table: list[Any], slots: list[int]) -> None:
        self._table = table
        self._slots = slots

    def __len__(self) -> int:
        return len(self._slots)

    def __getitem__(self, j: Any) -> Any:
        if isinstance(j, slice):
            return [self._table[k] for k in self._slots[j]]
        return self._table[self._slots[j]]

    def __iter__(self) -> Iterator[Any]:
        table = self._table
        return (table[k] for k in self._slots)


@dataclass
class StepContext:
    """What a hook sees at one lockstep step (rows = live episodes)."""

    policy: Policy
    episodes: np.ndarray  # [B] episode indices
    slots: np.ndarray  # [B] slot ids (stable while an episode lives; for per-episode state)
    t: np.ndarray  # [B] step index within each episode
    rngs: Sequence[np.random.Generator]  # this hook's per-episode generators, row-aligned
    raw_obs: Tensor  # [B, obs_dim] the true (unperturbed) raw observation
    deterministic: bool


class Hook:
    """Base class of observation and action hooks (attacks, smoothing noise).

    Subclasses set ``rng_stream`` (see the module docstring), ``space`` (``"raw"`` or
    ``"normalized"``: where an observation hook acts) and ``adversarial`` (whether what it adds
    is an adversary's perturbation, audited and reported, or the defender's own noise).
    Hooks must be picklable: they are built in the main process and shipped to workers, where
    :meth:`bind` is called once before any episode.
    """

    name: str = "hook"
    rng_stream: int = STREAM_ATTACK
    space: str = "normalized"
    adversarial: bool = True
    #: ``k > 0`` on an adversarial observation hook of a frame-stacked environment (Atari):
    #: the hook perturbs each *frame* once, when it is newest, and must show the same
    #: perturbed frame in the ``k - 1`` later stacks it appears in. The evaluator then counts
    #: only the newest frame's perturbation in the episode's norms and checks every older
    #: frame against what it recorded (:class:`FrameLedger`); 0: the whole observation counts
    frame_stack: int = 0

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "space": self.space}

    def bind(self, policy: Policy, spec: EnvSpec, n_slots: int) -> None:  # noqa: B027
        """Called once per worker with the policy, the environment and the batch width."""

    def reset(self, slots: np.ndarray, rngs: list[np.random.Generator]) -> None:  # noqa: B027
        """Called when new episodes start in ``slots``."""

    def episode_extras(self, slot: int) -> dict[str, Any]:
        """Per-episode numbers to store with the result (e.g. budget spent)."""
        return {}


class ObservationHook(Hook):
    def __call__(self, x: Tensor, ctx: StepContext) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class ActionHook(Hook):
    space = "action"

    def __call__(
        self, action: Tensor, nobs: Tensor, ctx: StepContext
    ) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class EnvHook(Hook):
    """A hook on the environment itself (dynamics changes: masses, friction, ...).

    ``before_reset`` runs before each episode's ``reset`` (change the model reproducibly from
    ``rng``, this episode's generator of the hook's stream); ``before_step`` runs before every
    step when ``per_step`` is True (time-varying parameters). ``env`` is the slot's unwrapped
    environment (``env.model`` / ``env.data`` for MuJoCo). Implementations restore the nominal
    model themselves (e.g. in ``before_reset`` of the next episode and in ``close``)."""

    space = "env"
    adversarial = False
    per_step = False

    def before_reset(self, env: Any, slot: int, rng: np.random.Generator) -> None:  # noqa: B027
        pass

    def before_step(self, env: Any, slot: int, t: int, rng: np.random.Generator) -> None:  # noqa: B027
        pass

    def close(self, envs: list[Any]) -> None:  # noqa: B027
        """Called once when the batch is closed (restore nominal models); ``envs``: the
        unwrapped environments the batch handed to hooks."""


@dataclass
class EpisodeResult:
    """One finished episode. Norms are over the *adversarial* hooks' perturbations, in each
    hook's space; ``obs_l2_total`` is the episode budget ``sqrt(sum_t ||delta_t||_2^2)``
    (for a per-frame adversary, ``Hook.frame_stack``, ``delta_t`` is its perturbation of the
    newest frame: each frame counts once)."""

    index: int
    ret: float
    length: int
    terminated: bool
    clipped_return: float
    clipped_steps: int
    obs_l2_total: float = 0.0
    obs_l2_max: float = 0.0
    obs_linf_max: float = 0.0
    act_l2_total: float = 0.0
    act_linf_max: float = 0.0
    extras: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["extras"]:
            del d["extras"]
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> EpisodeResult:
        return EpisodeResult(**{k: v for k, v in d.items() if k in _FIELDS})


_FIELDS = set(EpisodeResult.__dataclass_fields__)


@dataclass
class EvalConfig:
    seed: int = 0
    batch_size: int = 128
    deterministic: bool = True
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    engine: str = "gym"


class BlockDraws:
    """Per-slot draws from per-episode generators, fetched ``block`` steps at a time.

    ``take(slots)`` returns, for each slot, the next ``shape``-sized draw of that slot's
    generator: exactly the numbers ``gen.standard_normal(shape)`` (or ``gen.random(shape)``)
    would give when called once per step, because NumPy's ``Generator`` fills an array from its
    bit stream element by element (``standard_normal((k, *shape))`` is ``k`` consecutive
    ``standard_normal(shape)`` calls; tested). Drawing a block per slot instead of one small
    array per row and step removes a per-row Python call from the lockstep loop; the generator
    runs ahead by less than a block, which nothing else observes (each generator belongs to
    one consumer). Results are returned as ``float32`` (the policy's dtype), as the per-step
    draws were converted.
    """

    def __init__(self, width: int, shape: tuple[int, ...], kind: str = "normal",
                 block: int = 64) -> None:
        if kind not in ("normal", "uniform"):
            raise ValueError(f"kind must be 'normal' or 'uniform', got {kind!r}")
        self.shape = tuple(int(s) for s in shape)
        self.kind = kind
        # wide draws (pixel observations: 28,224 per row) take fewer steps per block, so the
        # buffer stays within ~64 MB; the numbers are the same whatever the block
        per_step = 4 * max(1, int(width)) * max(1, int(np.prod(self.shape)))
        self.block = max(1, min(int(block), (64 << 20) // per_step))
        self.buf = np.empty((width, self.block, *self.shape), dtype=np.float32)
        self.pos = np.full(width, self.block, dtype=np.int64)  # == block: buffer empty
        self.gens: list[np.random.Generator | None] = [None] * width

    def start(self, slot: int, gen: np.random.Generator) -> None:
        """Slot ``slot`` begins an episode whose draws come from ``gen``."""
        self.gens[slot] = gen
        self.pos[slot] = self.block

    def take(self, slots: np.ndarray) -> np.ndarray:
        """The next draw of each slot in ``slots``: ``[len(slots), *shape]`` float32."""
        pos = self.pos[slots]
        empty = np.flatnonzero(pos >= self.block)
        if empty.size:
            size = (self.block, *self.shape)
            for j in empty.tolist():
                k = int(slots[j])
                g = self.gens[k]
                if g is None:
                    raise RuntimeError(f"BlockDraws: slot {k} has no generator (start() first)")
                self.buf[k] = g.standard_normal(size) if self.kind == "normal" else g.random(size)
            pos[empty] = 0
            self.pos[slots[empty]] = 0
        out = self.buf[slots, pos]
        self.pos[slots] = pos + 1
        return out


def _norms(delta: Tensor) -> tuple[np.ndarray, np.ndarray]:
    d = delta.detach().to(torch.float64).reshape(delta.shape[0], -1)
    return d.norm(dim=1).numpy(), d.abs().amax(dim=1).numpy()


class FrameLedger:
    """The evaluator's record of one per-frame adversary (``Hook.frame_stack = k``): per slot,
    the perturbation it applied to each of the last ``k - 1`` frames when they were newest.

    :meth:`newest` takes the whole applied perturbation of a step (``[B, k * frame]``, frames
    oldest first), checks that the older ``k - 1`` frames carry exactly the perturbation the
    ledger recorded for them (zero on the padding frames of an episode's first steps; up to
    float32 rounding of the observation), and returns the newest frame's part, the only one
    the threat model counts (with any rounding difference on the older frames appended, so
    it is counted rather than lost: zero for certrl's attacks, which reuse the frames they
    perturbed bit for bit). A hook that changes an already-perturbed frame raises
    :class:`EvaluationError`: it would spend budget the audit never sees."""

    def __init__(self, name: str, k: int, width: int, obs_dim: int) -> None:
        if k < 1 or obs_dim % k:
            raise ValueError(f"hook {name!r}: observations of {obs_dim} values are not a stack "
                             f"of {k} frames")
        self.name, self.k, self.frame = name, int(k), obs_dim // int(k)
        self.past = np.zeros((width, self.k - 1, self.frame), dtype=np.float32)

    def start(self, k: int) -> None:
        self.past[k] = 0.0

    def newest(self, delta: Tensor, x: Tensor, ks: np.ndarray, episodes: np.ndarray,
               t: np.ndarray) -> Tensor:
        d = delta.detach().to(torch.float32).reshape(len(ks), self.k, self.frame).numpy()
        if self.k > 1:
            old, want = d[:, :-1], self.past[ks]
            # what float32 rounding of (x + delta) - x can move, per coordinate
            tol = 4 * np.finfo(np.float32).eps * (
                np.abs(x.detach().numpy().reshape(d.shape)[:, :-1]) + np.abs(want)) + 1e-12
            bad = (np.abs(old - want) > tol).reshape(len(ks), -1).any(axis=1)
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                raise EvaluationError(
                    f"hook {self.name!r} changed a frame it had already perturbed (episode "
                    f"{episodes[j]}, step {t[j]}): a per-frame adversary perturbs each frame "
                    "once, when it is newest")
            self.past[ks, :-1] = self.past[ks, 1:]
            self.past[ks, -1] = d[:, -1]
            # what rounding moved in the older frames counts too: nothing escapes the norms
            return torch.from_numpy(np.concatenate(
                [d[:, -1], (old - want).reshape(len(ks), -1)], axis=1))
        return torch.from_numpy(np.ascontiguousarray(d[:, -1]))


def run_episodes(
    policy: Policy,
    spec: EnvSpec,
    episodes: Iterator[int] | list[int],
    cfg: EvalConfig,
    obs_hooks: list[ObservationHook] | None = None,
    act_hooks: list[ActionHook] | None = None,
    on_result: Callable[[EpisodeResult], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    env_hooks: list[EnvHook] | None = None,
) -> list[EpisodeResult]:
    """Run the given episode indices in lockstep batches of ``cfg.batch_size`` environments.

    Each slot owns one environment; when its episode ends the slot takes the next index from
    ``episodes`` (which may be a lazy iterator fed by a work queue). Returns the results in
    completion order and calls ``on_result`` as each episode finishes.
    """
    obs_hooks = list(obs_hooks or [])
    act_hooks = list(act_hooks or [])
    env_hooks = list(env_hooks or [])
    step_env_hooks = [h for h in env_hooks if h.per_step]
    hooks: list[Hook] = [*obs_hooks, *act_hooks, *env_hooks]
    streams = [h.rng_stream for h in hooks]
    if len(set(streams)) != len(streams):
        raise ValueError(f"hooks share an RNG stream: {streams}")
    raw_hooks = [h for h in obs_hooks if h.space == "raw"]
    norm_hooks = [h for h in obs_hooks if h.space != "raw"]
    hook_index = {id(h): k for k, h in enumerate(hooks)}
    width = max(1, int(cfg.batch_size))
    if isinstance(episodes, list | tuple | range):  # never more slots than episodes
        width = max(1, min(width, len(episodes)))
    for h in hooks:
        h.bind(policy, spec, width)
    for h in obs_hooks:  # a per-frame adversary's frames must be the environment's
        k = getattr(h, "frame_stack", 0)
        if h.adversarial and k and k != int(getattr(spec, "frame_stack", 0) or 0):
            raise EvaluationError(
                f"hook {h.name!r} perturbs stacks of {k} frames, but {spec.gym_id} shows "
                + (f"stacks of {spec.frame_stack}" if spec.frame_stack else "no frame stacks")
                + ": per-frame adversaries are for frame-stacked (Atari) environments")
    ledgers = {id(h): FrameLedger(h.name, h.frame_stack, width, policy.obs_dim)
               for h in obs_hooks if h.adversarial and getattr(h, "frame_stack", 0)}

    it = iter(episodes)
    batch = make_batch(cfg.engine, spec, width, cfg.env_kwargs)
    # per-slot episode state, as arrays: the lockstep loop below touches rows in Python only
    # when an episode ends (bookkeeping is vectorized; float64 sums are the same IEEE
    # additions, in the same order, as per-row Python floats)
    active = np.zeros(width, dtype=bool)
    episode = np.zeros(width, dtype=np.int64)
    t = np.zeros(width, dtype=np.int64)
    ret = np.zeros(width)
    cret = np.zeros(width)
    nclip = np.zeros(width, dtype=np.int64)
    o_l2sq, o_l2max, o_linf = np.zeros(width), np.zeros(width), np.zeros(width)
    a_l2sq, a_linf = np.zeros(width), np.zeros(width)
    hook_rngs: list[list[Any]] = [[None] * width for _ in hooks]
    obs = np.zeros((width, policy.obs_dim), dtype=np.float64)
    lo, hi = spec.step_reward_bounds
    results: list[EpisodeResult] = []
    discrete = policy.discrete
    policy_noise = None
    if not cfg.deterministic:
        policy_noise = BlockDraws(width, (policy.noise_shape(),),
                                  "uniform" if discrete else "normal")

    def start(k: int) -> bool:
        try:
            ep = next(it)
        except StopIteration:
            active[k] = False
            return False
        episode[k] = ep
        t[k] = 0
        ret[k] = cret[k] = 0.0
        nclip[k] = 0
        o_l2sq[k] = o_l2max[k] = o_linf[k] = a_l2sq[k] = a_linf[k] = 0.0
        for led in ledgers.values():
            led.start(k)
        for i, s in enumerate(streams):
            hook_rngs[i][k] = episode_rng(cfg.seed, ep, s)
        if policy_noise is not None:
            policy_noise.start(k, episode_rng(cfg.seed, ep, STREAM_POLICY))
        for h in env_hooks:
            h.before_reset(batch.unwrapped(k), k, hook_rngs[hook_index[id(h)]][k])
        obs[k] = batch.reset(k, episode_env_seed(cfg.seed, ep))
        active[k] = True
        return True

    def new_slots(ks: list[int]) -> None:
        if not ks:
            return
        arr = np.asarray(ks)
        for i, h in enumerate(hooks):
            h.reset(arr, [hook_rngs[i][k] for k in ks])

    def accumulate(delta: Tensor, ks: np.ndarray, on_obs: bool, hook: Hook | None = None,
                   before: Tensor | None = None) -> None:
        led = ledgers.get(id(hook)) if hook is not None else None
        if led is not None:
            assert before is not None
            delta = led.newest(delta, before, ks, episode[ks], t[ks])
        l2, linf = _norms(delta)
        if on_obs:
            o_l2sq[ks] += np.square(l2)
            o_l2max[ks] = np.fmax(o_l2max[ks], l2)
            o_linf[ks] = np.fmax(o_linf[ks], linf)
        else:
            a_l2sq[ks] += np.square(l2)
            a_linf[ks] = np.fmax(a_linf[ks], linf)

    def finish(k: int, terminated: bool) -> EpisodeResult:
        extras: dict[str, Any] = {}
        for h in hooks:
            extras.update(h.episode_extras(k))
        return EpisodeResult(
            index=int(episode[k]),
            ret=float(ret[k]),
            length=int(t[k]),
            terminated=terminated,
            clipped_return=float(cret[k]),
            clipped_steps=int(nclip[k]),
            obs_l2_total=math.sqrt(o_l2sq[k]),
            obs_l2_max=float(o_l2max[k]),
            obs_linf_max=float(o_linf[k]),
            act_l2_total=math.sqrt(a_l2sq[k]),
            act_linf_max=float(a_linf[k]),
            extras=extras,
        )

    new_slots([k for k in range(width) if start(k)])
    try:
        while active.any():
            ks = np.flatnonzero(active)
            kl = ks.tolist()
            # rows of the per-slot arrays: a slice while every slot is live (the usual case;
            # cheaper than fancy indexing), else the live slots
            sel: slice | np.ndarray = slice(None) if len(kl) == width else ks
            x = torch.from_numpy(obs[sel].astype(np.float32))
            ctx = StepContext(
                policy=policy,
                episodes=episode[ks],
                slots=ks,
                t=t[ks],
                rngs=[],
                raw_obs=x,
                deterministic=cfg.deterministic,
            )
            xr = x
            for h in raw_hooks:
                ctx.rngs = RowGenerators(hook_rngs[hook_index[id(h)]], kl)
                new = h(xr, ctx)
                if h.adversarial:
                    accumulate(new - xr, ks, True, h, xr)
                xr = new
            with torch.no_grad():
                nobs = policy.normalize(xr)
            for h in norm_hooks:
                ctx.rngs = RowGenerators(hook_rngs[hook_index[id(h)]], kl)
                new = h(nobs, ctx)
                if h.adversarial:
                    accumulate(new - nobs, ks, True, h, nobs)
                nobs = new
            noise = None
            if policy_noise is not None:
                noise = torch.from_numpy(policy_noise.take(ks))
            with torch.no_grad():
                act = policy.act_normalized(nobs.detach(), cfg.deterministic, noise)
            for h in act_hooks:
                ctx.rngs = RowGenerators(hook_rngs[hook_index[id(h)]], kl)
                new = h(act, nobs.detach(), ctx)
                if h.adversarial:
                    accumulate(new.to(torch.float64) - act.to(torch.float64), ks, False)
                act = new
            a_np = act.detach().numpy()
            # a NaN or inf anywhere makes the sum non-finite (actions are bounded: no overflow)
            if not discrete and not math.isfinite(float(a_np.sum())):
                bad_rows = np.flatnonzero(~np.isfinite(a_np).all(axis=1))
                if bad_rows.size:  # (else only the sum overflowed)
                    bad = int(ks[bad_rows[0]])
                    raise EvaluationError(
                        f"the policy produced a non-finite action in episode {episode[bad]} "
                        f"at step {t[bad]}: check the policy file and its normalization "
                        "statistics"
                    )
            for h in step_env_hooks:
                rngs = hook_rngs[hook_index[id(h)]]
                for k in kl:
                    h.before_step(batch.unwrapped(k), k, int(t[k]), rngs[k])
            if step_env_hooks:
                batch.refresh(ks)
            o_new, r, term, trunc = batch.step_arrays(ks, a_np)
            ret[sel] += r
            rc = np.minimum(np.maximum(r, lo), hi)
            nclip[sel] += rc != r
            cret[sel] += rc
            t[sel] += 1
            done = term | trunc
            if done.any():
                keep = ~done
                obs[ks[keep]] = o_new[keep]
                restarted: list[int] = []
                for j in np.flatnonzero(done).tolist():
                    k = kl[j]
                    res = finish(k, bool(term[j]))
                    results.append(res)
                    if on_result is not None:
                        on_result(res)
                    if start(k):
                        restarted.append(k)
                new_slots(restarted)
            else:
                obs[sel] = o_new
            if on_step is not None:
                on_step(len(kl))
    finally:
        for h in env_hooks:
            h.close(batch.handed_out())
        batch.close()
    return results
