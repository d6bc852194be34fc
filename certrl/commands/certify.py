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
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

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
                   help="exit 1 if the certified return at the largest budget is below RETURN")
    _add_common(p)
    p.set_defaults(handler=cmd_certify)


def _statement(alpha: float, budget: float, value: float, space: str) -> str:
    return (
        f"With probability >= {100 * (1 - alpha):g}% over certrl's sampling, for every "
        f"adversary that perturbs observations adaptively with total l2 norm <= {budget:g} over "
        f"the episode ({space} observation space), the smoothed policy's expected return is "
        f">= {value:,.2f}."
    )


def cmd_certify(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from certrl.certificates import (
        dkw_epsilon,
        expected_return_certificate,
        percentile_certificate,
    )
    from certrl.results import update_results
    from certrl.runner import finish_journal, returns_array, run_section
    from certrl.smoothing import GaussianSmoothing, PerStateCertifier, resolve_space

    if not (math.isfinite(args.sigma) and args.sigma > 0):
        raise UsageError(f"--sigma must be > 0, got {args.sigma}")
    if not 0 < args.alpha < 0.5:
        raise UsageError(f"--alpha must be in (0, 0.5), got {args.alpha}")
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
    m = args.episodes
    lower, upper = job.spec.return_bounds
    horizon = job.spec.horizon

    print(f"certrl: certifying {args.policy} on {job.spec.gym_id}: sigma={args.sigma:g} "
          f"({space} observations), {m} smoothed episodes, alpha={args.alpha:g}, "
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
    smoothed, sm_stats = run_section(job, "certificates", m, obs_hooks=hooks, desc="smoothed")
    raw_returns = returns_array(smoothed)
    cert_returns = returns_array(smoothed, clipped=True)
    clipped_steps = int(sum(r.clipped_steps for r in smoothed))

    # 3. certificates: one band for the whole curve
    bounds = expected_return_certificate(cert_returns, args.sigma, budgets, args.alpha, lower)
    band_eps = dkw_epsilon(m, args.alpha, one_sided=True)
    rows: list[dict[str, Any]] = []
    for b, bound in zip(budgets, np.atleast_1d(bounds)):
        pct = percentile_certificate(cert_returns, args.sigma, b, quantiles, args.alpha,
                                     lower=lower)
        rows.append({
            "budget": b,
            "per_step_eps": b / math.sqrt(horizon),
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
    if args.fail_under is not None:
        gate = {"threshold": args.fail_under, "budget": largest["budget"],
                "value": largest["expected_return_lower_bound"],
                "passed": largest["expected_return_lower_bound"] >= args.fail_under}
    section = {
        "sigma": args.sigma,
        "space": space,
        "alpha": args.alpha,
        "episodes": m,
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
        "band": {"method": "dkw-massart-one-sided", "epsilon": band_eps},
        "clean_smoothed": {"summary": returns_summary(raw_returns, job.seed)},
        "clean_unsmoothed": {"summary": eval_sec["summary"], "episodes": n_clean},
        "budgets": rows,
        "statement": statement,
        "per_state": per_state,
        "gate": gate,
        "throughput": {"steps": sm_stats.steps, "seconds": round(sm_stats.seconds, 3),
                       "steps_per_second": round(sm_stats.steps_per_second, 1),
                       "retries": sm_stats.retries},
    }
    update_results(
        job.results_file,
        command=_command_line(argv),
        env=job.spec.to_json(),
        policy=_policy_json(job, args.policy),
        sections={"evaluation": eval_sec, "certificates": section},
    )
    finish_journal(job, "evaluation")
    finish_journal(job, "certificates")
    finish_journal(job, "certify-attack")

    _print_report(job, section, eval_sec, quantiles, attack_note)
    print(f"results: {job.results_file}")
    if gate is not None:
        verdict = "PASS" if gate["passed"] else "FAIL"
        print(f"gate: {verdict}: certified return {gate['value']:,.2f} at B={gate['budget']:g} "
              f"{'>=' if gate['passed'] else '<'} {gate['threshold']:,.2f}")
        return EXIT_OK if gate["passed"] else EXIT_FAIL
    return EXIT_OK


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


def _print_report(job: Any, sec: dict[str, Any], eval_sec: dict[str, Any],
                  quantiles: list[float], note: str) -> None:
    print_summary(f"{job.spec.gym_id} unsmoothed clean return", eval_sec["summary"])
    print_summary(f"smoothed clean return (sigma={sec['sigma']:g})",
                  sec["clean_smoothed"]["summary"])
    qcols = "".join(f"{'q' + format(q, 'g'):>11}" for q in quantiles)
    head = f"{'B (l2, episode)':>16}{'eps/step':>10}{'certified E[R]':>16}{qcols}{'attacked E[R]':>16}"
    print(head)
    print("-" * len(head))
    for row in sec["budgets"]:
        att = row["attack"]
        att_s = "-" if att is None else _fmt(att["mean"])
        qs = "".join(f"{_fmt(row['percentile_lower_bounds'][format(q, 'g')]):>11}"
                     for q in quantiles)
        print(f"{row['budget']:>16g}{row['per_step_eps']:>10.4f}"
              f"{_fmt(row['expected_return_lower_bound']):>16}{qs}{att_s:>16}")
    print(f"certified return >= lower bound a = {sec['reward_lower_bound']:g} "
          f"({sec['bounds_kind']} per-step reward bounds {sec['step_reward_bounds']}); "
          f"DKW band eps = {sec['band']['epsilon']:.4f}")
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
