"""ONNX actor graphs as differentiable torch policies.

**Loading an ONNX file is safe**: an ONNX graph is a protobuf of operators and tensors, it holds
no code, and certrl never runs it with a foreign runtime: the graph is *converted* to torch
modules (by certrl's own small converter; ``onnx`` is only used to parse the protobuf), so
attacks get gradients and bound propagation gets layers. Weights in external data files (the
dynamo exporter writes ``<name>.onnx.data`` beside the model) are read only from files in the
model's own folder, and are part of the policy's SHA-256.

Accepted graphs: one float input ``[B, obs_dim]`` (or ``[B, C, H, W]`` images: see *Pixel
policies* below); the *first* graph output is the action,
and the other outputs (SB3's values and log-probabilities) are dropped with everything only
they need. The op set is that of MLP policies as exported by ``torch.onnx.export`` (both
exporters) and by the Stable-Baselines3 export guide (``OnnxableSB3Policy``): see
:data:`SUPPORTED_OPS` (plus :data:`PIXEL_OPS` on image inputs). Anything else (convolutions
on vector inputs, control flow, custom domains) is refused with a one-line
:class:`PolicyError` naming the op.

Heads (what the first output means):

* an integer output computed by ``ArgMax`` (SB3 PPO / A2C on ``Discrete`` actions): the
  ArgMax input, with a trailing softmax / log-normalization stripped, is the logits:
  ``categorical`` head (argmax, or Gumbel-max sampling on the logits). Any other integer output
  is refused: export the logits;
* a float output produced by a final ``Tanh`` (SB3 SAC / TD3 actors): an action in ``[-1, 1]``
  rescaled to the environment's bounds like SB3's ``predict``: ``deterministic`` head;
* any other float output: the action itself (``linear`` head, clipped to the environment's
  bounds like SB3 PPO's ``predict``), or logits when the environment's action space is
  ``Discrete`` (given to the loader, or later in ``validate_spaces``): ``categorical`` head
  (so a DQN ``q_net`` export acts greedily, as its argmax).

Action bounds always come from the environment (``validate_spaces``): ONNX files do not record
them. The observation size is the input's static last dimension, else the environment's
observation space (``observation_space=``; ``--env`` on the command line).

Batch: the converted module takes any batch size, also when the graph declares a fixed one
(SB3's guide exports with a batch of 1). A graph that only runs on its fixed batch size (a
Reshape to a constant shape) is run in chunks of that size.

Normalization: a graph that starts with ``(x - mean) / std`` or ``(x - mean) * inv_std``
(optionally followed by a symmetric ``Clip``) with constant statistics has it extracted as the
policy's :class:`~certrl.policies.base.ObsNormalization` (``epsilon = 0``; ``* inv_std`` is
applied as ``/ (1 / inv_std)``, equal up to float32 rounding), so certrl knows the normalized
space; otherwise the whole graph is the network and the policy acts on raw observations (SB3
``VecNormalize`` statistics outside the graph are then given with ``--vecnormalize``).

Pixel policies: when the environment's observation space is an image (a ``Box`` with three
dimensions ``(C, H, W)``, given to the loader) and the graph input is ``[B, C, H, W]``, the graph
is taken to be called on raw ``[0, 255]`` frames (the usual export of an SB3 / CleanRL Atari
policy, which divides by 255 inside). The policy then follows certrl's pixel convention
(:mod:`certrl.policies.cnn`): its normalization is :meth:`ObsNormalization.pixels`
(``x / 255``) and ``policy.net`` takes flattened ``[B, C*H*W]`` rows in ``[0, 1]``, computing
``graph(x.reshape(B, C, H, W) * 255)``. Image graphs may also use ``Conv`` (2-D: strides, pads,
dilations, group, ``auto_pad``) and ``MaxPool`` (:data:`PIXEL_OPS`). A chain
``[Div / Mul by a constant] -> Conv / activation / MaxPool ... -> Flatten or Reshape -> MLP``
becomes ``nn.Sequential(nn.Unflatten(1, (C, H, W)), nn.Conv2d, nn.ReLU, ..., nn.Flatten(),
nn.Linear, ...)`` (the ``* 255`` and the graph's own scaling are folded into the first layer),
checked numerically against the graph; anything else runs in the interpreter. Without an image
observation space an image input is refused.

Structure: chains of ``Gemm`` / ``MatMul`` + ``Add`` / elementwise affine ops and elementwise
activations become ``nn.Sequential(nn.Linear, nn.Tanh, ...)``, which ``certrl bound`` accepts;
the chain is checked numerically against the graph (relative 1e-4: merged affine ops round
differently). Any other graph runs in :class:`OnnxGraphModule`, a torch interpreter of the
graph: differentiable, but not accepted by bound propagation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from certrl.policies.base import (
    MIN_ROWS,
    ObsNormalization,
    Policy,
    PolicyError,
    PolicyInfo,
    sha256_file,
)
from certrl.policies.cnn import (
    PIXEL_SCALE,
    ImageInput,
    format_shape,
    pixel_details,
    space_image_shape,
)
from certrl.policies.torchscript import space_is_discrete, space_obs_dim

__all__ = ["PIXEL_OPS", "SUPPORTED_OPS", "OnnxGraphModule", "is_onnx_file", "load_onnx"]

_INSTALL = "pip install onnx (or pip install certrl[onnx])"

# ------------------------------------------------------------------------------ detection
#: ModelProto fields that may follow ``ir_version``: number -> protobuf wire type.
_MODEL_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}


def _varint(buf: bytes, i: int) -> tuple[int, int] | None:
    value = shift = 0
    while i < len(buf):
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 63:
            return None
    return None


def _plausible_model_proto(head: bytes) -> bool:
    """Whether ``head`` can start a serialized ``onnx.ModelProto``: ``ir_version`` (field 1,
    a small varint) first, then only ModelProto fields with their wire types."""
    if len(head) < 2 or head[0] != 0x08:
        return False
    i = 0
    first = True
    while i < len(head):
        tag = _varint(head, i)
        if tag is None:
            return not first  # a tag cut off by the 16-byte window
        key, i = tag
        number, wire = key >> 3, key & 7
        if _MODEL_FIELDS.get(number) != wire:
            return False
        value = _varint(head, i)
        if value is None:
            return not first
        v, i = value
        if first and not 1 <= v <= 32:
            return False  # ir_version: 3 .. 11 in practice
        first = False
        if wire == 2:
            if v > 1 << 31:
                return False
            i += v  # skip the payload (may run past the window: accept)
    return True


def is_onnx_file(path: Path, head: bytes) -> bool:
    """Whether ``path`` (whose first bytes are ``head``) is an ONNX model.

    Cheap: a ``.onnx`` file needs a plausible protobuf start, or (only for ``.onnx``) to parse
    with ``onnx`` when installed; other names need the plausible start. Never true for zips,
    torch pickles, JSON or safetensors files."""
    if head[:2] == b"PK" or head[:1] in (b"\x80", b"{") or head.lstrip()[:1] == b"{":
        return False
    if Path(path).suffix.lower() == ".safetensors":
        return False
    if _plausible_model_proto(head):
        return True
    if Path(path).suffix.lower() != ".onnx":
        return False
    try:
        import onnx
    except ImportError:
        return False
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - any parse failure: not ONNX
        return False
    return len(model.graph.node) > 0 or len(model.graph.output) > 0


# --------------------------------------------------------------------------- graph model
@dataclass
class _Node:
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""

    @property
    def qualified(self) -> str:
        return f"{self.domain}.{self.op}" if self.domain not in ("", "ai.onnx") else self.op


_ONNX_DTYPES: dict[int, torch.dtype] = {
    1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32,
    7: torch.int64, 9: torch.bool, 10: torch.float16, 11: torch.float64, 16: torch.bfloat16,
}


def _dtype(code: int) -> torch.dtype:
    if code not in _ONNX_DTYPES:
        raise _OpError(f"tensor type {code} is not supported (float / int / bool only)")
    return _ONNX_DTYPES[code]


class _OpError(Exception):
    """An op that cannot be evaluated as given (becomes a one-line PolicyError)."""


def _ints(t: Tensor | None) -> list[int]:
    return [] if t is None else [int(v) for v in t.reshape(-1).tolist()]


def _axes(ins: list[Tensor | None], at: dict[str, Any], idx: int) -> list[int] | None:
    if "axes" in at:
        return [int(a) for a in at["axes"]]
    if len(ins) > idx and ins[idx] is not None:
        return _ints(ins[idx])
    return None


def _norm_axis(axis: int, rank: int) -> int:
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < max(rank, 1):
        raise _OpError(f"axis {axis} out of range for a rank-{rank} tensor")
    return a


# ---------------------------------------------------------------------- op implementations
_Op = Callable[[list[Any], dict[str, Any], int], list[Tensor]]
_OPS: dict[str, _Op] = {}


def _op(*names: str) -> Callable[[_Op], _Op]:
    def deco(fn: _Op) -> _Op:
        for n in names:
            _OPS[n] = fn
        return fn
    return deco


def _unary(name: str, fn: Callable[[Tensor], Tensor]) -> None:
    _OPS[name] = lambda ins, at, opset: [fn(ins[0])]


for _name, _fn in {
    "Relu": torch.relu, "Tanh": torch.tanh, "Sigmoid": torch.sigmoid, "Neg": torch.neg,
    "Abs": torch.abs, "Sqrt": torch.sqrt, "Exp": torch.exp, "Log": torch.log,
    "Reciprocal": torch.reciprocal, "Erf": torch.erf, "Softsign": F.softsign,
    "Softplus": F.softplus, "HardSwish": F.hardswish, "Floor": torch.floor, "Ceil": torch.ceil,
    "Sign": torch.sign, "Not": torch.logical_not, "Sin": torch.sin, "Cos": torch.cos,
}.items():
    _unary(_name, _fn)


@_op("Identity", "Dropout")
def _identity(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    return [ins[0]]


def _div(a: Tensor, b: Tensor) -> Tensor:
    if not a.is_floating_point() and not b.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


for _name, _fn2 in {
    "Add": torch.add, "Sub": torch.sub, "Mul": torch.mul, "Div": _div, "Pow": torch.pow,
    "Equal": torch.eq, "Greater": torch.gt, "Less": torch.lt, "GreaterOrEqual": torch.ge,
    "LessOrEqual": torch.le, "And": torch.logical_and, "Or": torch.logical_or,
}.items():
    _OPS[_name] = (lambda f: lambda ins, at, opset: [f(ins[0], ins[1])])(_fn2)


@_op("Where")
def _where(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    return [torch.where(ins[0].bool(), ins[1], ins[2])]


def _fold(fn: Callable[[Tensor, Tensor], Tensor]) -> _Op:
    def run(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
        out = ins[0]
        for t in ins[1:]:
            out = fn(out, t)
        return [out]
    return run


_OPS["Max"] = _fold(torch.maximum)
_OPS["Min"] = _fold(torch.minimum)
_OPS["Sum"] = _fold(torch.add)
_OPS["Mean"] = lambda ins, at, opset: [_fold(torch.add)(ins, at, opset)[0] / len(ins)]


@_op("Elu")
def _elu(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    return [F.elu(ins[0], alpha=float(at.get("alpha", 1.0)))]


@_op("LeakyRelu")
def _leaky(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    return [F.leaky_relu(ins[0], negative_slope=float(at.get("alpha", 0.01)))]


_SELU_ALPHA = 1.67326319217681884765625
_SELU_GAMMA = 1.05070102214813232421875


@_op("Selu")
def _selu(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    alpha = float(at.get("alpha", _SELU_ALPHA))
    gamma = float(at.get("gamma", _SELU_GAMMA))
    x = ins[0]
    return [gamma * torch.where(x > 0, x, alpha * torch.expm1(torch.clamp(x, max=0.0)))]


@_op("Gelu")
def _gelu(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    return [F.gelu(ins[0], approximate=str(at.get("approximate", "none")))]


@_op("HardSigmoid")
def _hard_sigmoid(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    alpha, beta = float(at.get("alpha", 0.2)), float(at.get("beta", 0.5))
    return [torch.clamp(alpha * ins[0] + beta, 0.0, 1.0)]


def _clip_bounds(ins: list[Any], at: dict[str, Any], opset: int) -> tuple[Any, Any]:
    if opset < 11:
        return at.get("min", -math.inf), at.get("max", math.inf)
    lo = ins[1] if len(ins) > 1 else None
    hi = ins[2] if len(ins) > 2 else None
    return lo, hi


@_op("Clip")
def _clip(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    x = ins[0]
    lo, hi = _clip_bounds(ins, at, opset)
    if isinstance(lo, Tensor):
        x = torch.maximum(x, lo.to(x.dtype))
    elif lo is not None and lo != -math.inf:
        x = torch.clamp(x, min=float(lo))
    if isinstance(hi, Tensor):
        x = torch.minimum(x, hi.to(x.dtype))
    elif hi is not None and hi != math.inf:
        x = torch.clamp(x, max=float(hi))
    return [x]


@_op("Gemm")
def _gemm(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    a, b = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
    ta, tb = int(at.get("transA", 0)), int(at.get("transB", 0))
    if not ta and tb and alpha == 1.0 and beta == 1.0 and (c is None or c.ndim <= 1):
        if c is not None and c.numel() not in (1, b.shape[0]):
            raise _OpError(f"Gemm bias of shape {tuple(c.shape)}")
        if c is not None and c.numel() == 1 and b.shape[0] != 1:
            c = c.reshape(1).expand(b.shape[0])
        return [F.linear(a, b, None if c is None else c.reshape(-1))]
    y = (a.t() if ta else a) @ (b.t() if tb else b)
    if alpha != 1.0:
        y = alpha * y
    if c is not None:
        y = y + (c if beta == 1.0 else beta * c)
    return [y]


@_op("MatMul")
def _matmul(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    return [torch.matmul(ins[0], ins[1])]


@_op("Flatten")
def _flatten(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    x = ins[0]
    axis = int(at.get("axis", 1))
    axis = axis + x.ndim if axis < 0 else axis
    lead = int(np.prod(x.shape[:axis])) if axis > 0 else 1
    return [x.reshape(lead, -1)]


@_op("Reshape")
def _reshape(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    x, shape = ins[0], _ints(ins[1])
    allowzero = int(at.get("allowzero", 0))
    target = [
        x.shape[i] if (s == 0 and not allowzero and i < x.ndim) else s for i, s in enumerate(shape)
    ]
    return [x.reshape(target)]


@_op("Squeeze")
def _squeeze(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    x = ins[0]
    axes = _axes(ins, at, 1)
    if axes is None:
        return [x.squeeze()]
    for a in sorted((_norm_axis(a, x.ndim) for a in axes), reverse=True):
        x = x.squeeze(a)
    return [x]


@_op("Unsqueeze")
def _unsqueeze(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    x = ins[0]
    axes = _axes(ins, at, 1) or []
    rank = x.ndim + len(axes)
    for a in sorted(_norm_axis(a, rank) for a in axes):
        x = x.unsqueeze(a)
    return [x]


@_op("Concat")
def _concat(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    return [torch.cat([t for t in ins if t is not None], int(at.get("axis", 0)))]


@_op("Transpose")
def _transpose(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    x = ins[0]
    perm = at.get("perm") or list(range(x.ndim))[::-1]
    return [x.permute(*[int(p) for p in perm])]


@_op("Shape")
def _shape(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    dims = list(ins[0].shape)
    start, end = at.get("start"), at.get("end")
    return [torch.tensor(dims[start:end], dtype=torch.int64, device=ins[0].device)]


@_op("Size")
def _size(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    return [torch.tensor(ins[0].numel(), dtype=torch.int64, device=ins[0].device)]


@_op("Gather")
def _gather(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    x, idx = ins[0], ins[1].to(device=ins[0].device, dtype=torch.int64)
    axis = _norm_axis(int(at.get("axis", 0)), x.ndim)
    n = x.shape[axis]
    flat = torch.where(idx < 0, idx + n, idx).reshape(-1)
    out = x.index_select(axis, flat)
    return [out.reshape(tuple(x.shape[:axis]) + tuple(idx.shape) + tuple(x.shape[axis + 1:]))]


@_op("Slice")
def _slice(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    x = ins[0]
    if opset < 10:
        starts, ends = list(at["starts"]), list(at["ends"])
        axes = list(at.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(ins[1]), _ints(ins[2])
        axes = _ints(ins[3]) if len(ins) > 3 and ins[3] is not None else list(range(len(starts)))
        steps = _ints(ins[4]) if len(ins) > 4 and ins[4] is not None else [1] * len(starts)
    for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
        a = _norm_axis(int(a), x.ndim)
        if st == 0:
            raise _OpError("Slice with step 0")
        # Python's slice clamping (negative indices, huge ends, negative steps) is ONNX's
        idx = list(range(x.shape[a]))[slice(int(s), int(e), int(st))]
        x = x.index_select(a, torch.tensor(idx, dtype=torch.int64, device=x.device))
    return [x]


@_op("Cast")
def _cast(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    return [ins[0].to(_dtype(int(at["to"])))]


@_op("ConstantOfShape")
def _constant_of_shape(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    value = at.get("value")
    fill = value.reshape(-1)[0] if isinstance(value, Tensor) else torch.tensor(0.0)
    return [torch.full(tuple(_ints(ins[0])), fill.item(), dtype=fill.dtype,
                       device=ins[0].device)]


@_op("Expand")
def _expand(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    x = ins[0]
    shape = torch.broadcast_shapes(tuple(x.shape), tuple(_ints(ins[1])))
    return [x.expand(shape)]


def _reduce(fn: Callable[[Tensor, list[int], bool], Tensor], axes_input_from: int) -> _Op:
    def run(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
        x = ins[0]
        axes = at.get("axes") if opset < axes_input_from else _axes(ins, {}, 1)
        keep = bool(int(at.get("keepdims", 1)))
        if not axes:
            if int(at.get("noop_with_empty_axes", 0)):
                return [x]
            axes = list(range(x.ndim))
        dims = [_norm_axis(int(a), x.ndim) for a in axes]
        return [fn(x, dims, keep)]
    return run


def _amax(x: Tensor, d: list[int], k: bool) -> Tensor:
    return torch.amax(x, dim=d, keepdim=k)


def _amin(x: Tensor, d: list[int], k: bool) -> Tensor:
    return torch.amin(x, dim=d, keepdim=k)


_OPS["ReduceSum"] = _reduce(lambda x, d, k: torch.sum(x, dim=d, keepdim=k), 13)
_OPS["ReduceMean"] = _reduce(lambda x, d, k: torch.mean(x, dim=d, keepdim=k), 18)
_OPS["ReduceMax"] = _reduce(_amax, 18)
_OPS["ReduceMin"] = _reduce(_amin, 18)
_OPS["ReduceLogSumExp"] = _reduce(lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k), 18)


def _softmax_like(fn: Callable[[Tensor, int], Tensor]) -> _Op:
    def run(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
        x = ins[0]
        if opset >= 13:
            return [fn(x, _norm_axis(int(at.get("axis", -1)), x.ndim))]
        axis = _norm_axis(int(at.get("axis", 1)), x.ndim)  # coerced to 2-D at axis
        lead = int(np.prod(x.shape[:axis])) if axis > 0 else 1
        return [fn(x.reshape(lead, -1), 1).reshape(x.shape)]
    return run


_OPS["Softmax"] = _softmax_like(lambda x, d: torch.softmax(x, dim=d))
_OPS["LogSoftmax"] = _softmax_like(lambda x, d: torch.log_softmax(x, dim=d))


def _arg(largest: bool) -> _Op:
    def run(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
        x = ins[0]
        axis = _norm_axis(int(at.get("axis", 0)), x.ndim)
        keep = bool(int(at.get("keepdims", 1)))
        y = x if largest else -x
        if int(at.get("select_last_index", 0)):
            n = x.shape[axis]
            idx = n - 1 - torch.argmax(y.flip(axis), dim=axis, keepdim=keep)
        else:
            idx = torch.argmax(y, dim=axis, keepdim=keep)
        return [idx.to(torch.int64)]
    return run


_OPS["ArgMax"] = _arg(True)
_OPS["ArgMin"] = _arg(False)

#: The ONNX ops (default domain) certrl converts (``Constant`` nodes are folded at load time).
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted({*_OPS, "Constant"}))



def _conv_pads(x: Tensor, kernel: list[int], strides: list[int], dilations: list[int],
               at: dict[str, Any]) -> list[int]:
    """ONNX ``pads`` ``[begin_1 .. begin_n, end_1 .. end_n]``, from ``auto_pad`` if set."""
    nd = len(kernel)
    auto = str(at.get("auto_pad", "NOTSET") or "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begins, ends = [], []
        for i in range(nd):
            size = int(x.shape[2 + i])
            out = -(-size // strides[i])
            total = max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size, 0)
            small, big = total // 2, total - total // 2
            begins.append(small if auto == "SAME_UPPER" else big)
            ends.append(big if auto == "SAME_UPPER" else small)
        return begins + ends
    if auto == "VALID":
        return [0] * (2 * nd)
    if auto != "NOTSET":
        raise _OpError(f"auto_pad {auto!r}")
    pads = [int(v) for v in at.get("pads", [0] * (2 * nd))]
    if len(pads) != 2 * nd:
        raise _OpError(f"pads {pads} for a {nd}-D window")
    return pads


def _pad_input(x: Tensor, pads: list[int], value: float = 0.0) -> tuple[Tensor, list[int]]:
    """Symmetric pads stay for the op (returned); asymmetric ones are applied to ``x``."""
    nd = len(pads) // 2
    begins, ends = pads[:nd], pads[nd:]
    if begins == ends:
        return x, begins
    torch_pads: list[int] = []
    for i in reversed(range(nd)):  # F.pad: last dimension first
        torch_pads += [begins[i], ends[i]]
    return F.pad(x, torch_pads, value=value), [0] * nd


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_MAX_POOL = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}


def _conv(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    x, w = ins[0], ins[1]
    b = ins[2] if len(ins) > 2 else None
    nd = w.ndim - 2
    if nd not in _CONV or x.ndim != w.ndim:
        raise _OpError(f"Conv with a weight of shape {tuple(w.shape)} on an input of shape "
                       f"{tuple(x.shape)}")
    kernel = [int(k) for k in at.get("kernel_shape", w.shape[2:])]
    strides = [int(v) for v in at.get("strides", [1] * nd)]
    dilations = [int(v) for v in at.get("dilations", [1] * nd)]
    x, padding = _pad_input(x, _conv_pads(x, kernel, strides, dilations, at))
    return [_CONV[nd](x, w, b, stride=strides, padding=padding, dilation=dilations,
                      groups=int(at.get("group", 1)))]


def _max_pool(ins: list[Any], at: dict[str, Any], opset: int) -> list[Tensor]:
    x = ins[0]
    kernel = [int(k) for k in at["kernel_shape"]]
    nd = len(kernel)
    if nd not in _MAX_POOL or x.ndim != nd + 2:
        raise _OpError(f"MaxPool with a {nd}-D window on an input of shape {tuple(x.shape)}")
    if int(at.get("storage_order", 0)):
        raise _OpError("MaxPool with storage_order 1")
    strides = [int(v) for v in at.get("strides", [1] * nd)]
    dilations = [int(v) for v in at.get("dilations", [1] * nd)]
    x, padding = _pad_input(x, _conv_pads(x, kernel, strides, dilations, at), -math.inf)
    return [_MAX_POOL[nd](x, kernel, stride=strides, padding=padding, dilation=dilations,
                          ceil_mode=bool(int(at.get("ceil_mode", 0))))]


_OPS["Conv"] = _conv
_OPS["MaxPool"] = _max_pool

#: Ops converted only in graphs on image inputs ``[B, C, H, W]`` (pixel policies).
PIXEL_OPS: tuple[str, ...] = ("Conv", "MaxPool")

#: Ops that can leave a tensor unchanged (checked on the shapes seen in dry runs).
_ALIAS_OPS = ("Identity", "Dropout", "Reshape", "Flatten", "Expand", "Squeeze", "Unsqueeze", "Cast")


# -------------------------------------------------------------------------- the interpreter
def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _execute(nodes: Sequence[_Node], env: dict[str, Any], opset: int,
             get: Callable[[str], Any]) -> dict[str, Any]:
    """Run ``nodes`` (topologically ordered), reading values from ``env`` then ``get``."""
    for node in nodes:
        ins = [None if not name else (env[name] if name in env else get(name))
               for name in node.inputs]
        try:
            outs = _OPS[node.op](ins, node.attrs, opset)
        except _OpError:
            raise
        except Exception as e:  # noqa: BLE001 - torch errors: one line naming the node
            raise _OpError(f"{node.op} node computing {node.outputs[0]!r} failed: "
                           f"{_first_line(e)}") from None
        for name, value in zip(node.outputs, outs, strict=False):
            if name:
                env[name] = value
    return env


class OnnxGraphModule(nn.Module):
    """A torch interpreter of an ONNX (sub)graph: ``forward(x [B, d]) -> [B, k]`` float32.

    Floating-point constants are parameters (frozen by :class:`Policy`), others buffers.
    ``batch``: the graph's fixed batch size when it only runs on that many rows (the input is
    then processed in chunks of that size, zero-padded), or ``None``."""

    def __init__(self, nodes: Sequence[_Node], consts: dict[str, Tensor], input_name: str,
                 output_name: str, opset: int, input_dtype: torch.dtype = torch.float32,
                 batch: int | None = None) -> None:
        super().__init__()
        self.nodes = list(nodes)
        self.input_name = input_name
        self.output_name = output_name
        self.opset = int(opset)
        self.input_dtype = input_dtype
        self.batch = batch
        used = {n for node in self.nodes for n in node.inputs if n}
        self.weights = nn.ParameterList()
        self._slots: dict[str, tuple[str, int]] = {}
        k = 0
        for name in sorted(used & set(consts)):
            t = consts[name]
            if t.is_floating_point():
                self._slots[name] = ("p", len(self.weights))
                self.weights.append(nn.Parameter(t.detach().clone(), requires_grad=False))
            else:
                self._slots[name] = ("b", k)
                self.register_buffer(f"const{k}", t.detach().clone())
                k += 1
        if output_name in consts and output_name not in self._slots:  # constant output
            self._slots[output_name] = ("b", k)
            self.register_buffer(f"const{k}", consts[output_name].detach().clone())

    def _const(self, name: str) -> Tensor:
        if name not in self._slots:
            raise _OpError(f"value {name!r} is not computed by the graph")
        kind, i = self._slots[name]
        return self.weights[i] if kind == "p" else getattr(self, f"const{i}")

    def run(self, x: Tensor) -> dict[str, Any]:
        """All values of one run (``x`` is the graph input)."""
        env: dict[str, Any] = {self.input_name: x.to(self.input_dtype)}
        return _execute(self.nodes, env, self.opset, self._const)

    def _forward(self, x: Tensor) -> Tensor:
        env = self.run(x)
        out = env[self.output_name] if self.output_name in env else self._const(self.output_name)
        return out.to(torch.float32) if out.is_floating_point() else out

    def forward(self, x: Tensor) -> Tensor:
        if self.batch is None or x.shape[0] == self.batch:
            return self._forward(x)
        n, b = x.shape[0], self.batch
        chunks = []
        for i in range(0, n, b):
            part = x[i:i + b]
            if part.shape[0] < b:
                part = torch.cat([part, part.new_zeros((b - part.shape[0],) + part.shape[1:])])
            chunks.append(self._forward(part))
        return torch.cat(chunks, 0)[:n]


# ------------------------------------------------------------------------------- loading
@dataclass
class _Graph:
    path: Path
    nodes: list[_Node]
    consts: dict[str, Tensor]
    input_name: str
    input_dims: list[int | str | None] | None
    input_dtype: torch.dtype
    outputs: list[str]
    opset: int
    details: dict[str, Any]


def _import_onnx(path: Path) -> Any:
    try:
        import onnx
    except ImportError:
        raise PolicyError(f"{path}: reading ONNX graphs needs the onnx package: {_INSTALL}"
                          ) from None
    return onnx


def _attr_value(onnx: Any, attr: Any) -> Any:
    from onnx import numpy_helper

    kind = attr.type
    if kind == onnx.AttributeProto.TENSOR:
        return torch.as_tensor(np.array(numpy_helper.to_array(attr.t)))
    if kind in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return None  # control flow (If / Loop): refused by _check_ops if the action needs it
    value = onnx.helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode("utf-8", "replace") for v in value]
    return value


def _constant_value(node: _Node, path: Path) -> Tensor:
    at = node.attrs
    if "value" in at:
        return at["value"]
    if "value_float" in at:
        return torch.tensor(float(at["value_float"]), dtype=torch.float32)
    if "value_floats" in at:
        return torch.tensor([float(v) for v in at["value_floats"]], dtype=torch.float32)
    if "value_int" in at:
        return torch.tensor(int(at["value_int"]), dtype=torch.int64)
    if "value_ints" in at:
        return torch.tensor([int(v) for v in at["value_ints"]], dtype=torch.int64)
    raise PolicyError(f"{path}: a Constant node with an unsupported value kind "
                      f"({', '.join(sorted(at)) or 'none'}); re-export the graph")


def _read_external(tensor: Any, path: Path) -> Path:
    """Fill ``tensor`` from its external data file, which must lie in the model's folder (or
    below it): a graph cannot make certrl read files elsewhere."""
    info = {e.key: e.value for e in tensor.external_data}
    location = info.get("location", "")
    rel = Path(location)
    folder = path.resolve().parent
    target = (folder / rel).resolve()
    if not location or rel.is_absolute() or ".." in rel.parts or not target.is_relative_to(
            folder):
        raise PolicyError(
            f"{path}: initializer {tensor.name!r} points to external data {location!r} outside "
            "the model's folder; certrl only reads data files beside the model: re-save it with "
            "onnx.save(model, path, save_as_external_data=False)"
        )
    if not target.is_file():
        raise PolicyError(
            f"{path}: the graph keeps its weights in {location}, which is missing; copy it next "
            "to the model (or re-save with onnx.save(model, path, save_as_external_data=False))"
        )
    offset = int(info.get("offset", 0) or 0)
    length = int(info["length"]) if info.get("length") else -1
    with open(target, "rb") as f:
        f.seek(offset)
        data = f.read(length)
    if length >= 0 and len(data) != length:
        raise PolicyError(f"{path}: external data file {location} is truncated; copy it again")
    tensor.raw_data = data
    tensor.data_location = 0  # DEFAULT
    del tensor.external_data[:]
    return target


def _read_graph(path: Path) -> _Graph:
    onnx = _import_onnx(path)
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf / IO errors: not a readable graph
        raise PolicyError(
            f"{path}: not a loadable ONNX model ({_first_line(e)}); the file is damaged or not "
            "ONNX: re-export it with torch.onnx.export(actor, dummy_obs, path)"
        ) from None
    if len(model.functions):
        try:
            import onnx.inliner

            model = onnx.inliner.inline_local_functions(model)
        except Exception as e:  # noqa: BLE001
            raise PolicyError(f"{path}: cannot inline the graph's local functions "
                              f"({_first_line(e)}); re-export it with opset 17") from None
    g = model.graph
    opset = 1
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            opset = int(imp.version)
    consts: dict[str, Tensor] = {}
    external: list[Path] = []
    for init in g.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            data_file = _read_external(init, path)
            if data_file not in external:
                external.append(data_file)
        try:
            consts[init.name] = torch.as_tensor(np.array(numpy_helper.to_array(init)))
        except Exception as e:  # noqa: BLE001
            raise PolicyError(f"{path}: cannot read initializer {init.name!r} "
                              f"({_first_line(e)}); re-export the graph") from None
    if len(g.sparse_initializer):
        raise PolicyError(f"{path}: the graph has sparse initializers, which certrl does not "
                          "read; re-export it with dense weights")
    inputs = [i for i in g.input if i.name not in consts]
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs) or "none"
        raise PolicyError(
            f"{path}: the graph takes {len(inputs)} inputs ({names}); certrl needs exactly one "
            "observation input: export the actor alone"
        )
    if not len(g.output):
        raise PolicyError(f"{path}: the graph has no outputs; export the actor's action")
    inp = inputs[0]
    ttype = inp.type.tensor_type if inp.type.HasField("tensor_type") else None
    if ttype is None:
        raise PolicyError(f"{path}: the graph input {inp.name!r} is not a tensor; certrl needs "
                          "a float tensor of observations [B, obs_dim]")
    try:
        in_dtype = _dtype(int(ttype.elem_type)) if ttype.elem_type else torch.float32
    except _OpError:
        in_dtype = torch.int64  # refused just below
    if not in_dtype.is_floating_point:
        raise PolicyError(
            f"{path}: the graph input {inp.name!r} is not a float tensor; certrl needs float "
            "observations [B, obs_dim] (vector Box spaces)"
        )
    dims: list[int | str | None] | None = None
    if ttype.HasField("shape"):
        dims = []
        for d in ttype.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            else:
                dims.append(d.dim_param or None)
    nodes: list[_Node] = []
    for n in g.node:
        attrs = {a.name: _attr_value(onnx, a) for a in n.attribute}
        nodes.append(_Node(n.op_type, tuple(n.input), tuple(n.output), attrs, n.domain))
    details = {
        "opset": opset,
        "ir_version": int(model.ir_version),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "input": inp.name,
        "input_shape": dims,
        "outputs": [o.name for o in g.output],
        "ops": sorted({n.qualified for n in nodes}),
    }
    if external:
        details["external_data"] = [str(f) for f in external]
    return _Graph(path, nodes, consts, inp.name, dims, in_dtype, [o.name for o in g.output],
                  opset, details)


def _backward_slice(nodes: list[_Node], targets: Sequence[str], path: Path) -> list[_Node]:
    """The nodes ``targets`` depend on, in topological order."""
    producer: dict[str, int] = {}
    for i, n in enumerate(nodes):
        for o in n.outputs:
            if o:
                producer[o] = i
    need: set[int] = set()
    stack = [t for t in targets if t in producer]
    seen: set[str] = set()
    while stack:
        v = stack.pop()
        if v in seen or v not in producer:
            continue
        seen.add(v)
        i = producer[v]
        if i not in need:
            need.add(i)
            stack.extend(n for n in nodes[i].inputs if n)
    chosen = [nodes[i] for i in sorted(need)]
    # ONNX requires topological order; verify (and sort if a producer wrote it otherwise)
    done: set[str] = set()
    order: list[_Node] = []
    pending = chosen
    while pending:
        rest = []
        for n in pending:
            if all((not v) or v not in producer or v in done for v in n.inputs):
                order.append(n)
                done.update(o for o in n.outputs if o)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise PolicyError(f"{path}: the graph has a cycle or a value used before it is "
                              "computed; re-export it")
        pending = rest
    return order


def _check_ops(nodes: list[_Node], path: Path, pixels: bool = False) -> None:
    bad = sorted({n.qualified for n in nodes
                  if n.domain not in ("", "ai.onnx") or (n.op not in _OPS and n.op != "Constant")
                  or (n.op in PIXEL_OPS and not pixels)})
    if bad:
        image = "" if pixels else (
            "; Conv / MaxPool only in graphs on image inputs [B, C, H, W] with an image "
            "observation space (--env)")
        raise PolicyError(
            f"{path}: the graph uses unsupported ONNX op(s) {', '.join(bad)}; certrl converts "
            "MLP graphs: Gemm / MatMul, elementwise arithmetic and activations (Relu, Tanh, "
            "Sigmoid, Elu, LeakyRelu, Softplus, Selu, Gelu, Clip ...), Softmax / ArgMax and "
            "shape ops (full list: certrl.policies.onnx.SUPPORTED_OPS)" + image +
            ": export the actor alone, or use another policy format"
        )


def _fold_constants(nodes: list[_Node], consts: dict[str, Tensor], opset: int,
                    path: Path) -> list[_Node]:
    """Evaluate ``Constant`` nodes and nodes whose inputs are all constants; the rest stays."""
    rest: list[_Node] = []
    for node in nodes:
        if node.op == "Constant":
            consts[node.outputs[0]] = _constant_value(node, path)
            continue
        if all((not v) or v in consts for v in node.inputs):
            try:
                env = _execute([node], {}, opset, consts.__getitem__)
            except _OpError as e:
                raise PolicyError(f"{path}: cannot evaluate the graph's constants ({e}); "
                                  "re-export the graph") from None
            for o in node.outputs:
                if o and o in env:
                    consts[o] = env[o]
            continue
        rest.append(node)
    return rest


@dataclass
class _Runs:
    """Shapes and dtypes of every value in the dry runs, one dict per batch size."""

    batches: list[int]
    shapes: list[dict[str, tuple[int, ...]]]
    dtypes: dict[str, torch.dtype]

    def same_shape(self, a: str, b: str) -> bool:
        return all(s.get(a) is not None and s.get(a) == s.get(b) for s in self.shapes)

    def shape(self, v: str) -> tuple[int, ...] | None:
        return self.shapes[0].get(v)

    def batched_2d(self, v: str) -> int | None:
        """The feature size of ``v`` if it is ``[B, d]`` in every run, else ``None``."""
        sizes = set()
        for s, b in zip(self.shapes, self.batches, strict=True):
            shape = s.get(v)
            if shape is None or len(shape) != 2 or shape[0] != b:
                return None
            sizes.add(shape[1])
        return sizes.pop() if len(sizes) == 1 else None

    def per_row(self, v: str) -> bool:
        """Whether ``v`` holds one element per batch row (``[B]``, ``[B, 1]``) in every run."""
        for s, b in zip(self.shapes, self.batches, strict=True):
            shape = s.get(v)
            if shape is None or not shape or shape[0] != b or int(np.prod(shape)) != b:
                return False
        return True


def _try_runs(module: OnnxGraphModule, in_shape: tuple[int, ...], batches: list[int]) -> _Runs:
    gen = torch.Generator().manual_seed(0)
    shapes: list[dict[str, tuple[int, ...]]] = []
    dtypes: dict[str, torch.dtype] = {}
    with torch.no_grad():
        for b in batches:
            env = module.run(torch.randn((b, *in_shape), generator=gen))
            shapes.append({k: tuple(v.shape) for k, v in env.items()})
            dtypes.update({k: v.dtype for k, v in env.items()})
    return _Runs(batches, shapes, dtypes)


def _dry_runs(module: OnnxGraphModule, obs_dim: int, static_batch: int | None,
              path: Path, obs_from_env: bool,
              image: tuple[int, ...] | None = None) -> tuple[_Runs, int | None]:
    """Shapes of every value on batches of 3 and 5 rows (batch size ``None``: dynamic), or
    on the graph's fixed batch size when only that works (a graph exported with a batch size
    baked into a Reshape). ``image``: the ``(C, H, W)`` input shape of a pixel graph."""
    in_shape = (obs_dim,) if image is None else tuple(image)
    try:
        return _try_runs(module, in_shape, [3, 5]), None
    except _OpError as e:
        first_error = str(e)
    if static_batch is not None and static_batch not in (3, 5):
        try:
            return _try_runs(module, in_shape, [static_batch]), static_batch
        except _OpError:
            pass
    if image is not None:
        raise PolicyError(
            f"{path}: running the graph on a batch of frames [3, {', '.join(map(str, image))}] "
            f"failed ({first_error}); the graph does not take the environment's "
            f"{format_shape(image)} frames: check --env and the frame wrappers"
        )
    if obs_from_env:
        advice = (f"the graph does not take the environment's {obs_dim} observations: check "
                  "--env (the policy was trained on another environment or version)")
    else:
        advice = ("certrl needs a graph mapping observations [B, obs_dim] to actions: export "
                  "it with a batch dimension (dynamic_axes={'input': {0: 'batch'}})")
    raise PolicyError(
        f"{path}: running the graph on a batch of observations [3, {obs_dim}] failed "
        f"({first_error}); {advice}"
    )


def _producers(nodes: Sequence[_Node]) -> dict[str, _Node]:
    return {o: n for n in nodes for o in n.outputs if o}


def _is_alias(node: _Node, runs: _Runs) -> bool:
    """``node`` passes its first input through unchanged (shape and dtype, in every run)."""
    if node.op not in _ALIAS_OPS or not node.inputs or not node.inputs[0]:
        return False
    src, out = node.inputs[0], node.outputs[0]
    return runs.same_shape(src, out) and runs.dtypes.get(src) == runs.dtypes.get(out)


def _skip_aliases(v: str, prod: dict[str, _Node], runs: _Runs) -> str:
    while v in prod and _is_alias(prod[v], runs):
        v = prod[v].inputs[0]
    return v


def _is_last_axis(node: _Node, rank: int, opset: int) -> bool:
    """Whether a Softmax / LogSoftmax / ArgMax node works on the last axis of a rank-``rank``
    input (opset < 13 softmax coerces to 2-D at ``axis``: the same for ``axis = rank - 1``)."""
    default = (-1 if opset >= 13 else 1) if node.op in ("Softmax", "LogSoftmax") else 0
    return int(node.attrs.get("axis", default)) in (rank - 1, -1)


def _strip_normalizers(v: str, prod: dict[str, _Node], runs: _Runs, consts: dict[str, Tensor],
                       opset: int, notes: list[str]) -> str:
    """Logits under a softmax / log-softmax / ``z - logsumexp(z)`` (argmax-invariant, and
    Gumbel-max on ``z`` samples the same distribution)."""
    while True:
        v = _skip_aliases(v, prod, runs)
        node = prod.get(v)
        if node is None:
            return v
        src = node.inputs[0] if node.inputs else ""
        if node.op in ("Softmax", "LogSoftmax") and _is_last_axis(node, 2, opset):
            notes.append(node.op.lower())
            v = src
            continue
        inner = prod.get(_skip_aliases(src, prod, runs)) if src else None
        if node.op == "Log" and inner is not None and inner.op == "Softmax":
            v = src
            continue
        if node.op == "Sub" and len(node.inputs) == 2 and node.inputs[1] in prod:
            r = prod[_skip_aliases(node.inputs[1], prod, runs)]
            if (r.op == "ReduceLogSumExp" and _skip_aliases(r.inputs[0], prod, runs)
                    == _skip_aliases(src, prod, runs) and int(r.attrs.get("keepdims", 1))):
                ax = r.attrs.get("axes")
                if ax is None and len(r.inputs) > 1 and r.inputs[1] in consts:
                    ax = _ints(consts[r.inputs[1]])
                if ax is not None and [int(a) for a in ax] in ([1], [-1]):
                    notes.append("log-normalization")
                    v = src
                    continue
        return v


@dataclass
class _Head:
    value: str
    kind: str  # "argmax", "tanh", "float"
    size: int
    notes: dict[str, Any]


def _analyse_output(graph: _Graph, nodes: list[_Node], runs: _Runs) -> _Head:
    path = graph.path
    out = graph.outputs[0]
    prod = _producers(nodes)
    dtype = runs.dtypes.get(out)
    if dtype is None:
        raise PolicyError(f"{path}: the graph's first output {out!r} does not depend on the "
                          "observation; export the actor's action")
    if not dtype.is_floating_point:
        v = out
        while v in prod and prod[v].op in _ALIAS_OPS and runs.per_row(v):
            v = prod[v].inputs[0]
        node = prod.get(v)
        if node is not None and node.op == "ArgMax" and runs.per_row(v):
            logits = node.inputs[0]
            if runs.batched_2d(logits) is not None and _is_last_axis(node, 2, graph.opset):
                stripped: list[str] = []
                logits = _strip_normalizers(logits, prod, runs, graph.consts, graph.opset,
                                            stripped)
                n = runs.batched_2d(logits)
                if n is not None:
                    note = "integer ArgMax action: the ArgMax input is taken as the logits"
                    if stripped:
                        note += f" ({' and '.join(stripped)} stripped)"
                    return _Head(logits, "argmax", n, {"output": note})
        raise PolicyError(
            f"{path}: the graph's first output {out!r} holds integer actions that are not an "
            "ArgMax over logits; export the logits instead (certrl takes the argmax itself, and "
            "attacks need gradients)"
        )
    k = runs.batched_2d(out)
    if k is None:
        shape = runs.shape(out)
        raise PolicyError(
            f"{path}: the graph's first output {out!r} has shape {list(shape or [])} for a batch "
            f"of {runs.batches[0]}; certrl needs actions or logits of shape [B, k]: export the "
            "actor with a batch dimension"
        )
    src = prod.get(_skip_aliases(out, prod, runs))
    if src is not None and src.op == "Tanh":
        return _Head(out, "tanh", k, {"output": "tanh-squashed, rescaled to the action bounds"})
    return _Head(out, "float", k, {})


def _scalar_or_vector(t: Tensor, d: int) -> Tensor | None:
    """``t`` as a ``[d]`` vector if it broadcasts against ``[B, d]`` per feature, else None."""
    if t.ndim > 2 or (t.ndim == 2 and t.shape[0] != 1) or t.numel() not in (1, d):
        return None
    if not t.is_floating_point():
        return None
    return t.reshape(-1).expand(d).to(torch.float64).clone()


def _find_normalization(graph: _Graph, nodes: list[_Node], head: str, runs: _Runs,
                        obs_dim: int) -> tuple[ObsNormalization | None, str, set[int], str]:
    """A leading ``(x - mean) / std`` (or ``* inv_std``, optional symmetric Clip) with constant
    statistics: (normalization, the value the network starts from, removed node ids, note)."""
    consumers: dict[str, list[int]] = {}
    for i, n in enumerate(nodes):
        for v in n.inputs:
            if v:
                consumers.setdefault(v, []).append(i)

    def only(v: str) -> int | None:
        c = consumers.get(v, [])
        return c[0] if len(c) == 1 and v != head else None

    raw = graph.input_name
    none = (None, raw, set(), "none found in the graph: the policy acts on raw observations")
    v, removed = raw, set()
    while (i := only(v)) is not None and _is_alias(nodes[i], runs) and nodes[i].inputs[0] == v:
        removed.add(i)
        v = nodes[i].outputs[0]
    mean = torch.zeros(obs_dim, dtype=torch.float64)
    i = only(v)
    if i is None:
        return none
    node = nodes[i]
    shift = [x for x in node.inputs if x != v]
    if (node.op == "Sub" and node.inputs[0] == v or node.op == "Add" and v in node.inputs) and \
            len(shift) == 1 and shift[0] in graph.consts:
        c = _scalar_or_vector(graph.consts[shift[0]], obs_dim)
        if c is None or runs.batched_2d(node.outputs[0]) != obs_dim:
            return none
        mean = c if node.op == "Sub" else -c
        removed.add(i)
        v = node.outputs[0]
        i = only(v)
        if i is None:
            return none
        node = nodes[i]
    other = [x for x in node.inputs if x != v]
    if node.op not in ("Div", "Mul") or len(other) != 1 or other[0] not in graph.consts or (
            node.op == "Div" and node.inputs[0] != v):
        return none
    s = _scalar_or_vector(graph.consts[other[0]], obs_dim)
    if s is None or runs.batched_2d(node.outputs[0]) != obs_dim or not bool(
            torch.isfinite(s).all()) or not bool((s > 0).all()):
        return none
    std = s if node.op == "Div" else 1.0 / s
    form = "(x - mean) / std" if node.op == "Div" else "(x - mean) * inv_std"
    removed.add(i)
    v = node.outputs[0]
    clip = math.inf
    i = only(v)
    if i is not None and nodes[i].op == "Clip" and nodes[i].inputs[0] == v:
        lo, hi = _clip_bounds([None, *[graph.consts.get(x) if x else None
                                      for x in nodes[i].inputs[1:]]],
                              nodes[i].attrs, graph.opset)
        lo_v = float(lo.reshape(-1)[0]) if isinstance(lo, Tensor) and lo.numel() == 1 else lo
        hi_v = float(hi.reshape(-1)[0]) if isinstance(hi, Tensor) and hi.numel() == 1 else hi
        consts_ok = all(x in graph.consts for x in nodes[i].inputs[1:] if x)
        if (consts_ok and isinstance(hi_v, float) and isinstance(lo_v, float)
                and hi_v > 0 and lo_v == -hi_v):
            clip = hi_v
            removed.add(i)
            v = nodes[i].outputs[0]
            form += f", clipped to +-{clip:g}"
    if v == head:
        return none
    norm = ObsNormalization(mean=mean.numpy(), var=(std * std).numpy(), clip=clip, epsilon=0.0)
    return norm, v, removed, f"extracted from the graph: {form}"


_ACT_MODULES: dict[str, Callable[[dict[str, Any]], nn.Module]] = {
    "Relu": lambda at: nn.ReLU(),
    "Tanh": lambda at: nn.Tanh(),
    "Sigmoid": lambda at: nn.Sigmoid(),
    "Elu": lambda at: nn.ELU(alpha=float(at.get("alpha", 1.0))),
    "LeakyRelu": lambda at: nn.LeakyReLU(negative_slope=float(at.get("alpha", 0.01))),
    "Softplus": lambda at: nn.Softplus(),
    "Softsign": lambda at: nn.Softsign(),
    "Gelu": lambda at: nn.GELU(approximate=str(at.get("approximate", "none"))),
    "HardSwish": lambda at: nn.Hardswish(),
}


def _linear(weight: Tensor, bias: Tensor) -> nn.Linear:
    lin = nn.Linear(int(weight.shape[1]), int(weight.shape[0]))
    with torch.no_grad():
        lin.weight.copy_(weight.to(torch.float32))
        lin.bias.copy_(bias.to(torch.float32))
    return lin


def _match_mlp(nodes: list[_Node], consts: dict[str, Tensor], start: str, head: str,
               obs_dim: int, runs: _Runs, opset: int) -> nn.Sequential | None:
    """``nn.Sequential`` of Linear layers and activations computing ``head`` from ``start``, if
    the subgraph is such a chain (affine elementwise ops are folded into Linear layers)."""
    chains: dict[str, tuple[list[nn.Module], int]] = {start: ([], obs_dim)}

    def const(name: str) -> Tensor | None:
        return consts.get(name) if name else None

    def affine(layers: list[nn.Module], d: int, scale: Tensor | None,
               shift: Tensor | None) -> list[nn.Module]:
        """``layers`` followed by ``y * scale + shift`` (per feature), merged into a trailing
        Linear when there is one."""
        s = torch.ones(d) if scale is None else scale.to(torch.float32)
        b = torch.zeros(d) if shift is None else shift.to(torch.float32)
        if layers and isinstance(layers[-1], nn.Linear):
            last = layers[-1]
            w = last.weight.detach() * s[:, None] if scale is not None else last.weight.detach()
            bias = last.bias.detach() * s if scale is not None else last.bias.detach()
            return [*layers[:-1], _linear(w, bias + b if shift is not None else bias)]
        return [*layers, _linear(torch.diag(s), b)]

    for node in nodes:
        ins = list(node.inputs)
        out = node.outputs[0] if node.outputs else ""
        if not out:
            continue
        if _is_alias(node, runs) and ins[0] in chains:
            chains[out] = chains[ins[0]]
            continue
        src = [x for x in ins if x in chains]
        if len(src) != 1:
            continue
        x = src[0]
        layers, d = chains[x]
        op, at = node.op, node.attrs
        new: list[nn.Module] | None = None
        new_d = d
        if op in _ACT_MODULES and ins[0] == x:
            new = [*layers, _ACT_MODULES[op](at)]
        elif op == "Selu" and ins[0] == x and float(at.get("alpha", _SELU_ALPHA)) == _SELU_ALPHA \
                and float(at.get("gamma", _SELU_GAMMA)) == _SELU_GAMMA:
            new = [*layers, nn.SELU()]
        elif op == "Clip" and ins[0] == x:
            lo, hi = _clip_bounds([None, *[const(v) for v in ins[1:]]], at, opset)
            scalar = all(not isinstance(t, Tensor) or t.numel() == 1 for t in (lo, hi))
            if scalar and all((not v) or v in consts for v in ins[1:]):
                lo_f = float(lo.reshape(-1)[0]) if isinstance(lo, Tensor) else (
                    -math.inf if lo is None else float(lo))
                hi_f = float(hi.reshape(-1)[0]) if isinstance(hi, Tensor) else (
                    math.inf if hi is None else float(hi))
                if lo_f <= hi_f:
                    new = [*layers, nn.Hardtanh(lo_f, hi_f)]
        elif op == "Gemm" and ins[0] == x and const(ins[1]) is not None and \
                not int(at.get("transA", 0)):
            w = consts[ins[1]]
            w = w if int(at.get("transB", 0)) else w.t()
            c = const(ins[2]) if len(ins) > 2 else None
            if w.ndim == 2 and w.shape[1] == d and w.is_floating_point():
                alpha, beta = float(at.get("alpha", 1.0)), float(at.get("beta", 1.0))
                bias = torch.zeros(w.shape[0]) if c is None else _scalar_or_vector(c, w.shape[0])
                if bias is not None and (c is not None or len(ins) <= 2 or not ins[2]):
                    new = [*layers, _linear(alpha * w.to(torch.float64), beta * bias)]
                    new_d = int(w.shape[0])
        elif op == "MatMul" and ins[0] == x and const(ins[1]) is not None:
            w = consts[ins[1]]
            if w.ndim == 2 and w.shape[0] == d and w.is_floating_point():
                new = [*layers, _linear(w.t(), torch.zeros(w.shape[1]))]
                new_d = int(w.shape[1])
        elif op in ("Add", "Sub", "Mul", "Div") and len(ins) == 2:
            other = ins[1] if ins[0] == x else ins[0]
            c = const(other)
            vec = None if c is None else _scalar_or_vector(c, d)
            if vec is not None:
                if op == "Add":
                    new = affine(layers, d, None, vec)
                elif op == "Sub" and ins[0] == x:
                    new = affine(layers, d, None, -vec)
                elif op == "Sub":  # c - x
                    new = affine(layers, d, -torch.ones(d, dtype=torch.float64), vec)
                elif op == "Mul":
                    new = affine(layers, d, vec, None)
                elif op == "Div" and ins[0] == x and bool((vec != 0).all()):
                    new = affine(layers, d, 1.0 / vec, None)
        elif op == "Neg" and ins[0] == x:
            new = affine(layers, d, -torch.ones(d, dtype=torch.float64), None)
        if new is not None and runs.batched_2d(out) == new_d:
            chains[out] = (new, new_d)
    if head not in chains:
        return None
    layers, _ = chains[head]
    return nn.Sequential(*layers) if layers else nn.Sequential(nn.Identity())


def _match_cnn(nodes: list[_Node], consts: dict[str, Tensor], start: str, head: str,
               image: tuple[int, ...], runs: _Runs, opset: int,
               scale: float = PIXEL_SCALE) -> nn.Sequential | None:
    """``nn.Sequential(Unflatten, Conv2d / activation / MaxPool2d ..., Flatten, <MLP>)``
    computing ``head`` from flattened ``[B, C*H*W]`` rows that the graph sees multiplied by
    ``scale`` (its input ``start`` is ``[B, C, H, W]``), if the graph is such a chain. Scalar
    ``Div`` / ``Mul`` by constants (the ``/ 255``) are folded, with ``scale``, into the next
    Conv2d or Linear layer."""
    consumers: dict[str, list[_Node]] = {}
    for n in nodes:
        for v in n.inputs:
            if v and n.op != "Shape":  # a Shape node only reads the shape (dynamic Reshape)
                consumers.setdefault(v, []).append(n)

    def scalar(name: str) -> float | None:
        t = consts.get(name) if name else None
        if t is None or t.numel() != 1 or not t.is_floating_point():
            return None
        return float(t.reshape(-1)[0])

    layers: list[nn.Module] = [nn.Unflatten(1, tuple(image))]
    pending = float(scale)  # the current value = pending * (what ``layers`` compute)
    v = start
    while True:
        users = consumers.get(v, [])
        if v == head or len(users) != 1:
            return None
        node = users[0]
        ins, op, at = list(node.inputs), node.op, node.attrs
        out = node.outputs[0] if node.outputs else ""
        if not out or ins[0] != v and op not in ("Mul",):
            return None
        shape = runs.shape(v)
        if shape is None or len(shape) != 4:
            return None
        if _is_alias(node, runs):
            v = out
            continue
        if op in ("Div", "Mul") and len(ins) == 2:
            c = scalar(ins[1] if ins[0] == v else ins[0])
            if c is None or c == 0 or (op == "Div" and ins[0] != v):
                return None
            pending = pending / c if op == "Div" else pending * c
            v = out
            continue
        if op == "Conv":
            w, b = consts.get(ins[1]), consts.get(ins[2]) if len(ins) > 2 and ins[2] else None
            if w is None or w.ndim != 4 or (len(ins) > 2 and ins[2] and b is None):
                return None
            kernel = [int(k) for k in at.get("kernel_shape", w.shape[2:])]
            strides = [int(s) for s in at.get("strides", [1, 1])]
            dilations = [int(d) for d in at.get("dilations", [1, 1])]
            if str(at.get("auto_pad", "NOTSET") or "NOTSET") not in ("NOTSET", "VALID") or \
                    kernel != [int(k) for k in w.shape[2:]]:
                return None
            pads = [int(p) for p in at.get("pads", [0, 0, 0, 0])]
            if str(at.get("auto_pad", "NOTSET") or "NOTSET") == "VALID":
                pads = [0, 0, 0, 0]
            if pads[:2] != pads[2:]:
                layers.append(nn.ZeroPad2d((pads[1], pads[3], pads[0], pads[2])))
                pads = [0, 0, 0, 0]
            group = int(at.get("group", 1))
            conv = nn.Conv2d(int(w.shape[1]) * group, int(w.shape[0]), tuple(kernel),
                             stride=tuple(strides), padding=(pads[0], pads[1]),
                             dilation=tuple(dilations), groups=group, bias=True)
            with torch.no_grad():
                conv.weight.copy_((w.to(torch.float64) * pending).to(torch.float32))
                conv.bias.copy_(torch.zeros(w.shape[0]) if b is None else b.to(torch.float32))
            layers.append(conv)
            pending = 1.0
            v = out
            continue
        if op in _ACT_MODULES or op == "MaxPool":
            if pending != 1.0 and not (pending > 0 and op in ("Relu", "MaxPool")):
                return None  # relu / max commute with a positive scale, nothing else does
            if op == "MaxPool":
                if len(node.outputs) > 1 and node.outputs[1]:
                    return None
                kernel = [int(k) for k in at["kernel_shape"]]
                pads = [int(p) for p in at.get("pads", [0, 0, 0, 0])]
                if len(kernel) != 2 or pads[:2] != pads[2:] or int(at.get("storage_order", 0)) \
                        or str(at.get("auto_pad", "NOTSET") or "NOTSET") != "NOTSET":
                    return None
                layers.append(nn.MaxPool2d(
                    tuple(kernel), stride=tuple(int(s) for s in at.get("strides", [1, 1])),
                    padding=(pads[0], pads[1]),
                    dilation=tuple(int(d) for d in at.get("dilations", [1, 1])),
                    ceil_mode=bool(int(at.get("ceil_mode", 0)))))
            else:
                layers.append(_ACT_MODULES[op](at))
            v = out
            continue
        if op in ("Flatten", "Reshape"):
            d = runs.batched_2d(out)
            if d is None or d != int(np.prod(shape[1:])) or (
                    op == "Flatten" and int(at.get("axis", 1)) not in (1, -3)):
                return None
            layers.append(nn.Flatten())
            v = out
            break
        return None
    tail = _match_mlp(nodes, consts, v, head, int(np.prod(shape[1:])), runs, opset)
    if tail is None:
        return None
    rest = [m for m in tail if not isinstance(m, nn.Identity)]
    if pending != 1.0:
        if not rest or not isinstance(rest[0], nn.Linear):
            return None
        with torch.no_grad():
            rest[0].weight.mul_(pending)
    return nn.Sequential(*layers, *rest)


def _agrees(a: nn.Module, b: nn.Module, obs_dim: int) -> bool:
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n in (1, 7, MIN_ROWS):
            x = torch.randn(n, obs_dim, generator=gen) * 2.0
            ya, yb = a(x), b(x)
            if ya.shape != yb.shape or not torch.allclose(ya, yb, rtol=1e-4, atol=1e-5,
                                                          equal_nan=True):
                return False
    return True


def load_onnx(path: str | Path, observation_space: Any = None,
              action_space: Any = None) -> Policy:
    """Load an ONNX actor graph as a :class:`Policy` (see the module docstring for what is
    accepted and which head it gets). ``observation_space`` / ``action_space``: the
    environment's Gymnasium spaces, when known: they supply a symbolic observation size and
    decide logits vs actions for a plain float output."""
    path = Path(path)
    graph = _read_graph(path)
    details = graph.details
    nodes = _backward_slice(graph.nodes, graph.outputs[:1], path)
    dims = graph.input_dims
    image = space_image_shape(observation_space)
    pixels = image is not None and (dims is None or len(dims) == 4)
    shape = "?" if dims is None else (
        "[" + ", ".join(str(d) if d is not None else "?" for d in dims) + "]")
    if not pixels and dims is not None and len(dims) != 2:
        image_hint = ""
        if len(dims) == 4:
            given = ("" if observation_space is None else
                     f"; the environment's observations have shape "
                     f"{format_shape(getattr(observation_space, 'shape', ()) or ())}")
            image_hint = (" (an image input: pass --env with the image environment, or "
                          f"observation_space= to load_policy, to load it as a pixel policy"
                          f"{given})")
        raise PolicyError(
            f"{path}: the graph input {graph.input_name!r} has shape {shape}{image_hint}; "
            "certrl needs vector observations of shape [B, obs_dim] (export with a dummy input "
            "of shape [1, obs_dim])"
        )
    _check_ops(nodes, path, pixels=pixels)
    nodes = _fold_constants(nodes, graph.consts, graph.opset, path)

    if pixels:
        assert image is not None
        static = [d for d in (dims or [])[1:]]
        if dims is not None and any(isinstance(d, int) and d > 0 and d != e
                                    for d, e in zip(static, image, strict=True)):
            hint = ""
            if sorted(int(d) for d in static if isinstance(d, int)) == sorted(image):
                hint = " (the same sizes in another order: channels-first vs channels-last?)"
            raise PolicyError(
                f"{path}: the graph takes images {shape} but the environment gives "
                f"{format_shape(image)} frames{hint}; check --env and the frame wrappers"
            )
        obs_dim = int(np.prod(image))
        details["obs_dim_from_env"] = True
        details.update(pixel_details(image, "graph", True, "environment"))
    last = dims[1] if dims and not pixels else None
    if pixels:
        pass
    elif isinstance(last, int) and last > 0:
        obs_dim = last
    else:
        from_env = space_obs_dim(observation_space)
        if from_env is None:
            what = f"a symbolic observation size ({last})" if last else "no static shape"
            raise PolicyError(
                f"{path}: the graph input {graph.input_name!r} has {what}; pass --env (or "
                "observation_space= to load_policy) so certrl knows the observation size"
            )
        obs_dim = from_env
        details["obs_dim_from_env"] = True
    static_batch = dims[0] if dims and isinstance(dims[0], int) and dims[0] > 0 else None

    probe = OnnxGraphModule(nodes, graph.consts, graph.input_name, graph.outputs[0],
                            graph.opset, graph.input_dtype)
    runs, fixed = _dry_runs(probe, obs_dim, static_batch, path,
                            bool(details.get("obs_dim_from_env")), image if pixels else None)
    details["batch"] = "dynamic" if fixed is None else (
        f"fixed at {fixed}: larger batches run in chunks of {fixed}")
    head = _analyse_output(graph, nodes, runs)
    details["action_output"] = graph.outputs[0]
    details.update(head.notes)
    nodes = _backward_slice(nodes, [head.value], path)

    if pixels:
        assert image is not None
        norm: ObsNormalization | None = ObsNormalization.pixels()
        start, removed = graph.input_name, set()
        details["graph_normalization"] = (
            "pixels: the policy divides raw [0, 255] frames by 255; the graph is called on "
            "x * 255 (its own scaling is kept)")
    else:
        norm, start, removed, note = _find_normalization(graph, nodes, head.value, runs,
                                                         obs_dim)
        details["graph_normalization"] = note
    net_nodes = [n for i, n in enumerate(nodes) if i not in removed]
    interp_graph = OnnxGraphModule(net_nodes, graph.consts, start, head.value, graph.opset,
                                   graph.input_dtype, fixed)
    interp: nn.Module = interp_graph if not pixels else ImageInput(interp_graph, image or ())
    try:
        with torch.no_grad():
            interp(torch.zeros(MIN_ROWS, obs_dim))
    except _OpError as e:
        raise PolicyError(f"{path}: running the converted graph failed ({e}); re-export the "
                          "actor with torch.onnx.export(..., opset_version=17)") from None
    net: nn.Module = interp
    if pixels:
        assert image is not None
        mlp = _match_cnn(net_nodes, graph.consts, start, head.value, image, runs, graph.opset)
        chain = ("cnn: nn.Sequential of Unflatten, Conv2d / activation / MaxPool2d layers, "
                 "Flatten, Linear layers and activations")
    else:
        mlp = _match_mlp(net_nodes, graph.consts, start, head.value, obs_dim, runs, graph.opset)
        chain = "mlp: nn.Sequential of Linear layers and activations"
    if mlp is not None and _agrees(mlp, interp, obs_dim):
        net = mlp
        details["structure"] = chain
    else:
        details["structure"] = (
            "graph interpreter (not a plain layer chain: bound propagation does not apply)"
            if mlp is None else
            "graph interpreter (the layer chain did not reproduce the graph)"
        )
    details["action_ops"] = sorted({n.op for n in net_nodes})

    files = [path, *(Path(f) for f in details.get("external_data", []))]
    info = PolicyInfo(format="onnx", path=str(path), sha256=sha256_file(*files), details=details)
    discrete_env = space_is_discrete(action_space)
    if head.kind == "argmax":
        return Policy(net, "categorical", obs_dim, n_actions=head.size, obs_norm=norm, info=info,
                      obs_shape=image if pixels else None)
    if discrete_env:
        details["head_from_env"] = True
        details["output"] = "float output taken as logits (the action space is Discrete)"
        return Policy(net, "categorical", obs_dim, n_actions=head.size, obs_norm=norm, info=info,
                      obs_shape=image if pixels else None)
    details["action_bounds"] = "environment"
    if head.kind == "tanh":
        details["head_from_env"] = False
        return Policy(net, "deterministic", obs_dim, act_dim=head.size, obs_norm=norm, info=info,
                      obs_shape=image if pixels else None)
    details["head_from_env"] = discrete_env is None
    details["output"] = "the action (clipped to the action bounds)" if discrete_env is not None \
        else "the action (clipped to the action bounds), or logits on a Discrete environment"
    return Policy(net, "linear", obs_dim, act_dim=head.size, obs_norm=norm, info=info,
                  obs_shape=image if pixels else None)
