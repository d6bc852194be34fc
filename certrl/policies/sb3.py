"""Stable-Baselines3 ``model.save`` zips (PPO, A2C, SAC, TD3, DDPG, DQN; ``MlpPolicy``), read
without unpickling anything.

An SB3 zip holds ``data`` (JSON; values that are not JSON are base64 *cloudpickle*, which we
never decode — only the plain-JSON fields SB3 writes beside them, such as a space's ``_shape``,
``low`` / ``high`` as printed arrays or ``policy_kwargs``' ``activation_fn`` as a string) and
``policy.pth`` (a state dict, read with ``torch.load(weights_only=True)``). The actor is rebuilt
from the tensor names and shapes and SB3's defaults, and reproduces
``model.predict(obs, deterministic=True)``:

* PPO / A2C (``ActorCriticPolicy``): ``mlp_extractor.[shared_net|policy_net].*`` + ``action_net``
  (Tanh by default); Box actions -> Gaussian mean clipped to the bounds (``squash_output`` with
  gSDE -> tanh then rescale); Discrete -> argmax of the logits.
* SAC: ``actor.latent_pi.*`` (ReLU) then ``actor.mu`` / ``actor.log_std`` (log-std clamped to
  ``[-20, 2]``); tanh then rescale to the bounds.
* TD3 / DDPG: ``actor.mu.*`` (ReLU, final tanh), rescaled to the bounds.
* DQN: ``q_net.q_net.*`` (ReLU); argmax of the Q-values.

With gSDE (``use_sde=True``) only the deterministic action is reproduced (stochastic acting
raises :class:`PolicyError`). If the zip records no readable action bounds, the policy takes them
from the environment (``validate_spaces`` / ``Policy.with_action_bounds``). Observation
normalization comes from a ``VecNormalize`` pickle (see :mod:`certrl.policies.vecnormalize`).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from certrl.policies._nets import (
    GaussianActor,
    check_zip,
    linear_keys,
    linear_layer,
    linears,
    mlp_from_linears,
)
from certrl.policies.base import ACTIVATIONS, Policy, PolicyError, PolicyInfo, sha256_file

#: Default activation of each SB3 policy family.
DEFAULT_ACTIVATION = {"PPO": "tanh", "A2C": "tanh", "TRPO": "tanh", "SAC": "relu", "TQC": "relu",
                      "TD3": "relu", "DDPG": "relu", "DQN": "relu"}

_TORCH_ACTIVATIONS = {
    "Tanh": "tanh", "ReLU": "relu", "ELU": "elu", "LeakyReLU": "leaky_relu", "GELU": "gelu",
    "SiLU": "silu", "Sigmoid": "sigmoid", "Identity": "identity",
}


def is_sb3_zip(names: list[str]) -> bool:
    """Whether a zip's member names are those of an SB3 ``model.save``."""
    return "data" in names and "policy.pth" in names


def _parse_printed_array(text: Any, size: int) -> np.ndarray | None:
    """Parse ``str(np.ndarray)`` as SB3 writes Box bounds into ``data`` (``'[-1. -1. -8.]'``);
    ``None`` if it is absent, summarised (``...``) or of the wrong size."""
    if not isinstance(text, str) or "..." in text:
        return None
    try:
        vals = [float(t) for t in text.replace("[", " ").replace("]", " ").split()]
    except ValueError:
        return None
    if len(vals) == 1 and size > 1:
        vals = vals * size
    if len(vals) != size:
        return None
    return np.asarray(vals, dtype=np.float32)


def _space_kind(space: Any) -> str:
    """``box`` / ``discrete`` / other class name / ``unknown`` from ``data``'s space entry."""
    if not isinstance(space, dict):
        return "unknown"
    t = str(space.get(":type:", ""))
    m = re.search(r"\.(\w+)'>", t)
    name = m.group(1) if m else ""
    return {"Box": "box", "Discrete": "discrete"}.get(name, name or "unknown")


def _json_shape(space: Any) -> tuple[int, ...] | None:
    if isinstance(space, dict) and isinstance(space.get("_shape"), list):
        try:
            return tuple(int(v) for v in space["_shape"])
        except (TypeError, ValueError):
            return None
    return None


