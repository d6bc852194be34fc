"""TorchScript policies (``torch.jit.save``) and whole pickled modules.

**Loading TorchScript is trusting it**: a TorchScript archive contains code that runs when the
module is called (and its ops can read and write files), so load only files you trust. certrl's
own bundle format (:mod:`certrl.policies.bundle`) is the safe alternative.

Contract: ``forward(obs[B, obs_dim]) -> [B, k]`` float, where the output is either the action
(continuous environments; ``linear`` head, clipped to the environment's bounds) or the logits
(discrete environments; ``categorical`` head, argmax). Which one is decided by the environment
in ``validate_spaces`` (or up front: by a bool attribute ``discrete`` on the module, or by the
environment's action space when the loader is given it). The observation size is read from an
int attribute ``obs_dim`` if the module has one, else from the environment's observation space
when the loader is given it (``load_policy(..., observation_space=)``, which the CLI always
passes), else from the first 2-D parameter (a ``Linear`` weight); a dry forward pass confirms
it. The module takes *raw* observations unless ``--obs-stats`` / ``--vecnormalize`` statistics
are given.

Pixel policies: when the environment's observation space is an image (a ``Box`` with three
dimensions, ``(C, H, W)``), the module is first tried on ``[B, C, H, W]`` frames of raw
``[0, 255]`` values (the usual export of an SB3 / CleanRL Atari policy, which divides by 255
itself). If that works it is wrapped (:class:`certrl.policies.cnn.ImageInput`) so that
``policy.net`` takes certrl's flattened ``[B, C*H*W]`` rows in ``[0, 1]``, with
:meth:`ObsNormalization.pixels` as the policy's normalization (``policy.normalize(x) = x / 255``)
and ``Policy.obs_shape = (C, H, W)``; a module that instead takes flattened rows is loaded as
above.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from certrl.policies.base import (
    MIN_ROWS,
    ObsNormalization,
    Policy,
    PolicyError,
    PolicyInfo,
    sha256_file,
)
from certrl.policies.cnn import ImageInput, pixel_details, space_image_shape


def is_torchscript_zip(names: list[str]) -> bool:
    """Whether a zip's member names are those of a ``torch.jit.save`` archive."""
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def space_obs_dim(observation_space: Any) -> int | None:
    """The flat observation size of a Gymnasium ``Box`` space: the product of its shape, so
    ``C * H * W`` for an image space (``None`` if it is not a Box)."""
    shape = getattr(observation_space, "shape", None)
    if observation_space is None or not shape or getattr(observation_space, "dtype", None) is None:
        return None
    return int(np.prod(shape))


def space_is_discrete(action_space: Any) -> bool | None:
    """``True`` for a ``Discrete`` action space, ``False`` for a ``Box``, ``None`` if unknown."""
    if action_space is None:
        return None
    if hasattr(action_space, "n") and not getattr(action_space, "shape", None):
        return True
    return False if getattr(action_space, "shape", None) else None


def _infer_obs_dim(module: nn.Module, where: str, observation_space: Any = None) -> int:
    declared = getattr(module, "obs_dim", None)
    if isinstance(declared, int) and not isinstance(declared, bool) and declared > 0:
        return declared
    from_env = space_obs_dim(observation_space)
    if from_env is not None:
        return from_env
    for _, p in module.named_parameters():
        if p.ndim == 4:
            raise PolicyError(
                f"{where}: a convolutional module (parameter of shape {tuple(p.shape)}); pass "
                "--env with the image environment (or observation_space= to load_policy) so "
                "certrl knows the frame shape"
            )
        if p.ndim == 2:
            return int(p.shape[1])
    raise PolicyError(
        f"{where}: cannot infer the observation size (no Linear weight and no environment "
        "given); pass --env (or observation_space= to load_policy), or give the module an int "
        "attribute obs_dim"
    )


def wrap_module(module: nn.Module, path: Path, fmt: str, observation_space: Any = None,
                action_space: Any = None) -> Policy:
    """Wrap a module mapping raw observations to actions or logits as a :class:`Policy`
    (``linear`` head until the environment says it is discrete; see the module docstring).
    ``observation_space`` / ``action_space``: the environment's spaces, when known."""
    where = str(path)
    module.eval()
    image = space_image_shape(observation_space)
    pixel_out = _try_images(module, image) if image is not None else None
    net: nn.Module = module
    if pixel_out is not None:
        assert image is not None
        obs_dim = int(np.prod(image))
        out = pixel_out
        net = ImageInput(module, image)
    else:
        obs_dim = _infer_obs_dim(module, where, observation_space)
        try:
            with torch.no_grad():
                out = module(torch.zeros(MIN_ROWS, obs_dim))
        except Exception as e:  # noqa: BLE001 - user code: any failure means a bad module
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            also = "" if image is None else (
                f" (nor on frames [{MIN_ROWS}, {', '.join(map(str, image))}])")
            raise PolicyError(
                f"{where}: a dry forward pass on zeros of shape [{MIN_ROWS}, {obs_dim}] failed "
                f"({first}){also}; the module must map observations [B, obs_dim] (or image "
                "frames [B, C, H, W]) to actions [B, k]"
            ) from None
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != MIN_ROWS:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise PolicyError(
            f"{where}: forward returned {shape} for a batch of {MIN_ROWS}; it must return a "
            "[B, k] tensor of actions or logits"
        )
    if not out.is_floating_point():
        raise PolicyError(
            f"{where}: forward returns integer actions; export the logits instead (certrl takes "
            "the argmax itself, and attacks need gradients)"
        )
    k = int(out.shape[1])
    info = PolicyInfo(format=fmt, path=str(path), sha256=sha256_file(path),
                      details={"module": type(module).__name__})
    pixel: dict[str, Any] = {}
    if pixel_out is not None:
        assert image is not None
        info.details.update(pixel_details(image, "module", True, "environment"))
        info.details["pixel_input"] = "the module is called on raw [0, 255] frames [B, C, H, W]"
        pixel = {"obs_norm": ObsNormalization.pixels(), "obs_shape": image}
    declared = getattr(module, "discrete", None)
    if not isinstance(declared, bool):
        declared = space_is_discrete(action_space)
        if declared is not None:
            info.details["head_from_env"] = True
    if declared:
        return Policy(net, "categorical", obs_dim, n_actions=k, info=info, **pixel)
    info.details.setdefault("head_from_env", declared is None)
    info.details["action_bounds"] = "environment"
    return Policy(net, "linear", obs_dim, act_dim=k, info=info, **pixel)


def _try_images(module: nn.Module, image: tuple[int, ...]) -> Any:
    """The module's output on zero frames ``[MIN_ROWS, C, H, W]``, or ``None`` if it does not
    take images of that shape (it may take flattened rows)."""
    try:
        with torch.no_grad():
            out = module(torch.zeros((MIN_ROWS, *image)))
    except Exception:  # noqa: BLE001 - user code: it may take flattened observations instead
        return None
    if isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[0] == MIN_ROWS:
        return out
    return None


def load_torchscript(path: str | Path, observation_space: Any = None,
                     action_space: Any = None) -> Policy:
    """Load a ``torch.jit.save`` archive (trusted code: see the module docstring); the
    environment's spaces, when given, supply what the module does not declare."""
    path = Path(path)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except (zipfile.BadZipFile, RuntimeError, ValueError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PolicyError(
            f"{path}: not a loadable TorchScript archive ({first}); re-export it with "
            "torch.jit.save(torch.jit.script(actor), path)"
        ) from None
    return wrap_module(module, path, fmt="torchscript", observation_space=observation_space,
                       action_space=action_space)
