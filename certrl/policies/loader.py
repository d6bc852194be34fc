"""``load_policy``: one entry point for every supported policy file, detected by content."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any

from certrl.policies._nets import check_zip, rebuild
from certrl.policies.base import ObsNormalization, Policy, PolicyError, sha256_file

#: Values of ``fmt`` (``--format``).
FORMATS: tuple[str, ...] = ("sb3", "cleanrl", "torchscript", "bundle", "pickle", "onnx", "zoo")

DEMO_PREFIX = "demo:"

_EXPECTED = (
    "expected an SB3 .zip, an RL Zoo / Hugging Face run folder, a CleanRL / PyTorch checkpoint, "
    "a TorchScript archive, an ONNX graph or a certrl bundle (.json + .safetensors); pass "
    "--format to force one"
)


def demo_dir() -> Path:
    """Folder of the packaged demo policies (``certrl/demo``)."""
    return Path(__file__).resolve().parent.parent / "demo"


def available_demos() -> list[str]:
    """Names accepted by ``demo:NAME``."""
    d = demo_dir()
    return sorted(p.stem for p in d.glob("*.json")) if d.is_dir() else []


def resolve_spec(spec: str | Path) -> Path:
    """``demo:NAME`` -> the packaged manifest; anything else -> ``Path(spec)``."""
    s = str(spec)
    if s.startswith(DEMO_PREFIX):
        name = s[len(DEMO_PREFIX):]
        path = demo_dir() / f"{name}.json"
        if not name or "/" in name or "\\" in name or not path.is_file():
            names = ", ".join(available_demos()) or "none installed"
            raise PolicyError(f"unknown demo policy {name!r}; available demos: {names}")
        return path
    return Path(spec)


def detect_format(path: Path) -> str:
    """The format of ``path`` from its content: ``sb3``, ``torchscript``, ``bundle`` or
    ``torch`` (a ``torch.save`` checkpoint: CleanRL state dict or pickled module)."""
    if not path.exists():
        demos = available_demos()
        hint = f" (or demo:NAME; demos: {', '.join(demos)})" if demos else ""
        raise PolicyError(f"{path}: policy file not found; check the path{hint}")
    if path.is_dir():
        from certrl.policies.zoo import is_zoo_dir

        if is_zoo_dir(path):
            return "zoo"
        raise PolicyError(
            f"{path}: is a directory but not an RL Zoo / Hugging Face run folder (no SB3 model "
            "zip in it); pass the policy file inside it"
        )
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise PolicyError(f"{path}: cannot read the policy file ({e.strerror})") from None
    if not head:
        raise PolicyError(
            f"{path}: the policy file is empty (0 bytes); it was not written completely — "
            "export or copy it again"
        )
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = check_zip(zf, path)
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
            raise PolicyError(
                f"{path}: damaged zip archive ({e}); the file is truncated or corrupt — copy or "
                "export it again"
            ) from None
        from certrl.policies.sb3 import is_sb3_zip
        from certrl.policies.torchscript import is_torchscript_zip

        if is_sb3_zip(names):
            return "sb3"
        if is_torchscript_zip(names):
            return "torchscript"
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "torch"
        raise PolicyError(f"{path}: a zip archive but not a policy ({_EXPECTED})")
    from certrl.policies.onnx import is_onnx_file

    if is_onnx_file(path, head):
        return "onnx"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "torch"  # legacy (non-zip) torch.save
    from certrl.policies.bundle import is_bundle_manifest

    if head.lstrip()[:1] == b"{":
        if is_bundle_manifest(path):
            return "bundle"
        raise PolicyError(f"{path}: a JSON file but not a certrl-mlp bundle manifest ({_EXPECTED})")
    if path.suffix == ".safetensors" and len(head) >= 9 and head[8:9] == b"{":
        return "bundle"
    raise PolicyError(
        f"{path}: not a recognised policy file (it starts with bytes {head[:8].hex()}); {_EXPECTED}"
    )


def load_policy(
    spec: str | Path,
    *,
    vecnormalize: str | Path | None = None,
    obs_stats: str | Path | None = None,
    unsafe_pickle: bool = False,
    fmt: str | None = None,
    observation_space: Any = None,
    action_space: Any = None,
) -> Policy:
    """Load a policy file as a :class:`Policy`.

    Args:
        spec: a file path, or ``demo:NAME`` for a policy packaged with certrl.
        vecnormalize: SB3 ``VecNormalize`` pickle (read with a restricted unpickler). For an SB3
            zip, ``<stem>_vecnormalize.pkl``, ``<stem>/vecnormalize.pkl`` or ``vecnormalize.pkl``
            beside it is used when this is ``None``.
        obs_stats: ``.npz`` with ``mean``, ``var`` (optional ``clip``, ``epsilon``) for formats
            that do not store normalization (CleanRL, TorchScript).
        unsafe_pickle: allow unpickling a whole pickled ``nn.Module`` (runs code from the file).
        fmt: force a format (one of :data:`FORMATS`) instead of detecting it from the content.
        observation_space, action_space: the environment's Gymnasium spaces, when known. Loaders
            whose file does not record the sizes (TorchScript, ONNX with symbolic shapes) take
            them from here, and the discrete/continuous head follows the action space; the
            result is still checked by :func:`~certrl.policies.validate_spaces`.

    The format is detected from the content: SB3 zip (``data`` + ``policy.pth``), TorchScript
    archive, certrl bundle manifest (or its ``.safetensors``), ``torch.save`` checkpoint
    (CleanRL state dict; a pickled module needs ``unsafe_pickle``). Continuous policies whose
    file does not record the action bounds take them from the environment in
    :func:`~certrl.policies.validate_spaces`. Pixel (Atari CNN) policies (SB3 ``CnnPolicy``,
    CleanRL's Atari agents, TorchScript / ONNX modules on image spaces) take flattened
    ``[B, C*H*W]`` raw frames, scale them by 1/255 in their normalization and record
    ``Policy.obs_shape`` (see :mod:`certrl.policies.cnn`). Raises :class:`PolicyError` with a
    one-line message for anything unreadable.
    """
    path = resolve_spec(spec)
    if fmt is not None and fmt not in FORMATS:
        raise PolicyError(f"unknown policy format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if vecnormalize is not None and obs_stats is not None:
        raise PolicyError("pass either --vecnormalize or --obs-stats, not both")
    kind = detect_format(path) if fmt is None else fmt
    if fmt is not None and not path.is_file():
        detect_format(path)  # raises the not-found / directory message
    files: list[Path] = [path]
    policy: Policy
    zoo_run = None
    if kind == "zoo":
        from certrl.policies.zoo import find_zoo_run

        zoo_run = find_zoo_run(path, stats_given=vecnormalize is not None or obs_stats is not None)
        path, kind = zoo_run.model, "sb3"
        files = [path]
        if vecnormalize is None and obs_stats is None:
            vecnormalize = zoo_run.vecnormalize
    if kind == "sb3":
        from certrl.policies.sb3 import find_vecnormalize, load_sb3

        policy = load_sb3(path)
        if vecnormalize is None and obs_stats is None and zoo_run is None:
            vecnormalize = find_vecnormalize(path)
    elif kind == "torchscript":
        from certrl.policies.torchscript import load_torchscript

        policy = load_torchscript(path, observation_space=observation_space,
                                  action_space=action_space)
    elif kind == "onnx":
        from certrl.policies.onnx import load_onnx

        policy = load_onnx(path, observation_space=observation_space, action_space=action_space)
    elif kind == "bundle":
        from certrl.policies.bundle import load_bundle

        policy = load_bundle(path)
        files = [Path(policy.info.path), Path(policy.info.details["weights"])]
    elif kind in ("torch", "cleanrl", "pickle"):
        from certrl.policies.cleanrl import load_torch_file

        policy = load_torch_file(path, unsafe_pickle=unsafe_pickle,
                                 observation_space=observation_space, action_space=action_space)
    else:  # pragma: no cover - FORMATS is checked above
        raise PolicyError(f"unknown policy format {kind!r}")

    norm: ObsNormalization | None = None
    stats_file: Path | None = None
    if vecnormalize is not None:
        from certrl.policies.vecnormalize import load_vecnormalize

        stats_file = Path(vecnormalize)
        norm = load_vecnormalize(stats_file)
        policy.info.details["vecnormalize"] = str(stats_file)
        policy.info.details["norm_obs"] = norm is not None
    elif obs_stats is not None:
        from certrl.policies.cleanrl import load_obs_stats

        stats_file = Path(obs_stats)
        norm = load_obs_stats(stats_file)
        policy.info.details["obs_stats"] = str(stats_file)
    if stats_file is not None:
        files.append(stats_file)
        policy.info.sha256 = sha256_file(*files)
    if norm is not None:
        if policy.obs_norm is not None and policy.obs_shape is not None and \
                policy.obs_norm.is_pixel_scale:
            raise PolicyError(
                f"{path}: a pixel policy (it scales its {policy.obs_shape} frames by 1/255 "
                "itself); observation statistics on image frames are not supported — do not "
                "pass --vecnormalize / --obs-stats"
            )
        if policy.has_normalization:
            raise PolicyError(
                f"{path}: the policy already normalizes its observations; do not pass "
                "--vecnormalize / --obs-stats"
            )
        if norm.mean.size != policy.obs_dim:
            raise PolicyError(
                f"{stats_file}: observation statistics have size {norm.mean.size} but the policy "
                f"expects {policy.obs_dim} observations; they belong to another policy"
            )
        policy = rebuild(policy, obs_norm=norm)
    policy.info.details["files"] = [str(f) for f in files]
    if zoo_run is not None:
        policy.info.format = f"sb3/{zoo_run.layout}"
        policy.info.path = str(resolve_spec(spec))
        policy.info.details["zoo"] = zoo_run.to_json()
    return policy


def policy_summary(policy: Policy) -> dict[str, Any]:
    """What ``certrl policy-info`` shows: format, algorithm, sizes, head, normalization,
    SHA-256, path and parameter count (plus the loader's details)."""
    info = policy.info
    out: dict[str, Any] = {
        "format": info.format,
        "algorithm": info.algorithm or "unknown",
        "path": info.path,
        "sha256": info.sha256,
        "head": policy.head,
        "obs_dim": policy.obs_dim,
    }
    if policy.obs_shape is not None:
        out["obs_shape"] = list(policy.obs_shape)
    if policy.discrete:
        out["n_actions"] = policy.n_actions
    else:
        out["act_dim"] = policy.act_dim
        if policy.bounds_known:
            out["action_low"] = [float(v) for v in policy.action_low]  # type: ignore[union-attr]
            out["action_high"] = [float(v) for v in policy.action_high]  # type: ignore[union-attr]
        else:
            out["action_bounds"] = "from the environment"
    out["squash"] = policy.squash
    stochastic = policy.head in ("categorical",) or (
        policy.head == "gaussian" and (policy.log_std is not None or policy.state_dependent_std)
    )
    out["stochastic"] = stochastic
    out["normalization"] = "yes" if policy.has_normalization else "no"
    out["parameters"] = int(sum(p.numel() for p in policy.parameters()))
    for k, v in info.details.items():
        out.setdefault(k, v)
    return out
