"""Learned observation adversaries: the optimal attack (SA-RL / ATLA) and PA-AD.

Threat model: per-step ``linf`` or ``l2`` ball of radius ``eps`` in the :class:`ThreatModel`'s
space (``normalized`` by default: the victim's ``(o - mu) / sqrt(var + eps)``, where the SA-PPO,
ATLA and PA-AD budgets are defined), plus the optional episode l2 budget and temporal coupling
(every perturbation goes through :meth:`ThreatModel.project` with the slot's previous
perturbation and spent budget).

* ``optimal`` — the *learned optimal adversary* of Zhang et al. 2021, "Robust Reinforcement
  Learning on State Observations with Learned Optimal Adversary" (ICLR; SA-RL, used by ATLA).
  For a fixed victim ``pi`` the worst observation adversary is the optimal policy of an MDP
  whose state is the true state ``s``, whose action is the perturbation and whose reward is
  ``-r``. certrl trains a Gaussian adversary ``u ~ N(mu_adv(s), sigma)`` with PPO (a compact
  batched implementation below, no Stable-Baselines3 needed) and applies
  ``s_hat = s + eps * tanh(u)`` (``l2``: that vector projected onto the ball). At attack time
  the mean ``mu_adv(s)`` is used (``stochastic=True`` samples from the episode's RNG stream).
* ``pa-ad`` — Sun et al. 2022, "Who Is the Strongest Enemy? Towards Optimal and Efficient
  Evasion Attacks in Deep RL" (ICLR). A *director* policy (trained with the same PPO on ``-r``)
  outputs a direction ``d`` (unit vector) in the victim's action space (action coordinates
  rescaled to ``[-1, 1]``; class probabilities for discrete victims); a gradient *actor* takes
  ``pgd_steps`` projected sign-gradient steps that maximize ``<a(s_hat), d>``, i.e. it finds
  the observation perturbation in the ball that moves the victim's action furthest along
  ``d``. The director learns in the low-dimensional action space, which is what makes PA-AD
  cheaper to train than SA-RL on high-dimensional observations.

The adversary observes the victim's *normalized true* state (standardized once more with
statistics from a short clean warm-up rollout, stored with the weights).

Smoothed victims (option ``smoothing_sigma``, set by ``certrl attack --smoothing-sigma``): the
adversary / director is trained against the *smoothed* victim (Gaussian noise added after the
perturbation in the rollouts, as :class:`certrl.smoothing.GaussianSmoothing` does at evaluation),
so it learns to attack the expectation over the noise. ``victim_deterministic=false`` trains
against the stochastic victim (``--stochastic``).

Registry metadata (``ATTACKS[name].options``): ``learned`` (trains; accepts ``cache_dir`` /
``retrain`` / ``progress``), ``eot`` (accepts ``smoothing_sigma``), ``mode_option`` (the option
that selects the victim's deterministic / stochastic mode).

Training happens in the factory, in the main process, seeded (``seed`` option): the same seed
gives the same adversary weights, bit for bit, on one machine (training runs single-threaded).
Trained adversaries are cached as ``safetensors`` + JSON in ``cache_dir`` (default
``results/.cache``) under a key made of the policy's SHA-256, the environment, the threat
model and every training setting; a later run with the same key loads them instead of
training. Hooks hold plain tensors (state dicts) and rebuild their networks in :meth:`bind`,
so they pickle to worker processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from certrl.attacks.base import AttackError, ThreatModel, register_attack
from certrl.envs import EnvSpec
from certrl.evaluator import ObservationHook, StepContext
from certrl.policies.base import Policy, build_mlp

CACHE_VERSION = 1
DEFAULT_CACHE_DIR = Path("results") / ".cache"


# ====================================================================== small utilities
@contextlib.contextmanager
def single_thread(seed: int | None = None) -> Iterator[None]:
    """Run a block single-threaded (reproducible CPU kernels; cheap tiny networks) with torch's
    global RNG forked (and seeded with ``seed``), restoring both afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(n)


