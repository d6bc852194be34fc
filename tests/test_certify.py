"""`certrl certify` end to end: the certificates section, its numbers, the gate exit codes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import ndtr, ndtri

from certrl.certificates import (
    expected_return_certificate,
    expected_return_certificate_cp,
    percentile_certificate,
)
from certrl.certificates.bands import survival_band
from certrl.certificates.returns import expected_return_from_band
from certrl.cli import main
from certrl.evaluator import EvalConfig, run_episodes
from certrl.results import load_results
from certrl.smoothing import GaussianSmoothing, SmoothedPolicy
from tests._fixtures import random_bundle, random_policy


def _certify(tmp_path, *extra):
    pol = random_bundle(tmp_path, "CartPole-v1", normalize=False)
    out = tmp_path / "res"
    rc = main(["certify", str(pol), "--env", "cartpole", "--sigma", "0.1", "--episodes", "40",
               "--budgets", "0,0.1,0.3", "--workers", "1", "--no-attack", "--out", str(out),
               *extra])
    return rc, load_results(out / "CartPole-v1_policy.json")


def test_certificates_section_matches_the_math(tmp_path, capsys):
    rc, data = _certify(tmp_path, "--band", "dkw")
    assert rc == 0
    assert data["certificates"]["band"]["method"] == "dkw-massart-one-sided"
    c = data["certificates"]
    assert c["sigma"] == 0.1 and c["space"] == "raw" and c["episodes"] == 40
    rets = np.array(c["smoothed_clipped_returns"])
    assert c["reward_lower_bound"] == 1.0  # CartPole: +1 per step, at least one step
    expected = expected_return_certificate(rets, 0.1, [0, 0.1, 0.3], 0.05, 1.0)
    got = [b["expected_return_lower_bound"] for b in c["budgets"]]
    assert got == pytest.approx(expected.tolist(), rel=1e-12)
    assert got[0] >= got[1] >= got[2] >= 1.0
    assert got[0] <= rets.mean()
    pct = percentile_certificate(rets, 0.1, 0.3, (0.1, 0.25, 0.5), 0.05, lower=1.0)
    assert c["budgets"][2]["percentile_lower_bounds"]["0.5"] == pct[0.5]
    assert c["budgets"][1]["per_step_eps"] == pytest.approx(0.1 / np.sqrt(500))
    assert "With probability >= 95%" in c["statement"]
    out = capsys.readouterr().out
    assert "certified E[R]" in out and c["statement"] in out
    assert data["evaluation"]["episodes"] == 40  # the unsmoothed clean return, same seeds


def test_auto_band_uses_the_return_lattice_on_cartpole(tmp_path):
    """CartPole returns are integers 1..500: auto picks the Clopper-Pearson grid 2..500 (from
    the environment, not the data) and it is what certify reports."""
    rc, data = _certify(tmp_path)
    assert rc == 0
    c = data["certificates"]
    assert c["band"]["method"] == "clopper-pearson-grid-bonferroni"
    assert c["band"]["thresholds"] == 499
    rets = np.array(c["smoothed_clipped_returns"])
    expected = expected_return_certificate_cp(rets, 0.1, [0, 0.1, 0.3], 0.05, 1.0,
                                              np.arange(2, 501))
    got = [b["expected_return_lower_bound"] for b in c["budgets"]]
    assert got == pytest.approx(expected.tolist(), rel=1e-12)
    assert got[0] >= got[1] >= got[2] >= 1.0 and got[0] <= rets.mean()


def test_hybrid_band_with_survival_and_comparison(tmp_path):
    """--band hybrid (auto off a lattice); the section carries the certified survival function
    (the band's bound pushed through Neyman-Pearson at every budget) and every band's expected
    certificate on the same sample."""
    rc, data = _certify(tmp_path, "--band", "hybrid")
    assert rc == 0
    c = data["certificates"]
    assert c["band"]["method"] == "hybrid-dkw-order-statistic-tails"
    rets = np.array(c["smoothed_clipped_returns"])
    band = survival_band(rets, 0.05, "hybrid")
    expected = expected_return_from_band(band, 0.1, [0, 0.1, 0.3], 1.0)
    got = [b["expected_return_lower_bound"] for b in c["budgets"]]
    assert got == pytest.approx(expected.tolist(), rel=1e-12)
    cmp = c["band_comparison"]["expected_return_lower_bound"]
    assert set(cmp) == {"dkw", "order", "hybrid", "cp-grid"}
    assert cmp["hybrid"] == pytest.approx(got, rel=1e-12)
    assert cmp["dkw"] == pytest.approx(
        expected_return_certificate(rets, 0.1, [0, 0.1, 0.3], 0.05, 1.0).tolist(), rel=1e-12)
    sv = c["survival"]
    thr = np.array(sv["thresholds"])
    assert thr[0] == rets.min() and thr[-1] == rets.max()
    p03 = np.array(sv["certified"]["0.3"])
    assert p03 == pytest.approx(ndtr(ndtri(band.at(thr)) - 0.3 / 0.1).tolist(), rel=1e-12)
    assert np.all(np.array(sv["certified"]["0"]) >= p03)
    assert sv["clean_empirical"][0] == 1.0


def test_certify_prints_the_threat_scale_on_hopper(tmp_path, capsys):
    pol = random_bundle(tmp_path, "Hopper-v5")
    rc = main(["certify", str(pol), "--env", "hopper", "--episodes", "20", "--budgets",
               "0,0.2", "--no-attack", "--workers", "1", "--no-progress", "--out",
               str(tmp_path / "o")])
    assert rc == 0
    c = load_results(tmp_path / "o" / "Hopper-v5_policy.json")["certificates"]
    thr = c["attack_threat"]
    assert thr["eps"] == 0.075 and thr["comparable"]
    assert thr["episode_l2_equivalent"] == pytest.approx(0.075 * np.sqrt(11 * 1000))
    assert c["budgets"][1]["per_step_linf_eps"] == pytest.approx(0.2 / np.sqrt(11 * 1000))
    out = capsys.readouterr().out
    assert "episode l2 budget of 7.87" in out and "certified CDF" in out
    assert c["band"]["method"] == "hybrid-dkw-order-statistic-tails"  # auto, no lattice


def test_cp_grid_band_needs_a_lattice(tmp_path, capsys):
    pol = random_bundle(tmp_path, "Pendulum-v1", normalize=False)
    rc = main(["certify", str(pol), "--env", "pendulum", "--episodes", "5", "--band", "cp-grid",
               "--no-attack", "--workers", "1", "--out", str(tmp_path / "o")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--band cp-grid needs returns on a known lattice" in err and "Traceback" not in err


def test_smoothed_returns_are_the_smoothing_hook(tmp_path):
    _, data = _certify(tmp_path)
    from certrl.envs import resolve_env
    from certrl.policies import load_policy, validate_spaces

    spec = resolve_env("cartpole")
    env = spec.make()
    pol = validate_spaces(load_policy(data["policy"]["path"]), env.observation_space,
                          env.action_space, "CartPole-v1")
    res = run_episodes(pol, spec, [0, 1, 2], EvalConfig(seed=0),
                       obs_hooks=[GaussianSmoothing(0.1, "raw")])
    assert [r.ret for r in res] == data["certificates"]["smoothed_returns"][:3]


def test_fail_under_exit_codes(tmp_path):
    rc, data = _certify(tmp_path, "--fail-under", "0")
    assert rc == 0 and data["certificates"]["gate"]["passed"]
    rc, data = _certify(tmp_path, "--fail-under", "1e9")
    assert rc == 1 and not data["certificates"]["gate"]["passed"]


def test_per_state_certificates(tmp_path):
    rc, data = _certify(tmp_path, "--per-state", "--per-state-n", "100")
    assert rc == 0
    ps = data["certificates"]["per_state"]
    assert ps["states"] > 0
    fr = ps["fraction_certified"]
    vals = [fr[k] for k in sorted(fr, key=float)]
    assert all(0 <= v <= 1 for v in vals) and vals == sorted(vals, reverse=True)


def test_majority_vote_counts():
    pol = random_policy("CartPole-v1", normalize=False)
    sp = SmoothedPolicy(pol, 0.05)
    import torch

    obs = torch.randn(5, 4)
    counts = sp.vote_counts(obs, 200, np.random.default_rng(0))
    assert counts.shape == (5, 2) and (counts.sum(1) == 200).all()
    # with tiny noise the vote equals the base action almost surely
    tiny = SmoothedPolicy(pol, 1e-6).predict_vote(obs, 50, np.random.default_rng(0))
    assert (tiny == pol.act(obs).numpy()).all()


def test_certificate_stays_below_the_attacked_return_on_cartpole(tmp_path):
    """The certified lower bound holds against our best attack on a real smoothed policy
    (Kumar et al.'s CartPole-v0 setting, the noise-trained demo): bound <= attacked mean, with
    a non-trivial bound (far above the trivial a = 1) so the comparison means something."""
    out = tmp_path / "res"
    rc = main(["certify", "demo:cartpole-noisy", "--env", "cartpole-v0", "--sigma", "0.2",
               "--space", "raw", "--budgets", "0.1,0.2", "--episodes", "300",
               "--clean-episodes", "10", "--attack-episodes", "16", "--workers", "1",
               "--no-progress", "--out", str(out)])
    assert rc == 0
    c = load_results(out / "CartPole-v0_cartpole-noisy.json")["certificates"]
    assert c["band"]["method"] == "clopper-pearson-grid-bonferroni"
    for row in c["budgets"]:
        bound, att = row["expected_return_lower_bound"], row["attack"]
        assert att is not None and att["episodes"] == 16
        assert 50.0 < bound <= att["mean"]
        # the attack really spent budget (audited against B by the attack's threat model)
        assert att["config"]["threat"]["episode_budget"] == row["budget"]


def test_certify_keeps_a_larger_clean_evaluation(tmp_path):
    """certify's short clean run (min(episodes, 100)) must not replace a longer evaluate run
    of the same policy and seed in the results file; a shorter one is replaced."""
    pol = random_bundle(tmp_path, "CartPole-v1", normalize=False)
    out = tmp_path / "res"
    common = ["--env", "cartpole", "--workers", "1", "--out", str(out), "--no-progress"]
    assert main(["evaluate", str(pol), "--episodes", "30", *common]) == 0
    f = out / "CartPole-v1_policy.json"
    before = load_results(f)["evaluation"]
    assert main(["certify", str(pol), "--episodes", "10", "--no-attack", *common]) == 0
    data = load_results(f)
    assert data["evaluation"] == before and data["evaluation"]["episodes"] == 30
    assert data["certificates"]["clean_unsmoothed"]["episodes"] == 10
    assert main(["certify", str(pol), "--episodes", "40", "--clean-episodes", "40",
                 "--no-attack", *common]) == 0
    data = load_results(f)
    assert data["evaluation"]["episodes"] == 40
    assert data["evaluation"]["returns"][:30] == before["returns"]  # same episodes, extended


def test_certify_says_when_it_replaces_certificates_of_another_sigma(tmp_path, capsys) -> None:
    args = ["certify", "demo:cartpole", "--env", "cartpole", "--budgets", "0,0.1",
            "--episodes", "20", "--clean-episodes", "5", "--no-attack", "--workers", "1",
            "--out", str(tmp_path)]
    assert main([*args, "--sigma", "0.2"]) == 0
    assert "replaced" not in capsys.readouterr().err
    assert main([*args, "--sigma", "0.2"]) == 0  # the same smoothed policy again: no note
    assert "replaced" not in capsys.readouterr().err
    assert main([*args, "--sigma", "0.1"]) == 0
    err = capsys.readouterr().err
    assert "held certificates at sigma=0.2 (raw space, per input)" in err and "replaced" in err
    (f,) = tmp_path.glob("*.json")
    assert load_results(f)["certificates"]["sigma"] == 0.1
