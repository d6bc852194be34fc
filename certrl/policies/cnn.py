"""Pixel (Atari CNN) policies: the shared pieces of the SB3, CleanRL, TorchScript and ONNX
loaders.

Conventions (all pixel policies):

* observations are channels-first frame stacks, e.g. ``(4, 84, 84)`` ``uint8`` in ``[0, 255]``
  (SB3 ``AtariWrapper`` + ``VecFrameStack(4)`` + ``VecTransposeImage``, CleanRL's
  ``FrameStack(4)``); certrl passes them to the policy *flattened*: rows ``[B, C*H*W]`` of the
  raw values in C, H, W order, and ``Policy.obs_shape`` records ``(C, H, W)``;
* the ``/ 255`` the training library applies inside its network is the policy's observation
  normalization (:meth:`ObsNormalization.pixels`), so the normalized space is ``[0, 1]``
  pixels and ``policy.net`` takes ``[B, C*H*W]`` floats in ``[0, 1]``;
* rebuilt networks (SB3 ``NatureCNN``, CleanRL's Atari nets) are one ``nn.Sequential``:
  ``Unflatten(1, (C, H, W))``, ``Conv2d`` / ``ReLU`` layers, ``Flatten``, ``Linear`` layers and
  their activations, the head ``Linear`` last.

Convolution strides are not stored in a state dict. Only NatureCNN-shaped stacks (kernels
8, 4, 3 with 32, 64, 64 output channels: Mnih et al. 2015, used unchanged by SB3's
``CnnPolicy`` and CleanRL's Atari scripts) are rebuilt, with their strides 4, 2, 1; other
convolution shapes are refused (:class:`PolicyError`). TorchScript and ONNX modules carry their
strides and are wrapped by :class:`ImageInput` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from certrl.policies._nets import chained_layers
from certrl.policies.base import ACTIVATIONS, PolicyError

#: NatureCNN (Mnih et al. 2015): kernel sizes, output channels and strides of its convolutions.
NATURE_CNN_KERNELS: tuple[int, ...] = (8, 4, 3)
NATURE_CNN_CHANNELS: tuple[int, ...] = (32, 64, 64)
NATURE_CNN_STRIDES: tuple[int, ...] = (4, 2, 1)

#: The ``[0, 255] -> [0, 1]`` scale of pixel policies.
PIXEL_SCALE = 255.0

ConvWeights = list[tuple[Tensor, Tensor]]


def space_image_shape(space: Any) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of an image observation space (a ``Box`` with three dimensions), as
    declared (channels first is checked by the loaders against the network), else ``None``."""
    shape = getattr(space, "shape", None)
    if space is None or shape is None or getattr(space, "dtype", None) is None:
        return None
    if len(shape) != 3 or not all(int(v) > 0 for v in shape):
        return None
    return (int(shape[0]), int(shape[1]), int(shape[2]))


def format_shape(shape: Sequence[int]) -> str:
    """``(4, 84, 84)``; ``(8,)``."""
    dims = [str(int(v)) for v in shape]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def conv_weights(state: dict[str, Tensor], names: list[str], where: str) -> ConvWeights:
    """``(weight, bias)`` of each named ``Conv2d`` layer; checks they are 4-D and chain."""
    return chained_layers(
        state, names, where, ndim=4, noun="convolution", unit="channels",
        previous="previous one", wrong_kind="layer {name} is not a 2-D convolution (weight "
                                            "shape {shape})")


def nature_cnn_strides(convs: ConvWeights, where: str) -> tuple[int, ...]:
    """The strides of a NatureCNN stack (4, 2, 1), after checking the weights have its shapes;
    anything else is refused: strides are not stored in a state dict."""
    kernels = tuple(int(w.shape[2]) for w, _ in convs)
    channels = tuple(int(w.shape[0]) for w, _ in convs)
    square = all(int(w.shape[2]) == int(w.shape[3]) for w, _ in convs)
    if kernels != NATURE_CNN_KERNELS or channels != NATURE_CNN_CHANNELS or not square:
        found = ", ".join(f"{int(w.shape[0])}x{int(w.shape[2])}x{int(w.shape[3])}"
                          for w, _ in convs)
        raise PolicyError(
            f"{where}: convolutions of shapes [{found}] (channels x kernel) are not NatureCNN's "
            "[32x8x8, 64x4x4, 64x3x3]; only NatureCNN-style extractors are supported (their "
            "strides are not stored in the file): export the policy to TorchScript or ONNX"
        )
    return NATURE_CNN_STRIDES


def conv_output_hw(hw: tuple[int, int], convs: ConvWeights,
                   strides: Sequence[int]) -> tuple[int, int]:
    """Spatial size after the (unpadded) convolutions; non-positive if the image is too small."""
    h, w = hw
    for (wt, _), s in zip(convs, strides, strict=True):
        h = (h - int(wt.shape[2])) // int(s) + 1
        w = (w - int(wt.shape[3])) // int(s) + 1
    return h, w


def flat_features(shape: tuple[int, int, int], convs: ConvWeights, strides: Sequence[int]) -> int:
    """Size of the flattened convolution output for ``(C, H, W)`` inputs (0 if too small)."""
    h, w = conv_output_hw(shape[1:], convs, strides)  # type: ignore[arg-type]
    return int(convs[-1][0].shape[0]) * h * w if h > 0 and w > 0 else 0


