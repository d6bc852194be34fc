"""Anytime-valid early stopping (certrl.certificates.sequential), checked by simulation.

The true certificate functional C(B) of each synthetic distribution is computed from its known
CDF; a decision is wrong when it is PASS while C(B) < t or FAIL while C(B) >= t. Over a few
hundred repetitions the wrong-decision rate must stay <= alpha (+ 3 Monte-Carlo standard
errors), and clear cases must stop with >= 5x fewer episodes than the fixed-m run (10000, and
certify's default 1000).

DKW bands are conservative, so on smooth distributions the error rate is far below alpha and a
broken procedure could pass those checks. ``test_error_rate_matches_the_exact_union_bound``
therefore uses returns in {a, b}, where a wrong decision at look k is exactly a binomial
deviation of at least eps_k: its probability is computed exactly, the union bound over the
looks is <= alpha, and the simulated rate must stay below that union bound; a procedure that
spent the full alpha at every look gives about 7x the bound there (0.04 vs 0.006) and fails.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
from scipy import stats

from certrl.certificates import (
    Decision,
    SequentialCertifier,
    alpha_spending,
    certificate_functional,
    dkw_epsilon,
    expected_return_certificate,
    expected_return_upper_bound,
    geometric_schedule,
    np_bounds_sorted,
)

SIGMA, BUDGET, LO, HI = 0.2, 0.1, 0.0, 500.0


def beta_truth(a: float, b: float, sigma: float = SIGMA, budget: float = BUDGET) -> float:
    """C(B) of 500 * Beta(a, b) on a fine grid (from below; error < 500/200000 per unit)."""
    v = np.linspace(LO, HI, 200_001)[1:]
    return certificate_functional(v, stats.beta(a, b).sf(v / HI), sigma, budget, LO)


def simulate(sampler, threshold: float, reps: int, n_max: int, alpha: float,
             spending: str = "uniform", seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized SequentialCertifier over ``reps`` independent runs: decisions, episodes."""
    rng = np.random.default_rng(seed)
    sched = geometric_schedule(n_max)
    alphas = alpha_spending(alpha, len(sched), spending)
    x = sampler(rng, (reps, n_max))
    dec = np.full(reps, Decision.CONTINUE.value, dtype=object)
    used = np.zeros(reps, dtype=int)
    for k, (n, a_k) in enumerate(zip(sched, alphas, strict=True)):
        act = np.flatnonzero(dec == Decision.CONTINUE.value)
        if act.size == 0:
            break
        lo, up = np_bounds_sorted(np.sort(x[act, :n], axis=1), SIGMA, BUDGET,
                                  dkw_epsilon(n, a_k), LO, HI)
        last = k + 1 == len(sched)
        d = np.where(lo >= threshold, "PASS", np.where(
            up < threshold, "FAIL", "UNDECIDED" if last else "CONTINUE"))
        dec[act] = d
        used[act] = n
    return dec, used


def beta_sampler(a: float, b: float):
    return lambda rng, shape: HI * rng.beta(a, b, shape)


def two_point_sampler(x1: float, x2: float, p: float):
    return lambda rng, shape: np.where(rng.random(shape) < p, x2, x1)


def mc_tol(alpha: float, reps: int) -> float:
    return 3.0 * math.sqrt(alpha * (1 - alpha) / reps)


# ------------------------------------------------------------------------- deterministic parts
def test_lower_bound_is_the_expected_return_certificate():
    rng = np.random.default_rng(0)
    for r in (np.round(HI * rng.beta(5, 2, 300)), HI * rng.beta(2, 5, 57), np.full(40, HI)):
        for alpha in (0.05, 0.003):
            eps = dkw_epsilon(r.size, alpha)
            lo, up = np_bounds_sorted(np.sort(r), SIGMA, BUDGET, eps, LO, HI)
            ref = expected_return_certificate(r, SIGMA, BUDGET, alpha, LO)
            assert float(lo) == pytest.approx(float(ref), rel=1e-12)
            assert float(lo) <= float(up) <= HI
            lo0, up0 = np_bounds_sorted(np.sort(r), SIGMA, 0.0, eps, LO, HI)
            assert float(lo0) <= r.mean() <= float(up0)  # at B = 0: a band around the mean
            assert float(up) == pytest.approx(
                expected_return_upper_bound(r, SIGMA, BUDGET, alpha, LO, HI), rel=1e-12)


def test_upper_bound_counts_the_mass_above_the_sample():
    r = np.full(100, 100.0)  # all returns 100, known upper bound 500
    eps = dkw_epsilon(100, 0.05)
    up = expected_return_upper_bound(r, SIGMA, 0.0, 0.05, LO, HI)
    assert up == pytest.approx(100.0 + 400.0 * eps)  # B = 0: survival raised by eps above 100
    assert expected_return_upper_bound(r, SIGMA, 0.4, 0.05, LO, HI) < up  # decreasing in B


