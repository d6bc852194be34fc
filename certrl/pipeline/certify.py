"""Policy smoothing certificates of one policy on one environment (the ``certificates``
section; ``certrl certify`` and :func:`certrl.certify`).

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

import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from certrl.errors import UsageError
from certrl.pipeline.job import evaluation_section, returns_summary

if TYPE_CHECKING:
    from certrl.certificates.sequential import SequentialCertifier
    from certrl.runner import Job

DEFAULT_QUANTILES = (0.1, 0.25, 0.5)
DEFAULT_BUDGETS = (0.0, 0.05, 0.1, 0.2, 0.4)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


@dataclass
class CertifyOptions:
    """The certificate's settings (``certrl certify --help`` explains each)."""

    sigma: float = 0.2
    budgets: Sequence[float] = DEFAULT_BUDGETS
    alpha: float = 0.05
    episodes: int = 1000
    space: str = "auto"
    band: str = "auto"
    quantiles: Sequence[float] = DEFAULT_QUANTILES
    clean_episodes: int | None = None
    attack: bool = True
    attack_episodes: int | None = None
    per_state: bool = False
    per_state_n: int = 1000
    fail_under: float | None = None
    #: ``auto``: per frame on frame-stacked observations (Atari, Kumar et al.), else on the
    #: whole observation; ``frame`` / ``input`` force one (see :func:`smoothing_hook`)
    smoothing_unit: str = "auto"

    def validate(self) -> tuple[list[float], list[float]]:
        """Raise :class:`UsageError` for an option out of range; returns the sorted, distinct
        budgets and the quantiles."""
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise UsageError(f"--sigma must be > 0, got {self.sigma}")
        if not 0 < self.alpha < 0.5:
            raise UsageError(f"--alpha must be in (0, 0.5), got {self.alpha}")
        if self.fail_under is not None and not math.isfinite(self.fail_under):
            raise UsageError(f"--fail-under must be a finite number, got {self.fail_under}")
        budgets = [float(b) for b in self.budgets]
        if not budgets:
            raise UsageError("--budgets is empty")
        if any(not (math.isfinite(b) and b >= 0) for b in budgets):
            raise UsageError(f"budgets must be finite and >= 0, got {budgets}")
        budgets = sorted(set(budgets))
        quantiles = [float(q) for q in self.quantiles]
        if any(not 0 < q < 1 for q in quantiles):
            raise UsageError(f"--quantiles must be in (0, 1), got {quantiles}")
        return budgets, quantiles


@dataclass
class CertifyOutcome:
    """What :func:`run_certify` computed: the ``certificates`` and ``evaluation`` sections."""

    section: dict[str, Any]
    evaluation: dict[str, Any]
    quantiles: list[float] = field(default_factory=list)
    attack_note: str = ""
    sequential: SequentialCertifier | None = None


