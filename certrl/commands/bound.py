"""``certrl bound``: per-step certificates of the deployed (unsmoothed) policy.

Pipeline (one results-file section, ``bounds``):

1. clean episodes of the policy itself (the same episode seeds as ``certrl evaluate``), with a
   recorder hook that keeps every visited state in the threat space (``--space``);
2. sound bounds on the policy's action over the per-step threat ball around every visited
   state, all states in one batched call per budget (:mod:`certrl.certificates.propagation`:
   IBP or CROWN): continuous policies get a certified maximal action deviation (l_inf, l2),
   discrete ones a certificate that the greedy action cannot change;
3. a curve over budgets ``eps`` (``--eps-grid``): the certified fraction of visited states
   (deviation ``<= --tol``, or greedy action unchanged) and deviation quantiles, with 95%
   cluster-bootstrap confidence intervals over episodes (states of one episode are not
   independent), beside the empirical twin: the largest deviation PGD finds on a seeded
   subsample of the same states (a lower bound on the true worst case; the certificate is an
   upper bound, the truth lies between);
4. per-step certified deviation over time for the first episodes (where in an episode the
   policy is fragile).

What it proves (per state, deterministic, no sampling): for every visited state ``s`` and
every observation ``s'`` with ``||s' - s|| <= eps`` in ``--space``, the deterministic action
``a(s')`` differs from ``a(s)`` by at most the certified deviation (or, discrete, equals it).
What the fraction says: it is an estimate, with a confidence interval, of how often the
policy's clean state distribution visits such certified states; it says nothing about the
states an attacker could steer the policy to (the per-step bound does not compose over an
episode: an episode-level guarantee needs ``certrl certify``).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from certrl.cli import (
    EXIT_OK,
    UsageError,
    _add_common,
    _add_policy_args,
    _add_run_args,
    _add_threat_args,
    _command_line,
    _policy_json,
    build_job,
)
from certrl.evaluator import ObservationHook, StepContext

STREAM_RECORDER = 11  # never drawn from: the recorder is deterministic
DEFAULT_GRID = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
QUANTILES = (0.5, 0.9, 0.99)
TRACE_EPISODES = 3


class StateRecorder(ObservationHook):
    """Records the observations the policy sees (in ``space``) and passes them unchanged.

    Not adversarial and draws no randomness: an episode with the recorder is bit-identical to
    the same episode without it. The states of an episode come back in
    ``EpisodeResult.extras["states"]`` (one row per step)."""

    name = "record-states"
    rng_stream = STREAM_RECORDER
    adversarial = False

    def __init__(self, space: str) -> None:
        self.space = space
        self._rows: dict[int, list[list[float]]] = {}

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "space": self.space}

    def reset(self, slots: np.ndarray, rngs: list[np.random.Generator]) -> None:
        for k in np.asarray(slots).tolist():
            self._rows[int(k)] = []

    def __call__(self, x: torch.Tensor, ctx: StepContext) -> torch.Tensor:
        vals = x.detach().to(torch.float32).tolist()
        for j, k in enumerate(np.asarray(ctx.slots).tolist()):
            self._rows.setdefault(int(k), []).append(vals[j])
        return x

    def episode_extras(self, slot: int) -> dict[str, Any]:
        return {"states": self._rows.pop(int(slot), [])}


def _budgets(text: str, name: str) -> list[float]:
    from certrl.commands.certify import _floats

    vals = _floats(text, name)
    if any(not (math.isfinite(v) and v >= 0) for v in vals):
        raise UsageError(f"{name} {text!r}: expected finite numbers >= 0")
    return vals


def register(sub: Any) -> None:
    p = sub.add_parser(
        "bound",
        help="per-step certificates of the deployed policy by bound propagation (IBP/CROWN)",
        description="Sound bounds on the policy's action over the per-step threat ball around "
        "every state visited by clean episodes (IBP: Gowal et al. 2018; CROWN: Zhang et al. "
        "2018), beside the deviation PGD finds on the same states.",
    )
    _add_policy_args(p)
    _add_run_args(p, episodes=50)
    _add_threat_args(p)
    p.add_argument("--method", choices=["crown", "ibp"], default="crown",
                   help="bound propagation: crown (linear relaxation, tighter; default) or ibp "
                   "(interval bounds)")
    p.add_argument("--tol", type=float, default=None,
                   help="continuous policies: a state counts as certified when the certified "
                   "l_inf action deviation is <= TOL (action units; default 10%% of the "
                   "largest half-range of the action bounds, 0.1 on Hopper)")
    p.add_argument("--eps-grid", default=None,
                   help="budgets of the curve, comma-separated (default eps x "
                   "0,0.125,0.25,0.5,0.75,1,1.5,2)")
    p.add_argument("--pgd-states", type=int, default=2000,
                   help="states (seeded subsample) for the PGD twin per budget (default 2000; "
                   "0 = off)")
    p.add_argument("--pgd-steps", type=int, default=20, help="PGD steps (default 20)")
    p.add_argument("--pgd-restarts", type=int, default=4, help="PGD random restarts (default 4)")
    p.add_argument("--allow-large-eps", action="store_true",
                   help="accept normalized-space budgets above 1 (l_inf)")
    _add_common(p)
    p.set_defaults(handler=cmd_bound)


# ------------------------------------------------------------------ statistics over episodes
def cluster_fraction_ci(ok: np.ndarray, episode: np.ndarray, seed: int, n_boot: int = 2000,
                        level: float = 0.95) -> tuple[float, float, float]:
    """Fraction of states with ``ok`` and its percentile-bootstrap CI, resampling *episodes*
    (all the states of a drawn episode together: states within an episode are dependent).

    Returns ``(fraction, low, high)``. Deterministic given ``seed``."""
    ok = np.asarray(ok, dtype=float)
    ids, inv = np.unique(np.asarray(episode), return_inverse=True)
    num = np.bincount(inv, weights=ok, minlength=ids.size)
    den = np.bincount(inv, minlength=ids.size).astype(float)
    frac = float(num.sum() / den.sum())
    if ids.size < 2:
        return frac, frac, frac
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, ids.size, size=(n_boot, ids.size))
    boot = num[draw].sum(1) / den[draw].sum(1)
    lo, hi = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    return frac, float(lo), float(hi)


def cluster_quantile_ci(x: np.ndarray, episode: np.ndarray, q: float, seed: int,
                        n_boot: int = 400, level: float = 0.95) -> tuple[float, float, float]:
    """``q``-quantile of the pooled states' values with an episode-bootstrap percentile CI."""
    x = np.asarray(x, dtype=float)
    ids, inv = np.unique(np.asarray(episode), return_inverse=True)
    point = float(np.quantile(x, q))
    if ids.size < 2:
        return point, point, point
    groups = [x[inv == g] for g in range(ids.size)]
    rng = np.random.default_rng(seed)
    boots = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, ids.size, size=ids.size)
        boots[b] = np.quantile(np.concatenate([groups[i] for i in pick]), q)
    lo, hi = np.quantile(boots, [(1 - level) / 2, (1 + level) / 2])
    return point, float(lo), float(hi)


