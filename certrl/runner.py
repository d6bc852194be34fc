"""Glue between the evaluator, the backends, the journal and the progress bar.

``run_section`` is what every command uses to run "m episodes of this configuration": it
resumes from the journal when asked, runs only the missing episode indices on the chosen
backend, journals each finished episode, shows a progress bar on a TTY, and returns all the
results sorted by episode index.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from certrl.backends import PolicyRef, RunStats, run_local
from certrl.envs import EnvSpec
from certrl.evaluator import ActionHook, EnvHook, EpisodeResult, EvalConfig, ObservationHook
from certrl.policies.base import Policy
from certrl.results import Journal


def progress_enabled(flag: bool | None = None) -> bool:
    if flag is not None:
        return flag
    if os.environ.get("CI") or os.environ.get("CERTRL_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


@dataclass
class Job:
    """A loaded policy on an environment, with the run settings shared by every section."""

    policy: Policy
    spec: EnvSpec
    results_file: Path
    ref: PolicyRef | None = None
    seed: int = 0
    batch_size: int = 128
    workers: int = 1
    deterministic: bool = True
    progress: bool | None = None
    resume: bool = False
    engine: str = "gym"
    #: ``"local"`` (:func:`certrl.backends.run_local`) or ``"ray"``
    #: (:func:`certrl.backends_ray.run_ray`, on the cluster at ``ray_address``; local if empty)
    backend: str = "local"
    ray_address: str | None = None
    #: how the user named the policy (``demo:hopper``, a path): the results file's ``policy.spec``
    label: str = ""

    def eval_config(self, deterministic: bool | None = None) -> EvalConfig:
        return EvalConfig(
            seed=self.seed,
            batch_size=self.batch_size,
            deterministic=self.deterministic if deterministic is None else deterministic,
            engine=self.engine,
        )


class _Progress:
    def __init__(self, enabled: bool, total: int, initial: int, desc: str) -> None:
        self.bar = None
        self.steps = 0
        self.t0 = time.perf_counter()
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=initial, desc=desc, unit="ep", file=sys.stderr,
                dynamic_ncols=True, smoothing=0.1,
            )

    def episode(self, r: EpisodeResult) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def add_steps(self, n: int) -> None:
        self.steps += n
        if self.bar is not None:
            dt = time.perf_counter() - self.t0
            if dt > 0:
                self.bar.set_postfix_str(f"{self.steps / dt:,.0f} steps/s", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_section(
    job: Job,
    section: str,
    episodes: int,
    *,
    obs_hooks: list[ObservationHook] | None = None,
    act_hooks: list[ActionHook] | None = None,
    env_hooks: list[EnvHook] | None = None,
    config: dict[str, Any] | None = None,
    deterministic: bool | None = None,
    desc: str = "",
) -> tuple[list[EpisodeResult], RunStats]:
    """Run episodes ``0..episodes-1`` of one configuration (resuming finished ones)."""
    obs_hooks = list(obs_hooks or [])
    act_hooks = list(act_hooks or [])
    env_hooks = list(env_hooks or [])
    cfg = job.eval_config(deterministic)
    key_config = {
        "section": section,
        "policy_sha256": job.policy.info.sha256,
        "env": job.spec.to_json(),
        "seed": job.seed,
        "deterministic": cfg.deterministic,
        "hooks": [h.config() for h in [*obs_hooks, *act_hooks, *env_hooks]],
        **(config or {}),
    }
    journal = Journal(job.results_file, section, key_config, resume=job.resume)
    done = {i: r for i, r in journal.done.items() if i < episodes}
    todo = [i for i in range(episodes) if i not in done]
    bar = _Progress(progress_enabled(job.progress), episodes, len(done), desc or section)

    def on_result(r: EpisodeResult) -> None:
        journal.append(r)
        done[r.index] = r
        bar.episode(r)

    try:
        if job.backend == "ray":
            from certrl.backends_ray import run_ray

            stats = run_ray(
                job.policy, job.spec, todo, cfg,
                workers=job.workers, address=job.ray_address, obs_hooks=obs_hooks,
                act_hooks=act_hooks, env_hooks=env_hooks, on_result=on_result,
                on_steps=bar.add_steps, ref=job.ref,
            )
        else:
            stats = run_local(
                job.policy, job.spec, todo, cfg,
                workers=job.workers, obs_hooks=obs_hooks, act_hooks=act_hooks,
                on_result=on_result, on_steps=bar.add_steps, ref=job.ref, env_hooks=env_hooks,
            )
    finally:
        bar.close()
        journal.close()
    stats.resumed = len(done) - stats.episodes  # type: ignore[attr-defined]
    results = [done[i] for i in range(episodes)]
    return results, stats


def finish_journal(job: Job, section: str) -> None:
    """Remove the journals of ``section`` once the section is safely in the results file."""
    d = job.results_file.parent / ".journal"
    for p in d.glob(f"{job.results_file.stem}.{section}.*.jsonl"):
        try:
            p.unlink()
        except OSError:
            pass


def returns_array(results: list[EpisodeResult], clipped: bool = False) -> np.ndarray:
    return np.array([r.clipped_return if clipped else r.ret for r in results], dtype=np.float64)
