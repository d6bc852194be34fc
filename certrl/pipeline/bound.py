"""Per-step certificates of the deployed (unsmoothed) policy by bound propagation (the
``bounds`` section; ``certrl bound`` and :func:`certrl.bound`).

Pipeline (one results-file section, ``bounds``):

1. clean episodes of the policy itself (the same episode seeds as ``certrl evaluate``), with a
   recorder hook that keeps every visited state in the threat space (``space``);
2. sound bounds on the policy's action over the per-step threat ball around every visited
   state, all states in one batched call per budget (:mod:`certrl.certificates.propagation`:
   IBP or CROWN): continuous policies get a certified maximal action deviation (l_inf, l2),
   discrete ones a certificate that the greedy action cannot change;
3. a curve over budgets ``eps`` (``eps_grid``): the certified fraction of visited states
   (deviation ``<= tol``, or greedy action unchanged) and deviation quantiles, with 95%
   cluster-bootstrap confidence intervals over episodes (states of one episode are not
   independent), beside the empirical twin: the largest deviation PGD finds on a seeded
   subsample of the same states (a lower bound on the true worst case; the certificate is an
   upper bound, the truth lies between);
4. per-step certified deviation over time for the first episodes (where in an episode the
   policy is fragile).

What it proves (per state, deterministic, no sampling): for every visited state ``s`` and
every observation ``s'`` with ``||s' - s|| <= eps`` in ``space``, the deterministic action
``a(s')`` differs from ``a(s)`` by at most the certified deviation (or, discrete, equals it).
What the fraction says: it is an estimate, with a confidence interval, of how often the
policy's clean state distribution visits such certified states; it says nothing about the
states an attacker could steer the policy to (the per-step bound does not compose over an
episode: an episode-level guarantee needs ``certrl certify``).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from certrl.errors import UsageError
from certrl.evaluator import ObservationHook, StepContext

if TYPE_CHECKING:
    from certrl.runner import Job

SECTION = "bounds"
STREAM_RECORDER = 11  # never drawn from: the recorder is deterministic
DEFAULT_GRID = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
QUANTILES = (0.5, 0.9, 0.99)
TRACE_EPISODES = 3


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


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


# ---------------------------------------------------------------------------- options
@dataclass
class BoundOptions:
    """The per-step threat and the bound's settings (``certrl bound --help`` explains each).

    ``eps=None``: the environment's published budget; ``eps_grid=None``: ``eps`` times
    :data:`DEFAULT_GRID` (a given grid always gets ``eps`` added); ``tol=None``
    (continuous policies): :func:`default_tol`."""

    eps: float | None = None
    norm: str = "linf"
    space: str = "auto"
    method: str = "crown"
    tol: float | None = None
    eps_grid: Sequence[float] | None = None
    episodes: int = 50
    pgd_states: int = 2000
    pgd_steps: int = 20
    pgd_restarts: int = 4
    allow_large_eps: bool = False

    def validate(self) -> None:
        """Raise :class:`UsageError` for an option out of range (what needs the policy or the
        environment, the default budget and ``tol``, :func:`run_bound` checks)."""
        if self.norm not in ("linf", "l2"):
            raise UsageError(f"--norm must be linf or l2, got {self.norm!r}")
        if self.space not in ("auto", "normalized", "raw"):
            raise UsageError(f"--space must be auto, normalized or raw, got {self.space!r}")
        if self.method not in ("crown", "ibp"):
            raise UsageError(f"--method must be crown or ibp, got {self.method!r}")
        if self.eps is not None and not (math.isfinite(self.eps) and self.eps >= 0):
            raise UsageError(f"--eps must be a finite number >= 0, got {self.eps}")
        if self.eps_grid is not None:
            vals = [float(v) for v in self.eps_grid]
            if not vals:
                raise UsageError("--eps-grid is empty")
            if any(not (math.isfinite(v) and v >= 0) for v in vals):
                raise UsageError(f"--eps-grid {vals}: expected finite numbers >= 0")
        if self.pgd_states < 0 or self.pgd_steps < 1 or self.pgd_restarts < 1:
            raise UsageError("--pgd-states must be >= 0, --pgd-steps and --pgd-restarts >= 1")


@dataclass
class BoundOutcome:
    """What :func:`run_bound` computed: the ``bounds`` section."""

    section: dict[str, Any]


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


# ---------------------------------------------------------------------------- the job
def run_bound(job: Job, opts: BoundOptions,
              log: Callable[[str], None] = _stderr) -> BoundOutcome:
    """Run ``opts.episodes`` clean episodes of ``job`` recording the visited states, and bound
    the policy's action over the per-step threat ball around every one of them.

    Guarantee (per state, deterministic, no sampling; IBP or CROWN, ``opts.method``): for every
    visited state ``s`` and every observation perturbation ``delta`` with ``||delta||_p <= eps``
    (``p = opts.norm``, measured in ``space``) at that state, the deviation of the deterministic
    action ``||a(s + delta) - a(s)||`` is ``<=`` the certified deviation reported for ``s``
    (l_inf and l2, action units; continuous policies), or the greedy action is unchanged
    (discrete policies). The certified fraction (deviation ``<= tol`` or action unchanged) is
    an *estimate*, with a 95% cluster-bootstrap CI over episodes, of how often the clean
    policy visits certified states; it says nothing about states an attacker steers the policy
    to, and the per-step bound does not compose over an episode (that needs
    :func:`certrl.pipeline.certify.run_certify`). The PGD columns are empirical lower bounds on
    the worst deviation, no guarantee.

    Needs the deterministic policy (``job.deterministic``) and a network bound propagation
    supports; bad input raises :class:`UsageError`.
    """
    from certrl.certificates.propagation import BoundError, extract_mlp
    from certrl.runner import run_section
    from certrl.smoothing import resolve_space

    opts.validate()
    policy, spec = job.policy, job.spec
    if not job.deterministic:
        raise UsageError("certrl bound certifies the deterministic action (the deployed "
                         "policy's mean / greedy action): drop --stochastic")
    space = resolve_space(policy, opts.space)
    try:
        extract_mlp(policy)
    except BoundError as e:
        raise UsageError(str(e)) from None
    eps = opts.eps
    if eps is None:
        if spec.default_eps is None:
            raise UsageError(f"{spec.gym_id} has no published default budget: pass --eps "
                             "(e.g. --eps 0.1)")
        eps = float(spec.default_eps)
    if not (math.isfinite(eps) and eps >= 0):
        raise UsageError(f"--eps must be a finite number >= 0, got {eps}")
    if space == "normalized" and opts.norm == "linf" and eps > 1 and not opts.allow_large_eps:
        raise UsageError(f"--eps {eps:g} is larger than 1 in the normalized observation space "
                         "(unit-variance coordinates; published budgets are 0.05-0.3): pass "
                         "--space raw if this is a raw-observation budget, or "
                         "--allow-large-eps")
    grid = (sorted({round(eps * f, 12) for f in DEFAULT_GRID}) if opts.eps_grid is None
            else sorted({float(v) for v in opts.eps_grid} | {eps}))
    tol = None
    if not policy.discrete:
        tol = default_tol(policy) if opts.tol is None else float(opts.tol)
        if not (math.isfinite(tol) and tol >= 0):
            raise UsageError(f"--tol must be a finite number >= 0, got {opts.tol}")

    log(f"certrl: bounding {job.label} on {spec.gym_id}: {opts.method}, "
        f"{'l_inf' if opts.norm == 'linf' else 'l2'} eps={eps:g} ({space} observations), "
        f"{opts.episodes} clean episodes, {job.workers} worker(s)")
    # 1. clean episodes with the recorder (same seeds as evaluate; returns identical)
    recorder = StateRecorder(space)
    res, stats = run_section(job, SECTION, opts.episodes, obs_hooks=[recorder],
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
        policy, states, episode, tstep, grid=grid, eps=eps, norm=opts.norm, space=space,
        method=opts.method, tol=tol, seed=job.seed, pgd_states=opts.pgd_states,
        pgd_steps=opts.pgd_steps, pgd_restarts=opts.pgd_restarts)
    section.update({
        "episodes": len(res), "seed": job.seed, "deterministic": job.deterministic,
        "returns": [r.ret for r in res], "lengths": [r.length for r in res],
        "rollout": {"steps": stats.steps, "seconds": round(stats.seconds, 3)},
    })
    return BoundOutcome(section=section)


def save_bound(job: Job, outcome: BoundOutcome, command: str) -> dict[str, Any]:
    """Write the ``bounds`` section into the job's results file and remove the finished
    journal; returns the file's content."""
    from certrl.pipeline.job import write_results
    from certrl.runner import finish_journal

    data = write_results(job, command, {SECTION: outcome.section})
    finish_journal(job, SECTION)
    return data


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