def _policy_class(data: dict[str, Any]) -> tuple[str, str]:
    """``(module, class name)`` of the saved policy class, from its JSON-readable fields."""
    pc = data.get("policy_class")
    if not isinstance(pc, dict):
        return "", ""
    module = str(pc.get("__module__", ""))
    name = ""
    m = re.search(r"<function (\w+)\.__init__", str(pc.get("__init__", "")))
    if m:
        name = m.group(1)
    return module, name


def detect_algorithm(data: dict[str, Any], state: dict[str, Tensor]) -> str:
    """The SB3 algorithm, from the policy class's module (JSON) or else from tensor names."""
    module, _ = _policy_class(data)
    if module.startswith("sb3_contrib"):
        if ".tqc." in module:
            return "TQC"
        if ".trpo." in module or "cg_max_steps" in data:
            return "TRPO"
        raise PolicyError(
            f"SB3-Contrib policy ({module}) is not supported: supported are PPO, A2C, SAC, TD3, "
            "DDPG, DQN (and TQC / TRPO); export the actor to a certrl bundle or TorchScript"
        )
    if ".sac." in module:
        return "SAC"
    if ".td3." in module:
        ddpg = data.get("policy_delay") == 1 and data.get("target_noise_clip") == 0.0
        return "DDPG" if ddpg else "TD3"
    if ".dqn." in module:
        return "DQN"
    if module.endswith("common.policies"):
        return "PPO" if "clip_range" in data else "A2C"
    # Custom or unreadable policy class: decide from the tensors.
    if "actor.latent_pi.0.weight" in state or "actor.mu.weight" in state:
        return "SAC"
    if "actor.mu.0.weight" in state:
        return "TD3"
    if "q_net.q_net.0.weight" in state:
        return "DQN"
    if "action_net.weight" in state:
        return "PPO" if "clip_range" in data else "A2C"
    raise PolicyError(
        "SB3 zip: cannot tell the algorithm from the policy class or the tensor names "
        f"({', '.join(sorted(state)[:4])} ...); supported are PPO, A2C, SAC, TD3, DDPG, DQN"
    )


def _activation(data: dict[str, Any], algorithm: str) -> str:
    pk = data.get("policy_kwargs")
    act = pk.get("activation_fn") if isinstance(pk, dict) else None
    if act is None:
        return DEFAULT_ACTIVATION.get(algorithm, "tanh")
    m = re.search(r"(\w+)'?>?\s*$", str(act).strip())
    name = m.group(1) if m else str(act)
    if name in _TORCH_ACTIVATIONS:
        return _TORCH_ACTIVATIONS[name]
    if name.lower() in ACTIVATIONS:
        return name.lower()
    raise PolicyError(
        f"SB3 zip: unsupported activation_fn {act!r}; supported: {sorted(_TORCH_ACTIVATIONS)}"
    )