def test_schedule_and_spending():
    assert geometric_schedule(10_000) == [100, 200, 400, 800, 1600, 3200, 6400, 10_000]
    assert geometric_schedule(200) == [100, 200]
    assert geometric_schedule(150) == [100, 150]
    assert geometric_schedule(60) == [60]
    for kind in ("pi2", "harmonic", "uniform"):
        a = alpha_spending(0.05, 8, kind)
        assert a.size == 8 and np.all(a > 0) and a.sum() <= 0.05 + 1e-15
    assert alpha_spending(0.05, 4, "uniform") == pytest.approx([0.0125] * 4)
    with pytest.raises(ValueError):
        alpha_spending(0.05, 3, "nope")


def test_certifier_api_and_undecided_at_the_last_look():
    rng = np.random.default_rng(3)
    x = HI * rng.beta(5, 2, 400)
    truth = beta_truth(5, 2)
    sc = SequentialCertifier(SIGMA, BUDGET, 0.05, LO, HI, truth, [100, 200, 400])
    assert sc.next_episodes == 100
    with pytest.raises(ValueError):
        sc.update(x[:99])
    decisions = []
    while not sc.done:
        decisions.append(sc.update(x[: sc.next_episodes]).decision)
    assert decisions == [Decision.CONTINUE, Decision.CONTINUE, Decision.UNDECIDED]
    s = sc.summary(fixed_m=400)
    assert s["decision"] == "UNDECIDED" and s["episodes_used"] == 400 and s["fixed_m"] == 400
    assert [lk["episodes"] for lk in s["looks"]] == [100, 200, 400]
    assert s["alpha_spent"] == pytest.approx(0.05) and s["alpha_used"] == pytest.approx(0.05 / 3)
    for lk in s["looks"]:
        assert lk["lower_bound"] <= truth <= lk["upper_bound"]
    with pytest.raises(RuntimeError):
        sc.update(x)
    # the certificate at the stopping look is expected_return_certificate at alpha_used
    assert s["looks"][-1]["lower_bound"] == pytest.approx(float(expected_return_certificate(
        x, SIGMA, BUDGET, s["alpha_used"], LO)), rel=1e-12)


def test_certifier_matches_the_vectorized_simulation():
    sampler = beta_sampler(5, 2)
    thr = 0.9 * beta_truth(5, 2)
    dec, used = simulate(sampler, thr, reps=5, n_max=3000, alpha=0.05, seed=11)
    x = sampler(np.random.default_rng(11), (5, 3000))
    for i in range(5):
        sc = SequentialCertifier(SIGMA, BUDGET, 0.05, LO, HI, thr, geometric_schedule(3000))
        while not sc.done:
            sc.update(x[i, : sc.next_episodes])
        assert sc.decision.value == dec[i] and sc.looks[-1].episodes == used[i]


# ------------------------------------------------------------------------- error rates
CASES = [
    # (name, sampler, true C(B), threshold factor, alpha, n_max)
    ("beta52 just below", beta_sampler(5, 2), "b52", 1.0 - 1e-9, 0.05, 4000),
    ("beta52 just above", beta_sampler(5, 2), "b52", 1.0 + 1e-9, 0.05, 4000),
    ("beta52 -2%", beta_sampler(5, 2), "b52", 0.98, 0.05, 4000),
    ("beta52 +2%", beta_sampler(5, 2), "b52", 1.02, 0.05, 4000),
    ("two-point at threshold", two_point_sampler(100, 400, 0.6), "tp", 1.0, 0.3, 2000),
    ("two-point just above", two_point_sampler(100, 400, 0.6), "tp", 1.0 + 1e-9, 0.3, 2000),
    ("two-point +1%", two_point_sampler(100, 400, 0.6), "tp", 1.01, 0.5, 2000),
    ("two-point -1%", two_point_sampler(100, 400, 0.6), "tp", 0.99, 0.5, 2000),
    ("beta22 at threshold", beta_sampler(2, 2), "b22", 1.0, 0.5, 2000),
]


@pytest.fixture(scope="module")
def truths() -> dict[str, float]:
    return {
        "b52": beta_truth(5, 2),
        "b22": beta_truth(2, 2),
        "tp": certificate_functional([100.0, 400.0], [1.0, 0.6], SIGMA, BUDGET, LO),
    }


@pytest.mark.parametrize("name,sampler,key,factor,alpha,n_max", CASES,
                         ids=[c[0] for c in CASES])
