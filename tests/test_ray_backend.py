"""The Ray backend on a local Ray instance (started and stopped here): byte-identical returns to
one local process whatever the number of workers and shards, a lost worker's finished episodes
kept and only its unfinished ones re-run (counted as a retry), errors of the input not retried,
and the ``--backend ray`` command line."""

from __future__ import annotations

import json
import os
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("ray", reason="Ray is not installed (pip install 'certrl[ray]')")

from certrl.backends import WorkerError, run_local  # noqa: E402
from certrl.backends_ray import default_shard_size, run_ray  # noqa: E402
from certrl.cli import main  # noqa: E402
from certrl.envs import resolve_env  # noqa: E402
from certrl.evaluator import ActionHook, EvalConfig, ObservationHook, StepContext  # noqa: E402
from certrl.smoothing import GaussianSmoothing  # noqa: E402
from tests._fixtures import random_policy  # noqa: E402

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from certrl.backends_ray import init_ray

    if ray.is_initialized():
        ray.shutdown()
    old = os.environ.get("PYTHONPATH")
    # the workers unpickle the hooks defined in this module: they must import ``tests``
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), old) if p)
    try:
        assert init_ray(None, num_cpus=2)
        yield ray
    finally:
        ray.shutdown()
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def _bytes(results: list) -> list[tuple[int, bytes, int, bool]]:
    """Each episode's return as its 8 IEEE bytes (byte-identical, not approximately equal)."""
    return sorted((r.index, struct.pack("<d", r.ret), r.length, r.terminated) for r in results)


def _collect(fn: Any, *args: Any, **kwargs: Any) -> tuple[list, Any]:
    out: list = []
    stats = fn(*args, on_result=out.append, **kwargs)
    return out, stats


def test_ray_returns_byte_identical_to_one_local_worker(ray_local) -> None:
    spec = resolve_env("hopper")
    policy = random_policy("Hopper-v5", seed=5)
    todo = list(range(14))
    cfg = EvalConfig(seed=3, batch_size=4, deterministic=False, engine="gym")
    ref, st = _collect(run_local, policy, spec, todo, cfg, workers=1,
                       obs_hooks=[GaussianSmoothing(0.2)])
    assert st.episodes == 14
    for workers, shard, engine in ((2, 3, "mujoco"), (3, 5, "gym")):
        cfg_r = EvalConfig(seed=3, batch_size=2, deterministic=False, engine=engine)
        steps: list[int] = []
        out, stats = _collect(run_ray, policy, spec, todo, cfg_r, workers=workers,
                              shard_size=shard, obs_hooks=[GaussianSmoothing(0.2)],
                              on_steps=steps.append)
        assert _bytes(out) == _bytes(ref)
        assert stats.retries == 0 and stats.episodes == 14 and stats.workers == workers
        assert stats.steps == sum(r.length for r in ref) == sum(steps)
    assert len({r.ret for r in ref}) == 14