def _read_zip(path: Path) -> tuple[dict[str, Any], dict[str, Tensor], str]:
    try:
        with zipfile.ZipFile(path) as zf:
            names = check_zip(zf, path)
            if not is_sb3_zip(names):
                raise PolicyError(
                    f"{path}: not an SB3 model zip (it lacks the 'data' / 'policy.pth' members); "
                    "save the model with model.save(...)"
                )
            raw = zf.read("data")
            pth = zf.read("policy.pth")
            version = ""
            if "_stable_baselines3_version" in names:
                version = zf.read("_stable_baselines3_version").decode("utf-8", "replace").strip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise PolicyError(
            f"{path}: not a readable zip archive ({e}); an SB3 model is the .zip written by "
            "model.save — this file is truncated, corrupt or of another format"
        ) from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PolicyError(
            f"{path}: the SB3 'data' member is not JSON (a very old SB3 version?); re-save the "
            "model with stable-baselines3 >= 1.0"
        ) from None
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: the SB3 'data' member is not a JSON object")
    try:
        state = torch.load(io.BytesIO(pth), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure here is an unreadable policy.pth
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PolicyError(f"{path}: cannot read policy.pth safely ({first})") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise PolicyError(f"{path}: policy.pth is not a state dict of tensors")
    return data, state, version


def _check_features_extractor(state: dict[str, Tensor], where: str) -> None:
    for k in state:
        if re.match(r"^(actor\.|q_net\.)?(pi_|vf_)?features_extractor\.", k):
            raise PolicyError(
                f"{where}: the policy has a learned features extractor ({k}: a CNN or custom "
                "extractor); only MlpPolicy on vector observations is supported"
            )


def load_sb3(path: str | Path) -> Policy:
    """Load an SB3 zip (see the module docstring); no normalization (the caller adds it)."""
    path = Path(path)
    data, state, version = _read_zip(path)
    where = str(path)
    algorithm = detect_algorithm(data, state)
    _check_features_extractor(state, where)
    activation = _activation(data, algorithm)
    obs_space = data.get("observation_space")
    act_space = data.get("action_space")
    obs_kind = _space_kind(obs_space)
    if obs_kind not in ("box", "unknown"):
        raise PolicyError(
            f"{where}: observation space {obs_kind} is not supported (vector Box observations only)"
        )
    act_kind = _space_kind(act_space)
    pk = data.get("policy_kwargs") if isinstance(data.get("policy_kwargs"), dict) else {}
    use_sde = bool(data.get("use_sde", False) or pk.get("use_sde", False))

    if algorithm in ("PPO", "A2C", "TRPO"):
        names = linear_keys(state, "mlp_extractor.shared_net.")
        names += linear_keys(state, "mlp_extractor.policy_net.")
        if "action_net.weight" not in state:
            raise PolicyError(f"{where}: no action_net tensors in this {algorithm} policy")
        if any(k.startswith("lstm") for k in state):
            raise PolicyError(f"{where}: recurrent (LSTM) policies are not supported")
        layers = linears(state, [*names, "action_net"], where)
        net: nn.Module = mlp_from_linears(layers, activation)
        out_dim = int(layers[-1][0].shape[0])
        if act_kind == "unknown":
            act_kind = "box" if "log_std" in state else "discrete"
        if act_kind == "discrete":
            return _finish(path, data, version, algorithm, net, layers, "categorical",
                           n_actions=out_dim)
        if act_kind != "box":
            raise PolicyError(
                f"{where}: action space {act_kind} is not supported (Box or Discrete only)"
            )
        squash = bool(pk.get("squash_output", False))
        log_std = None if use_sde else state.get("log_std")
        if log_std is not None and log_std.shape != (out_dim,):
            raise PolicyError(
                f"{where}: log_std has shape {tuple(log_std.shape)}, not ({out_dim},)"
            )
        return _finish(path, data, version, algorithm, net, layers, "gaussian", act_dim=out_dim,
                       log_std=log_std, squash=squash, use_sde=use_sde)

    if algorithm == "DQN":
        names = linear_keys(state, "q_net.q_net.")
        if not names:
            raise PolicyError(f"{where}: no q_net.q_net tensors in this DQN policy")
        layers = linears(state, names, where)
        net = mlp_from_linears(layers, activation)
        return _finish(path, data, version, algorithm, net, layers, "qvalues",
                       n_actions=int(layers[-1][0].shape[0]))

    if act_kind not in ("box", "unknown"):
        raise PolicyError(f"{where}: {algorithm} needs a Box action space, not {act_kind}")

    if algorithm in ("SAC", "TQC"):
        latent = linears(state, linear_keys(state, "actor.latent_pi."), where)
        latent_net = mlp_from_linears(latent, activation, trailing_activation=True)
        if "actor.mu.weight" in state and "actor.log_std.weight" in state:
            mu = linears(state, ["actor.mu"], where)
            ls = linears(state, ["actor.log_std"], where)
            _check_chain(latent, mu, where)
            net = GaussianActor(latent_net, _lin(mu[0]), _lin(ls[0]), -20.0, 2.0, "clamp")
            return _finish(path, data, version, algorithm, net, latent + mu, "gaussian",
                           act_dim=int(mu[0][0].shape[0]), squash=True, state_dependent_std=True)
        # gSDE: mu is Linear (clip_mean == 0) or Sequential(Linear, Hardtanh(clip_mean)).
        mu_name = "actor.mu.0" if "actor.mu.0.weight" in state else "actor.mu"
        if f"{mu_name}.weight" not in state:
            raise PolicyError(f"{where}: no actor.mu tensors in this {algorithm} policy")
        mu = linears(state, [mu_name], where)
        _check_chain(latent, mu, where)
        parts: list[nn.Module] = [latent_net, _lin(mu[0])]
        if mu_name == "actor.mu.0":
            clip_mean = float(pk.get("clip_mean", 2.0))
            parts.append(nn.Hardtanh(-clip_mean, clip_mean))
        net = nn.Sequential(*parts)
        return _finish(path, data, version, algorithm, net, latent + mu, "gaussian",
                       act_dim=int(mu[0][0].shape[0]), squash=True, use_sde=True)

    if algorithm in ("TD3", "DDPG"):
        names = linear_keys(state, "actor.mu.")
        if not names:
            raise PolicyError(f"{where}: no actor.mu tensors in this {algorithm} policy")
        layers = linears(state, names, where)
        net = mlp_from_linears(layers, activation, output_activation="tanh")
        return _finish(path, data, version, algorithm, net, layers, "deterministic",
                       act_dim=int(layers[-1][0].shape[0]))
    raise PolicyError(f"{where}: unsupported SB3 algorithm {algorithm}")


def _lin(wb: tuple[Tensor, Tensor]) -> nn.Linear:
    return linear_layer(*wb)


def _check_chain(latent: list[tuple[Tensor, Tensor]], head: list[tuple[Tensor, Tensor]],
                 where: str) -> None:
    if latent and latent[-1][0].shape[0] != head[0][0].shape[1]:
        raise PolicyError(f"{where}: actor head does not fit the latent network's width")


def _finish(
    path: Path,
    data: dict[str, Any],
    version: str,
    algorithm: str,
    net: nn.Module,
    layers: list[tuple[Tensor, Tensor]],
    head: str,
    *,
    n_actions: int | None = None,
    act_dim: int | None = None,
    log_std: Tensor | None = None,
    squash: bool = False,
    state_dependent_std: bool = False,
    use_sde: bool = False,
) -> Policy:
    where = str(path)
    obs_dim = int(layers[0][0].shape[1])
    obs_space = data.get("observation_space")
    act_space = data.get("action_space")
    shape = _json_shape(obs_space)
    if shape is not None and int(np.prod(shape)) != obs_dim:
        raise PolicyError(
            f"{where}: the observation space has shape {shape} but the network takes {obs_dim} "
            "inputs; the file is inconsistent"
        )
    _, class_name = _policy_class(data)
    info = PolicyInfo(
        format="sb3",
        path=str(path),
        sha256=sha256_file(path),
        algorithm=algorithm,
        details={"policy_class": class_name, "sb3_version": version, "use_sde": use_sde},
    )
    kw: dict[str, Any] = {}
    if head in ("categorical", "qvalues"):
        n_json = act_space.get("n") if isinstance(act_space, dict) else None
        if n_json is not None and str(n_json).strip().isdigit() and int(n_json) != n_actions:
            raise PolicyError(
                f"{where}: the action space has {n_json} actions but the network gives "
                f"{n_actions}; the file is inconsistent"
            )
        kw["n_actions"] = n_actions
    else:
        assert act_dim is not None
        ashape = _json_shape(act_space)
        if ashape is not None and int(np.prod(ashape)) != act_dim:
            raise PolicyError(
                f"{where}: the action space has shape {ashape} but the network gives {act_dim} "
                "actions; the file is inconsistent"
            )
        low = high = None
        if isinstance(act_space, dict):
            low = _parse_printed_array(act_space.get("low"), act_dim)
            high = _parse_printed_array(act_space.get("high"), act_dim)
        if (
            low is not None
            and high is not None
            and np.all(np.isfinite(low))
            and np.all(np.isfinite(high))
        ):
            kw["action_low"], kw["action_high"] = low, high
            info.details["action_bounds"] = "file"
        else:
            kw["act_dim"] = act_dim
            info.details["action_bounds"] = "environment"
    return Policy(
        net,
        head,  # type: ignore[arg-type]
        obs_dim,
        log_std=log_std,
        squash=squash,
        state_dependent_std=state_dependent_std,
        info=info,
        **kw,
    )


def find_vecnormalize(path: Path) -> Path | None:
    """A VecNormalize pickle beside an SB3 zip: ``<stem>_vecnormalize.pkl``,
    ``<stem>/vecnormalize.pkl`` (RL Zoo layout) or ``vecnormalize.pkl``, first found."""
    for cand in (
        path.with_name(f"{path.stem}_vecnormalize.pkl"),
        path.with_suffix("") / "vecnormalize.pkl",
        path.with_name("vecnormalize.pkl"),
    ):
        if cand.is_file():
            return cand
    return None
