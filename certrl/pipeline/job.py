"""Build a :class:`~certrl.runner.Job` (a loaded policy on an environment with the run settings)
and the results-file pieces every job shares (policy record, evaluation section, summaries)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from certrl.envs import EnvSpec, picklable, resolve_env, with_reward_bounds
from certrl.errors import UsageError, positive
from certrl.policies.base import Policy
from certrl.runner import Job


def parse_reward_bounds(text: str | tuple[float, float] | None) -> tuple[float, float] | None:
    """``"LO,HI"`` (or a pair) -> ``(lo, hi)``; ``None`` stays ``None``."""
    if text is None or text == "":
        return None
    if isinstance(text, str):
        try:
            lo, hi = (float(v) for v in text.split(","))
        except ValueError:
            raise UsageError(f"--reward-bounds {text!r}: expected LO,HI") from None
        return lo, hi
    lo, hi = text
    return float(lo), float(hi)


def resolve_job_env(
    env: str | EnvSpec | Callable[..., Any],
    env_kwargs: dict[str, Any] | str | None = None,
    reward_bounds: str | tuple[float, float] | None = None,
) -> EnvSpec:
    """An :class:`~certrl.envs.EnvSpec` from an alias, a Gymnasium id, ``pkg.module:Class``, an
    environment factory or a spec, with ``reward_bounds`` (per step) applied."""
    spec = env if isinstance(env, EnvSpec) else resolve_env(env, env_kwargs)
    if isinstance(env, EnvSpec) and env_kwargs:
        spec = resolve_env(env, env_kwargs)
    rb = parse_reward_bounds(reward_bounds)
    if rb is not None:
        spec = with_reward_bounds(spec, *rb)
    return spec


def zoo_env_kwargs(policy: str | Path | Policy) -> dict[str, Any]:
    """The environment keyword arguments an RL Zoo / Hugging Face run folder records
    (``env_kwargs.yml``), or ``{}`` for anything else."""
    if isinstance(policy, Policy):
        return dict(policy.info.details.get("zoo", {}).get("env_kwargs") or {})
    from certrl.policies.loader import resolve_spec

    path = resolve_spec(policy)
    if not path.is_dir():
        return {}
    from certrl.policies.zoo import find_zoo_run, is_zoo_dir

    return dict(find_zoo_run(path).env_kwargs) if is_zoo_dir(path) else {}


def load_for_env(
    policy: str | Path | Policy,
    spec: EnvSpec,
    loader_kwargs: dict[str, Any] | None = None,
) -> Policy:
    """Load ``policy`` (a path or ``demo:NAME``; a :class:`Policy` is used as is) with the
    environment's spaces, and check it fits them (:func:`~certrl.policies.validate_spaces`)."""
    from certrl.policies import load_policy, validate_spaces

    env = spec.make()
    try:
        if not isinstance(policy, Policy):
            policy = load_policy(policy, observation_space=env.observation_space,
                                 action_space=env.action_space, **(loader_kwargs or {}))
        return validate_spaces(policy, env.observation_space, env.action_space, spec.gym_id)
    finally:
        env.close()


def check_engine(engine: str, spec: EnvSpec) -> None:
    """``engine="mujoco"`` on an environment it does not reproduce: a :class:`UsageError`."""
    if engine in ("auto", "gym"):
        return
    from certrl.engines import ENGINES

    cls = ENGINES.get(engine)
    if cls is None or not cls.supports(spec):
        raise UsageError(f"--engine {engine} does not support {spec.gym_id} with these "
                         "--env-kwargs; use --engine auto or gym")


def ray_cpus(address: str | None) -> int:
    """Start or join Ray (``backend="ray"``) and return its CPUs: the default worker count."""
    from certrl.backends_ray import RayUnavailableError, import_ray, init_ray

    try:
        init_ray(address)
        return int(import_ray().cluster_resources().get("CPU", 1)) or 1
    except RayUnavailableError as e:
        raise UsageError(str(e)) from None


