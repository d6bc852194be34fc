"""certrl's own safe policy bundle: a JSON manifest + a safetensors file of weights.

Loading never executes code (no pickle, no TorchScript). Layout::

    my_policy.json          manifest (below)
    my_policy.safetensors   tensors: "net.{2k}.weight", "net.{2k}.bias", optional "log_std"

Manifest (``format: "certrl-mlp"``, ``format_version: 1``)::

    {
      "format": "certrl-mlp", "format_version": 1,
      "weights": "my_policy.safetensors",     # relative to the manifest
      "env_id": "Hopper-v5",                  # informative; dims are validated against the env
      "obs_dim": 11,
      "action_space": {"type": "box", "low": [...], "high": [...]}
                    | {"type": "discrete", "n": 2},
      "layers": [11, 64, 64, 3],              # Linear sizes
      "activation": "tanh",                   # between hidden layers
      "output_activation": null,              # e.g. "tanh" for TD3-style actors
      "head": "gaussian" | "deterministic" | "linear" | "categorical" | "qvalues",
      "squash": false,                        # SAC-style tanh squash + rescale
      "obs_norm": {"mean": [...], "var": [...], "clip": 10.0, "epsilon": 1e-8} | null,
      "training": {...}                       # free-form provenance
    }

Pixel policies (``format: "certrl-cnn"``, ``format_version: 1``) replace ``layers`` /
``activation`` / ``obs_dim`` with::

      "obs_shape": [4, 84, 84],               # channels first; rows are flattened C, H, W
      "convs": [{"out": 32, "kernel": 8, "stride": 4}, ...],   # Conv2d + ReLU each
      "dense": [512],                         # hidden Linear + ReLU layers after Flatten
      "pixel_scale": 255.0,                   # obs / pixel_scale is the network input

with tensors ``conv.{k}.weight`` / ``conv.{k}.bias`` and ``dense.{k}.weight`` / ``.bias``
(the last dense layer is the head). The network is :func:`certrl.policies.cnn.pixel_sequential`
and the ``/ pixel_scale`` the policy's normalization (:meth:`ObsNormalization.pixels`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from certrl.policies.base import (
    HEADS,
    ObsNormalization,
    Policy,
    PolicyError,
    PolicyInfo,
    build_mlp,
    sha256_file,
)

FORMAT = "certrl-mlp"
FORMAT_CNN = "certrl-cnn"
FORMAT_VERSION = 1


def save_bundle(
    path: str | Path,
    *,
    state: dict[str, torch.Tensor],
    layers: list[int],
    activation: str,
    head: str,
    action_space: dict[str, Any],
    obs_norm: ObsNormalization | None = None,
    output_activation: str | None = None,
    squash: bool = False,
    env_id: str = "",
    training: dict[str, Any] | None = None,
) -> Path:
    """Write ``path`` (``.json``) and its ``.safetensors`` sibling; returns the manifest path.

    ``state`` holds the MLP tensors named ``{2k}.weight`` / ``{2k}.bias`` (``log_std`` too)."""
    from safetensors.torch import save_file

    path = Path(path).with_suffix(".json")
    weights = path.with_suffix(".safetensors")
    tensors = {}
    for k, v in state.items():
        name = k if k == "log_std" else f"net.{k}"
        tensors[name] = v.detach().to(torch.float32).contiguous().clone()
    save_file(tensors, str(weights))
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "weights": weights.name,
        "env_id": env_id,
        "obs_dim": int(layers[0]),
        "action_space": action_space,
        "layers": [int(x) for x in layers],
        "activation": activation,
        "output_activation": output_activation,
        "head": head,
        "squash": bool(squash),
        "obs_norm": obs_norm.to_json() if obs_norm is not None else None,
        "training": training or {},
    }
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path


def save_cnn_bundle(
    path: str | Path,
    *,
    net: torch.nn.Module,
    obs_shape: tuple[int, ...],
    n_actions: int,
    head: str,
    env_id: str = "",
    pixel_scale: float = 255.0,
    training: dict[str, Any] | None = None,
) -> Path:
    """Write a ``certrl-cnn`` bundle from ``net``: an ``nn.Sequential`` of ``Conv2d`` / ``ReLU``
    layers, ``Flatten``, then ``Linear`` / ``ReLU`` layers (the last ``Linear`` is the head),
    taking ``[B, *obs_shape]`` images in ``[0, 1]``; returns the manifest path."""
    from safetensors.torch import save_file

    if head not in ("categorical", "qvalues"):
        raise PolicyError(f"a certrl-cnn bundle has a discrete head, not {head!r}")
    convs: list[dict[str, int]] = []
    dense: list[int] = []
    tensors: dict[str, torch.Tensor] = {}
    linears = [m for m in net.modules() if isinstance(m, torch.nn.Linear)]
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            if m.padding != (0, 0) or m.dilation != (1, 1) or m.groups != 1 or \
                    m.stride[0] != m.stride[1] or m.kernel_size[0] != m.kernel_size[1]:
                raise PolicyError("certrl-cnn bundles hold square, unpadded, ungrouped convs")
            k = len(convs)
            convs.append({"out": int(m.out_channels), "kernel": int(m.kernel_size[0]),
                          "stride": int(m.stride[0])})
            tensors[f"conv.{k}.weight"] = m.weight
            tensors[f"conv.{k}.bias"] = m.bias
    for k, m in enumerate(linears):
        tensors[f"dense.{k}.weight"] = m.weight
        tensors[f"dense.{k}.bias"] = m.bias
        if k < len(linears) - 1:
            dense.append(int(m.out_features))
    if not linears or int(linears[-1].out_features) != int(n_actions):
        raise PolicyError(f"the network's last Linear layer must have {n_actions} outputs")
    path = Path(path).with_suffix(".json")
    weights = path.with_suffix(".safetensors")
    save_file({k: v.detach().to(torch.float32).contiguous().clone() for k, v in tensors.items()},
              str(weights))
    manifest = {
        "format": FORMAT_CNN,
        "format_version": FORMAT_VERSION,
        "weights": weights.name,
        "env_id": env_id,
        "obs_shape": [int(v) for v in obs_shape],
        "convs": convs,
        "dense": dense,
        "pixel_scale": float(pixel_scale),
        "action_space": {"type": "discrete", "n": int(n_actions)},
        "head": head,
        "training": training or {},
    }
    path.write_text(json.dumps(manifest, indent=1) + "\n")
    return path


def _cnn_policy(m: dict[str, Any], tensors: dict[str, torch.Tensor], manifest_path: Path,
                weights_path: Path) -> Policy:
    from certrl.policies.cnn import pixel_sequential

    for key in ("obs_shape", "convs", "dense", "action_space"):
        if key not in m:
            raise PolicyError(f"{manifest_path}: manifest lacks the field {key!r}")
    try:
        shape = tuple(int(v) for v in m["obs_shape"])
        convs = [(tensors[f"conv.{k}.weight"], tensors[f"conv.{k}.bias"])
                 for k in range(len(m["convs"]))]
        strides = [int(c["stride"]) for c in m["convs"]]
        n_dense = len(m["dense"]) + 1
        dense = [(tensors[f"dense.{k}.weight"], tensors[f"dense.{k}.bias"],
                  "relu" if k < n_dense - 1 else None) for k in range(n_dense)]
    except (KeyError, TypeError, ValueError) as e:
        raise PolicyError(f"{weights_path}: weights do not match the manifest ({e})") from None
    if len(shape) != 3:
        raise PolicyError(f"{manifest_path}: obs_shape must be [C, H, W], got {list(shape)}")
    for (w, _), c in zip(convs, m["convs"], strict=True):
        if w.ndim != 4 or int(w.shape[0]) != int(c["out"]) or int(w.shape[2]) != int(c["kernel"]):
            raise PolicyError(f"{weights_path}: a convolution does not match the manifest "
                              f"({tuple(w.shape)} vs {c})")
    try:
        net = pixel_sequential(shape, convs, strides, dense)  # type: ignore[arg-type]
        net(torch.zeros((1, int(np.prod(shape)))))  # the shapes chain
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise PolicyError(f"{weights_path}: layers do not chain ({first})") from None
    scale = float(m.get("pixel_scale", 255.0))
    info = PolicyInfo(
        format=FORMAT_CNN,
        path=str(manifest_path),
        sha256=sha256_file(manifest_path, weights_path),
        algorithm=str(m.get("training", {}).get("algorithm", "")),
        details={"weights": str(weights_path), "env_id": m.get("env_id", ""),
                 "observation": "pixels", "obs_shape": list(shape),
                 "pixel_scaling": f"obs / {scale:g} (normalized space: [0, 1] pixels)"},
    )
    return Policy(net, m["head"], int(np.prod(shape)), n_actions=int(m["action_space"]["n"]),
                  obs_norm=ObsNormalization.pixels(scale), info=info, obs_shape=shape)


def is_bundle_manifest(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        return b'"format"' in head and (FORMAT.encode() in head or FORMAT_CNN.encode() in head)
    except OSError:
        return False


def load_bundle(path: str | Path) -> Policy:
    """Load a bundle from its manifest (``.json``) or weights (``.safetensors``) path."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    manifest_path = path if path.suffix == ".json" else path.with_suffix(".json")
    if not manifest_path.is_file():
        raise PolicyError(
            f"{path}: a safetensors policy needs its manifest {manifest_path.name} beside it "
            "(see `certrl.policies.bundle` for the format)"
        )
    try:
        m = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PolicyError(f"{manifest_path}: manifest is not valid JSON ({e})") from None
    if m.get("format") not in (FORMAT, FORMAT_CNN):
        raise PolicyError(f"{manifest_path}: not a {FORMAT} or {FORMAT_CNN} manifest "
                          f"(format={m.get('format')!r})")
    if int(m.get("format_version", 0)) > FORMAT_VERSION:
        raise PolicyError(
            f"{manifest_path}: bundle format version {m['format_version']} is newer than this "
            f"certrl understands ({FORMAT_VERSION}); upgrade certrl"
        )
    cnn = m["format"] == FORMAT_CNN
    for key in ("weights", "head", "action_space") + (() if cnn else ("layers", "activation")):
        if key not in m:
            raise PolicyError(f"{manifest_path}: manifest lacks the field {key!r}")
    if m["head"] not in HEADS:
        raise PolicyError(f"{manifest_path}: unknown head {m['head']!r}; expected one of {HEADS}")
    weights_path = manifest_path.parent / m["weights"]
    try:
        tensors = load_file(str(weights_path))
    except FileNotFoundError:
        raise PolicyError(f"{manifest_path}: weights file {weights_path} is missing") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise PolicyError(f"{weights_path}: not a readable safetensors file ({e})") from None
    if cnn:
        return _cnn_policy(m, tensors, manifest_path, weights_path)
    net = build_mlp(list(m["layers"]), m["activation"], m.get("output_activation"))
    net_state = {k[4:]: v for k, v in tensors.items() if k.startswith("net.")}
    try:
        net.load_state_dict(net_state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise PolicyError(
            f"{weights_path}: weights do not match the manifest's layers ({first})"
        ) from None
    space = m["action_space"]
    obs_norm = ObsNormalization.from_json(m["obs_norm"]) if m.get("obs_norm") else None
    info = PolicyInfo(
        format=FORMAT,
        path=str(manifest_path),
        sha256=sha256_file(manifest_path, weights_path),
        algorithm=str(m.get("training", {}).get("algorithm", "")),
        details={"weights": str(weights_path), "env_id": m.get("env_id", "")},
    )
    kwargs: dict[str, Any] = {}
    if space.get("type") == "discrete":
        kwargs["n_actions"] = int(space["n"])
    else:
        kwargs["action_low"] = np.asarray(space["low"], dtype=np.float32)
        kwargs["action_high"] = np.asarray(space["high"], dtype=np.float32)
    return Policy(
        net,
        m["head"],
        int(m["layers"][0]),
        log_std=tensors.get("log_std"),
        squash=bool(m.get("squash", False)),
        obs_norm=obs_norm,
        info=info,
        **kwargs,
    )
