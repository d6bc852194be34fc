"""`certrl bound` end to end: the bounds section, its numbers against the library and PGD, the
gate metric, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from certrl.cli import main
from certrl.envs import resolve_env
from certrl.evaluator import EvalConfig, run_episodes
from certrl.pipeline.bound import StateRecorder, cluster_fraction_ci, cluster_quantile_ci
from certrl.results import load_results
from tests._fixtures import random_bundle, random_policy


def _bound(tmp_path, policy: str, env: str, *extra: str) -> dict:
    out = tmp_path / "res"
    rc = main(["bound", policy, "--env", env, "--workers", "1", "--no-progress", "--out",
               str(out), *extra])
    assert rc == 0
    files = sorted(out.glob("*.json"))
    return load_results(files[0])


def test_recorder_changes_nothing_and_records_every_step() -> None:
    pol = random_policy("Hopper-v5")
    spec = resolve_env("hopper")
    plain = run_episodes(pol, spec, [0, 1, 2], EvalConfig(seed=3))
    rec = run_episodes(pol, spec, [0, 1, 2], EvalConfig(seed=3),
                       obs_hooks=[StateRecorder("normalized")])
    plain, rec = sorted(plain, key=lambda r: r.index), sorted(rec, key=lambda r: r.index)
    assert [r.ret for r in plain] == [r.ret for r in rec]
    for r in rec:
        s = np.asarray(r.extras["states"])
        assert s.shape == (r.length, 11)
    # the first recorded state is the normalized reset observation
    env = spec.make()
    from certrl.evaluator import episode_env_seed

    o0 = env.reset(seed=episode_env_seed(3, 0))[0]
    z0 = pol.normalize(torch.as_tensor(o0[None], dtype=torch.float32))[0].numpy()
    np.testing.assert_allclose(np.asarray(rec[0].extras["states"][0]), z0, rtol=0, atol=0)


def test_bound_cartpole_discrete(tmp_path) -> None:
    """Greedy-action certificates of the CartPole demo: exact at eps=0, non-increasing in eps,
    and never above PGD's unchanged fraction on the same (all) states."""
    data = _bound(tmp_path, "demo:cartpole", "cartpole", "--episodes", "4", "--eps", "0.05",
                  "--pgd-states", "100000", "--eps-grid", "0,0.01,0.02,0.05,0.1")
    b = data["bounds"]
    assert b["discrete"] and b["method"] == "crown" and b["space"] == "raw"
    assert b["states"] == sum(b["lengths"]) == 4 * 500
    fr = [row["certified_fraction"]["value"] for row in b["curve"]]
    assert [row["eps"] for row in b["curve"]] == [0, 0.01, 0.02, 0.05, 0.1]
    assert fr[0] == 1.0 and fr == sorted(fr, reverse=True) and fr[-1] < 1.0
    for row in b["curve"][1:]:
        assert row["pgd"]["states"] == b["states"]
        assert row["certified_fraction"]["value"] <= row["pgd"]["fraction_unchanged"]
        lo, hi = row["certified_fraction"]["ci"]
        assert lo <= row["certified_fraction"]["value"] <= hi
    assert b["at_eps"]["eps"] == 0.05
    assert len(b["traces"]) == 3 and len(b["traces"][0]["certified"]) == 500
    # the clean episodes are the evaluate episodes (same seeds, recorder changes nothing)
    rc = main(["evaluate", "demo:cartpole", "--env", "cartpole", "--episodes", "4",
               "--workers", "1", "--no-progress", "--out", str(tmp_path / "ev")])
    assert rc == 0
    ev = load_results(tmp_path / "ev" / "CartPole-v1_cartpole.json")["evaluation"]
    assert ev["returns"] == b["returns"]


