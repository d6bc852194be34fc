"""RL Baselines3 Zoo run folders and Hugging Face ``sb3/*`` model repositories as policies.

Layouts, with the file names ``rl_zoo3`` writes (checked against DLR-RM/rl-baselines3-zoo:
``rl_zoo3/exp_manager.py`` ``save_trained_model`` / ``_save_config`` / ``create_callbacks``,
``rl_zoo3/utils.py`` ``get_model_path`` / ``get_saved_hyperparams`` / ``create_test_env``,
``rl_zoo3/enjoy.py``, ``rl_zoo3/load_from_hub.py`` and ``rl_zoo3/push_to_hub.py``)::

    logs/<algo>/<EnvName>_<n>[_<uuid>]/   layout "rl-zoo": the run folder (exp_manager save_path)
        <EnvName>.zip                      final model (model.save at the end of training)
        best_model.zip                     EvalCallback's best model (optional)
        rl_model_<steps>_steps.zip         CheckpointCallback checkpoints (optional)
        <EnvName>/                         params folder: config.yml, args.yml, vecnormalize.pkl
                                           (+ env_kwargs.yml when downloaded by load_from_hub)
    <org>/<algo>-<EnvName>/                layout "huggingface": a hub repo (push_to_hub)
        <algo>-<EnvName>.zip, config.yml, args.yml, env_kwargs.yml, vec_normalize.pkl, README.md,
        results.json, train_eval_metrics.zip, <algo>-<EnvName>/ (the model zip, unzipped)

``<EnvName>`` is the Gymnasium id with ``/`` replaced by ``-`` (huggingface_sb3
``EnvironmentName``); the real id is ``args.yml``'s ``env``. Accepted paths: a run folder, its
params folder ``<EnvName>/``, a folder above run folders (``logs/<algo>/`` or ``logs/``: the run
with the highest ``_<n>`` is taken, as ``enjoy.py --exp-id 0`` does; runs of several algorithms or
envs are ambiguous) and a Hugging Face repo folder.

Model choice (``prefer="auto"``): ``enjoy.py`` by default loads only the final model
``<EnvName>.zip`` (``get_model_path``; ``--load-best`` / ``--load-last-checkpoint`` select the
others and it fails when the chosen file is missing). We take the final model when present, else
``best_model.zip``, else the checkpoint with the most steps, and record the choice and the reason
in :meth:`ZooRun.to_json`. Zips of several environments in one folder are ambiguous.

Normalization follows ``get_saved_hyperparams`` / ``create_test_env``: ``config.yml``'s
``normalize`` (``true``, a dict, or a string such as ``"dict(norm_obs=True, norm_reward=False)"``)
says whether the run used a ``VecNormalize``; if it did, its pickle must be there (else
:class:`PolicyError`: returns without the training statistics would be meaningless), unless
``norm_obs`` is false (observations are then not normalized); if it did not, a pickle is ignored.
Env kwargs follow ``enjoy.py``: ``config.yml``'s ``env_kwargs``, updated by ``env_kwargs.yml``,
replaced by ``args.yml``'s ``env_kwargs`` when it is not null; ``render_mode`` (added by
``push_to_hub``) is dropped.

Safety: nothing from the folder is executed or unpickled here. YAML is parsed with a
``yaml.SafeLoader`` subclass that adds constructors only for the inert tags PyYAML's default dumper
writes into these files -- ``!!python/object/apply:collections.OrderedDict`` (built as a ``dict``),
``!!python/tuple`` and the plain ``!!python/`` scalar / list / dict tags -- and reads
``!!python/name:X`` as the string ``"X"`` without importing it. Any other ``!!python/...`` tag
(``object/apply:os.system``, ``object/new``, ``module`` ...) or unknown tag is refused with
:class:`PolicyError`. ``normalize`` strings, which the zoo ``eval``s, are read with :mod:`ast`
(literal keyword values only). The model zip is read by :mod:`certrl.policies.sb3` (JSON +
weights-only tensors) and the VecNormalize pickle by the restricted unpickler of
:mod:`certrl.policies.vecnormalize`.
"""

from __future__ import annotations

import ast
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from certrl.policies.base import PolicyError

