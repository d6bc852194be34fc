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


def is_bundle_manifest(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
        return b'"format"' in head and FORMAT.encode() in head
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
    if m.get("format") != FORMAT:
        raise PolicyError(f"{manifest_path}: not a {FORMAT} manifest (format={m.get('format')!r})")
    if int(m.get("format_version", 0)) > FORMAT_VERSION:
        raise PolicyError(
            f"{manifest_path}: bundle format version {m['format_version']} is newer than this "
            f"certrl understands ({FORMAT_VERSION}); upgrade certrl"
        )
    for key in ("weights", "layers", "activation", "head", "action_space"):
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