def test_bound_hopper_continuous_matches_library_and_pgd(tmp_path) -> None:
    from certrl.certificates.propagation import action_deviation_bounds
    from certrl.policies import load_policy

    data = _bound(tmp_path, "demo:hopper", "hopper", "--episodes", "2", "--pgd-states",
                  "100000", "--eps-grid", "0,0.01,0.075", "--batch-size", "7")
    b = data["bounds"]
    assert not b["discrete"] and b["eps"] == 0.075 and b["tol"] == 0.1
    assert b["space"] == "normalized" and b["norm"] == "linf"
    at0 = b["curve"][0]
    assert at0["certified_fraction"]["value"] == 1.0 and at0["deviation_max"] < 1e-3
    for row in b["curve"][1:]:
        q, pq = row["deviation_quantiles"], row["pgd"]["deviation_quantiles"]
        for k in q:  # certified (upper bound) >= found (lower bound), state by state
            assert q[k] >= pq[k] - 1e-7
        assert row["deviation_max"] >= row["pgd"]["deviation_max"]
        # l2 bound: at least the l_inf one, at most sqrt(act_dim) times it
        for k in q:
            assert q[k] - 1e-12 <= row["deviation_l2_quantiles"][k] <= np.sqrt(3) * 2.0
        assert row["certified_fraction"]["value"] <= row["pgd"]["fraction_within_tol"]
    # the section's numbers are the library's on the recorded trace of episode 0
    tr = b["traces"][0]
    pol = load_policy("demo:hopper")
    spec = resolve_env("hopper")
    res = run_episodes(pol, spec, [0], EvalConfig(seed=0),
                       obs_hooks=[StateRecorder("normalized")])
    states = torch.as_tensor(np.asarray(res[0].extras["states"]), dtype=torch.float32)
    ab = action_deviation_bounds(pol, states, 0.075, "linf", "normalized", "crown")
    np.testing.assert_allclose(tr["certified_deviation"], ab.linf.numpy(), rtol=1e-12)
    # gate on it: the lower CI end of the certified fraction at eps
    rc = main(["gate", str(next((tmp_path / "res").glob("*.json"))), "--require",
               "certified_fraction@eps=0.01 >= 0.0", "--require",
               "certified_fraction@eps=0.075 >= 0.999"])
    assert rc == 1


def test_bound_bad_input(tmp_path, capsys) -> None:
    pol = random_bundle(tmp_path, "Hopper-v5")
    rc = main(["bound", str(pol), "--env", "hopper", "--eps", "-1", "--workers", "1"])
    assert rc == 2 and "--eps must be" in capsys.readouterr().err
    rc = main(["bound", str(pol), "--env", "hopper", "--stochastic", "--workers", "1"])
    assert rc == 2 and "drop --stochastic" in capsys.readouterr().err
    rc = main(["bound", str(pol), "--env", "hopper", "--eps", "3", "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "normalized observation space" in err and "Traceback" not in err

    class Gelu(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body(x)

    path = tmp_path / "gelu.pt"
    torch.jit.save(torch.jit.script(Gelu()), str(path))
    rc = main(["bound", str(path), "--env", "cartpole", "--eps", "0.1", "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "bound propagation" in err and "Traceback" not in err


def test_cluster_bootstrap_ci() -> None:
    ok = np.r_[np.ones(100), np.zeros(100), np.ones(50), np.zeros(150)]
    ep = np.repeat([0, 1, 2, 3], 100)
    f, lo, hi = cluster_fraction_ci(ok, ep, seed=0)
    assert f == pytest.approx(150 / 400) and lo < f < hi
    assert cluster_fraction_ci(ok, ep, seed=0) == (f, lo, hi)  # seeded
    # one episode: degenerate interval
    assert cluster_fraction_ci(np.ones(5), np.zeros(5), seed=0) == (1.0, 1.0, 1.0)
    x = np.arange(400, dtype=float)
    q, qlo, qhi = cluster_quantile_ci(x, ep, 0.5, seed=0)
    assert q == pytest.approx(199.5) and qlo <= q <= qhi


def test_gate_certified_fraction_requirement_syntax() -> None:
    from certrl.gate import parse_requirement

    r = parse_requirement("certified_fraction@eps=0.075 >= 0.5")
    assert r.eps == 0.075 and r.label == "certified_fraction@eps=0.075" and r.budget is None
    assert r.key == "certified_fraction_eps_0_075"
    for bad, msg in [("certified_fraction >= 0.5", "needs a per-step budget"),
                     ("certified_fraction@B=0.1 >= 0.5", "needs a per-step budget"),
                     ("certified_return@eps=0.1 >= 5", "unknown qualifier")]:
        with pytest.raises(ValueError, match=msg):
            parse_requirement(bad)
