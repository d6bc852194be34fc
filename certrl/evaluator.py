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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from certrl.envs import EnvSpec
from certrl.policies.base import Policy

STREAM_ENV = 0
STREAM_POLICY = 1
STREAM_SMOOTHING = 2
STREAM_ATTACK = 3


class EvaluationError(RuntimeError):
    """The policy or an environment misbehaved during evaluation (e.g. NaN actions)."""


def episode_rng(seed: int, episode: int, stream: int) -> np.random.Generator:
    """The generator of ``stream`` for episode ``episode`` of a run with master ``seed``."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(episode, stream)))


def episode_env_seed(seed: int, episode: int) -> int:
    ss = np.random.SeedSequence(seed, spawn_key=(episode, STREAM_ENV))
    return int(ss.generate_state(1, dtype=np.uint32)[0])


@dataclass
class StepContext:
    """What a hook sees at one lockstep step (rows = live episodes)."""

    policy: Policy
    episodes: np.ndarray  # [B] episode indices
    slots: np.ndarray  # [B] slot ids (stable while an episode lives; for per-episode state)
    t: np.ndarray  # [B] step index within each episode
    rngs: list[np.random.Generator]  # this hook's per-episode generators, row-aligned
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
        """Called once when the batch is closed (restore nominal models)."""


class EnvBatch:
    """The environments of one lockstep batch: slot ``k`` owns environment ``k``.

    The default engine steps Gymnasium environments one after the other. Faster engines (raw
    MuJoCo on a thread pool) subclass it and must reproduce Gymnasium's observations, rewards,
    ``terminated`` / ``truncated`` exactly (see ``ENGINES``)."""

    def __init__(self, spec: EnvSpec, width: int, env_kwargs: dict[str, Any]) -> None:
        self.envs = [spec.make(**env_kwargs) for _ in range(width)]

    def unwrapped(self, k: int) -> Any:
        return self.envs[k].unwrapped

    def reset(self, k: int, seed: int) -> np.ndarray:
        return self.envs[k].reset(seed=seed)[0]

    def step(
        self, ks: np.ndarray, actions: list[Any]
    ) -> list[tuple[np.ndarray, float, bool, bool]]:
        out = []
        for k, a in zip(ks, actions, strict=True):
            o, r, term, trunc, _ = self.envs[k].step(a)
            out.append((o, float(r), bool(term), bool(trunc)))
        return out

    def close(self) -> None:
        for e in self.envs:
            e.close()


#: Simulation engines by name: ``ENGINES[name](spec, width, env_kwargs) -> EnvBatch``, with
#: ``supports(spec)`` telling whether an engine handles an environment. "gym" handles all.
ENGINES: dict[str, Any] = {"gym": EnvBatch}


def make_batch(engine: str, spec: EnvSpec, width: int, env_kwargs: dict[str, Any]) -> EnvBatch:
    import certrl.engines  # noqa: F401 - registers the fast engines (lazily: no import cycle)

    if engine == "auto":
        for name, cls in ENGINES.items():
            if (name != "gym" and not env_kwargs
                    and getattr(cls, "supports", lambda s: False)(spec)):
                return cls(spec, width, env_kwargs)
        engine = "gym"
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; available: {sorted(ENGINES)}")
    cls = ENGINES[engine]
    if engine != "gym" and not cls.supports(spec):
        raise ValueError(f"engine {engine!r} does not support {spec.gym_id}; use --engine gym")
    return cls(spec, width, env_kwargs)


@dataclass
class EpisodeResult:
    """One finished episode. Norms are over the *adversarial* hooks' perturbations, in each
    hook's space; ``obs_l2_total`` is the episode budget ``sqrt(sum_t ||delta_t||_2^2)``."""

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
    batch_size: int = 64
    deterministic: bool = True
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    engine: str = "gym"


class _Slot:
    __slots__ = (
        "episode", "t", "ret", "cret", "nclip", "o_l2sq", "o_l2max", "o_linf",
        "a_l2sq", "a_linf", "rng_policy", "rng_hooks",
    )

    def start(self, episode: int, seed: int, hook_streams: list[int]) -> None:
        self.episode = episode
        self.t = 0
        self.ret = 0.0
        self.cret = 0.0
        self.nclip = 0
        self.o_l2sq = 0.0
        self.o_l2max = 0.0
        self.o_linf = 0.0
        self.a_l2sq = 0.0
        self.a_linf = 0.0
        self.rng_policy = episode_rng(seed, episode, STREAM_POLICY)
        self.rng_hooks = [episode_rng(seed, episode, s) for s in hook_streams]


def _accumulate(norms: tuple[np.ndarray, np.ndarray], slots: list[_Slot], obs: bool) -> None:
    l2, linf = norms
    for j, s in enumerate(slots):
        if obs:
            s.o_l2sq += float(l2[j]) ** 2
            s.o_l2max = max(s.o_l2max, float(l2[j]))
            s.o_linf = max(s.o_linf, float(linf[j]))
        else:
            s.a_l2sq += float(l2[j]) ** 2
            s.a_linf = max(s.a_linf, float(linf[j]))