def default_tol(policy: Any) -> float:
    """10% of the largest half-range of the action bounds (0.1 for actions in [-1, 1])."""
    half = (np.asarray(policy.action_high, dtype=np.float64)
            - np.asarray(policy.action_low, dtype=np.float64)) / 2.0
    return float(f"{0.1 * np.max(half):.6g}")


# ------------------------------------------------------------------------------ the command
def cmd_bound(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from certrl.certificates.propagation import BoundError, extract_mlp
    from certrl.results import update_results
    from certrl.runner import finish_journal, run_section
    from certrl.smoothing import resolve_space

    job = build_job(args)
    policy, spec = job.policy, job.spec
    if not job.deterministic:
        raise UsageError("certrl bound certifies the deterministic action (the deployed "
                         "policy's mean / greedy action): drop --stochastic")
    space = resolve_space(policy, args.space)
    try:
        extract_mlp(policy)
    except BoundError as e:
        raise UsageError(str(e)) from None
    eps = args.eps
    if eps is None:
        if spec.default_eps is None:
            raise UsageError(f"{spec.gym_id} has no published default budget: pass --eps "
                             "(e.g. --eps 0.1)")
        eps = float(spec.default_eps)
    if not (math.isfinite(eps) and eps >= 0):
        raise UsageError(f"--eps must be a finite number >= 0, got {eps}")
    if space == "normalized" and args.norm == "linf" and eps > 1 and not args.allow_large_eps:
        raise UsageError(f"--eps {eps:g} is larger than 1 in the normalized observation space "
                         "(unit-variance coordinates; published budgets are 0.05-0.3): pass "
                         "--space raw if this is a raw-observation budget, or "
                         "--allow-large-eps")
    grid = (sorted({round(eps * f, 12) for f in DEFAULT_GRID}) if args.eps_grid is None
            else sorted(set(_budgets(args.eps_grid, "--eps-grid")) | {eps}))
    tol = None
    if not policy.discrete:
        tol = default_tol(policy) if args.tol is None else float(args.tol)
        if not (math.isfinite(tol) and tol >= 0):
            raise UsageError(f"--tol must be a finite number >= 0, got {args.tol}")
    if args.pgd_states < 0 or args.pgd_steps < 1 or args.pgd_restarts < 1:
        raise UsageError("--pgd-states must be >= 0, --pgd-steps and --pgd-restarts >= 1")

    print(f"certrl: bounding {args.policy} on {spec.gym_id}: {args.method}, "
          f"{'l_inf' if args.norm == 'linf' else 'l2'} eps={eps:g} ({space} observations), "
          f"{args.episodes} clean episodes, {job.workers} worker(s)", file=sys.stderr)
    # 1. clean episodes with the recorder (same seeds as evaluate; returns identical)
    recorder = StateRecorder(space)
    res, stats = run_section(job, "bounds", args.episodes, obs_hooks=[recorder],
                             desc="clean (recording states)")
    res = sorted(res, key=lambda r: r.index)
    states = np.concatenate([np.asarray(r.extras.get("states") or np.zeros((0, policy.obs_dim)),
                                        dtype=np.float32).reshape(-1, policy.obs_dim)
                             for r in res])
    episode = np.concatenate([np.full(r.length, r.index) for r in res])
    tstep = np.concatenate([np.arange(r.length) for r in res])
    if states.shape[0] != episode.size:
        raise UsageError("the recorded states do not match the episode lengths (a results "
                         "journal from an older certrl?): rerun without --resume")

    section = bound_section(
        policy, states, episode, tstep, grid=grid, eps=eps, norm=args.norm, space=space,
        method=args.method, tol=tol, seed=job.seed, pgd_states=args.pgd_states,
        pgd_steps=args.pgd_steps, pgd_restarts=args.pgd_restarts)
    section.update({
        "episodes": len(res), "seed": job.seed, "deterministic": job.deterministic,
        "returns": [r.ret for r in res], "lengths": [r.length for r in res],
        "rollout": {"steps": stats.steps, "seconds": round(stats.seconds, 3)},
    })
    update_results(job.results_file, command=_command_line(argv), env=spec.to_json(),
                   policy=_policy_json(job, args.policy), sections={"bounds": section})
    finish_journal(job, "bounds")
    print_bounds(section)
    print(f"results: {job.results_file}")
    return EXIT_OK


def bound_section(policy: Any, states: np.ndarray, episode: np.ndarray, tstep: np.ndarray, *,
                  grid: list[float], eps: float, norm: str, space: str, method: str,
                  tol: float | None, seed: int, pgd_states: int = 2000, pgd_steps: int = 20,
                  pgd_restarts: int = 4) -> dict[str, Any]:
    """The ``bounds`` results section from the visited ``states [N, obs_dim]`` (threat
    space), their episode ids and step indices. Pure given its inputs and ``seed``."""
    from certrl.certificates.propagation import (
        action_deviation_bounds,
        greedy_action_certified,
        pgd_max_deviation,
    )

    n = states.shape[0]
    x = torch.as_tensor(states, dtype=torch.float32)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0, STREAM_RECORDER)))
    sub = np.sort(rng.choice(n, size=min(pgd_states, n), replace=False)) if pgd_states else None
    trace_eps = [e for e in np.unique(episode)[:TRACE_EPISODES]]
    curve: list[dict[str, Any]] = []
    main: dict[str, Any] = {}
    traces: list[dict[str, Any]] = []
    timing = {"bound_seconds": 0.0, "pgd_seconds": 0.0}
    for e in grid:
        t0 = time.perf_counter()
        row: dict[str, Any] = {"eps": e}
        if policy.discrete:
            cert = greedy_action_certified(policy, x, e, norm, space, method)
            ok = cert.certified.numpy()
            dev = None
        else:
            ab = action_deviation_bounds(policy, x, e, norm, space, method)
            dev = ab.linf.numpy()
            ok = dev <= tol
            dev_l2 = ab.l2.numpy()
            row["deviation_l2_quantiles"] = {f"{q:g}": float(np.quantile(dev_l2, q))
                                             for q in QUANTILES}
            row["deviation_l2_max"] = float(dev_l2.max())
        timing["bound_seconds"] += time.perf_counter() - t0
        f, lo, hi = cluster_fraction_ci(ok, episode, seed)
        row["certified_fraction"] = {"value": f, "ci": [lo, hi]}
        if dev is not None:
            row["deviation_quantiles"] = {f"{q:g}": float(np.quantile(dev, q))
                                          for q in QUANTILES}
            row["deviation_max"] = float(dev.max())
        if sub is not None and e > 0:
            t1 = time.perf_counter()
            pg = pgd_max_deviation(policy, x[sub], e, norm, space, steps=pgd_steps,
                                   restarts=pgd_restarts, seed=seed)
            timing["pgd_seconds"] += time.perf_counter() - t1
            if policy.discrete:
                unchanged = ~pg.changed.numpy()
                row["pgd"] = {"states": int(sub.size),
                              "fraction_unchanged": float(unchanged.mean())}
            else:
                pdev = pg.linf.numpy()
                row["pgd"] = {"states": int(sub.size),
                              "fraction_within_tol": float(np.mean(pdev <= tol)),
                              "deviation_quantiles": {f"{q:g}": float(np.quantile(pdev, q))
                                                      for q in QUANTILES},
                              "deviation_max": float(pdev.max())}
        if math.isclose(e, eps, rel_tol=1e-12, abs_tol=0.0):
            main = dict(row)
            if dev is not None:
                main["deviation_quantile_ci"] = {
                    f"{q:g}": list(cluster_quantile_ci(dev, episode, q, seed)[1:])
                    for q in QUANTILES}
            for ep in trace_eps:
                sel = episode == ep
                tr: dict[str, Any] = {"episode": int(ep), "t": tstep[sel].tolist()}
                if dev is not None:
                    tr["certified_deviation"] = [float(v) for v in dev[sel]]
                else:
                    tr["certified"] = [bool(v) for v in ok[sel]]
                    tr["margin"] = [float(v) for v in cert.margin.numpy()[sel]]
                traces.append(tr)
        curve.append(row)
    per_state = "deviation" if not policy.discrete else "greedy action unchanged"
    return {
        "method": method, "eps": eps, "norm": norm, "space": space, "tol": tol,
        "discrete": bool(policy.discrete), "states": int(n),
        "certified_quantity": per_state,
        "statement": _statement(policy, eps, norm, space, method, tol, main, n),
        "at_eps": main, "curve": curve, "traces": traces,
        "pgd": {"steps": pgd_steps, "restarts": pgd_restarts,
                "states": int(0 if sub is None else sub.size)},
        "timing": {k: round(v, 3) for k, v in timing.items()},
    }


