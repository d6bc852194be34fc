"""``certrl certify``: policy smoothing + adaptive Neyman-Pearson reward certificates.

Pipeline (one results-file section, ``certificates``):

1. the *unsmoothed* clean return (the ``evaluation`` section, same episode seeds);
2. ``m`` clean episodes of the smoothed policy (Gaussian noise ``sigma`` on every
   observation, :mod:`certrl.smoothing`), rewards clipped to the environment's documented
   per-step bounds for the certified quantity;
3. certificates from those returns (:mod:`certrl.certificates`): the expected-return lower
   bound for every budget (one DKW band: the whole curve holds simultaneously at
   ``1 - alpha``) and certified lower bounds on the attacked return's quantiles;
4. unless ``--no-attack``: an adaptive episode-budget attack on the smoothed policy at every
   budget, next to the certificate (the certificate must stay below it: the gap is the
   certificate's tightness);
5. discrete policies: per-state certified radii of the majority-vote action (CROP-LoAct
   style), with ``--per-state``.

With ``--fail-under T`` step 2 is *sequential* (anytime-valid early stopping,
:mod:`certrl.certificates.sequential`): smoothed episodes are run in rounds of 100, 200, 400,
... up to ``--episodes`` (resuming the same journal, so each round runs only the new episode
indices) and sampling stops as soon as the gate is statistically settled: PASS once the
certificate at the largest budget is ``>= T``, FAIL once an upper confidence bound on what any
number of episodes could certify is ``< T``. The per-look levels ``alpha_k`` (Bonferroni over the
fixed schedule) sum to ``alpha``, so the decision is wrong with probability ``<= alpha`` and the
certificates reported at the stopping look (computed at ``alpha_k``) hold at ``1 - alpha``
overall. Still straddling ``T`` after ``--episodes`` episodes is reported as *undecided* and fails
the gate (exit 1): a pass must be a certificate. ``certificates.sequential`` records the looks.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from certrl.cli import (
    EXIT_FAIL,
    EXIT_OK,
    UsageError,
    _add_common,
    _add_policy_args,
    _add_run_args,
    _command_line,
    _fmt,
    _policy_json,
    build_job,
    evaluation_section,
    print_summary,
    returns_summary,
)

if TYPE_CHECKING:
    from certrl.certificates.sequential import SequentialCertifier

DEFAULT_QUANTILES = (0.1, 0.25, 0.5)


def _floats(text: str, name: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{name} {text!r}: expected comma-separated numbers") from None
    if not vals:
        raise UsageError(f"{name} is empty")
    return vals


def register(sub: Any) -> None:
    p = sub.add_parser(
        "certify",
        help="certified lower bounds on the smoothed policy's return under l2-budget attacks",
        description="Policy smoothing certificates (Kumar, Levine & Feizi, ICLR 2022).",
    )
    _add_policy_args(p)
    _add_run_args(p, episodes=1000)
    p.add_argument("--sigma", type=float, default=0.2,
                   help="smoothing noise std (default 0.2), in --space units")
    p.add_argument("--space", choices=["auto", "normalized", "raw"], default="auto",
                   help="observation space of the noise and of the budget (default: normalized "
                   "when the policy has normalization statistics, else raw)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--budgets", default=None,
                   help="comma-separated episode l2 budgets B (default 0,0.05,0.1,0.2,0.4)")
    g.add_argument("--budget", type=float, default=None, help="a single budget B")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="failure probability of each certificate (default 0.05)")
    p.add_argument("--band", choices=["auto", "hybrid", "order", "dkw", "cp-grid"],
                   default="auto",
                   help="confidence band on the return distribution: hybrid (DKW in the "
                   "middle, exact order-statistic bounds in the tails, union bound; tighter than "
                   "dkw wherever the tails matter), order (order statistics only), dkw "
                   "(one-sided DKW/Massart, Kumar et al.'s experiments), cp-grid "
                   "(Clopper-Pearson on the lattice of possible returns, Bonferroni; the "
                   "reference code's CartPole route, needs a constant per-step reward) or auto "
                   "(cp-grid when the returns lie on a known lattice, else hybrid; dkw with "
                   "--fail-under, whose stopping rule is built on it; chosen from the "
                   "environment, never from the data)")
    p.add_argument("--quantiles", default="0.1,0.25,0.5",
                   help="quantiles of the attacked return to certify (default 0.1,0.25,0.5)")
    p.add_argument("--clean-episodes", type=int, default=None,
                   help="episodes of the unsmoothed clean run (default min(episodes, 100))")
    p.add_argument("--no-attack", action="store_true",
                   help="skip the empirical attack on the smoothed policy")
    p.add_argument("--attack-episodes", type=int, default=None,
                   help="episodes per budget for the attack (default min(episodes, 50))")
    p.add_argument("--per-state", action="store_true",
                   help="discrete policies: per-state certified radii of the majority vote")
    p.add_argument("--per-state-n", type=int, default=1000,
                   help="noisy copies per visited state for --per-state (default 1000)")
    p.add_argument("--fail-under", type=float, default=None, metavar="RETURN",
                   help="exit 1 unless the certified return at the largest budget is >= RETURN; "
                   "samples episodes in rounds (100, 200, 400, ... up to --episodes) and stops "
                   "early once the decision is settled (anytime-valid, total error <= alpha)")
    _add_common(p)
    p.set_defaults(handler=cmd_certify)


def _has_larger_evaluation(path: Any, policy: dict[str, Any], ev: dict[str, Any]) -> bool:
    """Whether the results file already holds a clean evaluation of the same policy, seed and
    mode with at least as many episodes (episode i is the same episode in both, so certify's
    shorter clean run would only shrink it): then that section is kept."""
    from certrl.results import ResultsError, load_results

    try:
        old = load_results(path)
    except ResultsError:
        return False
    prev = old.get("evaluation")
    return (
        isinstance(prev, dict)
        and old.get("policy", {}).get("sha256") == policy.get("sha256")
        and prev.get("seed") == ev.get("seed")
        and prev.get("deterministic") == ev.get("deterministic")
        and int(prev.get("episodes") or 0) >= int(ev.get("episodes") or 0)
    )


def return_lattice(spec: Any) -> np.ndarray | None:
    """The thresholds ``lower + k |r|``, ``k = 1..K``, when every return lies on that lattice.

    That is the case when the per-step reward is a known constant ``r != 0`` (``exact`` bounds
    with ``lo == hi``: CartPole +1, MountainCar -1): the return is ``r`` times the episode
    length. The grid depends on the environment only, never on the sample, as the Bonferroni
    correction of :func:`~certrl.certificates.expected_return_certificate_cp` requires; no
    return falls strictly between two thresholds, so the grid loses nothing.
    """
    lo, hi = spec.step_reward_bounds
    if spec.bounds_kind != "exact" or lo != hi or lo == 0:
        return None
    lower, upper = spec.return_bounds
    k = int(round((upper - lower) / abs(lo)))
    if k < 1 or k > 100_000:
        return None
    return lower + abs(lo) * np.arange(1, k + 1, dtype=float)


def cp_grid_band(returns: np.ndarray, alpha: float, grid: np.ndarray) -> Any:
    """The ``cp-grid`` band as a :class:`~certrl.certificates.bands.SurvivalBand`: one-sided
    Clopper-Pearson at ``alpha / K`` on each lattice threshold (Bonferroni); on a lattice every
    return is a threshold (or ``lower``), so ``P(R >= v) >= p_i`` for ``v <= t_i``."""
    from certrl.certificates import clopper_pearson_lower
    from certrl.certificates.bands import SurvivalBand

    m = returns.size
    k = m - np.searchsorted(np.sort(returns), grid, side="left")
    p = np.asarray(clopper_pearson_lower(k, m, alpha / grid.size), dtype=float)
    return SurvivalBand("clopper-pearson-grid-bonferroni", alpha, m, grid.astype(float), k,
                        np.minimum.accumulate(p), {"thresholds": int(grid.size)})


def survival_section(band: Any, sigma: float, budgets: list[float],
                     points: int = 101) -> dict[str, Any]:
    """The certified survival function ``P_adv(R >= v) >= p(B, v)`` on up to ``points``
    thresholds (sample values at evenly spaced ranks: the band holds at every ``v`` at once,
    so any thresholds may be reported)."""
    from certrl.certificates.returns import survival_certificate

    nv = band.values.size
    idx = np.unique(np.linspace(0, nv - 1, min(points, nv)).round().astype(int))
    v, p = survival_certificate(band, sigma, budgets, thresholds=band.values[idx])
    return {
        "statement": "P_adv(R >= v) >= certified[B][k] for every threshold v <= thresholds[k], "
                     "every budget B and every adaptive adversary, all at once (the band's "
                     "confidence)",
        "thresholds": [float(x) for x in v],
        "clean_empirical": [float(x) for x in band.counts_ge[idx] / band.m],
        "band": [float(x) for x in band.lower[idx]],
        "certified": {f"{b:g}": [float(x) for x in row] for b, row in zip(budgets, p,
                                                                          strict=True)},
    }


def band_comparison(returns: np.ndarray, sigma: float, budgets: list[float], alpha: float,
                    lower: float, grid: np.ndarray | None) -> dict[str, Any]:
    """The expected-return certificate under every applicable band on the same sample, for
    reading how much the band costs. Informational: only the band chosen *before* sampling
    (``--band``) is the certificate; taking the best of these would spend alpha several
    times."""
    from certrl.certificates import expected_return_certificate_cp
    from certrl.certificates.bands import survival_band
    from certrl.certificates.returns import expected_return_from_band

    out: dict[str, Any] = {}
    for name in ("dkw", "order", "hybrid"):
        vals = expected_return_from_band(survival_band(returns, alpha, name), sigma, budgets,
                                         lower)
        out[name] = [float(x) for x in np.atleast_1d(vals)]
    if grid is not None:
        vals = expected_return_certificate_cp(returns, sigma, budgets, alpha, lower, grid)
        out["cp-grid"] = [float(x) for x in np.atleast_1d(vals)]
    return {"budgets": list(budgets), "expected_return_lower_bound": out,
            "note": "informational; the certificate is the band chosen before sampling"}


def attack_threat(spec: Any, horizon: int, obs_dim: int, space: str,
                  normalized_is_raw: bool = False) -> dict[str, Any] | None:
    """The attack literature's per-step l_inf budget for this environment as an episode l2
    budget: ``eps * sqrt(obs_dim * horizon)`` (every coordinate of every step moved by
    ``eps``), so a reader sees how far a certified ``B`` is from the threat the attacks use.
    Comparable when the certificate's space is the attacks' normalized space (or the policy
    has no normalization, so that both are the raw space)."""
    eps = getattr(spec, "default_eps", None)
    if not eps:
        return None
    return {"eps": float(eps), "norm": "linf", "space": "normalized",
            "source": getattr(spec, "eps_source", ""),
            "episode_l2_equivalent": float(eps) * math.sqrt(obs_dim * horizon),
            "comparable": space == "normalized" or normalized_is_raw}


def _band_text(band: dict[str, Any]) -> str:
    method = band.get("method")
    if method == "clopper-pearson-grid-bonferroni":
        return (f"band: Clopper-Pearson on {band['thresholds']} return thresholds at "
                f"alpha/{band['thresholds']} each (Bonferroni)")
    if method == "hybrid-dkw-order-statistic-tails":
        return (f"hybrid band: DKW eps = {band['epsilon']:.4f} at alpha {band['alpha_dkw']:g} "
                f"and order-statistic bounds on {band['ranks']} tail ranks at alpha "
                f"{band['alpha_order']:g} (union bound)")
    if method == "order-statistic-bonferroni":
        return (f"order-statistic band on {band['ranks']} ranks at alpha/{band['ranks']} each "
                "(Bonferroni)")
    return f"DKW band eps = {band['epsilon']:.4f}"


def _statement(alpha: float, budget: float, value: float, space: str) -> str:
    return (
        f"With probability >= {100 * (1 - alpha):g}% over certrl's sampling, for every "
        f"adversary that perturbs observations adaptively with total l2 norm <= {budget:g} over "
        f"the episode ({space} observation space), the smoothed policy's expected return is "
        f">= {value:,.2f}."
    )


def cmd_certify(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from certrl.certificates import (
        Decision,
        dkw_epsilon,
        expected_return_certificate_cp,
        percentile_certificate,
    )
    from certrl.certificates.bands import survival_band
    from certrl.certificates.returns import expected_return_from_band
    from certrl.results import update_results
    from certrl.runner import finish_journal, returns_array, run_section
    from certrl.smoothing import GaussianSmoothing, PerStateCertifier, resolve_space

    if not (math.isfinite(args.sigma) and args.sigma > 0):
        raise UsageError(f"--sigma must be > 0, got {args.sigma}")
    if not 0 < args.alpha < 0.5:
        raise UsageError(f"--alpha must be in (0, 0.5), got {args.alpha}")
    if args.fail_under is not None and not math.isfinite(args.fail_under):
        raise UsageError(f"--fail-under must be a finite number, got {args.fail_under}")
    budgets = [args.budget] if args.budget is not None else _floats(
        args.budgets or "0,0.05,0.1,0.2,0.4", "--budgets")
    if any(not (math.isfinite(b) and b >= 0) for b in budgets):
        raise UsageError(f"budgets must be finite and >= 0, got {budgets}")
    budgets = sorted(set(budgets))
    quantiles = _floats(args.quantiles, "--quantiles")
    if any(not 0 < q < 1 for q in quantiles):
        raise UsageError(f"--quantiles must be in (0, 1), got {quantiles}")
    job = build_job(args)
    policy = job.policy
    space = resolve_space(policy, args.space)
    if args.per_state and not policy.discrete:
        raise UsageError("--per-state needs a discrete-action policy (majority vote over actions)")
    grid = return_lattice(job.spec)
    band_method = args.band
    if band_method == "auto":
        if args.fail_under is not None:
            band_method = "dkw"
        else:
            band_method = "cp-grid" if grid is not None else "hybrid"
    if band_method == "cp-grid" and grid is None:
        raise UsageError(
            f"--band cp-grid needs returns on a known lattice (a constant per-step reward with "
            f"exact bounds); {job.spec.gym_id} has {job.spec.bounds_kind} per-step bounds "
            f"{list(job.spec.step_reward_bounds)}: use --band hybrid (or dkw)")
    if band_method != "dkw" and args.fail_under is not None:
        raise UsageError("--fail-under uses the DKW band of its stopping rule: use --band dkw "
                         "(or auto) with --fail-under")
    m = args.episodes
    lower, upper = job.spec.return_bounds
    horizon = job.spec.horizon

    upto = "up to " if args.fail_under is not None else ""
    print(f"certrl: certifying {args.policy} on {job.spec.gym_id}: sigma={args.sigma:g} "
          f"({space} observations), {upto}{m} smoothed episodes, alpha={args.alpha:g}, "
          f"{job.workers} worker(s)", file=sys.stderr)

    # 1. unsmoothed clean return on the same episode seeds
    n_clean = args.clean_episodes or min(m, 100)
    clean, clean_stats = run_section(job, "evaluation", n_clean, desc="clean")
    eval_sec = evaluation_section(job, clean, clean_stats)

    # 2. smoothed clean episodes
    smoothing = GaussianSmoothing(args.sigma, space)
    hooks: list[Any] = [smoothing]
    if args.per_state:
        hooks = [PerStateCertifier(args.sigma, space, n=args.per_state_n, alpha=0.001), smoothing]
    seq = None
    if args.fail_under is not None:  # anytime-valid early stopping at the largest budget
        smoothed, sm_stats, seq = _sequential_smoothed(args, job, hooks, budgets[-1])
    else:
        smoothed, sm_stats = run_section(job, "certificates", m, obs_hooks=hooks,
                                         desc="smoothed")
    m_used = len(smoothed)
    # sequential: certificates at the stopping look's alpha_k (valid at 1 - alpha overall)
    cert_alpha = seq.alpha_used if seq is not None else args.alpha
    raw_returns = returns_array(smoothed)
    cert_returns = returns_array(smoothed, clipped=True)
    clipped_steps = int(sum(r.clipped_steps for r in smoothed))

    # 3. certificates: one band for the whole curve (and the certified survival function)
    if band_method == "cp-grid":
        assert grid is not None
        bounds = expected_return_certificate_cp(cert_returns, args.sigma, budgets, cert_alpha,
                                                lower, grid)
        band = {"method": "clopper-pearson-grid-bonferroni", "thresholds": int(grid.size),
                "alpha": cert_alpha, "alpha_per_threshold": cert_alpha / grid.size}
        sband = cp_grid_band(cert_returns, cert_alpha, grid)
    else:
        sband = survival_band(cert_returns, cert_alpha, band_method)
        bounds = expected_return_from_band(sband, args.sigma, budgets, lower)
        band = sband.to_json()
        if band_method == "dkw":
            band["epsilon"] = dkw_epsilon(m_used, cert_alpha, one_sided=True)
    survival = survival_section(sband, args.sigma, budgets)
    compare = band_comparison(cert_returns, args.sigma, budgets, cert_alpha, lower, grid)
    rows: list[dict[str, Any]] = []
    for b, bound in zip(budgets, np.atleast_1d(bounds), strict=True):
        pct = percentile_certificate(cert_returns, args.sigma, b, quantiles, cert_alpha,
                                     lower=lower)
        rows.append({
            "budget": b,
            "per_step_eps": b / math.sqrt(horizon),
            "per_step_linf_eps": b / math.sqrt(horizon * policy.obs_dim),
            "expected_return_lower_bound": float(bound),
            "percentile_lower_bounds": {f"{q:g}": float(v) for q, v in pct.items()},
            "attack": None,
        })

    # 4. the best attack we have on the smoothed policy, at the same budgets
    attack_note = ""
    if not args.no_attack:
        attack_note = _attack_budgets(args, job, space, rows, horizon)

    # 5. per-state certified radii
    per_state = None
    if args.per_state:
        per_state = _per_state_summary(smoothed)

    largest = rows[-1]
    statement = _statement(args.alpha, largest["budget"], largest["expected_return_lower_bound"],
                           space)
    gate = None
    if seq is not None:
        gate = {"threshold": args.fail_under, "budget": largest["budget"],
                "value": largest["expected_return_lower_bound"],
                "upper_bound": seq.looks[-1].upper_bound,
                "decision": seq.decision.value,
                "passed": seq.decision is Decision.PASS}
    section = {
        "sigma": args.sigma,
        "space": space,
        "alpha": args.alpha,
        "episodes": m_used,
        "seed": job.seed,
        "deterministic": job.deterministic,
        "horizon": horizon,
        "smoothed_returns": raw_returns.tolist(),
        "smoothed_clipped_returns": cert_returns.tolist(),
        "smoothed_lengths": [r.length for r in smoothed],
        "reward_lower_bound": lower,
        "reward_upper_bound": upper,
        "step_reward_bounds": list(job.spec.step_reward_bounds),
        "bounds_kind": job.spec.bounds_kind,
        "clipped_steps": clipped_steps,
        "band": band,
        "band_comparison": compare,
        "survival": survival,
        "attack_threat": attack_threat(job.spec, horizon, policy.obs_dim, space,
                                       policy.obs_norm is None),
        "clean_smoothed": {"summary": returns_summary(raw_returns, job.seed)},
        "clean_unsmoothed": {"summary": eval_sec["summary"], "episodes": n_clean},
        "budgets": rows,
        "statement": statement,
        "per_state": per_state,
        "gate": gate,
        "sequential": None if seq is None else seq.summary(fixed_m=m),
        "throughput": {"steps": sm_stats.steps, "seconds": round(sm_stats.seconds, 3),
                       "steps_per_second": round(sm_stats.steps_per_second, 1),
                       "retries": sm_stats.retries},
    }
    policy_json = _policy_json(job, args.policy)
    sections = {"certificates": section}
    if not _has_larger_evaluation(job.results_file, policy_json, eval_sec):
        sections["evaluation"] = eval_sec
    update_results(
        job.results_file,
        command=_command_line(argv),
        env=job.spec.to_json(),
        policy=policy_json,
        sections=sections,
    )
    finish_journal(job, "evaluation")
    finish_journal(job, "certificates")
    finish_journal(job, "certify-attack")

    _print_report(job, section, eval_sec, quantiles, attack_note)
    print(f"results: {job.results_file}")
    if seq is not None and gate is not None:
        _print_sequential(seq, gate, args.alpha, m)
        return EXIT_OK if gate["passed"] else EXIT_FAIL
    return EXIT_OK


def _sequential_smoothed(args: argparse.Namespace, job: Any, hooks: list[Any],
                         budget: float) -> tuple[list[Any], Any, SequentialCertifier]:
    """Smoothed episodes in rounds until the ``--fail-under`` decision is settled.

    Round ``k`` asks :func:`~certrl.runner.run_section` for episodes ``0..n_k - 1`` of the same
    configuration with ``job.resume`` on, so only the new indices run (the journal holds the
    earlier ones; the first round honours the user's ``--resume``). Episodes are i.i.d. and the
    schedule depends only on ``--episodes``, as :class:`SequentialCertifier` requires.
    """
    from certrl.backends import RunStats
    from certrl.certificates.sequential import SequentialCertifier, geometric_schedule
    from certrl.runner import returns_array, run_section

    lower, upper = job.spec.return_bounds
    sc = SequentialCertifier(args.sigma, budget, args.alpha, lower, upper, args.fail_under,
                             geometric_schedule(args.episodes))
    total = RunStats(workers=job.workers)
    resume = job.resume
    results: list[Any] = []
    try:
        while not sc.done:
            n = sc.next_episodes
            assert n is not None
            results, st = run_section(job, "certificates", n, obs_hooks=hooks,
                                      desc=f"smoothed (look {len(sc.looks) + 1})")
            job.resume = True  # next round: reuse these episodes, run only the new ones
            total.episodes += st.episodes
            total.steps += st.steps
            total.seconds += st.seconds
            total.retries += st.retries
            lk = sc.update(returns_array(results, clipped=True))
            print(f"certrl: look {lk.k}/{len(sc.schedule)}: {lk.episodes} episodes, "
                  f"alpha_k={lk.alpha_k:.3g}: {_fmt(lk.lower_bound)} <= C(B={budget:g}) <= "
                  f"{_fmt(lk.upper_bound)} vs threshold {_fmt(args.fail_under)}: "
                  f"{lk.decision.value}", file=sys.stderr)
    finally:
        job.resume = resume
    return results, total, sc


def _print_sequential(seq: SequentialCertifier, gate: dict[str, Any], alpha: float,
                      fixed_m: int) -> None:
    from certrl.certificates.sequential import Decision

    last = seq.looks[-1]
    used = last.episodes
    saved = f", {fixed_m / used:.1f}x fewer than the fixed-m run" if used < fixed_m else ""
    print(f"sequential: {seq.decision.value} at look {last.k} of {len(seq.schedule)} after "
          f"{used:,} of {fixed_m:,} episodes{saved}; certificates computed at alpha_k = "
          f"{seq.alpha_used:.3g} and valid at {100 * (1 - alpha):g}% overall (union bound over "
          f"the looks, alpha spent {seq.alpha_spent:.3g})")
    t, b = gate["threshold"], gate["budget"]
    if seq.decision is Decision.PASS:
        print(f"gate: PASS: certified return {gate['value']:,.2f} at B={b:g} >= {t:,.2f}")
    elif seq.decision is Decision.FAIL:
        print(f"gate: FAIL: certified return {gate['value']:,.2f} at B={b:g} < {t:,.2f}, and "
              f"with probability >= {100 * (1 - alpha):g}% no number of episodes would certify "
              f"{t:,.2f} at this sigma and budget (upper bound {last.upper_bound:,.2f})")
    else:
        print(f"gate: FAIL (undecided): certified return {gate['value']:,.2f} at B={b:g} < "
              f"{t:,.2f} after all {used:,} episodes, but the upper bound "
              f"{last.upper_bound:,.2f} >= {t:,.2f}: more episodes (--episodes) might certify it")


def _attack_budgets(args: argparse.Namespace, job: Any, space: str, rows: list[dict[str, Any]],
                    horizon: int) -> str:
    """Run the episode-budget attack on the smoothed policy at every budget > 0."""
    try:
        from certrl.attacks.gradient import smoothed_attack_hooks
    except ImportError:
        return "no episode-budget attack is available in this installation"
    from certrl.attacks.base import ThreatModel
    from certrl.runner import returns_array, run_section

    n_att = args.attack_episodes or min(args.episodes, 50)
    for row in rows:
        b = row["budget"]
        if b == 0:
            continue
        hooks = smoothed_attack_hooks(job.policy, args.sigma, space, b, horizon)
        res, _ = run_section(job, "certify-attack", n_att, obs_hooks=hooks,
                             config={"budget": b}, desc=f"attack B={b:g}")
        threat = ThreatModel(eps=b, norm="l2", space=space, episode_budget=b)
        for r in res:
            threat.audit(r)
        rets = returns_array(res)
        row["attack"] = {
            "name": hooks[0].name,
            "config": hooks[0].config(),
            "episodes": n_att,
            "mean": float(rets.mean()),
            "summary": returns_summary(rets, job.seed),
            "returns": rets.tolist(),
        }
    return ""


def _per_state_summary(results: list[Any]) -> dict[str, Any]:
    from certrl.certificates import fraction_certified

    radii = np.array([v for r in results for v in r.extras.get("state_radii", [])], dtype=float)
    if radii.size == 0:
        return {"states": 0}
    grid = [0.0, 0.05, 0.1, 0.2, 0.4, 0.8]
    return {
        "states": int(radii.size),
        "alpha_per_state": 0.001,
        "radius_quantiles": {f"{q:g}": float(np.quantile(radii, q)) for q in (0.1, 0.25, 0.5)},
        "fraction_certified": {f"{r:g}": fraction_certified(radii, r) for r in grid},
    }


def _print_survival(sec: dict[str, Any]) -> None:
    """Certified P_adv(R >= v) at the clean smoothed return's quartiles, per budget."""
    sv = sec.get("survival")
    if not sv or not sv["thresholds"]:
        return
    rets = np.sort(np.asarray(sec["smoothed_clipped_returns"], dtype=float))
    picks = [float(np.quantile(rets, q, method="inverted_cdf")) for q in (0.1, 0.25, 0.5)]
    cols = "".join(f"{'P(R>=' + _fmt(v) + ')':>18}" for v in picks)
    print(f"{'certified CDF: B':>16}{cols}")
    thr = np.asarray(sv["thresholds"])
    for b, row in sv["certified"].items():
        p = np.asarray(row)
        # the bound at v is the one at the first reported threshold >= v (valid, conservative)
        vals = [p[min(int(np.searchsorted(thr, v, side="left")), p.size - 1)]
                if v <= thr[-1] else 0.0 for v in picks]
        print(f"{b:>16}" + "".join(f"{x:>18.3f}" for x in vals))


def _print_report(job: Any, sec: dict[str, Any], eval_sec: dict[str, Any],
                  quantiles: list[float], note: str) -> None:
    print_summary(f"{job.spec.gym_id} unsmoothed clean return", eval_sec["summary"])
    print_summary(f"smoothed clean return (sigma={sec['sigma']:g})",
                  sec["clean_smoothed"]["summary"])
    qcols = "".join(f"{'q' + format(q, 'g'):>11}" for q in quantiles)
    head = (f"{'B (l2, episode)':>16}{'l2/step':>9}{'linf/step':>10}{'certified E[R]':>16}{qcols}"
            f"{'attacked E[R]':>16}")
    print(head)
    print("-" * len(head))
    for row in sec["budgets"]:
        att = row["attack"]
        att_s = "-" if att is None else _fmt(att["mean"])
        qs = "".join(f"{_fmt(row['percentile_lower_bounds'][format(q, 'g')]):>11}"
                     for q in quantiles)
        linf = row.get("per_step_linf_eps", float("nan"))
        print(f"{row['budget']:>16g}{row['per_step_eps']:>9.4f}{linf:>10.5f}"
              f"{_fmt(row['expected_return_lower_bound']):>16}{qs}{att_s:>16}")
    _print_survival(sec)
    thr = sec.get("attack_threat")
    if thr and thr["comparable"] and sec["budgets"]:
        big = sec["budgets"][-1]["budget"]
        need = thr["episode_l2_equivalent"]
        print(f"threat scale: the attacks' l_inf eps {thr['eps']:g} per step ({thr['source']}) "
              f"on all {sec['horizon']} steps is an episode l2 budget of {need:,.2f}; the "
              f"largest certified B = {big:g} is {big / need:.1%} of it (a per-step l_inf "
              f"eps of {sec['budgets'][-1]['per_step_linf_eps']:.5f} on every step). For "
              f"per-step certificates at eps {thr['eps']:g}: certrl bound")
    print(f"certified return >= lower bound a = {sec['reward_lower_bound']:g} "
          f"({sec['bounds_kind']} per-step reward bounds {sec['step_reward_bounds']}); "
          f"{_band_text(sec['band'])}")
    if sec["clipped_steps"]:
        print(f"warning: {sec['clipped_steps']} steps had rewards outside the per-step bounds and "
              "were clipped in the certified return")
    if note:
        print(f"note: {note}")
    if sec["per_state"]:
        ps = sec["per_state"]
        fr = ", ".join(f"r={k}: {v:.1%}" for k, v in ps.get("fraction_certified", {}).items())
        print(f"per-state certificates ({ps['states']} states): fraction certified {fr}")
    print(sec["statement"])
