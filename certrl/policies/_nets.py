"""Shared building blocks of the policy loaders: MLPs rebuilt from state-dict tensors,
the squashed-Gaussian actor of SAC, and rebuilding a :class:`Policy` with a few changes."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from certrl.policies.base import ACTIVATIONS, Policy, PolicyError, build_mlp


def linear_keys(state: dict[str, Tensor], prefix: str) -> list[str]:
    """Names ``{prefix}{i}`` of the Linear layers ``{prefix}{i}.weight`` in ``state``, sorted by
    their integer index ``i`` (``nn.Sequential`` numbering)."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.weight$")
    found = sorted((int(m.group(1)), k[: -len(".weight")]) for k in state if (m := pat.match(k)))
    return [name for _, name in found]


def chained_layers(
    state: dict[str, Tensor], names: list[str], where: str, *, ndim: int, noun: str,
    unit: str, previous: str, wrong_kind: str,
) -> list[tuple[Tensor, Tensor]]:
    """``(weight, bias)`` of each named layer (weights of ``ndim`` dimensions), checking each
    has both tensors, a bias of its output size and an input size (``weight.shape[1]``, in
    ``unit``) equal to the previous layer's output size. ``noun`` names a layer in messages,
    ``previous`` the layer before it, ``wrong_kind`` (with ``{name}`` and ``{shape}``) the
    message for weights of another dimension."""
    out: list[tuple[Tensor, Tensor]] = []
    for name in names:
        w = state.get(f"{name}.weight")
        b = state.get(f"{name}.bias")
        if w is None or b is None:
            raise PolicyError(f"{where}: {noun} {name} lacks its weight or bias tensor")
        if w.ndim != ndim:
            raise PolicyError(f"{where}: " + wrong_kind.format(name=name, shape=tuple(w.shape)))
        if b.shape != (w.shape[0],):
            raise PolicyError(f"{where}: {noun} {name} has a bias of the wrong shape")
        if out and out[-1][0].shape[0] != w.shape[1]:
            raise PolicyError(
                f"{where}: {noun} {name} takes {w.shape[1]} {unit} but the {previous} gives "
                f"{out[-1][0].shape[0]}"
            )
        out.append((w.detach().float(), b.detach().float()))
    return out


def linears(state: dict[str, Tensor], names: list[str], where: str) -> list[tuple[Tensor, Tensor]]:
    """``(weight, bias)`` of each named Linear layer; checks they are 2-D and chain together."""
    return chained_layers(
        state, names, where, ndim=2, noun="layer", unit="inputs", previous="previous layer",
        wrong_kind="layer {name} is not a fully connected layer (weight shape {shape}); only "
                   "MLP policies on vector observations are supported")


def mlp_from_linears(
    layers: list[tuple[Tensor, Tensor]],
    activation: str,
    output_activation: str | None = None,
    trailing_activation: bool = False,
) -> nn.Sequential:
    """An ``nn.Sequential`` of the given Linear layers with ``activation`` between them (and after
    the last one if ``trailing_activation``: SB3 latent networks); layer k is ``{2k}``."""
    if activation not in ACTIVATIONS:
        raise PolicyError(f"unsupported activation {activation!r}")
    if not layers:
        return nn.Sequential()
    sizes = [int(layers[0][0].shape[1])] + [int(w.shape[0]) for w, _ in layers]
    out_act = activation if trailing_activation else output_activation
    net = build_mlp(sizes, activation, out_act)
    with torch.no_grad():
        for k, (w, b) in enumerate(layers):
            lin = net[2 * k]
            assert isinstance(lin, nn.Linear)
            lin.weight.copy_(w)
            lin.bias.copy_(b)
    return net


class GaussianActor(nn.Module):
    """``x -> (mean, log_std)`` with a state-dependent ``log_std`` (SAC-style actors).

    ``log_std_mode``: ``"clamp"`` clamps to ``[lo, hi]`` (SB3 SAC: ``[-20, 2]``); ``"tanh"`` maps
    ``tanh(raw)`` affinely onto ``[lo, hi]`` (CleanRL SAC: ``[-5, 2]``).
    """

    def __init__(
        self,
        latent: nn.Module,
        mu: nn.Linear,
        log_std: nn.Linear,
        lo: float = -20.0,
        hi: float = 2.0,
        log_std_mode: str = "clamp",
    ) -> None:
        super().__init__()
        self.latent = latent
        self.mu = mu
        self.log_std = log_std
        self.lo = float(lo)
        self.hi = float(hi)
        self.log_std_mode = log_std_mode

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = self.latent(x)
        raw = self.log_std(h)
        if self.log_std_mode == "tanh":
            log_std = self.lo + 0.5 * (self.hi - self.lo) * (torch.tanh(raw) + 1.0)
        else:
            log_std = torch.clamp(raw, self.lo, self.hi)
        return self.mu(h), log_std


def linear_layer(weight: Tensor, bias: Tensor) -> nn.Linear:
    """An ``nn.Linear`` holding copies of ``weight`` / ``bias``."""
    lin = nn.Linear(int(weight.shape[1]), int(weight.shape[0]))
    with torch.no_grad():
        lin.weight.copy_(weight.float())
        lin.bias.copy_(bias.float())
    return lin


def rebuild(policy: Policy, **changes: Any) -> Policy:
    """A new :class:`Policy` sharing ``policy``'s network, with some constructor arguments
    changed (``obs_norm``, ``info``, ``head`` + ``n_actions`` ...); a pixel policy keeps its
    ``obs_shape``."""
    kw: dict[str, Any] = {
        "net": policy.net,
        "head": policy.head,
        "obs_dim": policy.obs_dim,
        "log_std": None if policy.log_std is None else policy.log_std.detach().clone(),
        "squash": policy.squash,
        "state_dependent_std": policy.state_dependent_std,
        "obs_norm": policy.obs_norm,
        "info": policy.info,
        "obs_shape": policy.obs_shape,
    }
    if policy.discrete:
        kw["n_actions"] = policy.n_actions
    elif policy.bounds_known:
        kw["action_low"] = policy.action_low
        kw["action_high"] = policy.action_high
    else:
        kw["act_dim"] = policy.act_dim
    kw.update(changes)
    if kw["head"] in ("categorical", "qvalues"):
        for k in ("action_low", "action_high", "act_dim"):
            kw.pop(k, None)
    return Policy(**kw)


def check_zip(zf: zipfile.ZipFile, path: Path) -> list[str]:
    """Member names of an archive that must start at byte 0 of ``path``.

    A truncated file can still *open* as a zip: ``zipfile`` finds the end record of a zip stored
    inside it (SB3's ``policy.pth``) and treats the bytes before it as a prefix. Policy archives
    never have a prefix, so a first member not at offset 0 means the file is damaged."""
    infos = zf.infolist()
    if not infos or min(i.header_offset for i in infos) != 0:
        raise PolicyError(
            f"{path}: damaged zip archive (its directory does not cover the file); the file is "
            "truncated or corrupt — copy or export it again"
        )
    return [i.filename for i in infos]
