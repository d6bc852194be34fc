"""PyTorch checkpoints (``torch.save``): CleanRL state dicts, and whole pickled modules.

The file is first read with ``torch.load(weights_only=True)``, which only rebuilds tensors and
plain containers and cannot run code. Recognised CleanRL actors (``state_dict`` of the agent, or
a tuple / list / dict of state dicts such as TD3's ``(actor, qf1, qf2)``, from which the actor is
picked):

=====================================  ==========================================  ===========
keys                                   network                                     head
=====================================  ==========================================  ===========
``actor_mean.{0,2,4}`` + ``actor_logstd``  PPO continuous: Tanh MLP                 gaussian
``actor.{0,2,4}`` (+ ``critic.*``)     PPO discrete: Tanh MLP                      categorical
``fc1``, ``fc2``, ``fc_mu``            TD3 / DDPG: ReLU, tanh, ``* action_scale +  deterministic
                                       action_bias`` (buffers; else env bounds)
``fc1``, ``fc2``, ``fc_mean``,         SAC: ReLU; log-std ``tanh`` mapped onto      gaussian +
``fc_logstd``                          ``[-5, 2]``; tanh then scale / bias          squash
``network.{0,2,4}``                    DQN: ReLU MLP                               qvalues
``network.{0,2,4}`` convs, ``7``, ``9``  ``dqn_atari.py``: NatureCNN on ``x / 255``   qvalues
``network.{0,2,4,7}`` + ``actor``      ``ppo_atari.py``: NatureCNN, ``actor`` on     categorical
(+ ``critic``)                         ``network(x / 255)``
=====================================  ==========================================  ===========

The Atari networks are pixel policies (:mod:`certrl.policies.cnn`): the ``/ 255`` becomes the
policy's :meth:`ObsNormalization.pixels`, and the observation shape is the environment's image
space when the loader is given it (``(4, 84, 84)`` for CleanRL's ``FrameStack(4)``), else the
smallest square frames that fit the first dense layer (84 x 84 for NatureCNN). Convolution
strides are not in a state dict: only NatureCNN's shapes (strides 4, 2, 1) are accepted.
Distributional (C51, ``atoms``) and recurrent (LSTM) agents are refused.

CleanRL does not save its observation normalization (``gym.wrappers.NormalizeObservation``
statistics live in the training env and are lost): pass them with ``--obs-stats stats.npz``
(``obs_stats=``; keys ``mean``, ``var``, optional ``clip`` (default 10, CleanRL's
``TransformObservation`` clip) and ``epsilon`` (default 1e-8)), or the policy sees raw
observations. Action bounds of PPO come from the environment (CleanRL clips with ``ClipAction``).

A file that ``weights_only`` refuses is a pickled Python object (typically a whole
``nn.Module``). Unpickling it can run arbitrary code, so it is refused unless
``unsafe_pickle=True`` (``--unsafe-pickle``); it is then loaded with ``weights_only=False`` and
wrapped like a TorchScript module (:func:`certrl.policies.torchscript.wrap_module`).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from certrl.policies._nets import (
    GaussianActor,
    linear_keys,
    linear_layer,
    linears,
    mlp_from_linears,
)
from certrl.policies.base import ObsNormalization, Policy, PolicyError, PolicyInfo, sha256_file
from certrl.policies.cnn import (
    check_dense_chain,
    check_image_shape,
    conv_weights,
    infer_image_shape,
    nature_cnn_strides,
    pixel_details,
    pixel_sequential,
    space_image_shape,
)


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()
    )


def cleanrl_kind(state: dict[str, Tensor]) -> str | None:
    """Which CleanRL actor a state dict holds (``ppo_continuous``, ``ppo_discrete``, ``td3``,
    ``sac``, ``dqn``, ``dqn_atari``, ``ppo_atari``; ``c51`` and ``lstm`` are recognised to be
    refused), or ``None``."""
    net0 = state.get("network.0.weight")
    if net0 is not None and "atoms" in state:
        return "c51"
    if net0 is not None and net0.ndim == 4:
        if any(k.startswith("lstm.") for k in state):
            return "lstm"
        if "actor.weight" in state:
            return "ppo_atari"
        return "dqn_atari"
    if "actor_mean.0.weight" in state and "actor_logstd" in state:
        return "ppo_continuous"
    if "fc1.weight" in state and "fc_mu.weight" in state:
        return "td3"
    if "fc1.weight" in state and "fc_mean.weight" in state and "fc_logstd.weight" in state:
        return "sac"
    if "actor.0.weight" in state:
        return "ppo_discrete"
    if "network.0.weight" in state:
        return "dqn"
    return None


def pick_actor_state(obj: Any) -> dict[str, Tensor] | None:
    """The first recognised CleanRL actor state dict in ``obj`` (a state dict, or a tuple / list /
    dict of them, searched two levels deep)."""
    if _is_state_dict(obj):
        return obj if cleanrl_kind(obj) else None
    children: list[Any] = []
    if isinstance(obj, dict):
        # prefer keys that name the actor ("actor", "model", "agent" ...)
        items = sorted(obj.items(), key=lambda kv: 0 if "actor" in str(kv[0]).lower() else 1)
        children = [v for _, v in items]
    elif isinstance(obj, (tuple, list)):
        children = list(obj)
    for child in children:
        if _is_state_dict(child) and cleanrl_kind(child):
            return child
    for child in children:
        if isinstance(child, (dict, tuple, list)) and not _is_state_dict(child):
            found = pick_actor_state(child)
            if found is not None:
                return found
    return None


def _atari_policy(state: dict[str, Tensor], kind: str, where: str, info: PolicyInfo,
                  observation_space: Any) -> Policy:
    """``dqn_atari.py``'s ``QNetwork`` or ``ppo_atari.py``'s ``Agent`` (actor only)."""
    pat = re.compile(r"network\.(\d+)\.weight$")
    idx = sorted(int(m.group(1)) for k in state if (m := pat.match(k)))
    conv_idx = [i for i in idx if state[f"network.{i}.weight"].ndim == 4]
    dense_idx = [i for i in idx if i not in conv_idx]
    if not dense_idx or max(conv_idx) > min(dense_idx):
        raise PolicyError(f"{where}: network.* is not convolutions followed by dense layers")
    convs = conv_weights(state, [f"network.{i}" for i in conv_idx], where)
    strides = nature_cnn_strides(convs, where)
    dense_layers = linears(state, [f"network.{i}" for i in dense_idx], where)
    if kind == "ppo_atari":
        dense_layers += linears(state, ["actor"], where)
    dense = [(w, b, "relu") for w, b in dense_layers[:-1]]
    dense.append((dense_layers[-1][0], dense_layers[-1][1], None))
    n_flat = int(dense[0][0].shape[1])
    check_dense_chain(n_flat, dense, where)
    env_shape = space_image_shape(observation_space)
    if env_shape is not None:
        shape = check_image_shape(env_shape, convs, strides, n_flat, where, "environment's")
        source = "environment"
    else:
        shape = infer_image_shape(convs, strides, n_flat, where)
        source = f"inferred from the network (square {shape[1]} x {shape[2]} frames)"
    info.details.update(pixel_details(shape, "NatureCNN", True, source))
    net = pixel_sequential(shape, convs, strides, dense)
    head = "categorical" if kind == "ppo_atari" else "qvalues"
    return Policy(net, head, int(np.prod(shape)), n_actions=int(dense[-1][0].shape[0]),
                  obs_norm=ObsNormalization.pixels(), obs_shape=shape, info=info)


def policy_from_cleanrl_state(state: dict[str, Tensor], path: Path,
                              observation_space: Any = None) -> Policy:
    """Rebuild a CleanRL actor from its state dict (see the module docstring);
    ``observation_space``: the environment's, when known (the frame shape of Atari agents)."""
    where = str(path)
    kind = cleanrl_kind(state)
    info = PolicyInfo(format="cleanrl", path=str(path), sha256=sha256_file(path),
                      algorithm={"ppo_continuous": "PPO", "ppo_discrete": "PPO", "td3": "TD3/DDPG",
                                 "sac": "SAC", "dqn": "DQN", "dqn_atari": "DQN",
                                 "ppo_atari": "PPO"}.get(kind or "", ""),
                      details={"cleanrl_actor": kind})
    if kind in ("c51", "lstm"):
        what = ("a distributional C51 agent (atoms): its Q-values are expectations over atoms"
                if kind == "c51" else "a recurrent (LSTM) Atari agent")
        raise PolicyError(f"{where}: {what}, which certrl does not load; supported CleanRL "
                          "agents are PPO, DQN, TD3/DDPG, SAC and the Atari DQN / PPO")
    if kind in ("dqn_atari", "ppo_atari"):
        return _atari_policy(state, kind, where, info, observation_space)
    if kind == "ppo_continuous":
        layers = linears(state, linear_keys(state, "actor_mean."), where)
        act_dim = int(layers[-1][0].shape[0])
        log_std = state["actor_logstd"].detach().float().reshape(-1)
        if log_std.numel() != act_dim:
            raise PolicyError(f"{where}: actor_logstd has {log_std.numel()} entries, not {act_dim}")
        net = mlp_from_linears(layers, "tanh")
        info.details["action_bounds"] = "environment"
        return Policy(net, "gaussian", int(layers[0][0].shape[1]), act_dim=act_dim,
                      log_std=log_std, info=info)
    if kind in ("ppo_discrete", "dqn"):
        prefix = "actor." if kind == "ppo_discrete" else "network."
        layers = linears(state, linear_keys(state, prefix), where)
        net = mlp_from_linears(layers, "tanh" if kind == "ppo_discrete" else "relu")
        head = "categorical" if kind == "ppo_discrete" else "qvalues"
        return Policy(net, head, int(layers[0][0].shape[1]), n_actions=int(layers[-1][0].shape[0]),
                      info=info)
    if kind in ("td3", "sac"):
        out = "fc_mu" if kind == "td3" else "fc_mean"
        hidden = linears(state, ["fc1", "fc2"], where)
        head_layers = linears(state, [out], where)
        if hidden[-1][0].shape[0] != head_layers[0][0].shape[1]:
            raise PolicyError(f"{where}: {out} does not fit fc2's width")
        act_dim = int(head_layers[0][0].shape[0])
        kw: dict[str, Any] = {}
        scale, bias = state.get("action_scale"), state.get("action_bias")
        if scale is not None and bias is not None:
            s = scale.detach().double().reshape(-1).numpy()
            b = bias.detach().double().reshape(-1).numpy()
            if s.size != act_dim or b.size != act_dim:
                raise PolicyError(
                    f"{where}: action_scale / action_bias do not have {act_dim} entries"
                )
            kw["action_low"] = (b - s).astype(np.float32)
            kw["action_high"] = (b + s).astype(np.float32)
            info.details["action_bounds"] = "file"
        else:
            kw["act_dim"] = act_dim
            info.details["action_bounds"] = "environment"
        obs_dim = int(hidden[0][0].shape[1])
        if kind == "td3":
            net = mlp_from_linears(hidden + head_layers, "relu", output_activation="tanh")
            return Policy(net, "deterministic", obs_dim, info=info, **kw)
        latent = mlp_from_linears(hidden, "relu", trailing_activation=True)
        ls = linears(state, ["fc_logstd"], where)
        actor = GaussianActor(latent, linear_layer(*head_layers[0]), linear_layer(*ls[0]),
                              -5.0, 2.0, "tanh")
        return Policy(actor, "gaussian", obs_dim, squash=True, state_dependent_std=True,
                      info=info, **kw)
    raise PolicyError(
        f"{where}: unrecognised state dict (keys {', '.join(sorted(state)[:5])} ...); expected a "
        "CleanRL actor (actor_mean.* + actor_logstd, fc1/fc2/fc_mu, network.*)"
    )


