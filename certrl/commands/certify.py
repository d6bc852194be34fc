"""``certrl certify``: argument parsing and printing over :mod:`certrl.pipeline.certify`
(policy smoothing + adaptive Neyman-Pearson reward certificates; see there for the pipeline)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from certrl.commands.options import (
    EXIT_FAIL,
    EXIT_OK,
    add_common,
    add_policy_args,
    add_run_args,
    command_line,
    floats,
    job_from_args,
    print_summary,
)
from certrl.commands.options import fmt as _fmt
from certrl.pipeline.certify import DEFAULT_BUDGETS, CertifyOptions, run_certify, save_certify

if TYPE_CHECKING:
    from certrl.certificates.sequential import SequentialCertifier


def register(sub: Any) -> None:
    p = sub.add_parser(
        "certify",
        help="certified lower bounds on the smoothed policy's return under l2-budget attacks",
        description="Policy smoothing certificates (Kumar, Levine & Feizi, ICLR 2022).",
    )
    add_policy_args(p)
    add_run_args(p, episodes=1000)
    p.add_argument("--sigma", type=float, default=0.2,
                   help="smoothing noise std (default 0.2), in --space units")
    p.add_argument("--space", choices=["auto", "normalized", "raw"], default="auto",
                   help="observation space of the noise and of the budget (default: normalized "
                   "when the policy has normalization statistics, else raw; pixel policies: "
                   "[0, 1] pixels)")
    p.add_argument("--smoothing-unit", choices=["auto", "frame", "input"], default="auto",
                   help="frame: noise once per frame of a frame-stacked observation, and the "
                   "budget B summed over frames (Kumar et al.'s Atari setting); input: fresh "
                   "noise on the whole observation every step; auto (default): frame on the "
                   "Atari environments, else input")
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
    add_common(p)
    p.set_defaults(handler=cmd_certify)



def options_from_args(args: argparse.Namespace) -> CertifyOptions:
    """The :class:`CertifyOptions` of the command line."""
    budgets = [args.budget] if args.budget is not None else (
        floats(args.budgets, "--budgets") if args.budgets else list(DEFAULT_BUDGETS))
    return CertifyOptions(
        sigma=args.sigma, budgets=budgets, alpha=args.alpha, episodes=args.episodes,
        space=args.space, band=args.band, quantiles=floats(args.quantiles, "--quantiles"),
        clean_episodes=args.clean_episodes, attack=not args.no_attack,
        attack_episodes=args.attack_episodes, per_state=args.per_state,
        per_state_n=args.per_state_n, fail_under=args.fail_under,
        smoothing_unit=args.smoothing_unit,
    )


def cmd_certify(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    opts = options_from_args(args)
    opts.validate()  # before loading anything
    job = job_from_args(args)
    out = run_certify(job, opts)
    save_certify(job, out, command_line(argv))
    _print_report(job, out.section, out.evaluation, out.quantiles, out.attack_note)
    print(f"results: {job.results_file}")
    seq, gate = out.sequential, out.section["gate"]
    if seq is not None and gate is not None:
        _print_sequential(seq, gate, opts.alpha, opts.episodes)
        return EXIT_OK if gate["passed"] else EXIT_FAIL
    return EXIT_OK


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




def _print_survival(sec: dict[str, Any]) -> None:
    """Certified P_adv(R >= v) per budget at the clean smoothed return's quartiles (those above
    the return's lower bound, where the bound is not trivially 1), or at every threshold of a
    lattice of at most 3."""
    sv = sec.get("survival")
    if not sv or not sv["thresholds"]:
        return
    thr = np.asarray(sv["thresholds"])
    if thr.size <= 3:  # a short lattice (one-round Pong: R >= 1): every threshold
        picks = thr.tolist()
    else:  # the clean smoothed return's quartiles, above the trivial P(R >= lower) = 1
        rets = np.sort(np.asarray(sec["smoothed_clipped_returns"], dtype=float))
        lower = sec.get("reward_lower_bound")
        qs = sorted({float(np.quantile(rets, q, method="inverted_cdf")) for q in (0.1, 0.25, 0.5)})
        picks = [v for v in qs if lower is None or v > lower] or [float(thr[0])]
    cols = "".join(f"{'P(R>=' + _fmt(v) + ')':>18}" for v in picks)
    print(f"{'certified CDF: B':>16}{cols}")
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
        steps = thr.get("steps", sec["horizon"])
        which = f"all {steps}" if steps == sec["horizon"] else f"the mean episode's {steps}"
        pixels = getattr(job.policy, "obs_shape", None) is not None  # no conv bounds yet
        hint = "" if (sec.get("smoothing") or {}).get("unit") == "frame" or pixels else (
            f" For per-step certificates at eps {thr['eps']:g}: certrl bound")
        print(f"threat scale: the attacks' l_inf eps {thr['eps']:g} per step ({thr['source']}) "
              f"on {which} steps is an episode l2 budget of {need:,.2f}; the largest certified "
              f"B = {big:g} is {big / need:.1%} of it (a per-step l_inf eps of "
              f"{big / (need / thr['eps']):.5f} on every step).{hint}")
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
