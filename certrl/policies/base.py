"""The one `Policy` object every loader produces and every later stage consumes.

Data flow: policy file -> loader -> :class:`Policy` -> evaluator (hooks: attacks, smoothing)
-> returns -> certificates / stats -> results JSON -> report / gate.

A :class:`Policy` wraps an actor network ``net`` that maps *normalized* observations to a
raw head output (action mean, tanh-bounded action, logits or Q-values) and reproduces the
post-processing the training library applies in ``predict(obs, deterministic=True)``:

========================  ==============================================================
head                      deterministic action                  stochastic action
========================  ==============================================================
``gaussian``              clip(mean, low, high)  (SB3 PPO/A2C)    clip(mean + std * z)
``gaussian`` + squash     rescale(tanh(mean))    (SB3 SAC)        rescale(tanh(mean+std*z))
``deterministic``         rescale(net(x)) (net ends in tanh; TD3)  same as deterministic
``linear``                net(x) (TorchScript: the module returns the action)  same
``categorical``           argmax logits          (PPO/A2C)       argmax(logits + Gumbel)
``qvalues``               argmax Q               (DQN)           same as deterministic
========================  ==============================================================

``rescale(a) = low + (a + 1) / 2 * (high - low)``.

Everything is batched (``obs`` is ``[B, obs_dim]``) and differentiable with respect to the
observation up to the final argmax / clip, so attacks can take gradients. Observation
normalization lives *inside* the policy (``act`` takes raw observations); ``normalize`` and
``act_normalized`` expose the normalized space the attack literature (SA-PPO, ATLA, PA-AD) and
certrl's smoothing use.

Batch invariance: BLAS kernels for very small batches (fewer than ~4 rows) round differently
from large ones, and MuJoCo amplifies a 1e-7 difference in an action into a different
episode. Inference therefore pads every batch to at least :data:`MIN_ROWS` rows, which makes
each row's result independent of the batch it is computed in (tested in
``tests/test_policies.py``); this is what makes returns identical whatever the batch size or
worker count.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

HeadKind = Literal["gaussian", "deterministic", "linear", "categorical", "qvalues"]
HEADS: tuple[str, ...] = ("gaussian", "deterministic", "linear", "categorical", "qvalues")

#: Inference batches are padded to at least this many rows (see module docstring).
MIN_ROWS = 16

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
}


class PolicyError(ValueError):
    """A policy file that cannot be loaded or does not fit the environment (exit code 2)."""


@dataclass(frozen=True)
class ObsNormalization:
    """Frozen observation statistics: ``clip((obs - mean) / sqrt(var + epsilon), -clip, clip)``.

    This is SB3 ``VecNormalize`` / gymnasium ``NormalizeObservation`` arithmetic; ``clip`` may be
    ``inf`` for no clipping. ``mean`` and ``var`` have one entry per observation, or a single
    entry shared by all of them (:meth:`pixels`: image policies divide by 255).
    """

    @staticmethod
    def pixels(scale: float = 255.0) -> ObsNormalization:
        """``obs / scale`` exactly (mean 0, ``sqrt(var + epsilon) == scale``, no clipping): the
        ``[0, 255] -> [0, 1]`` step SB3's ``preprocess_obs`` and CleanRL's ``x / 255.0`` apply
        inside image policies. The normalized space is then the ``[0, 1]`` pixel space the
        smoothing and attack literature on Atari states its sigma and budgets in."""
        return ObsNormalization(mean=np.zeros(1), var=np.full(1, float(scale) ** 2),
                                clip=float("inf"), epsilon=0.0)

    @property
    def is_pixel_scale(self) -> bool:
        """Whether this is :meth:`pixels` (one shared scale, zero mean, no clip)."""
        return (np.asarray(self.mean).size == 1 and float(np.asarray(self.mean).ravel()[0]) == 0
                and not np.isfinite(self.clip))

    mean: np.ndarray
    var: np.ndarray
    clip: float = 10.0
    epsilon: float = 1e-8

    def to_json(self) -> dict[str, Any]:
        return {
            "mean": [float(v) for v in np.asarray(self.mean, dtype=np.float64).ravel()],
            "var": [float(v) for v in np.asarray(self.var, dtype=np.float64).ravel()],
            "clip": float(self.clip) if np.isfinite(self.clip) else None,
            "epsilon": float(self.epsilon),
        }

    @staticmethod
    def from_json(d: dict[str, Any]) -> ObsNormalization:
        clip = d.get("clip")
        return ObsNormalization(
            mean=np.asarray(d["mean"], dtype=np.float64),
            var=np.asarray(d["var"], dtype=np.float64),
            clip=float("inf") if clip is None else float(clip),
            epsilon=float(d.get("epsilon", 1e-8)),
        )


@dataclass
class PolicyInfo:
    """What was loaded: shown by ``certrl policy-info`` and stored in every results file."""

    format: str
    path: str
    sha256: str
    algorithm: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "path": self.path,
            "sha256": self.sha256,
            "algorithm": self.algorithm,
            "details": self.details,
        }


def sha256_file(*paths: str | Path) -> str:
    """SHA-256 of a file, or of the concatenation of several (two-file policy formats: the
    policy and its normalization statistics, or a manifest and its weights)."""
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def build_mlp(
    sizes: list[int], activation: str = "tanh", output_activation: str | None = None
) -> nn.Sequential:
    """``Linear`` layers with ``activation`` between them; the parameter names of layer k are
    ``{2k}.weight`` / ``{2k}.bias`` (SB3 / CleanRL convention)."""
    if activation not in ACTIVATIONS:
        raise PolicyError(
            f"unknown activation {activation!r}; expected one of {sorted(ACTIVATIONS)}"
        )
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    if output_activation:
        layers.append(ACTIVATIONS[output_activation]())
    return nn.Sequential(*layers)


class Policy(nn.Module):
    """A batched, differentiable policy with its observation normalization inside.

    Args:
        net: module mapping normalized observations ``[B, obs_dim]`` to the head output.
        head: how the head output becomes an action (see the module docstring).
        obs_dim: observation size.
        action_low, action_high: Box bounds (continuous) or ``None`` (discrete).
        n_actions: number of discrete actions (discrete heads).
        log_std: state-independent log standard deviation (``gaussian`` heads), or ``None``
            when ``net`` returns ``(mean, log_std)`` itself (or has no noise model: gSDE).
        act_dim: action size of a continuous policy whose bounds are not known yet (a file
            that does not record them: TorchScript, some SB3 zips); the bounds then come from
            the environment through :meth:`with_action_bounds` (``validate_spaces`` does it),
            and acting before that raises :class:`PolicyError`.
        squash: tanh-squash then rescale (SAC).
        obs_norm: frozen observation statistics, or ``None``.
        info: provenance (format, path, SHA-256 ...).
        obs_shape: the unflattened observation shape of a pixel policy (channels first, e.g.
            ``(4, 84, 84)``; ``obs_dim`` is its product and rows hold the values in C, H, W
            order), or ``None`` for vector observations.
    """

    def __init__(
        self,
        net: nn.Module,
        head: HeadKind,
        obs_dim: int,
        *,
        action_low: np.ndarray | None = None,
        action_high: np.ndarray | None = None,
        n_actions: int | None = None,
        log_std: Tensor | None = None,
        squash: bool = False,
        state_dependent_std: bool = False,
        obs_norm: ObsNormalization | None = None,
        info: PolicyInfo | None = None,
        act_dim: int | None = None,
        obs_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise PolicyError(f"unknown policy head {head!r}; expected one of {HEADS}")
        self.net = net
        self.head: str = head
        self.obs_dim = int(obs_dim)
        self.obs_shape: tuple[int, ...] | None = None
        if obs_shape is not None:
            self.obs_shape = tuple(int(v) for v in obs_shape)
            if int(np.prod(self.obs_shape)) != self.obs_dim:
                raise PolicyError(
                    f"observation shape {self.obs_shape} does not have {self.obs_dim} entries"
                )
        self.squash = bool(squash)
        self.state_dependent_std = bool(state_dependent_std)
        self.discrete = head in ("categorical", "qvalues")
        if self.discrete:
            if not n_actions:
                raise PolicyError("a discrete policy needs n_actions")
            self.n_actions = int(n_actions)
            self.act_dim = 1
            self.action_low = None
            self.action_high = None
            self.bounds_known = True
        else:
            if action_low is None or action_high is None:
                if not act_dim:
                    raise PolicyError("a continuous policy needs action bounds (or act_dim)")
                action_low = np.full(int(act_dim), -np.inf, dtype=np.float32)
                action_high = np.full(int(act_dim), np.inf, dtype=np.float32)
                self.bounds_known = False
            else:
                self.bounds_known = True
            low = np.asarray(action_low, dtype=np.float32).ravel()
            high = np.asarray(action_high, dtype=np.float32).ravel()
            if low.shape != high.shape:
                raise PolicyError(f"action bounds differ in size ({low.size} vs {high.size})")
            self.n_actions = 0
            self.act_dim = int(low.size)
            self.action_low = low
            self.action_high = high
            self.register_buffer("_low", torch.as_tensor(low))
            self.register_buffer("_high", torch.as_tensor(high))
        if log_std is not None:
            self.log_std = nn.Parameter(torch.as_tensor(log_std, dtype=torch.float32).clone())
        else:
            self.log_std = None  # type: ignore[assignment]
        self.obs_norm = obs_norm
        if obs_norm is not None:
            mean = np.asarray(obs_norm.mean, dtype=np.float64).ravel()
            var = np.asarray(obs_norm.var, dtype=np.float64).ravel()
            if mean.size not in (1, self.obs_dim) or var.size != mean.size:
                raise PolicyError(
                    f"observation statistics have size {mean.size} / {var.size}, the policy "
                    f"expects {self.obs_dim} observations (or one shared value: pixels)"
                )
            self.register_buffer("_mu", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer(
                "_scale",
                torch.as_tensor(np.sqrt(var + obs_norm.epsilon), dtype=torch.float32),
            )
            self._clip = float(obs_norm.clip)
        self.info = info or PolicyInfo(format="module", path="", sha256="")
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def with_action_bounds(self, low: np.ndarray, high: np.ndarray) -> Policy:
        """Set the Box bounds of a continuous policy (in place; returns ``self``).

        For files that do not record them; ``validate_spaces`` calls this with the
        environment's ``action_space.low`` / ``high``."""
        if self.discrete:
            raise PolicyError("a discrete policy has no action bounds")
        lo = np.asarray(low, dtype=np.float32).ravel()
        hi = np.asarray(high, dtype=np.float32).ravel()
        if lo.size != self.act_dim or hi.size != self.act_dim:
            raise PolicyError(
                f"action bounds have size {lo.size}, the policy has {self.act_dim} actions"
            )
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi)) and np.all(lo <= hi)):
            raise PolicyError("action bounds must be finite with low <= high")
        self.action_low = lo
        self.action_high = hi
        self._low.copy_(torch.as_tensor(lo))
        self._high.copy_(torch.as_tensor(hi))
        self.bounds_known = True
        return self

    # ----------------------------------------------------------------- normalization
    @property
    def has_normalization(self) -> bool:
        return self.obs_norm is not None

    def normalize(self, obs: Tensor) -> Tensor:
        """Raw observations ``[B, obs_dim]`` -> the network's input space (identity if none)."""
        if self.obs_norm is None:
            return obs
        z = (obs - self._mu) / self._scale
        if np.isfinite(self._clip):
            z = torch.clamp(z, -self._clip, self._clip)
        return z

    def normalization_scale(self) -> Tensor:
        """Per-dimension d(normalized)/d(raw) (ones if no normalization), ignoring clipping."""
        if self.obs_norm is None:
            return torch.ones(self.obs_dim)
        return 1.0 / self._scale

    # ----------------------------------------------------------------- network head
    def _net(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        n = x.shape[0]
        if n < MIN_ROWS and not torch.is_grad_enabled():
            pad = x.new_zeros((MIN_ROWS - n, x.shape[1]))
            out = self.net(torch.cat([x, pad], 0))
            if isinstance(out, tuple):
                return out[0][:n], out[1][:n]
            return out[:n]
        return self.net(x)

    def head_output(self, nobs: Tensor) -> Tensor:
        """The network's raw output on normalized observations: action mean (gaussian heads,
        before squashing), the action (deterministic / linear heads), logits or Q-values."""
        out = self._net(nobs.to(torch.float32))
        return out[0] if isinstance(out, tuple) else out

    def distribution_params(self, nobs: Tensor) -> tuple[Tensor, Tensor | None]:
        """(mean or logits, log_std or None) on normalized observations; used by MAD-style
        attacks that need the action distribution rather than the action."""
        out = self._net(nobs.to(torch.float32))
        if isinstance(out, tuple):
            return out
        if self.head == "gaussian" and self.log_std is not None:
            return out, self.log_std.expand_as(out)
        return out, None

    def _rescale(self, a: Tensor) -> Tensor:
        return self._low + (a + 1.0) * 0.5 * (self._high - self._low)

    def act_normalized(
        self, nobs: Tensor, deterministic: bool = True, noise: Tensor | None = None
    ) -> Tensor:
        """Actions for normalized observations ``nobs [B, obs_dim]``.

        Continuous: ``[B, act_dim]`` float in the action bounds. Discrete: ``[B]`` long indices.
        ``noise``: for ``deterministic=False``, standard normal ``[B, act_dim]`` (gaussian heads)
        or uniform(0, 1) ``[B, n_actions]`` (categorical) drawn by the caller from the episode's
        own RNG stream, so sampling is reproducible; drawn from torch's global RNG if omitted.
        """
        if not self.bounds_known:
            raise PolicyError(
                "this policy file does not record its action bounds: check it against the "
                "environment first (validate_spaces / --env), or call with_action_bounds"
            )
        mean, log_std = self.distribution_params(nobs)
        if self.head == "gaussian":
            if not deterministic:
                if log_std is None:
                    raise PolicyError("this policy has no log_std: use deterministic mode")
                z = torch.randn_like(mean) if noise is None else noise.to(mean)
                mean = mean + torch.exp(log_std) * z
            if self.squash:
                return self._rescale(torch.tanh(mean))
            return torch.clamp(mean, self._low, self._high)
        if self.head == "deterministic":
            return self._rescale(mean)
        if self.head == "linear":
            return torch.clamp(mean, self._low, self._high)
        # discrete
        if self.head == "categorical" and not deterministic:
            u = torch.rand_like(mean) if noise is None else noise.to(mean)
            gumbel = -torch.log(-torch.log(u.clamp(1e-12, 1 - 1e-12)))
            return torch.argmax(mean + gumbel, dim=-1)
        return torch.argmax(mean, dim=-1)

    def act(self, obs: Tensor, deterministic: bool = True, noise: Tensor | None = None) -> Tensor:
        """Actions for raw observations ``obs [B, obs_dim]`` (normalization applied inside)."""
        return self.act_normalized(self.normalize(obs.to(torch.float32)), deterministic, noise)

    def forward(self, obs: Tensor) -> Tensor:  # nn.Module convention
        return self.act(obs, deterministic=True)

    @torch.no_grad()
    def predict(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Stable-Baselines3-style convenience: numpy in, numpy out, single or batched."""
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        single = x.ndim == 1
        if single:
            x = x[None]
        a = self.act(x, deterministic=deterministic).numpy()
        return a[0] if single else a

    def noise_shape(self) -> int:
        """Width of the per-step sampling noise ``act_normalized`` consumes when stochastic."""
        return self.n_actions if self.discrete else self.act_dim

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "head": self.head,
            "obs_dim": self.obs_dim,
            "discrete": self.discrete,
            "squash": self.squash,
            "normalization": self.obs_norm.to_json() if self.obs_norm else None,
            "parameters": int(sum(p.numel() for p in self.parameters())),
        }
        if self.obs_shape is not None:
            d["obs_shape"] = list(self.obs_shape)
        if self.discrete:
            d["n_actions"] = self.n_actions
        else:
            d["act_dim"] = self.act_dim
            if self.bounds_known:
                d["action_low"] = [float(v) for v in self.action_low]  # type: ignore[union-attr]
                d["action_high"] = [float(v) for v in self.action_high]  # type: ignore[union-attr]
            else:
                d["action_low"] = d["action_high"] = None  # taken from the environment
        return d