def infer_image_shape(convs: ConvWeights, strides: Sequence[int], n_flat: int,
                      where: str) -> tuple[int, int, int]:
    """The smallest square ``(C, H, H)`` input the convolutions turn into ``n_flat`` features
    (84 x 84 for NatureCNN's 3136), for files that do not record their observation shape."""
    channels = int(convs[-1][0].shape[0])
    side = int(round(np.sqrt(n_flat / channels))) if n_flat > 0 else 0
    if side <= 0 or channels * side * side != n_flat:
        raise PolicyError(
            f"{where}: the first dense layer takes {n_flat} inputs, which is not the flattened "
            f"output of the convolutions on a square image ({channels} channels); pass the "
            "environment (--env) so certrl knows the observation shape"
        )
    for h in range(1, 4096):
        if conv_output_hw((h, h), convs, strides) == (side, side):
            return (int(convs[0][0].shape[1]), h, h)
    raise PolicyError(f"{where}: cannot infer the image size from the network")  # pragma: no cover


def check_image_shape(shape: tuple[int, ...], convs: ConvWeights, strides: Sequence[int],
                      n_flat: int, where: str, source: str) -> tuple[int, int, int]:
    """Check ``shape`` (from the file or the environment: ``source``) is channels-first and
    fits the network; returns it as ``(C, H, W)``."""
    if len(shape) != 3:
        raise PolicyError(
            f"{where}: the {source} observation shape {format_shape(shape)} is not an image "
            "(C, H, W); a CNN policy needs image observations"
        )
    c_in = int(convs[0][0].shape[1])
    img = (int(shape[0]), int(shape[1]), int(shape[2]))
    if img[0] != c_in:
        if img[2] == c_in:
            raise PolicyError(
                f"{where}: the {source} observation shape {format_shape(img)} is channels-last "
                f"but the network's first convolution takes {c_in} channels first; certrl "
                f"needs channels-first frames ({c_in}, {img[0]}, {img[1]}) (SB3 "
                "VecTransposeImage)"
            )
        raise PolicyError(
            f"{where}: the {source} observation shape {format_shape(img)} has {img[0]} channels "
            f"but the network's first convolution takes {c_in}; the policy belongs to another "
            "environment or frame stack"
        )
    got = flat_features(img, convs, strides)
    if got != n_flat:
        raise PolicyError(
            f"{where}: on {format_shape(img)} frames the convolutions give {got} features but "
            f"the first dense layer takes {n_flat}; the policy was trained on frames of another "
            "size (check the resize / frame-stack wrappers)"
        )
    return img


Dense = list[tuple[Tensor, Tensor, str | None]]


def pixel_sequential(obs_shape: tuple[int, int, int], convs: ConvWeights,
                     strides: Sequence[int], dense: Dense) -> nn.Sequential:
    """``nn.Sequential(Unflatten(1, obs_shape), Conv2d, ReLU, ..., Flatten, Linear, act, ...)``.

    ``dense``: ``(weight, bias, activation after it or None)`` for each Linear layer."""
    layers: list[nn.Module] = [nn.Unflatten(1, tuple(obs_shape))]
    for (w, b), s in zip(convs, strides, strict=True):
        conv = nn.Conv2d(int(w.shape[1]), int(w.shape[0]), tuple(int(k) for k in w.shape[2:]),
                         stride=int(s))
        with torch.no_grad():
            conv.weight.copy_(w)
            conv.bias.copy_(b)
        layers += [conv, nn.ReLU()]
    layers.append(nn.Flatten())
    for w, b, act in dense:
        lin = nn.Linear(int(w.shape[1]), int(w.shape[0]))
        with torch.no_grad():
            lin.weight.copy_(w.float())
            lin.bias.copy_(b.float())
        layers.append(lin)
        if act is not None:
            if act not in ACTIVATIONS:
                raise PolicyError(f"unsupported activation {act!r}")
            layers.append(ACTIVATIONS[act]())
    return nn.Sequential(*layers)


def check_dense_chain(n_flat_expected: int | None, dense: Dense, where: str) -> None:
    """The Linear layers chain (each takes the previous one's outputs)."""
    prev = n_flat_expected
    for w, _, _ in dense:
        if prev is not None and int(w.shape[1]) != prev:
            raise PolicyError(
                f"{where}: a dense layer takes {int(w.shape[1])} inputs but the layer before it "
                f"gives {prev}"
            )
        prev = int(w.shape[0])


class ImageInput(nn.Module):
    """Adapts a module called on ``[B, C, H, W]`` images (raw ``[0, 255]`` values, the usual
    export of an SB3 / CleanRL policy, which divides by 255 itself) to certrl's pixel convention:
    ``forward(x [B, C*H*W] in [0, 1]) = module(x.reshape(B, C, H, W) * scale)``."""

    def __init__(self, module: nn.Module, shape: tuple[int, ...],
                 scale: float = PIXEL_SCALE) -> None:
        super().__init__()
        self.module = module
        self.shape = tuple(int(v) for v in shape)
        self.scale = float(scale)

    def forward(self, x: Tensor) -> Tensor:
        img = x.reshape((x.shape[0], *self.shape))
        if self.scale != 1.0:
            img = img * self.scale
        return self.module(img)


def pixel_details(obs_shape: Sequence[int], extractor: str, scaled: bool,
                  shape_from: str) -> dict[str, Any]:
    """``PolicyInfo.details`` entries of a pixel policy."""
    return {
        "observation": "pixels",
        "obs_shape": [int(v) for v in obs_shape],
        "features_extractor": extractor,
        "pixel_scaling": "obs / 255 (normalized space: [0, 1] pixels)" if scaled else "none",
        "obs_shape_from": shape_from,
    }