def run_certify(job: Job, opts: CertifyOptions,
                log: Callable[[str], None] = _stderr) -> CertifyOutcome:
    """Run the smoothed episodes of ``job`` and compute the certificates of ``opts``.

    Guarantee (Kumar, Levine & Feizi 2022, Thm. 1 with the band of ``opts.band``): with
    probability ``>= 1 - alpha`` over certrl's sampling, for every budget ``B`` at once and every
    adversary that perturbs the observations adaptively with total l2 norm ``<= B`` over the
    episode (in ``space``), the smoothed policy's expected (clipped) return is ``>=
    section["budgets"][k]["expected_return_lower_bound"]``. Assumes per-step rewards within the
    environment's bounds (steps outside are clipped and counted) and i.i.d. episodes.
    """
    from certrl.certificates import (
        Decision,
        dkw_epsilon,
        expected_return_certificate_cp,
        percentile_certificate,
    )
    from certrl.certificates.bands import survival_band
    from certrl.certificates.returns import expected_return_from_band
    from certrl.runner import returns_array, run_section
    from certrl.smoothing import FrameSmoothing, PerStateCertifier, resolve_space, smoothing_hook

    budgets, quantiles = opts.validate()
    if not job.spec.bounds_known:
        job.spec.require_bounds("certify")
    policy = job.policy
    space = resolve_space(policy, opts.space)
    if opts.per_state and not policy.discrete:
        raise UsageError("--per-state needs a discrete-action policy (majority vote over actions)")
    grid = return_lattice(job.spec)
    band_method = opts.band
    if band_method == "auto":
        if opts.fail_under is not None:
            band_method = "dkw"
        else:
            band_method = "cp-grid" if grid is not None else "hybrid"
    if band_method == "cp-grid" and grid is None:
        raise UsageError(
            f"--band cp-grid needs returns on a known lattice (a constant per-step reward with "
            f"exact bounds); {job.spec.gym_id} has {job.spec.bounds_kind} per-step bounds "
            f"{list(job.spec.step_reward_bounds)}: use --band hybrid (or dkw)")
    if band_method != "dkw" and opts.fail_under is not None:
        raise UsageError("--fail-under uses the DKW band of its stopping rule: use --band dkw "
                         "(or auto) with --fail-under")
    m = opts.episodes
    lower, upper = job.spec.return_bounds
    horizon = job.spec.horizon

    upto = "up to " if opts.fail_under is not None else ""
    frames = ", noise per frame" if job.spec.frame_stack and opts.smoothing_unit != "input" \
        else ""
    log(f"certrl: certifying {job.label} on {job.spec.gym_id}: sigma={opts.sigma:g} "
        f"({space} observations{frames}), {upto}{m} smoothed episodes, alpha={opts.alpha:g}, "
        f"{job.workers} worker(s)")

    # 1. unsmoothed clean return on the same episode seeds
    n_clean = opts.clean_episodes or min(m, 100)
    clean, clean_stats = run_section(job, "evaluation", n_clean, desc="clean")
    eval_sec = evaluation_section(job, clean, clean_stats)

    # 2. smoothed clean episodes
    try:
        smoothing = smoothing_hook(opts.sigma, space, job.spec, opts.smoothing_unit)
    except ValueError as e:
        raise UsageError(f"--smoothing-unit {opts.smoothing_unit}: {e}") from None
    per_frame = isinstance(smoothing, FrameSmoothing)
    if per_frame and opts.per_state:
        raise UsageError("--per-state certifies the whole observation at each step: use it with "
                         "--smoothing-unit input (per-frame smoothing reuses older frames' noise)")
    unit_size = policy.obs_dim // smoothing.frame_stack if per_frame else policy.obs_dim
    hooks: list[Any] = [smoothing]
    if opts.per_state:
        hooks = [PerStateCertifier(opts.sigma, space, n=opts.per_state_n, alpha=0.001), smoothing]
    seq = None
    if opts.fail_under is not None:  # anytime-valid early stopping at the largest budget
        smoothed, sm_stats, seq = _sequential_smoothed(opts, job, hooks, budgets[-1], log)
    else:
        smoothed, sm_stats = run_section(job, "certificates", m, obs_hooks=hooks,
                                         desc="smoothed")
    m_used = len(smoothed)
    # sequential: certificates at the stopping look's alpha_k (valid at 1 - alpha overall)
    cert_alpha = seq.alpha_used if seq is not None else opts.alpha
    raw_returns = returns_array(smoothed)
    cert_returns = returns_array(smoothed, clipped=True)
    clipped_steps = int(sum(r.clipped_steps for r in smoothed))

    # 3. certificates: one band for the whole curve (and the certified survival function)
    if band_method == "cp-grid":
        assert grid is not None
        bounds = expected_return_certificate_cp(cert_returns, opts.sigma, budgets, cert_alpha,
                                                lower, grid)
        band = {"method": "clopper-pearson-grid-bonferroni", "thresholds": int(grid.size),
                "alpha": cert_alpha, "alpha_per_threshold": cert_alpha / grid.size}
        sband = cp_grid_band(cert_returns, cert_alpha, grid)
    else:
        sband = survival_band(cert_returns, cert_alpha, band_method)
        bounds = expected_return_from_band(sband, opts.sigma, budgets, lower)
        band = sband.to_json()
        if band_method == "dkw":
            band["epsilon"] = dkw_epsilon(m_used, cert_alpha, one_sided=True)
    survival = survival_section(sband, opts.sigma, budgets)
    compare = band_comparison(cert_returns, opts.sigma, budgets, cert_alpha, lower, grid)
    rows: list[dict[str, Any]] = []
    # the steps a budget is spread over (per-step equivalents, the attack's uniform
    # allocation): the horizon, or the mean smoothed episode length on the Atari games
    steps = _threat_steps(job.spec, smoothed)
    for b, bound in zip(budgets, np.atleast_1d(bounds), strict=True):
        pct = percentile_certificate(cert_returns, opts.sigma, b, quantiles, cert_alpha,
                                     lower=lower)
        rows.append({
            "budget": b,
            "per_step_eps": b / math.sqrt(steps),
            "per_step_linf_eps": b / math.sqrt(steps * unit_size),
            "expected_return_lower_bound": float(bound),
            "percentile_lower_bounds": {f"{q:g}": float(v) for q, v in pct.items()},
            "attack": None,
        })

    # 4. the best attack we have on the smoothed policy, at the same budgets
    attack_note = ""
    if opts.attack:
        attack_note = _attack_budgets(opts, job, space, rows, steps,
                                      smoothing.frame_stack if per_frame else 0)

    # 5. per-state certified radii
    per_state = None
    if opts.per_state:
        per_state = _per_state_summary(smoothed)

    largest = rows[-1]
    statement = _statement(opts.alpha, largest["budget"], largest["expected_return_lower_bound"],
                           space, per_frame)
    gate = None
    if seq is not None:
        gate = {"threshold": opts.fail_under, "budget": largest["budget"],
                "value": largest["expected_return_lower_bound"],
                "upper_bound": seq.looks[-1].upper_bound,
                "decision": seq.decision.value,
                "passed": seq.decision is Decision.PASS}
    section = {
        "sigma": opts.sigma,
        "space": space,
        "smoothing": {"unit": "frame" if per_frame else "input",
                      "frame_stack": smoothing.frame_stack if per_frame else None,
                      "values_per_unit": unit_size},
        "alpha": opts.alpha,
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
        "attack_threat": attack_threat(job.spec, steps, unit_size,
                                       space, policy.obs_norm is None),
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
    return CertifyOutcome(section=section, evaluation=eval_sec, quantiles=quantiles,
                          attack_note=attack_note, sequential=seq)


def save_certify(job: Job, outcome: CertifyOutcome, command: str) -> dict[str, Any]:
    """Write the ``certificates`` section (and the clean ``evaluation``, unless the file already
    holds a larger one of the same policy and seed) and remove the finished journals."""
    from certrl.pipeline.job import policy_json, write_results
    from certrl.results import ResultsError, load_results
    from certrl.runner import finish_journal

    try:  # what the file holds now, for the same policy (other policies' files are replaced)
        old = load_results(job.results_file)
    except ResultsError:
        old = {}
    if old.get("policy", {}).get("sha256") != policy_json(job).get("sha256"):
        old = {}
    sections = {"certificates": outcome.section}
    if not _has_larger_evaluation(old, outcome.evaluation):
        sections["evaluation"] = outcome.evaluation
    replaced = _replaced_certificates(old, outcome.section)
    data = write_results(job, command, sections)
    if replaced:
        _stderr(f"certrl: note: {job.results_file} held certificates at {replaced}; a results "
                "file keeps one certificates section, so they were replaced (certify into "
                "another --out folder to keep both)")
    for name in ("evaluation", "certificates", "certify-attack"):
        finish_journal(job, name)
    return data


def _smoothing_label(sec: dict[str, Any]) -> str:
    unit = (sec.get("smoothing") or {}).get("unit", "input")
    return f"sigma={sec.get('sigma')} ({sec.get('space')} space, per {unit})"


def _replaced_certificates(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The smoothing of the certificates section in ``old`` (the results file's content, same
    policy) that writing ``new`` replaces, when it certified another smoothed policy (other
    sigma, space or noise unit); ``""`` when nothing of another smoothing is lost."""
    sec = old.get("certificates")
    if not sec:
        return ""
    before, after = _smoothing_label(sec), _smoothing_label(new)
    return before if before != after else ""


def _has_larger_evaluation(old: dict[str, Any], ev: dict[str, Any]) -> bool:
    """Whether ``old`` (the results file's content, same policy) holds a clean evaluation of
    the same seed and mode with at least as many episodes (episode i is the same episode in
    both, so certify's shorter clean run would only shrink it): then that section is kept."""
    prev = old.get("evaluation")
    return (
        isinstance(prev, dict)
        and prev.get("seed") == ev.get("seed")
        and prev.get("deterministic") == ev.get("deterministic")
        and int(prev.get("episodes") or 0) >= int(ev.get("episodes") or 0)
    )


def return_lattice(spec: Any) -> np.ndarray | None:
    """The thresholds ``lower + k |r|``, ``k = 1..K``, when every return lies on that lattice.

    That is the case when the per-step reward is a known constant ``r != 0`` (``exact`` bounds
    with ``lo == hi``: CartPole +1, MountainCar -1): the return is ``r`` times the episode
    length; and when the environment declares integer scores (``EnvSpec.return_step``: Atari)
    on a short lattice (at most 64 thresholds: Pong, one-round Pong). The grid depends on the
    environment only, never on the sample, as the Bonferroni
    correction of :func:`~certrl.certificates.expected_return_certificate_cp` requires; no
    return falls strictly between two thresholds, so the grid loses nothing.
    """
    lo, hi = spec.step_reward_bounds
    lower, upper = spec.return_bounds
    step = getattr(spec, "return_step", None)
    if spec.bounds_kind == "exact" and step and lo != hi:
        # integer game scores (Atari): the lattice lower + k * step; worth a Bonferroni
        # correction only while it is short (Pong: 42 thresholds, one-round Pong: 2)
        k = int(round((upper - lower) / step))
        if 1 <= k <= 64 and abs(lower + k * step - upper) < 1e-9:
            return lower + step * np.arange(1, k + 1, dtype=float)
        return None
    if spec.bounds_kind != "exact" or lo != hi or lo == 0:
        return None
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
            "source": getattr(spec, "eps_source", ""), "steps": int(horizon),
            "episode_l2_equivalent": float(eps) * math.sqrt(obs_dim * horizon),
            "comparable": space == "normalized" or normalized_is_raw}


def _threat_steps(spec: Any, results: list[Any]) -> int:
    """Steps the per-step attack budget is spread over in ``attack_threat``: the horizon, or
    on the Atari games, whose horizon is only ALE's 27,000-step cap, the mean episode length
    (one-round Pong: a few hundred steps)."""
    if not results or not spec.frame_stack:
        return int(spec.horizon)
    mean_len = float(np.mean([r.length for r in results]))
    return min(int(spec.horizon), max(1, int(math.ceil(mean_len))))


def _statement(alpha: float, budget: float, value: float, space: str,
               per_frame: bool = False) -> str:
    what = "each new frame" if per_frame else "observations"
    return (
        f"With probability >= {100 * (1 - alpha):g}% over certrl's sampling, for every "
        f"adversary that perturbs {what} adaptively with total l2 norm <= {budget:g} over "
        f"the episode ({space} observation space), the smoothed policy's expected return is "
        f">= {value:,.2f}."
    )




def _sequential_smoothed(
    opts: CertifyOptions, job: Any, hooks: list[Any], budget: float,
    log: Callable[[str], None],
) -> tuple[list[Any], Any, SequentialCertifier]:
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
    sc = SequentialCertifier(opts.sigma, budget, opts.alpha, lower, upper, opts.fail_under,
                             geometric_schedule(opts.episodes))
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
            log(f"certrl: look {lk.k}/{len(sc.schedule)}: {lk.episodes} episodes, "
                f"alpha_k={lk.alpha_k:.3g}: {lk.lower_bound:,.3f} <= C(B={budget:g}) <= "
                f"{lk.upper_bound:,.3f} vs threshold {opts.fail_under:,.3f}: "
                f"{lk.decision.value}")
    finally:
        job.resume = resume
    return results, total, sc




def _attack_budgets(opts: CertifyOptions, job: Any, space: str, rows: list[dict[str, Any]],
                    horizon: int, frame_stack: int = 0) -> str:
    """Run the episode-budget attack on the smoothed policy at every budget > 0 (per frame
    when ``frame_stack``: the threat model of per-frame certificates)."""
    try:
        from certrl.attacks.gradient import smoothed_attack_hooks
    except ImportError:
        return "no episode-budget attack is available in this installation"
    from certrl.attacks.base import ThreatModel
    from certrl.runner import returns_array, run_section

    n_att = opts.attack_episodes or min(opts.episodes, 50)
    for row in rows:
        b = row["budget"]
        if b == 0:
            continue
        hooks = smoothed_attack_hooks(job.policy, opts.sigma, space, b, horizon,
                                      frame_stack=frame_stack)
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


