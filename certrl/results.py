"""The versioned results file, written atomically, and the episode journal behind ``--resume``.

One results file per (environment, policy): ``<out>/<env-id>_<policy-name>.json``. Every
command (``evaluate``, ``certify``, ``attack``, ...) adds or replaces its own section, so
``report`` and ``gate`` read one file. Schema (``schema_version`` 1)::

    schema_version, certrl_version, created, updated, versions{python, certrl, torch, gymnasium,
    mujoco, numpy}, commands[] (every command line that wrote the file, newest last),
    env{id, alias, kwargs, horizon, step_reward_bounds, bounds_kind, return_bounds},
    policy{path, sha256, format, algorithm, summary},
    evaluation{seed, episodes, deterministic, batch_size, workers, returns[], lengths[],
               terminated[], clipped_returns[], clipped_steps, summary{...}, throughput{...}},
    certificates{...}, attacks{...}            # added by later commands

Writes go to a temporary file in the same directory, are fsync'ed and renamed over the target
(``os.replace``), so a reader never sees a half-written file. While a run is in progress every
finished episode is appended (and flushed) to a journal ``<out>/.journal/<name>.<section>.
<key>.jsonl``; ``--resume`` reloads the finished episodes of the same configuration and runs
only the rest. The journal is deleted once its section is in the results file.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import tempfile
import time
from pathlib import Path
from typing import Any

from certrl.evaluator import EpisodeResult

SCHEMA_VERSION = 1


class ResultsError(ValueError):
    """Unreadable / incompatible results file or unwritable output directory (exit code 2)."""


def _clean(x: Any) -> Any:
    """JSON-safe: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return _clean(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | Path, data: dict[str, Any]) -> None:
    path = Path(path)
    text = json.dumps(_clean(data), indent=1, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; results are shared files
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:  # pragma: no cover - platform without directory fsync
        pass


def ensure_writable_dir(out: str | Path) -> Path:
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".certrl-write-test.", dir=out)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise ResultsError(
            f"cannot write to the output directory {out} ({e.strerror or e}); "
            "pass a writable --out DIR"
        ) from None
    return out


def policy_name(spec: str) -> str:
    if spec.startswith("demo:"):
        return spec[5:]
    return Path(spec).stem or "policy"


def results_path(out: str | Path, env_id: str, policy_spec: str) -> Path:
    name = f"{env_id}_{policy_name(policy_spec)}"
    return Path(out) / (re.sub(r"[^A-Za-z0-9._-]+", "-", name) + ".json")


def versions() -> dict[str, str]:
    import gymnasium
    import mujoco
    import numpy
    import torch

    from certrl._version import __version__

    return {
        "python": platform.python_version(),
        "certrl": __version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "mujoco": mujoco.__version__,
        "numpy": numpy.__version__,
    }


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def load_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultsError(f"{path}: no such results file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ResultsError(f"{path}: not a certrl results file (invalid JSON: {e})") from None
    if not isinstance(data, dict) or "schema_version" not in data:
        raise ResultsError(f"{path}: not a certrl results file (no schema_version)")
    if int(data["schema_version"]) > SCHEMA_VERSION:
        raise ResultsError(
            f"{path}: schema version {data['schema_version']} is newer than this certrl "
            f"understands ({SCHEMA_VERSION}); upgrade certrl"
        )
    return data


def update_results(
    path: str | Path,
    *,
    command: str,
    env: dict[str, Any],
    policy: dict[str, Any],
    sections: dict[str, Any],
) -> dict[str, Any]:
    """Merge ``sections`` into the results file at ``path`` (created if missing) atomically.

    A file written for a different policy (other SHA-256) or environment is replaced whole,
    never mixed."""
    path = Path(path)
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = load_results(path)
        except ResultsError:
            data = {}
        same = (
            data.get("policy", {}).get("sha256") == policy.get("sha256")
            and data.get("env", {}).get("id") == env.get("id")
            and data.get("env", {}).get("kwargs", {}) == env.get("kwargs", {})
        )
        if not same:
            data = {}
    if not data:
        data = {"schema_version": SCHEMA_VERSION, "created": now(), "commands": []}
    data["schema_version"] = SCHEMA_VERSION
    data["updated"] = now()
    data["versions"] = versions()
    data["commands"] = [*data.get("commands", []), command][-50:]
    data["env"] = env
    data["policy"] = policy
    data.update(sections)
    atomic_write_json(path, data)
    return data


def config_key(config: dict[str, Any]) -> str:
    blob = json.dumps(_clean(config), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class Journal:
    """Append-only JSONL of finished episodes for one run configuration.

    The first line is a header with the configuration; each further line one
    :class:`EpisodeResult`. Lines are flushed as written and fsync'ed at most every
    ``sync_every`` seconds, so a kill loses at most the episodes of that window from the OS
    cache (none on a clean Ctrl-C, which closes the journal)."""

    def __init__(self, results_file: Path, section: str, config: dict[str, Any], resume: bool,
                 sync_every: float = 1.0) -> None:
        self.dir = results_file.parent / ".journal"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = config_key(config)
        self.path = self.dir / f"{results_file.stem}.{section}.{self.key}.jsonl"
        self.config = config
        self.sync_every = sync_every
        self.done: dict[int, EpisodeResult] = {}
        if resume and self.path.exists():
            self.done = self._read()
            self._f = open(self.path, "a")
        else:
            self._f = open(self.path, "w")
            self._f.write(json.dumps({"header": _clean(config)}) + "\n")
            self._f.flush()
        self._last_sync = time.monotonic()

    def _read(self) -> dict[int, EpisodeResult]:
        done: dict[int, EpisodeResult] = {}
        with open(self.path) as f:
            for n, line in enumerate(f):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a torn last line from a kill
                if n == 0:
                    continue
                r = EpisodeResult.from_json(rec)
                done[r.index] = r
        return done

    def append(self, r: EpisodeResult) -> None:
        self._f.write(json.dumps(_clean(r.to_json())) + "\n")
        self._f.flush()
        t = time.monotonic()
        if t - self._last_sync >= self.sync_every:
            os.fsync(self._f.fileno())
            self._last_sync = t

    def close(self, remove: bool = False) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
        if remove:
            try:
                self.path.unlink()
            except OSError:
                pass