def test_wrong_decision_rate_is_at_most_alpha(truths, name, sampler, key, factor, alpha, n_max):
    reps = 400
    truth = truths[key]
    thr = factor * truth
    dec, _ = simulate(sampler, thr, reps, n_max, alpha, seed=zlib.crc32(name.encode()))
    wrong = "PASS" if truth < thr else "FAIL"
    rate = float(np.mean(dec == wrong))
    assert rate <= alpha + mc_tol(alpha, reps), (name, rate)


def test_pi2_spending_is_also_valid(truths):
    truth = truths["tp"]
    dec, _ = simulate(two_point_sampler(100, 400, 0.6), truth, 300, 2000, 0.3, spending="pi2")
    assert float(np.mean(dec == "FAIL")) <= 0.3 + mc_tol(0.3, 300)


def simulate_two_point(p: float, threshold: float, reps: int, n_max: int, alpha: float,
                       seed: int) -> np.ndarray:
    """Decisions for returns in {LO, HI} with P(HI) = p: per-look counts are cumulative
    binomials; the bounds come from np_bounds_sorted on the sorted rows (one row per distinct
    count, so 10000-episode looks stay cheap)."""
    rng = np.random.default_rng(seed)
    sched = geometric_schedule(n_max)
    alphas = alpha_spending(alpha, len(sched))
    counts = np.cumsum(rng.binomial(np.diff(sched, prepend=0), p, (reps, len(sched))), axis=1)
    dec = np.full(reps, "CONTINUE", dtype=object)
    for k, (n, a_k) in enumerate(zip(sched, alphas, strict=True)):
        act = np.flatnonzero(dec == "CONTINUE")
        if act.size == 0:
            break
        u, inv = np.unique(counts[act, k], return_inverse=True)
        rows = np.where(np.arange(n)[None, :] >= (n - u)[:, None], HI, LO)
        lo, up = np_bounds_sorted(rows, SIGMA, BUDGET, dkw_epsilon(n, a_k), LO, HI)
        last = k + 1 == len(sched)
        dec[act] = np.where(lo[inv] >= threshold, "PASS", np.where(
            up[inv] < threshold, "FAIL", "UNDECIDED" if last else "CONTINUE"))
    return dec


@pytest.mark.parametrize("p,alpha", [(0.5, 0.05), (0.3, 0.2)])
@pytest.mark.parametrize("wrong", ["PASS", "FAIL"])
def test_error_rate_matches_the_exact_union_bound(p, alpha, wrong):
    n_max, reps = 10_000, 4000
    truth = certificate_functional([HI], [p], SIGMA, BUDGET, LO)  # = HI * Phi(Phi^-1(p) - B/s)
    # C < t: PASS is wrong, and needs L_k = HI g(p_k - eps_k) >= t, i.e. p_k >= p + eps_k;
    # C >= t: FAIL is wrong, and needs U_k = HI g(p_k + eps_k) < t = C, i.e. p_k < p - eps_k
    thr = truth * (1 + 1e-12) if wrong == "PASS" else truth
    sched = geometric_schedule(n_max)
    union = 0.0
    for n, a_k in zip(sched, alpha_spending(alpha, len(sched)), strict=True):
        e = dkw_epsilon(n, a_k)
        union += (stats.binom.sf(math.ceil(n * (p + e)) - 1, n, p) if wrong == "PASS"
                  else stats.binom.cdf(math.ceil(n * (p - e)) - 1, n, p))
    assert union <= alpha  # Hoeffding/DKW at each look, Bonferroni over the looks
    dec = simulate_two_point(p, thr, reps, n_max, alpha, seed=int(100 * p) + len(wrong))
    rate = float(np.mean(dec == wrong))
    assert rate <= union + 3 * math.sqrt(union / reps), (rate, union)


# ------------------------------------------------------------------------- savings
def _certify_default_episodes() -> int:
    from certrl.cli import build_parser

    return int(build_parser().parse_args(["certify", "demo:cartpole", "--env", "cartpole"])
               .episodes)


@pytest.mark.parametrize("fixed_m,factor,expect", [
    (10_000, 0.5, "PASS"), (10_000, 0.8, "PASS"), (10_000, 1.2, "FAIL"), (10_000, 1.5, "FAIL"),
    # certify's default --episodes (1000): a 20% margin needs 200-400 episodes, a 50% one 100
    ("certify default", 0.5, "PASS"), ("certify default", 1.5, "FAIL"),
])
def test_clear_cases_stop_early(truths, factor, expect, fixed_m):
    m = _certify_default_episodes() if fixed_m == "certify default" else fixed_m
    assert m >= 1000
    dec, used = simulate(beta_sampler(5, 2), factor * truths["b52"], 200, m, 0.05)
    assert np.all(dec == expect)
    assert used.mean() * 5 <= m, used.mean()
    if factor in (0.5, 1.5):  # a large margin is settled at the first look (100 episodes)
        assert np.all(used == 100)