def load_torch_file(path: str | Path, *, unsafe_pickle: bool = False,
                    observation_space: Any = None, action_space: Any = None) -> Policy:
    """Load a ``torch.save`` file: a CleanRL state dict, or (with ``unsafe_pickle``) a whole
    pickled module (see the module docstring), which takes what it does not declare from the
    environment's spaces when given."""
    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise PolicyError(
                f"{path}: not a readable PyTorch checkpoint ({_first_line(e)}); the file is "
                "corrupt or truncated, copy it again"
            ) from None
        if not unsafe_pickle:
            m = re.search(r"GLOBAL (\S+) was not an allowed", str(e))
            names = f" (it names {m.group(1)})" if m else ""
            raise PolicyError(
                f"{path}: this checkpoint is a pickled Python object{names}, e.g. a whole "
                "nn.Module, and unpickling it can run arbitrary code; pass --unsafe-pickle only if "
                "you trust the file, or re-save just the state_dict"
            ) from None
        obj = _unsafe_load(path)
    except Exception as e:  # noqa: BLE001 - truncated / corrupt files raise many types
        raise PolicyError(
            f"{path}: not a readable PyTorch checkpoint ({_first_line(e)}); the file is corrupt "
            "or truncated, copy it again"
        ) from None
    if isinstance(obj, nn.Module):
        from certrl.policies.torchscript import wrap_module

        return wrap_module(obj, path, fmt="pickle", observation_space=observation_space,
                           action_space=action_space)
    state = pick_actor_state(obj)
    if state is None:
        what = type(obj).__name__
        keys = ""
        if _is_state_dict(obj):
            keys = f" with keys {', '.join(sorted(obj)[:5])} ..."
        raise PolicyError(
            f"{path}: a PyTorch checkpoint holding a {what}{keys}, not a recognised actor; "
            "expected a CleanRL state dict (actor_mean.* + actor_logstd, fc1/fc2/fc_mu, network.*)"
            " or a whole module (with --unsafe-pickle)"
        )
    return policy_from_cleanrl_state(state, path, observation_space)