#: Algorithm names of ``rl_zoo3.utils.ALGOS`` (plus the old ``her``): folder / file-name prefixes.
ZOO_ALGOS = frozenset({"a2c", "ars", "crossq", "ddpg", "dqn", "her", "ppo", "ppo_lstm", "qrdqn",
                       "sac", "td3", "tqc", "trpo"})
LAYOUTS = ("rl-zoo", "huggingface")
PREFER = ("auto", "final", "best", "checkpoint")

MAX_YAML_BYTES = 1 << 20
_MAX_NODES = 200_000
_MAX_DEPTH = 64

_PARAM_FILES = ("config.yml", "args.yml", "env_kwargs.yml", "vecnormalize.pkl",
                "vec_normalize.pkl")
_NOT_MODELS = frozenset({"train_eval_metrics.zip"})
_CHECKPOINT_RE = re.compile(r"^rl_model_(\d+)_steps\.zip$")
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_RUN_RE = re.compile(rf"^(?P<env>.+)_(?P<n>\d+)(?:_{_UUID})?$")
_HF_RE = re.compile(r"^(?P<algo>[a-z0-9_]+)-(?P<env>.+)$")


# ----------------------------------------------------------------------------- safe YAML
class _Refused(Exception):
    """A YAML tag outside the allow-list."""


class ZooYamlLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` plus the inert python tags the zoo's ``yaml.dump`` writes (module
    docstring); every other ``!!python/`` tag raises before anything is constructed."""


def _ordered_dict(loader: ZooYamlLoader, node: yaml.Node) -> dict[Any, Any]:
    # PyYAML dumps an OrderedDict as a sequence holding one list of [key, value] pairs.
    if not isinstance(node, yaml.SequenceNode):
        raise _Refused("!!python/object/apply:collections.OrderedDict in a form yaml.dump does "
                       "not write")
    args = loader.construct_sequence(node, deep=True)
    if len(args) != 1 or not isinstance(args[0], list):
        raise _Refused("malformed !!python/object/apply:collections.OrderedDict")
    out: dict[Any, Any] = {}
    for pair in args[0]:
        if not isinstance(pair, list) or len(pair) != 2:
            raise _Refused("malformed !!python/object/apply:collections.OrderedDict item")
        key, value = pair
        if isinstance(key, (list, dict)):
            raise _Refused("unhashable key in !!python/object/apply:collections.OrderedDict")
        out[key] = value
    return out


def _tuple(loader: ZooYamlLoader, node: yaml.Node) -> tuple[Any, ...]:
    if not isinstance(node, yaml.SequenceNode):
        raise _Refused("!!python/tuple that is not a sequence")
    return tuple(loader.construct_sequence(node, deep=True))


def _scalar_as(kind: str) -> Any:
    def construct(loader: ZooYamlLoader, node: yaml.Node) -> Any:
        if kind == "list":
            return loader.construct_sequence(node, deep=True)  # type: ignore[arg-type]
        if kind == "dict":
            return loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
        tag = {"str": "str", "unicode": "str", "int": "int", "float": "float", "bool": "bool",
               "none": "null"}[kind]
        if not isinstance(node, yaml.ScalarNode):
            raise _Refused(f"!!python/{kind} that is not a scalar")
        return loader.construct_object(yaml.ScalarNode(f"tag:yaml.org,2002:{tag}", node.value))

    return construct


def _python_name(loader: ZooYamlLoader, suffix: str, node: yaml.Node) -> str:
    return suffix  # the dotted name, never imported


def _refuse(loader: ZooYamlLoader, suffix: str, node: yaml.Node) -> Any:
    raise _Refused(f"!!python/{suffix}")


ZooYamlLoader.add_constructor(
    "tag:yaml.org,2002:python/object/apply:collections.OrderedDict", _ordered_dict)
ZooYamlLoader.add_constructor("tag:yaml.org,2002:python/tuple", _tuple)
for _kind in ("str", "unicode", "int", "float", "bool", "none", "list", "dict"):
    ZooYamlLoader.add_constructor(f"tag:yaml.org,2002:python/{_kind}", _scalar_as(_kind))
# Exact tags above win; of the prefixes, python/name: is registered (and so tried) first.
ZooYamlLoader.add_multi_constructor("tag:yaml.org,2002:python/name:", _python_name)
ZooYamlLoader.add_multi_constructor("tag:yaml.org,2002:python/", _refuse)


def _plain(obj: Any, where: str, budget: list[int], depth: int = 0) -> Any:
    """A fresh copy made of dict / list / tuple / scalars only (no shared or cyclic parts)."""
    budget[0] -= 1
    if budget[0] < 0 or depth > _MAX_DEPTH:
        raise PolicyError(f"{where}: the YAML is too large or too deeply nested (alias bomb or "
                          "cycle?); it is not a file rl_zoo3 writes")
    if isinstance(obj, dict):
        return {_plain(k, where, budget, depth + 1): _plain(v, where, budget, depth + 1)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v, where, budget, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v, where, budget, depth + 1) for v in obj)
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    return str(obj)  # dates, bytes, sets: inert values, kept as text


def read_zoo_yaml(path: Path) -> Any:
    """Parse one of the zoo's YAML files safely (:class:`ZooYamlLoader`); an empty file is
    ``None``. Raises :class:`PolicyError` for a refused tag or unreadable YAML."""
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise PolicyError(f"{path}: {size} bytes is too large for an rl_zoo3 YAML file")
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PolicyError(f"{path}: cannot read the file ({e.strerror})") from None
    except UnicodeDecodeError:
        raise PolicyError(f"{path}: not UTF-8 text; it is not a YAML file rl_zoo3 wrote") from None
    try:
        data = yaml.load(text, Loader=ZooYamlLoader)  # noqa: S506 - SafeLoader subclass
    except _Refused as e:
        raise PolicyError(
            f"{path}: refused YAML tag {e} (only plain YAML, OrderedDict and tuple tags are "
            "read; this tag would run code): the file is not as rl_zoo3 writes it and may be "
            "malicious — delete or fix it"
        ) from None
    except yaml.YAMLError as e:
        msg = " ".join(str(e).split())[:200]
        raise PolicyError(f"{path}: unreadable YAML ({msg}); fix or delete the file") from None
    except (TypeError, ValueError, RecursionError) as e:
        raise PolicyError(f"{path}: malformed YAML ({type(e).__name__}); fix or delete the "
                          "file") from None
    return _plain(data, str(path), [_MAX_NODES])


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k if isinstance(k, str) else str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return "nan"
    return obj


# ----------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class ZooRun:
    """An RL Zoo / Hugging Face run folder, resolved: which model, statistics and env to use."""

    model: Path
    vecnormalize: Path | None
    env_id: str | None
    env_kwargs: dict[str, Any]
    algo: str | None
    hyperparams: dict[str, Any]
    layout: str
    files: list[str]
    root: Path = Path(".")
    choice: str = "final"
    choice_reason: str = ""
    candidates: dict[str, Any] = field(default_factory=dict)
    normalize: Any = None
    resolved_from: str = "run folder"
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready description (policy-info / results provenance)."""
        return {
            "layout": self.layout,
            "root": str(self.root),
            "resolved_from": self.resolved_from,
            "model": str(self.model),
            "model_choice": {"chosen": self.choice, "reason": self.choice_reason,
                             "candidates": _jsonable(self.candidates)},
            "vecnormalize": None if self.vecnormalize is None else str(self.vecnormalize),
            "normalize": _jsonable(self.normalize),
            "env_id": self.env_id,
            "env_kwargs": _jsonable(self.env_kwargs),
            "algo": self.algo,
            "hyperparams": _jsonable(self.hyperparams),
            "files": list(self.files),
            "notes": list(self.notes),
        }


@dataclass
class _Found:
    layout: str
    root: Path
    params: Path | None
    env_name: str | None
    algo_hint: str | None
    finals: list[Path]
    best: Path | None
    checkpoints: list[tuple[int, Path]]
    resolved_from: str = "run folder"
    problem: str | None = None
    notes: list[str] = field(default_factory=list)


def _sb3_zip_state(path: Path) -> bool | None:
    """True / False: an SB3 model zip or not; None: not a readable zip (kept, so that loading
    it reports the damage)."""
    from certrl.policies.sb3 import is_sb3_zip

    try:
        with zipfile.ZipFile(path) as zf:
            return is_sb3_zip(zf.namelist())
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError):
        return None


def _model_zips(d: Path) -> tuple[list[Path], Path | None, list[tuple[int, Path]]]:
    finals: list[Path] = []
    best: Path | None = None
    checkpoints: list[tuple[int, Path]] = []
    try:
        entries = sorted(d.glob("*.zip"))
    except OSError:
        return finals, best, checkpoints
    for p in entries:
        if not p.is_file() or p.name in _NOT_MODELS:
            continue
        m = _CHECKPOINT_RE.match(p.name)
        if m:
            checkpoints.append((int(m.group(1)), p))
        elif p.name == "best_model.zip":
            best = p
        elif _sb3_zip_state(p) is not False:
            finals.append(p)
    checkpoints.sort()
    return finals, best, checkpoints


def _is_params_dir(d: Path) -> bool:
    return d.is_dir() and any((d / n).is_file() for n in _PARAM_FILES)


def _hf_name(stem: str) -> tuple[str, str] | None:
    m = _HF_RE.match(stem)
    if m and m.group("algo") in ZOO_ALGOS:
        return m.group("algo"), m.group("env")
    return None


def _subdirs(d: Path) -> list[Path]:
    try:
        return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _classify_run(d: Path) -> _Found | None:
    """``d`` as a folder holding model zips (a run folder or a hub repo), or None."""
    finals, best, checkpoints = _model_zips(d)
    if not (finals or best or checkpoints):
        return None
    parent_algo = d.parent.name if d.parent.name in ZOO_ALGOS else None

    def zoo(params: Path | None, env: str | None, **kw: Any) -> _Found:
        return _Found("rl-zoo", d, params, env, parent_algo, finals, best, checkpoints, **kw)

    for f in finals:
        if _is_params_dir(d / f.stem):
            return zoo(d / f.stem, f.stem)
    run = _RUN_RE.match(d.name)
    if run and _is_params_dir(d / run.group("env")):
        return zoo(d / run.group("env"), run.group("env"))
    hf = [h for h in (_hf_name(f.stem) for f in finals) if h]
    if _is_params_dir(d) or hf:
        algo = hf[0][0] if len({h[0] for h in hf}) == 1 else None
        env = hf[0][1] if len({h[1] for h in hf}) == 1 else None
        return _Found("huggingface", d, d, env, algo, finals, best, checkpoints)
    if best or checkpoints:
        subs = [s for s in _subdirs(d) if _is_params_dir(s)]
        if len(subs) > 1:
            names = ", ".join(s.name for s in subs)
            return zoo(None, None, problem=f"{d}: several params folders ({names}) beside "
                       "best_model.zip / the checkpoints; pass the model .zip you mean")
        if subs:
            return zoo(subs[0], subs[0].name)
        return zoo(None, run.group("env") if run else None)
    if run and any(f.stem == run.group("env") for f in finals):
        return zoo(None, run.group("env"))
    return None


def _runs_below(d: Path) -> list[_Found]:
    runs = [r for r in (_classify_run(c) for c in _subdirs(d)) if r and r.layout == "rl-zoo"]
    if runs:
        return runs
    return [r for c in _subdirs(d) for r in (_classify_run(g) for g in _subdirs(c))
            if r and r.layout == "rl-zoo"]


def _pick_latest(d: Path, runs: list[_Found]) -> _Found:
    groups: dict[str, list[_Found]] = {}
    for r in runs:
        groups.setdefault(f"{r.algo_hint or '?'}/{r.env_name or r.root.name}", []).append(r)
    if len(groups) > 1:
        listed = "; ".join(f"{k} ({', '.join(r.root.name for r in v)})"
                           for k, v in sorted(groups.items()))
        return _Found("rl-zoo", d, None, None, None, [], None, [],
                      problem=f"{d}: holds runs of several algorithms / environments ({listed}); "
                      "pass the run folder you mean")

    def run_id(r: _Found) -> int:
        m = _RUN_RE.match(r.root.name)
        return int(m.group("n")) if m else 0

    (runs,) = groups.values()
    top = max(run_id(r) for r in runs)
    latest = [r for r in runs if run_id(r) == top]
    if len(latest) > 1:
        names = ", ".join(r.root.name for r in latest)
        return _Found("rl-zoo", d, None, None, None, [], None, [],
                      problem=f"{d}: several runs share the latest id {top} ({names}); pass the "
                      "run folder you mean")
    chosen = latest[0]
    chosen.resolved_from = (f"folder above the runs ({d}): latest run id {top} of "
                            f"{len(runs)} run{'s' if len(runs) > 1 else ''}, as enjoy --exp-id 0")
    return chosen


def _locate(path: Path) -> _Found | None:
    found = _classify_run(path)
    if found is not None:
        return found
    if _is_params_dir(path):
        parent = _classify_run(path.parent)
        if parent is not None and parent.layout == "rl-zoo" and parent.params == path:
            parent.resolved_from = "params folder (<EnvName>/ inside the run folder)"
            return parent
    if (path / "data").is_file() and (path / "policy.pth").is_file():
        zipped = path.with_name(f"{path.name}.zip")
        hint = f"pass {zipped.parent} or {zipped}" if zipped.is_file() else \
            "pass the .zip it was unzipped from"
        return _Found("huggingface", path, None, None, None, [], None, [],
                      problem=f"{path}: an unzipped SB3 model (data + policy.pth); {hint}")
    runs = _runs_below(path)
    if runs:
        return _pick_latest(path, runs)
    return None


def is_zoo_dir(path: Path) -> bool:
    """Whether ``path`` is (or sits in / above) an RL Zoo run folder or a Hugging Face sb3 repo
    folder: cheap, never raises; :func:`find_zoo_run` gives the verdict and the messages."""
    try:
        return Path(path).is_dir() and _locate(Path(path)) is not None
    except (OSError, PolicyError):
        return False


# ----------------------------------------------------------------------------- choices
def _final_env(f: Path, layout: str) -> str:
    hf = _hf_name(f.stem)
    return hf[1] if hf and layout == "huggingface" else f.stem


def _choose(found: _Found, prefer: str) -> tuple[Path, str, str]:
    finals = found.finals
    final: Path | None = None
    if finals:
        envs = sorted({_final_env(f, found.layout) for f in finals})
        if len(envs) > 1:
            listed = ", ".join(f"{f.name} ({_final_env(f, found.layout)})" for f in finals)
            raise PolicyError(
                f"{found.root}: model zips for several environments ({listed}); pass the model "
                ".zip you mean (with --vecnormalize if it used one)"
            )
        if len(finals) == 1:
            final = finals[0]
        else:
            expected = [f for f in finals if f.stem == found.env_name
                        or (found.algo_hint and f.stem == f"{found.algo_hint}-{found.env_name}")]
            if len(expected) != 1:
                raise PolicyError(
                    f"{found.root}: several model zips ({', '.join(f.name for f in finals)}); "
                    "pass the model .zip you mean"
                )
            final = expected[0]
            found.notes.append("other model zips ignored: " + ", ".join(
                f.name for f in finals if f != final))
    latest = found.checkpoints[-1][1] if found.checkpoints else None
    name = final.name if final is not None else f"{found.env_name or '<EnvName>'}.zip"
    if prefer == "final" or (prefer == "auto" and final is not None):
        if final is None:
            raise PolicyError(f"{found.root}: no final model {name}; {_have(found)}")
        how = ("the model rl_zoo3 enjoy loads by default" if found.layout == "rl-zoo"
               else "the hub repo's model")
        return final, "final", f"final model {final.name}: {how}" + (
            "" if prefer == "final" else " (over best_model.zip and checkpoints)")
    if prefer == "best" or (prefer == "auto" and found.best is not None):
        if found.best is None:
            raise PolicyError(f"{found.root}: no best_model.zip; {_have(found)}")
        why = "asked for" if prefer == "best" else \
            f"no final model {name} (training stopped early?)"
        return found.best, "best", (f"{why}: best_model.zip, EvalCallback's best model (enjoy "
                                    "--load-best)")
    if latest is None:
        raise PolicyError(f"{found.root}: no rl_model_<steps>_steps.zip checkpoint; {_have(found)}")
    why = "asked for" if prefer == "checkpoint" else f"no final model {name} nor best_model.zip"
    return latest, "checkpoint", (f"{why}: latest checkpoint {latest.name} "
                                  "(enjoy --load-last-checkpoint)")


def _have(found: _Found) -> str:
    names = [f.name for f in found.finals] + (["best_model.zip"] if found.best else []) + \
        [p.name for _, p in found.checkpoints]
    return "the folder has " + (", ".join(names) if names else "no model zip")


def _literal_kwargs(text: str) -> dict[str, Any] | None:
    """``"dict(norm_obs=True, clip_obs=5.0)"`` / ``"{'norm_obs': True}"`` -> dict, read with
    :mod:`ast` (literals only; never evaluated); None if it is anything else."""
    if len(text) > 10_000:
        return None
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return None
    try:
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("dict", "OrderedDict") and not node.args):
            out: dict[str, Any] = {}
            for kw in node.keywords:
                if kw.arg is None:
                    return None
                out[kw.arg] = ast.literal_eval(kw.value)
            return out
        if isinstance(node, ast.Dict):
            value = ast.literal_eval(node)
            return value if all(isinstance(k, str) for k in value) else None
    except (ValueError, TypeError, SyntaxError, RecursionError):
        return None
    return None


def _normalize_setting(value: Any) -> tuple[bool, bool, str | None]:
    """(a VecNormalize was used, it normalized observations, a note) from ``normalize``."""
    if value is None or value is False:
        return False, False, None
    if value is True:
        return True, True, None
    kwargs: dict[str, Any] | None = None
    if isinstance(value, dict):
        kwargs = value
    elif isinstance(value, str):
        if value.strip() in ("False", "false", "None", ""):
            return False, False, None
        if value.strip() in ("True", "true"):
            return True, True, None
        kwargs = _literal_kwargs(value)
        if kwargs is None:
            return True, True, (f"normalize: {value!r} is not a literal dict(...); assuming "
                                "observations were normalized")
    if kwargs is None:
        return bool(value), bool(value), None
    return True, bool(kwargs.get("norm_obs", True)), None


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise PolicyError(f"{where} is not a mapping of keyword names to values; fix the file")
    return dict(value)


def _vecnormalize_file(params: Path | None, layout: str) -> Path | None:
    if params is None:
        return None
    names = ("vec_normalize.pkl", "vecnormalize.pkl") if layout == "huggingface" else \
        ("vecnormalize.pkl", "vec_normalize.pkl")
    for n in names:
        if (params / n).is_file():
            return params / n
    return None


def find_zoo_run(path: Path, *, prefer: str = "auto", stats_given: bool = False) -> ZooRun:
    """Resolve an RL Zoo run folder / Hugging Face repo folder (module docstring): the model zip
    (``prefer``: ``auto`` | ``final`` | ``best`` | ``checkpoint``, the latest one), its
    VecNormalize pickle, env id and kwargs. ``stats_given``: the caller supplies observation
    statistics itself (``--vecnormalize`` / ``--obs-stats``), so a missing pickle is not an
    error. Raises :class:`PolicyError` (one line)."""
    path = Path(path)
    if prefer not in PREFER:
        raise PolicyError(f"unknown model choice {prefer!r}; expected one of {', '.join(PREFER)}")
    if not path.is_dir():
        raise PolicyError(f"{path}: not a folder; pass an RL Zoo run folder, a Hugging Face sb3 "
                          "repo folder or a model .zip")
    found = _locate(path)
    if found is None:
        try:
            empty = not any(path.iterdir())
        except OSError:
            empty = False
        what = "it is empty" if empty else (
            "no <EnvId>.zip, best_model.zip, rl_model_<steps>_steps.zip or <algo>-<EnvId>.zip in "
            "it, its parent or its subfolders")
        raise PolicyError(
            f"{path}: not an RL Zoo run folder or Hugging Face sb3 repo ({what}); pass the folder "
            "rl_zoo3 train / load_from_hub wrote (logs/<algo>/<EnvId>_<n>) or the model .zip"
        )
    if found.problem:
        raise PolicyError(found.problem)
    model, choice, reason = _choose(found, prefer)
    notes = list(found.notes)
    params = found.params
    files = [str(model)]

    def read(name: str) -> Any:
        if params is None or not (params / name).is_file():
            return None
        files.append(str(params / name))
        return read_zoo_yaml(params / name)

    config_raw = read("config.yml")
    args_raw = read("args.yml")
    kwargs_raw = read("env_kwargs.yml")
    has_config = params is not None and (params / "config.yml").is_file()
    config = _mapping(config_raw, f"{params}/config.yml")
    args = _mapping(args_raw, f"{params}/args.yml")

    # env kwargs, as enjoy.py: config's, (env_kwargs.yml), then args.yml's when not null.
    env_kwargs = _mapping(config.get("env_kwargs"), f"{params}/config.yml: env_kwargs")
    env_kwargs.update(_mapping(kwargs_raw, f"{params}/env_kwargs.yml"))
    if args.get("env_kwargs") is not None:
        env_kwargs = _mapping(args["env_kwargs"], f"{params}/args.yml: env_kwargs")
    if "render_mode" in env_kwargs:
        notes.append(f"env_kwargs render_mode={env_kwargs.pop('render_mode')!r} dropped "
                     "(push_to_hub adds it for its video)")

    # VecNormalize, as get_saved_hyperparams / create_test_env.
    pkl = _vecnormalize_file(params, found.layout)
    normalize = config.get("normalize", False) if has_config else None
    vecnormalize: Path | None = None
    if has_config:
        used, norm_obs, note = _normalize_setting(normalize)
        if note:
            notes.append(note)
        if used and pkl is not None:
            vecnormalize = pkl
        elif used and norm_obs and stats_given:
            notes.append("the run's VecNormalize pickle is missing: using the statistics given "
                         "with --vecnormalize / --obs-stats")
        elif used and norm_obs:
            want = "vec_normalize.pkl" if found.layout == "huggingface" else "vecnormalize.pkl"
            old = " (an old obs_rms.pkl is there: not supported)" if params is not None and \
                (params / "obs_rms.pkl").is_file() else ""
            raise PolicyError(
                f"{params}/config.yml says normalize: {normalize!r} but {params}/{want} is "
                f"missing{old}; without the training's VecNormalize statistics the observations "
                "are not normalized and the returns are meaningless — copy the run's "
                f"{want} there, or pass it with --vecnormalize"
            )
        elif used:
            notes.append(f"normalize: {normalize!r} has norm_obs false: no observation "
                         "statistics needed")
        elif pkl is not None:
            notes.append(f"{pkl.name} ignored: config.yml has normalize: {normalize!r} (as "
                         "rl_zoo3 enjoy does)")
    elif pkl is not None:
        vecnormalize = pkl
        notes.append(f"no config.yml: using {pkl.name} found in the run")
    else:
        notes.append("no config.yml: cannot tell whether the run used VecNormalize; if it did, "
                     "pass the model .zip with --vecnormalize")
    if vecnormalize is not None:
        files.insert(1, str(vecnormalize))

    env_id = args.get("env") if isinstance(args.get("env"), str) and args.get("env") else None
    if env_id is None and found.env_name:
        env_id = found.env_name
        notes.append(f"env id {env_id!r} taken from the file names (no args.yml env; an id with "
                     "'/' is written with '-' there)")
    elif env_id is not None and found.env_name and env_id.replace("/", "-") != found.env_name:
        notes.append(f"args.yml env {env_id!r} differs from the file names ({found.env_name!r})")
    algo = args.get("algo") if isinstance(args.get("algo"), str) and args.get("algo") else None
    algo = (algo or found.algo_hint or None)
    for key in ("env_wrapper", "vec_env_wrapper", "frame_stack"):
        if config.get(key):
            notes.append(f"config.yml {key}: {config[key]!r} is applied by rl_zoo3 to the env; "
                         "the environment certrl builds must give the same observations")
    return ZooRun(
        model=model,
        vecnormalize=vecnormalize,
        env_id=env_id,
        env_kwargs=env_kwargs,
        algo=algo.lower() if algo else None,
        hyperparams=config,
        layout=found.layout,
        files=files,
        root=found.root,
        choice=choice,
        choice_reason=reason,
        candidates={"final": [f.name for f in found.finals],
                    "best": found.best.name if found.best else None,
                    "checkpoints": [p.name for _, p in found.checkpoints]},
        normalize=normalize,
        resolved_from=found.resolved_from,
        notes=notes,
    )