def build_job(
    policy: str | Path | Policy,
    env: str | EnvSpec | Callable[..., Any],
    *,
    episodes: int,
    env_kwargs: dict[str, Any] | str | None = None,
    reward_bounds: str | tuple[float, float] | None = None,
    vecnormalize: str | Path | None = None,
    obs_stats: str | Path | None = None,
    unsafe_pickle: bool = False,
    fmt: str | None = None,
    seed: int = 0,
    workers: int | None = None,
    batch_size: int | None = None,
    engine: str = "auto",
    backend: str = "local",
    ray_address: str | None = None,
    deterministic: bool = True,
    progress: bool | None = None,
    out: str | Path = "results",
    resume: bool = False,
    label: str | None = None,
) -> Job:
    """Load ``policy`` on ``env`` with the run settings of one certrl job.

    ``policy``: a file, an RL Zoo / Hugging Face folder, ``demo:NAME`` or a loaded
    :class:`Policy`; ``env``: an alias, a Gymnasium id, ``pkg.module:ClassOrFactory``, a
    zero-argument environment factory or an :class:`EnvSpec`. An RL Zoo folder's recorded
    ``env_kwargs`` apply unless ``env_kwargs`` is given. ``workers`` defaults to all cores (the
    Ray cluster's CPUs with ``backend="ray"``), ``batch_size`` to the engine's width; results
    depend on neither. Bad input raises a one-line :class:`UsageError` / ``PolicyError`` /
    ``EnvError``.
    """
    from certrl.backends import PolicyRef, default_workers
    from certrl.engines import default_batch_size
    from certrl.results import ensure_writable_dir, results_path

    positive("--episodes", episodes)
    if batch_size is not None:
        positive("--batch-size", batch_size)
    if workers is not None:
        positive("--workers", workers)
    if not env_kwargs:
        env_kwargs = zoo_env_kwargs(policy) or env_kwargs
    spec = resolve_job_env(env, env_kwargs, reward_bounds)
    out_dir = ensure_writable_dir(out)
    loader_kwargs: dict[str, Any] = {
        "vecnormalize": vecnormalize,
        "obs_stats": obs_stats,
        "unsafe_pickle": unsafe_pickle,
        "fmt": fmt,
    }
    loaded = load_for_env(policy, spec, loader_kwargs)
    if isinstance(policy, Policy) and not loaded.info.sha256:
        loaded.info.sha256 = _weights_sha256(loaded)  # keys the journal: resume needs it
    if label is None:
        label = str(policy) if not isinstance(policy, Policy) else (
            loaded.info.path or f"policy-{loaded.info.sha256[:12]}")
    check_engine(engine, spec)
    if ray_address and backend != "ray":
        raise UsageError("--ray-address needs --backend ray")
    n_workers = workers or (ray_cpus(ray_address) if backend == "ray" else default_workers())
    n_workers = max(1, min(n_workers, episodes))
    if spec.factory is not None and n_workers > 1 and not spec.factory_picklable():
        warnings.warn(f"the environment factory {spec.gym_id} cannot be sent to worker "
                      "processes (a lambda or local function); running in this process — "
                      "define it at module level for parallel runs", stacklevel=2)
        n_workers = 1
    if isinstance(policy, Policy) and n_workers > 1 and not picklable(loaded):
        warnings.warn(f"this {loaded.info.format or 'in-memory'} policy cannot be sent to worker "
                      "processes; running in this process — pass its file path instead for "
                      "parallel runs", stacklevel=2)
        n_workers = 1
    if batch_size is None:
        batch_size = default_batch_size(engine, spec)
    ref = None if isinstance(policy, Policy) else PolicyRef(str(policy), loader_kwargs,
                                                             spec.gym_id)
    return Job(
        policy=loaded,
        spec=spec,
        results_file=results_path(out_dir, spec.gym_id, label),
        ref=ref,
        seed=seed,
        batch_size=min(batch_size, max(1, -(-episodes // n_workers))),
        workers=n_workers,
        deterministic=deterministic,
        progress=progress,
        resume=resume,
        engine=engine,
        backend=backend,
        ray_address=ray_address,
        label=label,
    )


def _weights_sha256(policy: Policy) -> str:
    """SHA-256 of a policy built in memory: its head kind and every tensor of its state."""
    import hashlib

    h = hashlib.sha256(f"{policy.head}:{policy.obs_dim}".encode())
    for name, t in sorted(policy.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def policy_json(job: Job) -> dict[str, Any]:
    """The results file's ``policy`` record."""
    info = job.policy.info
    return {
        "spec": job.label,
        "path": info.path,
        "sha256": info.sha256,
        "format": info.format,
        "algorithm": info.algorithm,
        "summary": job.policy.describe(),
    }


def returns_summary(returns: Any, seed: int) -> dict[str, Any]:
    """Mean ± std, IQM and their 95% stratified-bootstrap (percentile) CIs of one sample."""
    from certrl.stats import summarize_returns

    r = np.asarray(returns, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "fewer than 5 runs": the CI is degenerate, shown as such
        s = summarize_returns(r, seed=seed)
    m, q = s["mean"], s["iqm"]
    return {
        "n": int(r.size),
        "mean": m.point,
        "std": float(r.std(ddof=1)) if r.size > 1 else 0.0,
        "mean_ci": [m.low, m.high],
        "iqm": q.point,
        "iqm_ci": [q.low, q.high],
        "min": float(r.min()),
        "max": float(r.max()),
        "ci": {"confidence_level": m.confidence_level, "method": m.method},
    }


def evaluation_section(job: Job, results: list, stats: Any) -> dict[str, Any]:
    """The ``evaluation`` section: per-episode returns, lengths, summary and throughput."""
    from certrl.runner import returns_array

    rets = returns_array(results)
    return {
        "seed": job.seed,
        "episodes": len(results),
        "deterministic": job.deterministic,
        "batch_size": job.batch_size,
        "workers": stats.workers,
        "returns": rets.tolist(),
        "lengths": [r.length for r in results],
        "terminated": [r.terminated for r in results],
        "clipped_returns": [r.clipped_return for r in results],
        "clipped_steps": int(sum(r.clipped_steps for r in results)),
        "summary": returns_summary(rets, seed=job.seed),
        "throughput": {
            "steps": stats.steps,
            "seconds": round(stats.seconds, 3),
            "steps_per_second": round(stats.steps_per_second, 1),
            "retries": stats.retries,
            "resumed_episodes": getattr(stats, "resumed", 0),
        },
    }


def run_evaluation(job: Job, episodes: int) -> dict[str, Any]:
    """Run ``episodes`` clean episodes of ``job`` and return the ``evaluation`` section."""
    from certrl.runner import run_section

    results, stats = run_section(job, "evaluation", episodes, desc="evaluate")
    return evaluation_section(job, results, stats)


def write_results(job: Job, command: str, sections: dict[str, Any]) -> dict[str, Any]:
    """Merge ``sections`` into the job's results file (atomically) and return its content."""
    from certrl.results import update_results

    return update_results(job.results_file, command=command, env=job.spec.to_json(),
                          policy=policy_json(job), sections=sections)
