"""Policy smoothing (Kumar, Levine & Feizi, ICLR 2022): Gaussian noise on every observation.

The smoothed policy acts at step t on ``o_t + N(0, sigma^2 I)`` with fresh noise every step.
The noise is drawn from the episode's own RNG stream (:data:`certrl.evaluator.STREAM_SMOOTHING`)
so smoothed returns are reproducible and independent of batching, and an attacked run sees
exactly the same smoothing noise as the clean run it is compared with.

``space``: ``"normalized"`` adds the noise to the policy's normalized observation
``(o - mu) / sqrt(var + eps)`` (the space the attack literature measures budgets in: sigma and
the certificate budget B are then in those units); ``"raw"`` adds it to the raw observation.
The default is ``normalized`` when the policy carries normalization statistics, else ``raw``
(the two coincide then).

Per-state action certificates (Cohen et al. 2019 applied per visited state, as CROP-LoAct
does) for discrete policies: :class:`PerStateCertifier` takes ``n`` extra noisy copies at
visited states, counts the majority action and records the certified l2 radius
``sigma * Phi^-1(p_A_lower)`` (Clopper-Pearson lower bound at ``1 - alpha``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from certrl.evaluator import STREAM_SMOOTHING, BlockDraws, ObservationHook, StepContext
from certrl.policies.base import Policy

STREAM_PER_STATE = 9


def default_space(policy: Policy) -> str:
    return "normalized" if policy.has_normalization else "raw"


def resolve_space(policy: Policy, space: str | None) -> str:
    if space in (None, "auto"):
        return default_space(policy)
    if space not in ("raw", "normalized"):
        raise ValueError(f"smoothing space must be 'raw' or 'normalized', got {space!r}")
    return space


def _draw(rngs: list[np.random.Generator], d: int) -> Tensor:
    return torch.as_tensor(np.stack([g.standard_normal(d) for g in rngs]), dtype=torch.float32)


class GaussianSmoothing(ObservationHook):
    """Evaluator hook: ``x + sigma * z`` with ``z ~ N(0, I)`` from each episode's stream.

    Step ``t`` of an episode uses the ``t``-th ``standard_normal(obs_dim)`` draw of the
    episode's smoothing generator. The draws are fetched a block of steps at a time
    (:class:`certrl.evaluator.BlockDraws`: the same numbers, without a per-row call per step).
    """

    rng_stream = STREAM_SMOOTHING
    adversarial = False
    name = "gaussian-smoothing"

    def __init__(self, sigma: float, space: str = "normalized") -> None:
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.sigma = float(sigma)
        self.space = space
        self._draws: BlockDraws | None = None

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma, "space": self.space}

    def bind(self, policy: Policy, spec: Any, n_slots: int) -> None:
        self._draws = BlockDraws(n_slots, (policy.obs_dim,))

    def reset(self, slots: np.ndarray, rngs: list[np.random.Generator]) -> None:
        if self._draws is not None:
            for s, g in zip(np.asarray(slots).tolist(), rngs, strict=True):
                self._draws.start(int(s), g)

    def __call__(self, x: Tensor, ctx: StepContext) -> Tensor:
        if self._draws is None or self._draws.shape != (x.shape[1],):
            return x + self.sigma * _draw(ctx.rngs, x.shape[1])  # not bound: per-row draws
        return x + self.sigma * torch.from_numpy(self._draws.take(np.asarray(ctx.slots)))

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_draws": None}  # per-run state: rebuilt by bind()


class FrameSmoothing(GaussianSmoothing):
    """Kumar et al.'s smoothing of frame-stacked observations: noise once per *frame*.

    Pixel environments (Atari) show the policy the last ``k`` frames (``EnvSpec.frame_stack``,
    channels first, zeros before the episode's first frame). Kumar et al. add the noise to each
    preprocessed frame *before* stacking, so a frame carries the same noise in the ``k``
    observations it appears in. This hook does exactly that on the stacked observation: at step
    ``t`` it draws ``N(0, sigma^2 I)`` for the newest frame only (the ``t``-th draw of the
    episode's smoothing stream, ``frame_size`` values) and reuses the draws of steps ``t-1 ..
    t-k+1`` for the older frames; the zero frames that pad the first ``k-1`` stacks get no
    noise (they are constants of the agent, not observations).

    Threat model of the certificates (Kumar et al., Atari): the adversary perturbs each frame
    once (adaptively, seeing everything before it), with ``sqrt(sum_t ||delta_t||^2) <= B``
    summed over *frames*; the smoothed agent is a function of the noised frames (its frame
    stack is its memory), which the adaptive Neyman-Pearson lemma allows. So ``B`` and
    ``sigma`` are per-frame quantities in the hook's space (``[0, 1]`` pixels for pixel
    policies: the normalized space).
    """

    name = "gaussian-smoothing-frames"

    def __init__(self, sigma: float, space: str = "normalized", frame_stack: int = 4) -> None:
        super().__init__(sigma, space)
        if int(frame_stack) < 1:
            raise ValueError(f"frame_stack must be >= 1, got {frame_stack}")
        self.frame_stack = int(frame_stack)
        self._hist: np.ndarray | None = None

    def config(self) -> dict[str, Any]:
        return {**super().config(), "unit": "frame", "frame_stack": self.frame_stack}

    def bind(self, policy: Policy, spec: Any, n_slots: int) -> None:
        if policy.obs_dim % self.frame_stack:
            raise ValueError(f"observations of {policy.obs_dim} values are not a stack of "
                             f"{self.frame_stack} frames")
        frame = policy.obs_dim // self.frame_stack
        self._draws = BlockDraws(n_slots, (frame,))
        self._hist = np.zeros((n_slots, self.frame_stack, frame), dtype=np.float32)

    def reset(self, slots: np.ndarray, rngs: list[np.random.Generator]) -> None:
        super().reset(slots, rngs)
        if self._hist is not None:
            self._hist[np.asarray(slots, dtype=np.int64)] = 0.0

    def __call__(self, x: Tensor, ctx: StepContext) -> Tensor:
        if self._draws is None or self._hist is None:
            raise RuntimeError("FrameSmoothing: bind() first (it keeps each slot's frame noise)")
        slots = np.asarray(ctx.slots, dtype=np.int64)
        h = self._hist[slots]  # [B, k, frame] (a copy)
        h[:, :-1] = h[:, 1:]
        h[:, -1] = self._draws.take(slots)
        self._hist[slots] = h
        return x + self.sigma * torch.from_numpy(h.reshape(len(slots), -1))

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_hist": None}


def smoothing_hook(sigma: float, space: str, spec: Any = None,
                   unit: str = "auto") -> GaussianSmoothing:
    """The smoothing hook for ``spec``: :class:`FrameSmoothing` for frame-stacked observations
    (``spec.frame_stack > 0``, Atari) unless ``unit="input"``, else :class:`GaussianSmoothing`
    (fresh noise on the whole observation every step)."""
    k = int(getattr(spec, "frame_stack", 0) or 0)
    if unit not in ("auto", "frame", "input"):
        raise ValueError(f"smoothing unit must be 'auto', 'frame' or 'input', got {unit!r}")
    if unit == "frame" and not k:
        raise ValueError("per-frame smoothing needs an environment whose observation is a stack "
                         "of frames (the Atari environments)")
    if k and unit != "input":
        return FrameSmoothing(sigma, space, k)
    return GaussianSmoothing(sigma, space)


class SmoothedPolicy:
    """The smoothed policy ``pi_sigma(o) = pi(o + N(0, sigma^2 I))`` over a base :class:`Policy`.

    For evaluation, plug :meth:`hooks` into the evaluator (reproducible per-episode noise).
    :meth:`act` is the same policy for library use on a batch, with explicit generators.
    """

    def __init__(self, policy: Policy, sigma: float, space: str | None = None) -> None:
        self.policy = policy
        self.space = resolve_space(policy, space)
        self.sigma = float(sigma)
        self._hook = GaussianSmoothing(sigma, self.space)

    def hooks(self) -> list[ObservationHook]:
        return [self._hook]

    def act(
        self, obs: Tensor, rngs: list[np.random.Generator], deterministic: bool = True
    ) -> Tensor:
        """One smoothed action per row of raw ``obs [B, d]``, noise from ``rngs[b]``."""
        noise = self.sigma * _draw(rngs, obs.shape[1])
        with torch.no_grad():
            if self.space == "raw":
                return self.policy.act(obs + noise, deterministic)
            return self.policy.act_normalized(self.policy.normalize(obs) + noise, deterministic)

    def vote_counts(self, obs: Tensor, n: int, rng: np.random.Generator) -> np.ndarray:
        """Counts ``[B, n_actions]`` of the base policy's actions over ``n`` noisy copies of
        each observation (discrete policies)."""
        if not self.policy.discrete:
            raise ValueError("majority-vote smoothing needs a discrete-action policy")
        x = obs if self.space == "raw" else self.policy.normalize(obs)
        b, d = x.shape
        counts = np.zeros((b, self.policy.n_actions), dtype=np.int64)
        step = max(1, 4096 // max(b, 1))
        with torch.no_grad():
            done = 0
            while done < n:
                k = min(step, n - done)
                z = torch.as_tensor(rng.standard_normal((k, b, d)), dtype=torch.float32)
                xs = (x[None] + self.sigma * z).reshape(k * b, d)
                a = (self.policy.act(xs) if self.space == "raw"
                     else self.policy.act_normalized(xs)).reshape(k, b).numpy()
                for j in range(b):
                    counts[j] += np.bincount(a[:, j], minlength=self.policy.n_actions)
                done += k
        return counts

    def predict_vote(self, obs: Tensor, n: int, rng: np.random.Generator) -> np.ndarray:
        """Majority-vote action per row (ties: lowest index)."""
        return self.vote_counts(obs, n, rng).argmax(axis=1)


class PerStateCertifier(ObservationHook):
    """Records per-state certified radii of the majority-vote action at visited states.

    Every ``every``-th step of each episode, ``n`` noisy copies of the (unperturbed) state are
    drawn; with ``k`` votes for the top action, ``p_A_lower`` is the one-sided Clopper-Pearson
    bound at level ``1 - alpha`` and the state is certified at radius
    ``R = sigma * Phi^-1(p_A_lower)`` (0 if ``p_A_lower <= 1/2``). Guarantee per state (Cohen
    et al. 2019, Thm 1): with probability at least ``1 - alpha``, the majority-vote action is
    constant on the l2 ball of radius R around that state (in the smoothing space). The hook
    does not change the observation.
    """

    rng_stream = STREAM_PER_STATE
    adversarial = False
    name = "per-state-certifier"

    def __init__(self, sigma: float, space: str, n: int = 1000, alpha: float = 0.001,
                 every: int = 10) -> None:
        self.sigma = float(sigma)
        self.space = space
        self.n = int(n)
        self.alpha = float(alpha)
        self.every = max(1, int(every))
        self._radii: dict[int, list[float]] = {}

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "sigma": self.sigma, "space": self.space, "n": self.n,
                "alpha": self.alpha, "every": self.every}

    def bind(self, policy: Policy, spec: Any, n_slots: int) -> None:
        if not policy.discrete:
            raise ValueError("per-state action certificates need a discrete-action policy")
        self._radii = {}

    def reset(self, slots: np.ndarray, rngs: list[np.random.Generator]) -> None:
        for s in slots:
            self._radii[int(s)] = []

    def __call__(self, x: Tensor, ctx: StepContext) -> Tensor:
        from certrl.certificates import certified_radii

        rows = np.flatnonzero(ctx.t % self.every == 0)
        if rows.size:
            policy = ctx.policy
            counts = np.zeros((rows.size, policy.n_actions), dtype=np.int64)
            with torch.no_grad():
                for j, r in enumerate(rows):
                    g = ctx.rngs[r]
                    z = torch.as_tensor(g.standard_normal((self.n, x.shape[1])),
                                        dtype=torch.float32)
                    xs = x[r][None] + self.sigma * z
                    a = (policy.act_normalized(xs) if self.space != "raw" else policy.act(xs))
                    counts[j] = np.bincount(a.numpy(), minlength=policy.n_actions)
            radii = certified_radii(counts.max(axis=1), self.n, self.sigma, self.alpha)
            for j, r in enumerate(rows):
                self._radii[int(ctx.slots[r])].extend(float(v) for v in radii[j : j + 1])
        return x

    def episode_extras(self, slot: int) -> dict[str, Any]:
        return {"state_radii": self._radii.pop(slot, [])}
