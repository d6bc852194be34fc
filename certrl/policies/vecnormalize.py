"""Read the observation statistics of an SB3 ``VecNormalize`` pickle without trusting it.

``VecNormalize.save`` writes ``pickle.dump(vec_normalize)``; a plain ``pickle.load`` of a file
from the internet runs whatever code the file names. :func:`load_vecnormalize` instead uses a
restricted ``pickle.Unpickler`` whose ``find_class`` allow-lists only:

* numpy's array / dtype / scalar reconstruction (``numpy.ndarray``, ``numpy.dtype``,
  ``numpy._core.multiarray._reconstruct`` and ``scalar``, old ``numpy.core`` spellings too);
* SB3's ``VecNormalize`` and ``RunningMeanStd`` and gymnasium / gym spaces and numpy random
  generator state, all replaced by inert stand-in objects that only store the pickled
  attributes (the real classes are never imported or constructed).

Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen`` ...) makes the load fail
with :class:`PolicyError` before it is called. From the stand-in we read ``obs_rms.mean`` /
``obs_rms.var``, ``clip_obs``, ``epsilon`` and ``norm_obs``; SB3's ``normalize_obs`` is then
``clip((obs - mean) / sqrt(var + epsilon), -clip_obs, clip_obs)`` (:class:`ObsNormalization`).
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from certrl.policies.base import ObsNormalization, PolicyError

MAX_BYTES = 64 << 20


class _Inert:
    """Stand-in for an allow-listed class: accepts any constructor arguments and pickled state
    and only stores them; it has no behaviour."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = args

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
            state, slots = state
            self.__dict__.update(slots)
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self._state = state


class VecNormalizeStandIn(_Inert):
    """Inert stand-in for ``stable_baselines3...VecNormalize``."""


class RunningMeanStdStandIn(_Inert):
    """Inert stand-in for ``stable_baselines3...RunningMeanStd``."""


class SpaceStandIn(_Inert):
    """Inert stand-in for a gymnasium / gym space."""


class OpaqueStandIn(_Inert):
    """Inert stand-in for numpy random-generator state (irrelevant to normalization)."""


def _opaque(*args: Any, **kwargs: Any) -> OpaqueStandIn:
    return OpaqueStandIn()


# The real numpy reconstruction functions, found without importing deprecated module paths.
_RECONSTRUCT = np.ndarray((0,), dtype=np.uint8).__reduce__()[0]
_SCALAR = np.float64(0.0).__reduce__()[0]

_NUMPY: dict[str, Any] = {"_reconstruct": _RECONSTRUCT, "scalar": _SCALAR}
_SB3 = {
    ("stable_baselines3.common.vec_env.vec_normalize", "VecNormalize"): VecNormalizeStandIn,
    ("stable_baselines3.common.running_mean_std", "RunningMeanStd"): RunningMeanStdStandIn,
}
_RANDOM_MODULES = (
    "numpy.random._pickle",
    "numpy.random._pcg64",
    "numpy.random._mt19937",
    "numpy.random._philox",
    "numpy.random._sfc64",
    "numpy.random._generator",
    "numpy.random.bit_generator",
    "numpy.random.mtrand",
)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only the allow-listed globals (module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        if module in ("numpy._core.multiarray", "numpy.core.multiarray") and name in _NUMPY:
            return _NUMPY[name]
        if module == "numpy" and name == "ndarray":
            return np.ndarray
        if module == "numpy" and name == "dtype":
            return np.dtype
        if (module, name) in _SB3:
            return _SB3[(module, name)]
        if (
            module.split(".")[0] in ("gymnasium", "gym")
            and ".spaces" in module
            and name.isidentifier()
            and name[:1].isupper()
        ):
            return SpaceStandIn
        if module in _RANDOM_MODULES and name.isidentifier():
            return _opaque if name[:1] == "_" else OpaqueStandIn
        if module == "collections" and name == "OrderedDict":
            return dict
        if module == "builtins" and name in ("set", "frozenset", "complex"):
            return {"set": set, "frozenset": frozenset, "complex": complex}[name]
        if module == "_codecs" and name == "encode":  # bytes in protocol-2 pickles
            return _latin1_encode
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return text.encode("latin1")


def restricted_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def load_vecnormalize(path: str | Path) -> ObsNormalization | None:
    """Observation statistics of an SB3 ``VecNormalize`` ``.pkl``; ``None`` if it was saved with
    ``norm_obs=False`` (observations are then passed through unchanged, as SB3 does)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PolicyError(f"{path}: VecNormalize file not found; check the path") from None
    except OSError as e:
        raise PolicyError(f"{path}: cannot read the VecNormalize file ({e.strerror})") from None
    if not data:
        raise PolicyError(f"{path}: the VecNormalize file is empty; save it again")
    if len(data) > MAX_BYTES:
        raise PolicyError(f"{path}: {len(data)} bytes is too large for a VecNormalize file")
    try:
        obj = restricted_loads(data)
    except pickle.UnpicklingError as e:
        msg = str(e).splitlines()[0] if str(e) else "not a pickle"
        raise PolicyError(
            f"{path}: refused to load this VecNormalize file ({msg}): it should contain only "
            "normalization statistics; it may be malicious, or from an unsupported SB3 version"
        ) from None
    except Exception as e:  # noqa: BLE001 - any failure inside unpickling is a bad file
        raise PolicyError(
            f"{path}: not a readable VecNormalize pickle ({type(e).__name__}: {e}); pass the "
            "file written by VecNormalize.save"
        ) from None
    if not isinstance(obj, VecNormalizeStandIn):
        raise PolicyError(
            f"{path}: the pickle holds {type(obj).__name__}, not an SB3 VecNormalize; pass the "
            "file written by VecNormalize.save"
        )
    state = obj.__dict__
    if not bool(state.get("norm_obs", True)):
        return None
    rms = state.get("obs_rms")
    if isinstance(rms, dict):
        raise PolicyError(
            f"{path}: VecNormalize of dict observations is not supported (vector observations only)"
        )
    if not isinstance(rms, RunningMeanStdStandIn):
        raise PolicyError(f"{path}: VecNormalize file lacks its observation statistics (obs_rms)")
    try:
        mean = np.asarray(rms.__dict__["mean"], dtype=np.float64).ravel()
        var = np.asarray(rms.__dict__["var"], dtype=np.float64).ravel()
        clip = float(state.get("clip_obs", 10.0))
        eps = float(state.get("epsilon", 1e-8))
    except (KeyError, TypeError, ValueError) as e:
        raise PolicyError(f"{path}: malformed VecNormalize statistics ({e})") from None
    if mean.shape != var.shape or mean.size == 0:
        raise PolicyError(f"{path}: VecNormalize mean and var differ in size")
    return ObsNormalization(mean=mean, var=var, clip=clip, epsilon=eps)