def _unsafe_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - report any unpickling failure as a bad file
        raise PolicyError(
            f"{path}: cannot unpickle the checkpoint ({_first_line(e)}); the classes it needs may "
            "not be importable here — re-save the state_dict instead"
        ) from None


def load_obs_stats(path: str | Path) -> ObsNormalization:
    """Observation statistics from an ``.npz`` (keys ``mean``, ``var``, optional ``clip``,
    ``epsilon``); read with ``allow_pickle=False``. ``clip`` defaults to 10 (CleanRL); a
    non-positive or infinite ``clip`` means no clipping."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if not {"mean", "var"} <= keys:
                raise PolicyError(
                    f"{path}: observation statistics need arrays 'mean' and 'var' (found "
                    f"{sorted(keys)}); save them with np.savez(path, mean=..., var=...)"
                )
            mean = np.asarray(z["mean"], dtype=np.float64).ravel()
            var = np.asarray(z["var"], dtype=np.float64).ravel()
            clip = float(z["clip"]) if "clip" in keys else 10.0
            eps = float(z["epsilon"]) if "epsilon" in keys else 1e-8
    except FileNotFoundError:
        raise PolicyError(
            f"{path}: observation statistics file not found; check the path"
        ) from None
    except PolicyError:
        raise
    except Exception as e:  # noqa: BLE001 - np.load raises many types for bad files
        raise PolicyError(
            f"{path}: not a readable .npz of observation statistics ({_first_line(e)}); save it "
            "with np.savez(path, mean=..., var=...)"
        ) from None
    if mean.shape != var.shape or mean.size == 0:
        raise PolicyError(f"{path}: 'mean' and 'var' must be non-empty and of the same size")
    if np.any(var < 0) or not np.all(np.isfinite(mean)) or not np.all(np.isfinite(var)):
        raise PolicyError(f"{path}: 'var' must be finite and >= 0, 'mean' finite")
    if clip <= 0 or not np.isfinite(clip):
        clip = float("inf")
    return ObsNormalization(mean=mean, var=var, clip=clip, epsilon=eps)