def _norms(delta: Tensor) -> tuple[np.ndarray, np.ndarray]:
    d = delta.detach().to(torch.float64).reshape(delta.shape[0], -1)
    return d.norm(dim=1).numpy(), d.abs().amax(dim=1).numpy()


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
    order = [*raw_hooks, *norm_hooks]
    hook_index = {id(h): k for k, h in enumerate(hooks)}
    width = max(1, int(cfg.batch_size))
    for h in hooks:
        h.bind(policy, spec, width)

    it = iter(episodes)
    batch = make_batch(cfg.engine, spec, width, cfg.env_kwargs)
    slots = [_Slot() for _ in range(width)]
    active = np.zeros(width, dtype=bool)
    obs = np.zeros((width, policy.obs_dim), dtype=np.float64)
    lo, hi = spec.step_reward_bounds
    results: list[EpisodeResult] = []
    discrete = policy.discrete

    def start(k: int) -> bool:
        try:
            ep = next(it)
        except StopIteration:
            active[k] = False
            return False
        slots[k].start(ep, cfg.seed, streams)
        for h in env_hooks:
            h.before_reset(batch.unwrapped(k), k, slots[k].rng_hooks[hook_index[id(h)]])
        o = batch.reset(k, episode_env_seed(cfg.seed, ep))
        obs[k] = o
        active[k] = True
        return True

    def new_slots(ks: list[int]) -> None:
        if not ks:
            return
        arr = np.asarray(ks)
        for h in hooks:
            h.reset(arr, [slots[k].rng_hooks[hook_index[id(h)]] for k in ks])

    new_slots([k for k in range(width) if start(k)])
    try:
        while active.any():
            ks = np.flatnonzero(active)
            live = [slots[k] for k in ks]
            x = torch.as_tensor(obs[ks], dtype=torch.float32)
            ctx = StepContext(
                policy=policy,
                episodes=np.array([s.episode for s in live]),
                slots=ks,
                t=np.array([s.t for s in live]),
                rngs=[],
                raw_obs=x,
                deterministic=cfg.deterministic,
            )
            xr = x
            for h in order:
                if h.space != "raw":
                    break
                ctx.rngs = [s.rng_hooks[hook_index[id(h)]] for s in live]
                new = h(xr, ctx)
                if h.adversarial:
                    _accumulate(_norms(new - xr), live, obs=True)
                xr = new
            with torch.no_grad():
                nobs = policy.normalize(xr)
            for h in norm_hooks:
                ctx.rngs = [s.rng_hooks[hook_index[id(h)]] for s in live]
                new = h(nobs, ctx)
                if h.adversarial:
                    _accumulate(_norms(new - nobs), live, obs=True)
                nobs = new
            noise = None
            if not cfg.deterministic:
                n = policy.noise_shape()
                if discrete:
                    noise = np.stack([s.rng_policy.random(n) for s in live])
                else:
                    noise = np.stack([s.rng_policy.standard_normal(n) for s in live])
                noise = torch.as_tensor(noise, dtype=torch.float32)
            with torch.no_grad():
                act = policy.act_normalized(nobs.detach(), cfg.deterministic, noise)
            for h in act_hooks:
                ctx.rngs = [s.rng_hooks[hook_index[id(h)]] for s in live]
                new = h(act, nobs.detach(), ctx)
                if h.adversarial:
                    _accumulate(_norms(new.to(torch.float64) - act.to(torch.float64)), live, False)
                act = new
            a_np = act.detach().numpy()
            if not discrete and not np.isfinite(a_np).all():
                bad = int(np.flatnonzero(~np.isfinite(a_np).all(axis=1))[0])
                raise EvaluationError(
                    f"the policy produced a non-finite action in episode {live[bad].episode} at "
                    f"step {live[bad].t}: check the policy file and its normalization statistics"
                )
            restarted: list[int] = []
            for h in step_env_hooks:
                for k in ks:
                    s = slots[k]
                    h.before_step(batch.unwrapped(int(k)), int(k), s.t,
                                  s.rng_hooks[hook_index[id(h)]])
            acts = [int(a) for a in a_np] if discrete else list(a_np)
            stepped = batch.step(ks, acts)
            for j, k in enumerate(ks):
                s = slots[k]
                o, r, term, trunc = stepped[j]
                s.ret += r
                rc = min(max(r, lo), hi)
                if rc != r:
                    s.nclip += 1
                s.cret += rc
                s.t += 1
                if term or trunc:
                    extras: dict[str, Any] = {}
                    for h in hooks:
                        extras.update(h.episode_extras(int(k)))
                    res = EpisodeResult(
                        index=s.episode,
                        ret=s.ret,
                        length=s.t,
                        terminated=bool(term),
                        clipped_return=s.cret,
                        clipped_steps=s.nclip,
                        obs_l2_total=math.sqrt(s.o_l2sq),
                        obs_l2_max=s.o_l2max,
                        obs_linf_max=s.o_linf,
                        act_l2_total=math.sqrt(s.a_l2sq),
                        act_linf_max=s.a_linf,
                        extras=extras,
                    )
                    results.append(res)
                    if on_result is not None:
                        on_result(res)
                    if start(int(k)):
                        restarted.append(int(k))
                else:
                    obs[k] = o
            new_slots(restarted)
            if on_step is not None:
                on_step(len(ks))
    finally:
        for h in env_hooks:
            h.close([batch.unwrapped(k) for k in range(width)])
        batch.close()
    return results