class _DieOnce(ObservationHook):
    """Logs every episode start; the first time ``episode`` reaches step 3, sleeps (so that the
    finished episodes leave the worker) and kills the worker process (``never``: every time)."""

    name = "die-once"
    rng_stream = 6
    adversarial = False
    space = "raw"

    def __init__(self, log_dir: str, episode: int, always: bool = False) -> None:
        self.log_dir = log_dir
        self.episode = episode
        self.always = always

    def __call__(self, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        for ep, t in zip(ctx.episodes.tolist(), ctx.t.tolist(), strict=True):
            if t == 0:
                with open(os.path.join(self.log_dir, "starts.log"), "a") as f:
                    f.write(f"{ep}\n")
            marker = os.path.join(self.log_dir, "died")
            if ep == self.episode and t == 3 and (self.always or not os.path.exists(marker)):
                Path(marker).touch()
                time.sleep(1.0)
                os._exit(1)
        return x


def _starts(d: Path) -> list[int]:
    return [int(v) for v in (d / "starts.log").read_text().split()]


def test_lost_worker_keeps_finished_episodes_and_retries_its_shard(
    ray_local, tmp_path: Path, capsys
) -> None:
    spec = resolve_env("hopper")
    policy = random_policy("Hopper-v5", seed=6)
    cfg = EvalConfig(seed=0, batch_size=1, engine="mujoco")
    todo = list(range(9))
    ref, _ = _collect(run_local, policy, spec, todo, cfg, workers=1)
    # one shard of 0..8 run one episode at a time: 0..4 finish, the worker dies in episode 5
    out, stats = _collect(run_ray, policy, spec, todo, cfg, workers=1, shard_size=9,
                          obs_hooks=[_DieOnce(str(tmp_path), episode=5)])
    assert _bytes(out) == _bytes(ref)
    assert stats.retries == 1 and stats.episodes == 9
    starts = _starts(tmp_path)
    # finished episodes were not run again; the lost one and the rest of the shard ran once more
    assert sorted(starts) == [0, 1, 2, 3, 4, 5, 5, 6, 7, 8]
    assert "re-running the 4 unfinished episodes" in capsys.readouterr().err


def test_repeated_worker_loss_stops_with_worker_error(ray_local, tmp_path: Path) -> None:
    spec = resolve_env("hopper")
    policy = random_policy("Hopper-v5", seed=6)
    got: list = []
    with pytest.raises(WorkerError, match="lost 2 times") as e:
        run_ray(policy, spec, [0, 1, 2], EvalConfig(seed=0, batch_size=1), workers=1,
                shard_size=3, max_retries=1, on_result=got.append,
                obs_hooks=[_DieOnce(str(tmp_path), episode=1, always=True)])
    assert e.value.kind == "WorkerDied"
    assert [r.index for r in got] == [0]  # the finished episode reached the caller


class _NaNAction(ActionHook):
    name = "nan"
    rng_stream = 7

    def __call__(self, action: torch.Tensor, nobs: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        return action * float("nan")


def test_input_errors_are_not_retried(ray_local) -> None:
    spec = resolve_env("hopper")
    policy = random_policy("Hopper-v5", seed=1)
    with pytest.raises(WorkerError, match="non-finite action") as e:
        run_ray(policy, spec, [0, 1], EvalConfig(seed=0, batch_size=2), workers=1,
                act_hooks=[_NaNAction()])
    assert e.value.kind == "EvaluationError"


def test_default_shard_size() -> None:
    assert default_shard_size(10000, 8, 64) == 256  # four lockstep batches
    assert default_shard_size(40, 4, 64) == 5  # at least two shards per worker
    assert default_shard_size(1, 4, 64) == 1


def test_cli_backend_ray_matches_local(ray_local, tmp_path: Path, capsys) -> None:
    rets = {}
    for backend, workers in (("local", "1"), ("ray", "2")):
        out = tmp_path / backend
        rc = main(["evaluate", "demo:hopper", "--env", "hopper", "--episodes", "4", "--seed",
                   "2", "--workers", workers, "--backend", backend, "--out", str(out),
                   "--no-progress"])
        assert rc == 0, capsys.readouterr().err
        (f,) = out.glob("*.json")
        data = json.loads(f.read_text())["evaluation"]
        rets[backend] = data["returns"]
        assert data["throughput"]["retries"] == 0
    assert rets["ray"] == rets["local"]
    assert min(rets["ray"]) > 1000 and len(set(rets["ray"])) == 4
    assert np.isfinite(rets["ray"]).all()


def test_cli_usage_errors(tmp_path: Path, capsys) -> None:
    rc = main(["evaluate", "demo:hopper", "--env", "hopper", "--episodes", "2", "--ray-address",
               "127.0.0.1:1", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("certrl: error: --ray-address needs --backend ray")
    rc = main(["evaluate", "demo:cartpole", "--env", "cartpole", "--episodes", "2", "--engine",
               "mujoco", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "--engine mujoco does not support CartPole-v1" in err
    assert err.count("\n") == 1
