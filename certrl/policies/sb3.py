"""Stable-Baselines3 ``model.save`` zips (PPO, A2C, SAC, TD3, DDPG, DQN with ``MlpPolicy``; DQN,
PPO, A2C with ``CnnPolicy``), read without unpickling anything.

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

Pixel policies (``CnnPolicy``: DQN, PPO, A2C, also TRPO; see :mod:`certrl.policies.cnn`): SB3's
``NatureCNN`` (``[q_net.]features_extractor.cnn.{0,2,4}`` + ``linear.0``, ReLU; PPO / A2C read
``pi_features_extractor.*``, which is also right for ``share_features_extractor=False``) then
the MLP above, as one ``nn.Sequential`` starting with ``Unflatten(1, (C, H, W))``. The
observation shape is the saved ``observation_space`` (channels first: SB3 saves the space after
``VecTransposeImage``; a channels-last shape does not fit the network and is refused). SB3's
``preprocess_obs`` divides by 255 when ``normalize_images`` (the default) and the space is
``uint8`` in ``[0, 255]``: that becomes :meth:`ObsNormalization.pixels`, otherwise there is no
scaling. The same holds for an ``MlpPolicy`` on such image spaces (flattened frames). Other
extractors (custom ones, ``MultiInputPolicy``, non-NatureCNN convolution shapes, SAC / TD3 with
a CNN) are refused with a one-line :class:`PolicyError`.

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
from certrl.policies.base import (
    ACTIVATIONS,
    ObsNormalization,
    Policy,
    PolicyError,
    PolicyInfo,
    sha256_file,
)
from certrl.policies.cnn import (
    check_dense_chain,
    check_image_shape,
    conv_weights,
    infer_image_shape,
    nature_cnn_strides,
    pixel_details,
    pixel_sequential,
)

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


_FE_KEY = re.compile(r"^(actor\.|critic\.|q_net\.|q_net_target\.)?(pi_|vf_)?features_extractor\.")
_NATURE_KEY = re.compile(r"^(cnn\.\d+|linear\.0)\.(weight|bias)$")


def _features_prefix(state: dict[str, Tensor], algorithm: str, where: str) -> str | None:
    """The key prefix of the actor's learned features extractor (``None``: ``MlpPolicy``'s
    parameter-free ``FlattenExtractor``); refuses extractors other than ``NatureCNN``."""
    if not any(_FE_KEY.match(k) for k in state):
        return None
    if algorithm not in ("PPO", "A2C", "TRPO", "DQN"):
        raise PolicyError(
            f"{where}: {algorithm} with a learned features extractor (CnnPolicy) is not "
            "supported; pixel policies are supported for DQN, PPO and A2C — export the actor "
            "to TorchScript or ONNX"
        )
    if algorithm == "DQN":
        prefix = "q_net.features_extractor."
    elif any(k.startswith("pi_features_extractor.") for k in state):
        prefix = "pi_features_extractor."
    else:
        prefix = "features_extractor."
    keys = [k[len(prefix):] for k in state if k.startswith(prefix)]
    if not keys:
        raise PolicyError(f"{where}: the {algorithm} policy has no {prefix}* tensors")
    if any(k.startswith("extractors.") for k in keys):
        raise PolicyError(
            f"{where}: a MultiInputPolicy (CombinedExtractor on Dict observations) is not "
            "supported; certrl takes one Box observation (vector or image)"
        )
    bad = [k for k in keys if not _NATURE_KEY.match(k)]
    if bad or not any(k.startswith("cnn.") for k in keys) or "linear.0.weight" not in keys:
        what = f"{prefix}{bad[0]}" if bad else f"{prefix}{sorted(keys)[0]}"
        raise PolicyError(
            f"{where}: the policy has a custom features extractor ({what} ...); only SB3's "
            "NatureCNN (CnnPolicy) and FlattenExtractor (MlpPolicy) are supported — export the "
            "actor to TorchScript or ONNX"
        )
    return prefix


def _visible_values(text: Any) -> list[float] | None:
    """The numbers visible in a (possibly summarised) printed array, or ``None``."""
    if not isinstance(text, str):
        return None
    vals = re.findall(r"-?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?|-?inf", text)
    try:
        return [float(v) for v in vals] or None
    except ValueError:
        return None


def _scales_images(data: dict[str, Any]) -> bool:
    """Whether SB3's ``preprocess_obs`` divides this model's (image) observations by 255:
    ``normalize_images`` (default true) and a ``uint8`` space with bounds 0 and 255."""
    pk = data.get("policy_kwargs")
    if isinstance(pk, dict) and pk.get("normalize_images") is False:
        return False
    space = data.get("observation_space")
    if not isinstance(space, dict):
        return True
    dtype = space.get("dtype")
    if dtype is not None and str(dtype) != "uint8":
        return False
    low, high = _visible_values(space.get("low")), _visible_values(space.get("high"))
    if low is not None and any(v != 0 for v in low):
        return False
    return not (high is not None and any(v != 255 for v in high))


class _Pixels:
    """What the pixel part of an SB3 policy contributes to the :class:`Policy`."""

    def __init__(self, shape: tuple[int, ...], scaled: bool, details: dict[str, Any]) -> None:
        self.shape = shape
        self.norm = ObsNormalization.pixels() if scaled else None
        self.details = details


def _nature_cnn(data: dict[str, Any], state: dict[str, Tensor], prefix: str, where: str
                ) -> tuple[_Pixels, Any, tuple[int, ...], tuple[Tensor, Tensor]]:
    """(pixel spec, conv weights, strides, ``linear.0``) of a NatureCNN extractor."""
    idx = sorted(int(m.group(1)) for k in state
                 if (m := re.match(re.escape(prefix) + r"cnn\.(\d+)\.weight$", k)))
    convs = conv_weights(state, [f"{prefix}cnn.{i}" for i in idx], where)
    strides = nature_cnn_strides(convs, where)
    (lin,) = linears(state, [f"{prefix}linear.0"], where)
    n_flat = int(lin[0].shape[1])
    shape = _json_shape(data.get("observation_space"))
    if shape is not None:
        img = check_image_shape(shape, convs, strides, n_flat, where, "saved")
        source = "file"
    else:
        img = infer_image_shape(convs, strides, n_flat, where)
        source = f"inferred from the network (square {img[1]} x {img[2]} frames)"
    scaled = _scales_images(data)
    details = pixel_details(img, "NatureCNN", scaled, source)
    details["features_extractor_keys"] = prefix + "*"
    return _Pixels(img, scaled, details), convs, strides, lin


def _pixel_net(pix: _Pixels, convs: Any, strides: tuple[int, ...], lin: tuple[Tensor, Tensor],
               rest: list[tuple[Tensor, Tensor]], activation: str, where: str) -> nn.Sequential:
    """NatureCNN (+ its ReLU linear layer) followed by ``rest`` (latent layers with
    ``activation`` after each, then the head Linear)."""
    dense = [(lin[0], lin[1], "relu")]
    dense += [(w, b, activation) for w, b in rest[:-1]]
    dense.append((rest[-1][0], rest[-1][1], None))
    check_dense_chain(int(lin[0].shape[1]), dense, where)
    return pixel_sequential(pix.shape, convs, strides, dense)  # type: ignore[arg-type]


def load_sb3(path: str | Path) -> Policy:
    """Load an SB3 zip (see the module docstring); no normalization (the caller adds it)."""
    path = Path(path)
    data, state, version = _read_zip(path)
    where = str(path)
    algorithm = detect_algorithm(data, state)
    obs_space = data.get("observation_space")
    act_space = data.get("action_space")
    obs_kind = _space_kind(obs_space)
    if obs_kind not in ("box", "unknown"):
        policy = " (MultiInputPolicy)" if obs_kind == "Dict" else ""
        raise PolicyError(
            f"{where}: observation space {obs_kind}{policy} is not supported (Box observations "
            "only: vectors, or images with CnnPolicy)"
        )
    prefix = _features_prefix(state, algorithm, where)
    activation = _activation(data, algorithm)
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
        pix: _Pixels | None = None
        net: nn.Module
        if prefix is not None:
            pix, convs, strides, lin = _nature_cnn(data, state, prefix, where)
            net = _pixel_net(pix, convs, strides, lin, layers, activation, where)
        else:
            net = mlp_from_linears(layers, activation)
        out_dim = int(layers[-1][0].shape[0])
        if act_kind == "unknown":
            act_kind = "box" if "log_std" in state else "discrete"
        if act_kind == "discrete":
            return _finish(path, data, version, algorithm, net, layers, "categorical",
                           n_actions=out_dim, pixels=pix)
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
                       log_std=log_std, squash=squash, use_sde=use_sde, pixels=pix)

    if algorithm == "DQN":
        names = linear_keys(state, "q_net.q_net.")
        if not names:
            raise PolicyError(f"{where}: no q_net.q_net tensors in this DQN policy")
        layers = linears(state, names, where)
        pix = None
        if prefix is not None:
            pix, convs, strides, lin = _nature_cnn(data, state, prefix, where)
            net = _pixel_net(pix, convs, strides, lin, layers, activation, where)
        else:
            net = mlp_from_linears(layers, activation)
        return _finish(path, data, version, algorithm, net, layers, "qvalues",
                       n_actions=int(layers[-1][0].shape[0]), pixels=pix)

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
    pixels: _Pixels | None = None,
) -> Policy:
    where = str(path)
    obs_space = data.get("observation_space")
    act_space = data.get("action_space")
    shape = _json_shape(obs_space)
    if pixels is not None:
        obs_dim = int(np.prod(pixels.shape))
    else:
        obs_dim = int(layers[0][0].shape[1])
        if shape is not None and int(np.prod(shape)) != obs_dim:
            raise PolicyError(
                f"{where}: the observation space has shape {shape} but the network takes "
                f"{obs_dim} inputs; the file is inconsistent"
            )
        if shape is not None and len(shape) == 3 and _scales_images(data):
            # MlpPolicy on uint8 image frames: SB3 flattens them and divides by 255 first
            pixels = _Pixels(shape, True, pixel_details(shape, "FlattenExtractor", True, "file"))
    _, class_name = _policy_class(data)
    info = PolicyInfo(
        format="sb3",
        path=str(path),
        sha256=sha256_file(path),
        algorithm=algorithm,
        details={"policy_class": class_name, "sb3_version": version, "use_sde": use_sde},
    )
    if pixels is not None:
        info.details.update(pixels.details)
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
        obs_norm=None if pixels is None else pixels.norm,
        obs_shape=None if pixels is None else pixels.shape,
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