def _statement(policy: Any, eps: float, norm: str, space: str, method: str, tol: float | None,
               main: dict[str, Any], n: int) -> str:
    nm = "l_inf" if norm == "linf" else "l2"
    fr = main.get("certified_fraction") or {}
    f, ci = fr.get("value", float("nan")), fr.get("ci", [float("nan")] * 2)
    what = ("the greedy action cannot change" if policy.discrete
            else f"the action moves by at most {tol:g} (l_inf, action units)")
    return (f"On {100 * f:.1f}% of {n:,} states visited by clean episodes (95% CI over episodes "
            f"{100 * ci[0]:.1f}%..{100 * ci[1]:.1f}%), {method.upper()} proves that for every "
            f"observation perturbation with {nm} norm <= {eps:g} ({space} observations) "
            f"{what}.")


def print_bounds(sec: dict[str, Any]) -> None:
    nm = "l_inf" if sec["norm"] == "linf" else "l2"
    disc = sec["discrete"]
    if disc:
        head = f"{'eps (' + nm + ')':>12}{'certified':>11}{'95% CI':>17}{'PGD unchanged':>15}"
    else:
        head = (f"{'eps (' + nm + ')':>12}{'certified':>11}{'95% CI':>17}{'PGD <= tol':>12}"
                f"{'dev q0.5':>10}{'dev q0.9':>10}{'PGD q0.9':>10}")
    print(f"per-step bounds ({sec['method']}, {sec['space']} observations, {sec['states']:,} "
          f"visited states" + ("" if disc else f", tol {sec['tol']:g}") + "):")
    print(head)
    print("-" * len(head))
    for row in sec["curve"]:
        fr = row["certified_fraction"]
        ci = f"{100 * fr['ci'][0]:.1f}..{100 * fr['ci'][1]:.1f}%"
        pg = row.get("pgd") or {}
        if disc:
            pv = pg.get("fraction_unchanged")
            ps = "-" if pv is None else f"{100 * pv:.1f}%"
            print(f"{row['eps']:>12g}{100 * fr['value']:>10.1f}%{ci:>17}{ps:>15}")
        else:
            pv = pg.get("fraction_within_tol")
            ps = "-" if pv is None else f"{100 * pv:.1f}%"
            q = row["deviation_quantiles"]
            pq = (pg.get("deviation_quantiles") or {}).get("0.9")
            pqs = "-" if pq is None else f"{pq:.4f}"
            print(f"{row['eps']:>12g}{100 * fr['value']:>10.1f}%{ci:>17}{ps:>12}"
                  f"{q['0.5']:>10.4f}{q['0.9']:>10.4f}{pqs:>10}")
    print(sec["statement"])
    print("(the certificate is an upper bound on the worst deviation, PGD a lower bound; the "
          "fraction is over states the clean policy visits, not states an attacker steers to)")