def as_float(name: str, v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        raise AttackError(f"attack option {name}={v!r} is not a number") from None


def as_int(name: str, v: Any) -> int:
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise AttackError(f"attack option {name}={v!r} is not an integer") from None
    if not f.is_integer():
        raise AttackError(f"attack option {name}={v!r} is not an integer")
    return int(f)


def as_bool(name: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise AttackError(f"attack option {name}={v!r} is not a boolean")


def as_floats(name: str, v: Any) -> list[float]:
    """A list of numbers from a list / tuple or a comma-separated string (``"0.02,0.1"``)."""
    items = v.split(",") if isinstance(v, str) else list(v) if hasattr(v, "__iter__") else [v]
    out = [as_float(name, x) for x in items if str(x).strip()]
    if not out:
        raise AttackError(f"attack option {name} needs at least one number")
    return out


def check_options(attack: str, options: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise AttackError(
            f"attack {attack!r}: unknown option(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(allowed))}"
        )


def progress_bar(total: int, desc: str, enabled: bool | None) -> Any:
    """A tqdm bar on a TTY (quiet when ``CI`` / ``CERTRL_NO_PROGRESS`` is set), else ``None``."""
    from certrl.runner import progress_enabled

    if not progress_enabled(enabled):
        return None
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True)


# ====================================================================== cache
def policy_fingerprint(policy: Policy) -> str:
    """``policy.info.sha256`` (the policy file's hash), or a hash of the weights and the
    normalization statistics for an in-memory policy."""
    if policy.info.sha256:
        return policy.info.sha256
    h = hashlib.sha256()
    for k, v in sorted(policy.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().to(torch.float64).contiguous().numpy().tobytes())
    h.update(json.dumps(policy.describe(), sort_keys=True, default=str).encode())
    return h.hexdigest()


def cache_key(
    kind: str, policy: Policy, spec: EnvSpec, threat: ThreatModel, settings: dict[str, Any]
) -> str:
    """Key of a trained attacker: policy hash + env id and kwargs + threat model + settings."""
    blob = json.dumps(
        {
            "version": CACHE_VERSION,
            "kind": kind,
            "policy": policy_fingerprint(policy),
            "env": spec.gym_id,
            "env_kwargs": spec.kwargs,
            "threat": threat.to_json(),
            "settings": settings,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_paths(cache_dir: Path, kind: str, key: str) -> tuple[Path, Path]:
    stem = f"{kind.replace('+', '_')}-{key[:24]}"
    return cache_dir / f"{stem}.safetensors", cache_dir / f"{stem}.json"


def load_cached(
    cache_dir: Path | None, kind: str, key: str
) -> tuple[dict[str, Tensor], dict[str, Any]] | None:
    """The cached tensors and metadata of ``key``, or ``None`` (missing or unreadable)."""
    if cache_dir is None:
        return None
    wpath, mpath = cache_paths(cache_dir, kind, key)
    if not (wpath.exists() and mpath.exists()):
        return None
    try:
        from safetensors.torch import load_file

        meta = json.loads(mpath.read_text())
        if meta.get("key") != key:
            return None
        return load_file(str(wpath)), meta
    except Exception:  # a corrupt cache entry is retrained, never trusted
        return None


def save_cached(
    cache_dir: Path | None, kind: str, key: str, tensors: dict[str, Tensor], meta: dict[str, Any]
) -> None:
    if cache_dir is None:
        return
    from safetensors.torch import save_file

    cache_dir.mkdir(parents=True, exist_ok=True)
    wpath, mpath = cache_paths(cache_dir, kind, key)
    tmp = wpath.with_suffix(".tmp")
    save_file({k: v.detach().contiguous() for k, v in tensors.items()}, str(tmp))
    tmp.replace(wpath)
    mpath.write_text(json.dumps({**meta, "key": key}, indent=1, default=str))


def resolve_cache_dir(v: Any) -> Path | None:
    """Option ``cache_dir``: a folder, or ``""`` / ``"none"`` / ``False`` to disable caching."""
    if v is None:
        return DEFAULT_CACHE_DIR
    if v is False or str(v).strip().lower() in ("", "none", "off", "false"):
        return None
    return Path(str(v)).expanduser()


# ====================================================================== victim actions
def _unit(policy: Policy, a: Tensor) -> Tensor:
    low, high = policy._low, policy._high
    return 2.0 * (a - low) / torch.clamp(high - low, min=1e-12) - 1.0


def _ste_clamp(x: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
    """``clamp`` in the forward pass, identity gradient (straight-through)."""
    return x + (torch.clamp(x, lo, hi) - x).detach()


def action_repr(policy: Policy, nobs: Tensor) -> Tensor:
    """The victim's deterministic action on ``nobs`` as a differentiable vector.

    Continuous: the action rescaled to ``[-1, 1]`` per dimension (``clip`` of SB3 gaussian
    heads is a straight-through clamp, so gradients survive saturated means). Discrete: the
    softmax of the logits / Q-values (a relaxation of the argmax)."""
    mean, _ = policy.distribution_params(nobs)
    if policy.discrete:
        return torch.softmax(mean, dim=-1)
    if policy.head == "gaussian" and policy.squash:
        return torch.tanh(mean)
    if policy.head == "deterministic":
        return mean
    return _unit(policy, _ste_clamp(mean, policy._low, policy._high))


def env_action_repr(policy: Policy, action: Tensor) -> Tensor:
    """An action as taken in the environment, in :func:`action_repr` coordinates."""
    if policy.discrete:
        return torch.nn.functional.one_hot(action.long(), policy.n_actions).to(torch.float32)
    return _unit(policy, action.to(torch.float32))


def repr_dim(policy: Policy) -> int:
    return policy.n_actions if policy.discrete else policy.act_dim


def victim_act(
    policy: Policy, nobs: Tensor, deterministic: bool, gen: torch.Generator | None
) -> Tensor:
    """The victim's action on ``nobs`` (no grad); stochastic noise from ``gen``."""
    noise = None
    if not deterministic:
        n = policy.noise_shape()
        noise = (
            torch.rand((nobs.shape[0], n), generator=gen)
            if policy.discrete
            else torch.randn((nobs.shape[0], n), generator=gen)
        )
    with torch.no_grad():
        return policy.act_normalized(nobs, deterministic, noise)


def can_sample(policy: Policy) -> bool:
    """Whether the victim has a noise model (``act_normalized(..., deterministic=False)``)."""
    if policy.head == "categorical":
        return True
    if policy.head == "gaussian":
        return policy.log_std is not None or policy.state_dependent_std
    return False


# ====================================================================== batched environments
class EnvBatch:
    """``n`` plain environments stepped together, reset explicitly (no autoreset step is ever
    recorded). Episode ``c`` (counted over the batch) is reset with a seed derived from
    ``SeedSequence(seed, spawn_key=(c,))``, so a rollout depends only on ``seed``."""

    def __init__(self, spec: EnvSpec, n: int, seed: int) -> None:
        self.envs = [spec.make() for _ in range(n)]
        self.seed = int(seed)
        self.count = 0
        self.obs = np.stack([self._reset(k) for k in range(n)]).astype(np.float64)
        self.ret = np.zeros(n)
        self.len = np.zeros(n, dtype=np.int64)
        self.finished: list[tuple[float, int]] = []

    def _reset(self, k: int) -> np.ndarray:
        s = np.random.SeedSequence(self.seed, spawn_key=(self.count,))
        self.count += 1
        o, _ = self.envs[k].reset(seed=int(s.generate_state(1, dtype=np.uint32)[0]))
        return np.asarray(o, dtype=np.float64).reshape(-1)  # pixel stacks: flat rows

    def step(
        self, actions: np.ndarray, discrete: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step every environment; returns ``(next_obs, reward, terminated, truncated)`` where
        ``next_obs`` is the observation the transition ended in (the final one for finished
        episodes, which are then reset: ``self.obs`` holds the new start)."""
        n = len(self.envs)
        nxt = np.empty_like(self.obs)
        rew = np.empty(n)
        term = np.zeros(n, dtype=bool)
        trunc = np.zeros(n, dtype=bool)
        for k, env in enumerate(self.envs):
            a = int(actions[k]) if discrete else actions[k]
            o, r, te, tr, _ = env.step(a)
            o = np.asarray(o).reshape(-1)
            nxt[k] = o
            rew[k] = float(r)
            term[k], trunc[k] = bool(te), bool(tr)
            self.ret[k] += float(r)
            self.len[k] += 1
            if te or tr:
                self.finished.append((float(self.ret[k]), int(self.len[k])))
                self.ret[k] = 0.0
                self.len[k] = 0
                self.obs[k] = self._reset(k)
            else:
                self.obs[k] = o
        return nxt, rew, term, trunc

    def close(self) -> None:
        for e in self.envs:
            e.close()


# ====================================================================== threat-model state
class ThreatState:
    """Per-slot previous perturbation and spent episode budget (temporal coupling, episode
    budget); also the largest ``||delta_t - delta_(t-1)||`` per slot for the audit, and how much
    of it float32 rounding of the observation can explain (``coupling_rounding``).

    Why the rounding term: the applied perturbation is ``fl(x + delta) - x`` in float32, so two
    consecutive applied perturbations can differ by up to a few ulps of ``|x|`` per coordinate
    even when the adversary's ``delta`` s satisfy the coupling exactly (with ``eps_bar = 0``
    no margin can absorb that). :meth:`commit` bounds it per coordinate by
    ``2 * eps_float32 * (|x| + |delta|)`` for each of the two steps; the audit accepts a change
    up to ``eps_bar`` plus that bound, never more."""

    def __init__(self, threat: ThreatModel, n: int, dim: int) -> None:
        self.threat = threat
        self.prev = torch.zeros(n, dim)
        self.prev_ulp = torch.zeros(n, dim)
        self.started = np.zeros(n, dtype=bool)
        # spent budget in float64: a float32 running sum drifts by ~1e-6 over long episodes,
        # enough to exceed the audit slack
        self.spent = torch.zeros(n, dtype=torch.float64)
        self.max_change = np.zeros(n)
        self.max_rounding = np.zeros(n)

    def reset(self, slots: np.ndarray | list[int]) -> None:
        for k in slots:
            self.prev[k] = 0.0
            self.prev_ulp[k] = 0.0
            self.started[k] = False
            self.spent[k] = 0.0
            self.max_change[k] = 0.0
            self.max_rounding[k] = 0.0

    def project(self, delta: Tensor, slots: np.ndarray) -> Tensor:
        """Project ``delta`` onto every constraint given the slots' history."""
        th = self.threat
        prev = None
        if th.eps_bar is not None:
            # the first step of an episode is only bound by the ball
            started = torch.as_tensor(self.started[slots])
            prev = torch.where(started[:, None], self.prev[slots], delta.detach())
        spent = self.spent[slots] if th.episode_budget is not None else None
        return th.project(delta, prev, spent)

    def commit(self, delta: Tensor, slots: np.ndarray, x: Tensor | None = None) -> None:
        """Record the applied ``delta`` (``x``: the observation it was added to, for the
        rounding bound; ``None`` when ``delta`` is exact, e.g. in training)."""
        d = delta.detach().to(torch.float32)
        if self.threat.eps_bar is not None:
            ulp = (torch.zeros_like(d) if x is None else
                   2.0 * torch.finfo(torch.float32).eps * (x.detach().abs() + d.abs()))
            started = torch.as_tensor(self.started[slots])
            diff = (d - self.prev[slots]).flatten(1)
            ch = diff.abs().amax(1) if self.threat.norm == "linf" else diff.norm(dim=1)
            ch = torch.where(started, ch, torch.zeros_like(ch))
            self.max_change[slots] = np.maximum(self.max_change[slots], ch.numpy())
            u = (ulp + self.prev_ulp[slots]).flatten(1)
            un = u.amax(1) if self.threat.norm == "linf" else u.norm(dim=1)
            un = torch.where(started, un, torch.zeros_like(un))
            self.max_rounding[slots] = np.maximum(self.max_rounding[slots],
                                                  un.to(torch.float64).numpy())
            self.prev_ulp[slots] = ulp
        self.prev[slots] = d
        self.started[slots] = True
        self.spent[slots] += (d.to(torch.float64) ** 2).sum(1).to(torch.float32)

    def extras(self, slot: int) -> dict[str, Any]:
        if self.threat.eps_bar is None:
            return {}
        return {"max_step_change": float(self.max_change[slot]),
                "coupling_rounding": float(self.max_rounding[slot])}


#: Keys of a hook's ``info`` that describe *how* it was obtained this time (from the cache or
#: not, wall-clock seconds) rather than *what* it is: left out of :meth:`LearnedAttackHook.config`
#: (the journal key of ``--resume``), kept in :meth:`LearnedAttackHook.details`.
VOLATILE_INFO = frozenset({"cached", "train_seconds", "fit_seconds"})


def _stable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _stable(v) for k, v in x.items() if k not in VOLATILE_INFO}
    if isinstance(x, list):
        return [_stable(v) for v in x]
    return x


def weights_digest(state: dict[str, Tensor] | None) -> str | None:
    """SHA-256 of a state dict (names and float64 values): identifies trained weights in the
    hook's configuration, so a resumed run never mixes episodes of two different adversaries."""
    if state is None:
        return None
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().to(torch.float64).contiguous().numpy().tobytes())
    return h.hexdigest()


class ThreatStateHook(ObservationHook):
    """Base of the observation attacks that keep per-slot threat-model state: subclasses
    create ``self._state`` (a :class:`ThreatState`) in ``bind``; it is reset when an episode
    starts in a slot, reports each episode's budget / coupling numbers, and is dropped, with
    the bound policy, when the hook is pickled for a worker (``bind`` rebuilds both there)."""

    _state: ThreatState | None = None
    _policy: Policy | None = None

    def reset(self, slots: np.ndarray, rngs: list[np.random.Generator]) -> None:
        assert self._state is not None
        self._state.reset(slots)

    def episode_extras(self, slot: int) -> dict[str, Any]:
        return self._state.extras(slot) if self._state is not None else {}

    def __getstate__(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["_state"] = d["_policy"] = None
        return d


class LearnedAttackHook(ThreatStateHook):
    """Common part of the learned observation attacks: threat-model bookkeeping per slot, the
    mapping between the hook's space and the policy's normalized space, and the expectation
    over policy-smoothing noise (EOT) when the victim is a smoothed policy.

    ``smoothing_sigma`` / ``eot_samples``: the victim acts on ``x_hat + sigma z`` (the
    defender's noise, added by :class:`certrl.smoothing.GaussianSmoothing` *after* the attack,
    in the same space); gradient-based attacks then maximize the average of their objective
    over ``eot_samples`` draws of ``z`` from the episode's attack stream (Athalye et al. 2018,
    expectation over transformation), so they never see the defender's actual noise."""

    name = "learned"
    adversarial = True

    def __init__(self, threat: ThreatModel, info: dict[str, Any]) -> None:
        self.threat = threat
        self.space = threat.space
        self.info = info
        self.smoothing_sigma: float | None = None
        self.eot_samples = 0
        self._state: ThreatState | None = None
        self._policy: Policy | None = None

    def config(self) -> dict[str, Any]:
        """What the attack is (stable across runs and cache hits; the ``--resume`` key)."""
        return {"name": self.name, "space": self.space, **_stable(self.info)}

    def details(self) -> dict[str, Any]:
        """:meth:`config` plus how it was obtained (cached, training seconds)."""
        return {"name": self.name, "space": self.space, **self.info}

    def set_smoothing(self, sigma: float | None, samples: int) -> None:
        if sigma is not None and not (math.isfinite(sigma) and sigma > 0):
            raise AttackError(f"smoothing_sigma must be > 0, got {sigma}")
        if samples < 1:
            raise AttackError(f"eot_samples must be >= 1, got {samples}")
        self.smoothing_sigma = sigma
        self.eot_samples = samples if sigma is not None else 0
        if sigma is not None:
            self.info = {**self.info, "smoothing_sigma": sigma, "eot_samples": samples}

    def eot_noise(self, ctx: StepContext, dim: int) -> Tensor | None:
        """``sigma * z``, ``[B, K, dim]``, from each episode's attack stream (or ``None``)."""
        if self.smoothing_sigma is None:
            return None
        z = np.stack([g.standard_normal((self.eot_samples, dim)) for g in ctx.rngs])
        return self.smoothing_sigma * torch.as_tensor(z, dtype=torch.float32)

    def bind(self, policy: Policy, spec: EnvSpec, n_slots: int) -> None:
        self._policy = policy
        self._state = ThreatState(self.threat, n_slots, policy.obs_dim)
        self._build()

    def _build(self) -> None:  # noqa: B027 - optional
        """Rebuild networks from the stored state dicts (after unpickling)."""

    def __getstate__(self) -> dict[str, Any]:
        d = super().__getstate__()
        for k in list(d):
            if isinstance(d[k], nn.Module):
                d[k] = None  # rebuilt from state dicts in bind
        return d

    def to_policy_space(self, x: Tensor) -> Tensor:
        """Observations in the hook's space -> the policy's normalized input."""
        assert self._policy is not None
        return self._policy.normalize(x) if self.space == "raw" else x

    def __call__(self, x: Tensor, ctx: StepContext) -> Tensor:
        if self.threat.eps == 0 or (
            self.threat.episode_budget is not None and self.threat.episode_budget == 0
        ):
            return x
        assert self._state is not None
        slots = np.asarray(ctx.slots)
        delta = self._state.project(self.perturbation(x, ctx).detach(), slots)
        out = fit_float32(x, delta, self.threat, self._state.spent[slots])
        self._state.commit(out - x, slots, x)  # what the evaluator records and audits
        return out

    def perturbation(self, x: Tensor, ctx: StepContext) -> Tensor:  # pragma: no cover
        raise NotImplementedError


def fit_float32(x: Tensor, delta: Tensor, threat: ThreatModel, spent_sq: Tensor) -> Tensor:
    """``x + delta``, moved towards ``x`` by single ulps on rows where float32 rounding of the
    sum made the *recorded* perturbation ``(x + delta) - x`` exceed the per-step radius or the
    remaining episode budget (possible for raw observations with ``|x| > 16``, where an ulp
    exceeds the audit's 1e-6 slack). At most 16 rounds; rows already feasible are untouched."""
    out = x + delta
    rem = None
    if threat.episode_budget is not None:
        rem = threat.episode_budget**2 - spent_sq.to(torch.float64)
    for _ in range(16):
        d = (out - x).to(torch.float64)
        n = d.abs().amax(1) if threat.norm == "linf" else d.norm(dim=1)
        bad = n > threat.eps
        if rem is not None:
            bad = bad | ((d**2).sum(1) > rem)
        if not bool(bad.any()):
            break
        out = torch.where(bad[:, None], torch.nextafter(out, x), out)
    return out


def projected_sign_ascent(
    objective: Callable[[Tensor], Tensor],
    x: Tensor,
    threat: ThreatModel,
    project: Callable[[Tensor], Tensor],
    steps: int,
    step_size: float,
) -> Tensor:
    """Maximize ``objective(x + delta)`` (per row, ``[B]``) over the threat model by projected
    gradient ascent: sign steps for ``linf``, normalized-gradient steps for ``l2``; starts at
    ``delta = 0`` and returns the best iterate per row (so the objective never ends below its
    clean value)."""
    x = x.detach()
    delta = torch.zeros_like(x)
    with torch.no_grad():
        best_val = objective(x)
    best = delta.clone()
    for _ in range(steps):
        d = delta.clone().requires_grad_(True)
        with torch.enable_grad():
            val = objective(x + d)
            (g,) = torch.autograd.grad(val.sum(), d)
        with torch.no_grad():
            if threat.norm == "linf":
                step = g.sign()
            else:
                step = g / g.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None]
            delta = project(delta + step_size * step).detach()
            v = objective(x + delta)
            better = v > best_val
            best_val = torch.where(better, v, best_val)
            best = torch.where(better[:, None], delta, best)
    return best


# ====================================================================== PPO
@dataclass
class PPOSettings:
    """Hyper-parameters of the compact PPO that trains the adversary / director."""

    train_steps: int = 300_000
    n_envs: int = 8
    n_steps: int = 256
    epochs: int = 10
    minibatch: int = 256
    lr: float = 1e-3
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip: float = 0.2
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    hidden: int = 64
    log_std_init: float = 0.0
    warmup_steps: int = 64
    victim_deterministic: bool = True
    smoothing_sigma: float = 0.0  # > 0: train against the smoothed victim (noise after delta)
    seed: int = 0


class ActorCritic(nn.Module):
    """Gaussian actor (state-independent log std) and value network, 2 tanh hidden layers."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, log_std_init: float) -> None:
        super().__init__()
        self.pi = build_mlp([obs_dim, hidden, hidden, act_dim], "tanh")
        self.v = build_mlp([obs_dim, hidden, hidden, 1], "tanh")
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        for net, gain in ((self.pi, 0.01), (self.v, 1.0)):
            linears = [m for m in net if isinstance(m, nn.Linear)]
            for i, m in enumerate(linears):
                nn.init.orthogonal_(m.weight, gain if i == len(linears) - 1 else math.sqrt(2))
                nn.init.zeros_(m.bias)

    def features(self, nobs: Tensor) -> Tensor:
        return (nobs - self.obs_mean) / self.obs_std

    def mean(self, nobs: Tensor) -> Tensor:
        return self.pi(self.features(nobs))

    def value(self, nobs: Tensor) -> Tensor:
        return self.v(self.features(nobs)).squeeze(-1)

    def log_prob(self, mu: Tensor, u: Tensor) -> Tensor:
        z = (u - mu) / torch.exp(self.log_std)
        return (-0.5 * z**2 - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)


#: ``perturb(u, x, nobs, slots) -> delta``: the adversary's action ``u [n, out]`` on true
#: observations ``x`` (hook space) / ``nobs`` (normalized) -> a perturbation in the hook space.
PerturbFn = Callable[[Tensor, Tensor, Tensor], Tensor]


def train_adversary_ppo(
    policy: Policy,
    spec: EnvSpec,
    threat: ThreatModel,
    out_dim: int,
    perturb: PerturbFn,
    settings: PPOSettings,
    progress: bool | None = None,
    desc: str = "adversary",
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Train an adversary with PPO on reward ``-r`` against the frozen ``policy``.

    ``perturb`` turns the adversary's Gaussian action into a perturbation (in ``threat.space``)
    that is then projected onto the threat model with the environment's history. Truncated
    episodes bootstrap from the value of their final observation; terminated ones do not
    (ending the victim's episode early is what the adversary wants on environments with an
    alive bonus). Returns the actor-critic state dict and training statistics."""
    s = settings
    with single_thread(s.seed):
        gen = torch.Generator().manual_seed(s.seed)
        ac = ActorCritic(policy.obs_dim, out_dim, s.hidden, s.log_std_init)
        opt = torch.optim.Adam(ac.parameters(), lr=s.lr, eps=1e-5)
        envs = EnvBatch(spec, s.n_envs, s.seed)
        tstate = ThreatState(threat, s.n_envs, policy.obs_dim)
        slots = np.arange(s.n_envs)
        det = s.victim_deterministic or not can_sample(policy)

        def normalized(x: Tensor) -> Tensor:
            with torch.no_grad():
                return policy.normalize(x)

        def space_obs(x: Tensor) -> Tensor:
            return x if threat.space == "raw" else normalized(x)

        # fixed input standardization from a short clean rollout
        warm = []
        for _ in range(max(1, s.warmup_steps)):
            x = torch.as_tensor(envs.obs, dtype=torch.float32)
            nobs = normalized(x)
            warm.append(nobs)
            envs.step(victim_act(policy, nobs, det, gen).numpy(), policy.discrete)
        w = torch.cat(warm)
        ac.obs_mean.copy_(w.mean(0))
        ac.obs_std.copy_(w.std(0).clamp_min(1e-3))
        clean_returns = [r for r, _ in envs.finished]
        envs.close()
        envs = EnvBatch(spec, s.n_envs, s.seed + 1)

        n_updates = max(1, math.ceil(s.train_steps / (s.n_envs * s.n_steps)))
        T, N = s.n_steps, s.n_envs
        reward_scale: float | None = None
        history: list[dict[str, float]] = []
        bar = progress_bar(n_updates * T * N, desc, progress)
        t0 = time.perf_counter()
        try:
            for update in range(n_updates):
                obs_b = torch.zeros(T, N, policy.obs_dim)
                u_b = torch.zeros(T, N, out_dim)
                logp_b = torch.zeros(T, N)
                val_b = torch.zeros(T, N)
                rew_b = np.zeros((T, N))
                boot_b = torch.zeros(T, N)
                done_b = np.zeros((T, N), dtype=bool)
                n_fin = len(envs.finished)
                for t in range(T):
                    x = torch.as_tensor(envs.obs, dtype=torch.float32)
                    nobs = normalized(x)
                    with torch.no_grad():
                        mu = ac.mean(nobs)
                        v = ac.value(nobs)
                        u = mu + torch.exp(ac.log_std) * torch.randn(mu.shape, generator=gen)
                        logp = ac.log_prob(mu, u)
                    xs = space_obs(x)
                    delta = tstate.project(perturb(u, xs, nobs).detach(), slots)
                    tstate.commit(delta, slots)
                    seen = xs + delta
                    if s.smoothing_sigma > 0:  # the defender's noise, after the perturbation
                        seen = seen + s.smoothing_sigma * torch.randn(seen.shape, generator=gen)
                    nobs_hat = normalized(seen) if threat.space == "raw" else seen
                    a = victim_act(policy, nobs_hat, det, gen)
                    nxt, r, term, trunc = envs.step(a.numpy(), policy.discrete)
                    obs_b[t], u_b[t], logp_b[t], val_b[t] = nobs, u, logp, v
                    rew_b[t] = -r
                    done = term | trunc
                    done_b[t] = done
                    tr = np.flatnonzero(trunc & ~term)
                    if tr.size:
                        with torch.no_grad():
                            fin = normalized(torch.as_tensor(nxt[tr], dtype=torch.float32))
                            boot_b[t, tr] = s.gamma * ac.value(fin)
                    if done.any():
                        tstate.reset(np.flatnonzero(done))
                if bar is not None:
                    bar.update(T * N)
                if reward_scale is None:
                    reward_scale = (1 - s.gamma) / max(float(np.abs(rew_b).mean()), 1e-8)
                with torch.no_grad():
                    last_v = ac.value(normalized(torch.as_tensor(envs.obs, dtype=torch.float32)))
                rew = torch.as_tensor(rew_b * reward_scale, dtype=torch.float32) + boot_b
                notdone = torch.as_tensor(~done_b, dtype=torch.float32)
                adv = torch.zeros(T, N)
                gae = torch.zeros(N)
                for t in reversed(range(T)):
                    nv = last_v if t == T - 1 else val_b[t + 1]
                    delta_t = rew[t] + s.gamma * nv * notdone[t] - val_b[t]
                    gae = delta_t + s.gamma * s.gae_lambda * notdone[t] * gae
                    adv[t] = gae
                ret = adv + val_b
                fo, fu, flp = obs_b.flatten(0, 1), u_b.flatten(0, 1), logp_b.flatten(0, 1)
                fadv, fret = adv.flatten(), ret.flatten()
                n = T * N
                mb = max(1, min(s.minibatch, n))
                for _ in range(s.epochs):
                    perm = torch.randperm(n, generator=gen)
                    for i in range(0, n, mb):
                        idx = perm[i : i + mb]
                        a_ = fadv[idx]
                        a_ = (a_ - a_.mean()) / (a_.std() + 1e-8) if idx.numel() > 1 else a_
                        lp = ac.log_prob(ac.mean(fo[idx]), fu[idx])
                        ratio = torch.exp(lp - flp[idx])
                        pg = -torch.min(
                            ratio * a_, torch.clamp(ratio, 1 - s.clip, 1 + s.clip) * a_
                        ).mean()
                        vl = ((ac.value(fo[idx]) - fret[idx]) ** 2).mean()
                        ent = ac.log_std.sum()  # Gaussian entropy up to a constant
                        loss = pg + s.vf_coef * vl - s.ent_coef * ent
                        opt.zero_grad()
                        loss.backward()
                        nn.utils.clip_grad_norm_(ac.parameters(), s.max_grad_norm)
                        opt.step()
                fin = envs.finished[n_fin:]
                history.append(
                    {
                        "update": update + 1,
                        "steps": (update + 1) * n,
                        "episodes": len(fin),
                        "victim_return": float(np.mean([f[0] for f in fin])) if fin else math.nan,
                    }
                )
                if bar is not None and fin:
                    bar.set_postfix(victim_return=f"{history[-1]['victim_return']:.1f}")
        finally:
            if bar is not None:
                bar.close()
            envs.close()
        stats = {
            "train_seconds": round(time.perf_counter() - t0, 2),
            "updates": n_updates,
            "steps": n_updates * T * N,
            "reward_scale": reward_scale,
            "warmup_clean_returns": clean_returns,
            "history": history[-20:],
        }
        state = {k: v.detach().clone() for k, v in ac.state_dict().items()}
    return state, stats


# ====================================================================== hooks
class OptimalAttackHook(LearnedAttackHook):
    """SA-RL / ATLA learned optimal adversary: ``delta = eps * tanh(mu_adv(s))``."""

    name = "optimal"

    def __init__(
        self,
        threat: ThreatModel,
        state: dict[str, Tensor] | None,
        dims: tuple[int, int, int],
        info: dict[str, Any],
        stochastic: bool = False,
        pgd_steps: int = 0,
        step_frac: float = 0.5,
    ) -> None:
        super().__init__(threat, info)
        self.state = state
        self.dims = dims  # obs_dim, out_dim, hidden
        self.stochastic = stochastic
        self.pgd_steps = pgd_steps
        self.step_frac = step_frac
        self.ac: ActorCritic | None = None

    def _build(self) -> None:
        if self.state is None:
            return
        obs_dim, out_dim, hidden = self.dims
        self.ac = ActorCritic(obs_dim, out_dim, hidden, 0.0)
        self.ac.load_state_dict(self.state)
        self.ac.eval()
        for p in self.ac.parameters():
            p.requires_grad_(False)

    def adversary_action(self, nobs: Tensor, ctx: StepContext) -> Tensor:
        assert self.ac is not None
        with torch.no_grad():
            mu = self.ac.mean(nobs)
        if not self.stochastic:
            return mu
        z = np.stack([g.standard_normal(mu.shape[1]) for g in ctx.rngs])
        return mu + torch.exp(self.ac.log_std) * torch.as_tensor(z, dtype=torch.float32)

    def perturbation(self, x: Tensor, ctx: StepContext) -> Tensor:
        if self.ac is None:
            self._build()
        with torch.no_grad():
            nobs = self.to_policy_space(x)
        return optimal_perturb(self.threat)(self.adversary_action(nobs, ctx), x, nobs)


def optimal_perturb(threat: ThreatModel) -> PerturbFn:
    """SA-RL's action-to-perturbation map: ``eps * tanh(u)`` (then the threat projection)."""

    def f(u: Tensor, x: Tensor, nobs: Tensor) -> Tensor:
        return threat.project_step(threat.eps * torch.tanh(u))

    return f


def pa_ad_perturb(threat: ThreatModel, policy: Policy, steps: int, step_frac: float) -> PerturbFn:
    """PA-AD's actor: a few projected sign-gradient steps that push the victim's action along
    the director's unit direction ``d = u / ||u||``: maximize ``<a(s + delta), d>``."""

    def f(u: Tensor, x: Tensor, nobs: Tensor) -> Tensor:
        d = u / u.norm(dim=1, keepdim=True).clamp_min(1e-12)

        def objective(xh: Tensor) -> Tensor:
            nh = policy.normalize(xh) if threat.space == "raw" else xh
            return (action_repr(policy, nh) * d).sum(-1)

        adv = projected_sign_ascent(
            objective, x, threat, threat.project_step, steps, step_frac * threat.eps
        )
        return adv

    return f


class PAADHook(OptimalAttackHook):
    """PA-AD: the director's direction in action space, realized by a gradient actor."""

    name = "pa-ad"

    def perturbation(self, x: Tensor, ctx: StepContext) -> Tensor:
        if self.ac is None:
            self._build()
        assert self._policy is not None
        with torch.no_grad():
            nobs = self.to_policy_space(x)
        u = self.adversary_action(nobs, ctx)
        return pa_ad_perturb(self.threat, self._policy, self.pgd_steps, self.step_frac)(u, x, nobs)


# ====================================================================== factories
_PPO_FIELDS = {f for f in PPOSettings.__dataclass_fields__}
_COMMON = {"cache_dir", "progress", "stochastic", "retrain"}


def _ppo_settings(options: dict[str, Any]) -> PPOSettings:
    s = PPOSettings()
    kw: dict[str, Any] = {}
    for k in _PPO_FIELDS:
        if k not in options:
            continue
        default = getattr(s, k)
        if isinstance(default, bool):
            kw[k] = as_bool(k, options[k])
        elif isinstance(default, int):
            kw[k] = as_int(k, options[k])
        else:
            kw[k] = as_float(k, options[k])
    s = PPOSettings(**kw)
    if s.train_steps < 1 or s.n_envs < 1 or s.n_steps < 1 or s.epochs < 0:
        raise AttackError("train_steps, n_envs and n_steps must be >= 1")
    if not (math.isfinite(s.smoothing_sigma) and s.smoothing_sigma >= 0):
        raise AttackError(f"smoothing_sigma must be >= 0, got {s.smoothing_sigma}")
    return s


@dataclass
class _Trained:
    state: dict[str, Tensor] | None
    meta: dict[str, Any] = field(default_factory=dict)
    cached: bool = False


def _train_or_load(
    kind: str,
    policy: Policy,
    spec: EnvSpec,
    threat: ThreatModel,
    settings: dict[str, Any],
    options: dict[str, Any],
    train: Callable[[], tuple[dict[str, Tensor], dict[str, Any]]],
) -> _Trained:
    cache_dir = resolve_cache_dir(options.get("cache_dir"))
    key = cache_key(kind, policy, spec, threat, settings)
    if not as_bool("retrain", options.get("retrain", False)):
        hit = load_cached(cache_dir, kind, key)
        if hit is not None:
            tensors, meta = hit
            return _Trained(tensors, meta, cached=True)
    tensors, stats = train()
    meta = {
        "attack": kind,
        "policy_sha256": policy_fingerprint(policy),
        "env": spec.gym_id,
        "threat": threat.to_json(),
        "settings": settings,
        "stats": stats,
    }
    save_cached(cache_dir, kind, key, tensors, meta)
    return _Trained(tensors, meta, cached=False)


def _learned_factory(
    kind: str, threat: ThreatModel, policy: Policy, spec: EnvSpec, options: dict[str, Any]
) -> OptimalAttackHook:
    extra = {"pgd_steps", "step_frac"} if kind == "pa-ad" else set()
    check_options(kind, options, _PPO_FIELDS | _COMMON | extra)
    ppo = _ppo_settings(options)
    pgd_steps = as_int("pgd_steps", options.get("pgd_steps", 5))
    step_frac = as_float("step_frac", options.get("step_frac", 0.5))
    if kind == "pa-ad" and pgd_steps < 1:
        raise AttackError("pa-ad needs pgd_steps >= 1")
    out_dim = policy.obs_dim if kind == "optimal" else repr_dim(policy)
    dims = (policy.obs_dim, out_dim, ppo.hidden)
    settings: dict[str, Any] = {"ppo": asdict(ppo)}
    if kind == "pa-ad":
        settings.update(pgd_steps=pgd_steps, step_frac=step_frac)
        perturb = pa_ad_perturb(threat, policy, pgd_steps, step_frac)
    else:
        perturb = optimal_perturb(threat)
    cls = PAADHook if kind == "pa-ad" else OptimalAttackHook
    info: dict[str, Any] = {"threat": threat.to_json(), "settings": settings}
    if threat.eps == 0:
        return cls(threat, None, dims, {**info, "trained": False}, pgd_steps=pgd_steps)
    trained = _train_or_load(
        kind,
        policy,
        spec,
        threat,
        settings,
        options,
        lambda: train_adversary_ppo(
            policy,
            spec,
            threat,
            out_dim,
            perturb,
            ppo,
            progress=options.get("progress"),
            desc=f"training {kind} adversary",
        ),
    )
    stats = trained.meta.get("stats", {})
    info.update(
        weights_sha256=weights_digest(trained.state),
        cached=trained.cached,
        train_seconds=stats.get("train_seconds"),
        train_steps=stats.get("steps"),
        final_victim_return=(stats.get("history") or [{}])[-1].get("victim_return"),
    )
    hook = cls(
        threat,
        trained.state,
        dims,
        info,
        stochastic=as_bool("stochastic", options.get("stochastic", False)),
        pgd_steps=pgd_steps,
        step_frac=step_frac,
    )
    hook._build()
    return hook


@register_attack("optimal", learned=True, eot=True,
                 mode_option="victim_deterministic")
def optimal_attack(
    threat: ThreatModel, policy: Policy, spec: EnvSpec, **options: Any
) -> OptimalAttackHook:
    """Learned optimal adversary (SA-RL / ATLA, Zhang et al. 2021): PPO on -r, delta = eps*tanh(u).

    Options: ``train_steps`` (default 300000), ``seed``, ``cache_dir`` (``results/.cache``;
    ``none`` disables), ``retrain``, ``stochastic`` (sample the adversary at attack time),
    ``progress`` and the PPO settings of :class:`PPOSettings`."""
    return _learned_factory("optimal", threat, policy, spec, options)


@register_attack("pa-ad", learned=True, eot=True,
                 mode_option="victim_deterministic")
def pa_ad_attack(
    threat: ThreatModel, policy: Policy, spec: EnvSpec, **options: Any
) -> OptimalAttackHook:
    """PA-AD (Sun et al. 2022): a PPO director picks an action-space direction, PGD realizes it.

    Options: those of ``optimal`` plus ``pgd_steps`` (default 5) and ``step_frac`` (sign-step
    size as a fraction of eps, default 0.5)."""
    return _learned_factory("pa-ad", threat, policy, spec, options)
