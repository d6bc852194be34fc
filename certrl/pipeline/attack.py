"""Empirical worst cases of a policy under observation or action attacks (the ``attacks``
section; ``certrl attack`` and :func:`certrl.attack`).

Pipeline (one results-file section, ``attacks``):

1. ``episodes`` *clean* episodes (seed ``job.seed``: episode ``i`` always gets the same
   environment seed; with ``smoothing_sigma`` the clean run is the smoothed policy with the
   same smoothing noise as the attacked runs: common random numbers);
2. for every selected attack, the same episode indices with the attack's hook in the loop
   (learned attacks first train or load their critic / adversary, cached by policy hash under
   ``<out>/.cache``);
3. every attacked episode is audited against the threat model
   (:meth:`certrl.attacks.base.ThreatModel.audit`; action attacks against their own budget): a
   violation is a bug in the attack and raises :class:`~certrl.attacks.base.BudgetViolation`
   (the command exits with code 3);
4. per attack: mean ± std, IQM with its 95% stratified-bootstrap CI, and the drop vs clean as
   the mean of the *paired* per-episode differences (same seeds) with its bootstrap CI; then
   the strongest attack (lowest mean return).

Threat models (see :mod:`certrl.attacks.base`): observation attacks perturb each observation
by ``delta_t`` with ``||delta_t||_{norm} <= eps`` in ``space`` (``normalized`` = the policy's
``(o - mu) / sqrt(var + eps)``, where SA-PPO / ATLA / PA-AD budgets are defined; the default
when the policy has normalization statistics), optionally with a total episode l2 budget
(``episode_budget``) and GRAD temporal coupling ``||delta_t - delta_(t-1)|| <= eps_bar``
(``eps_bar``). Action attacks (``kind == "action"`` in the registry) use ``alpha`` (PR / NR-MDP
mixing, Tessler et al. 2019) and ``eps`` as their action-space radius where they have one.

Sanity rule for budgets in the normalized space: normalized observations have unit variance
under the policy's training distribution, so a per-coordinate shift of more than
``MAX_NORMALIZED_LINF`` (= 2) standard deviations, or an l2 radius above ``2 sqrt(obs_dim)``,
is no longer a "small" perturbation and is almost always a raw-space budget passed with the
wrong ``space``; it is refused (:class:`~certrl.errors.UsageError`) unless ``allow_large_eps``.
The published budgets are all far below: Hopper 0.075, Walker2d 0.05, HalfCheetah / Ant 0.15,
InvertedPendulum 0.3, Reacher 1.5 (SA-DDPG).

Results merge: attacks run earlier into the same results file stay in the section when they
were run with the same clean configuration (seed, episodes, policy mode, smoothing) and the same
threat model; otherwise the section is replaced (:attr:`AttackOutcome.dropped` names them).
"""

from __future__ import annotations

import importlib
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from certrl.errors import UsageError
from certrl.pipeline.job import returns_summary

if TYPE_CHECKING:
    from certrl.runner import Job

MAX_NORMALIZED_LINF = 2.0
ATTACK_MODULES = ("critic", "learned", "gradient", "action")
_OPTIONAL_MODULES = ("gradient", "action")
SECTION = "attacks"

#: Action attacks whose size is ``alpha`` (they need no ``eps``).
ALPHA_ONLY = frozenset({"action-pr", "action-nr"})


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


# ---------------------------------------------------------------------------- registry
def load_registry() -> dict[str, Any]:
    """Import every attack module (each registers its attacks) and return the registry."""
    import certrl.attacks as pkg
    from certrl.attacks.base import ATTACKS

    for mod in ATTACK_MODULES:
        name = f"{pkg.__name__}.{mod}"
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as e:  # an optional module of this installation
            if mod not in _OPTIONAL_MODULES or e.name != name:
                raise
    return ATTACKS


def select_attacks(text: str, registry: dict[str, Any]) -> list[str]:
    """``NAME[,NAME...]``, ``all`` (every observation attack) or ``all-action``."""
    obs = sorted(n for n, e in registry.items() if e.kind == "obs")
    act = sorted(n for n, e in registry.items() if e.kind == "action")
    names: list[str] = []
    for tok in (t.strip() for t in text.split(",")):
        if not tok:
            continue
        if tok == "all":
            names += obs
        elif tok == "all-action":
            names += act
        elif tok in registry:
            names.append(tok)
        else:
            raise UsageError(
                f"unknown attack {tok!r}; available: {', '.join(obs + act)} (or all, all-action)"
            )
    out = list(dict.fromkeys(names))
    if not out:
        raise UsageError("--attack is empty: give NAME[,NAME...], all or all-action")
    return out


def parse_opts(items: list[str] | None, names: list[str]) -> dict[str, dict[str, str]]:
    """``--opt key=value`` (every selected attack) and ``--opt NAME:key=value`` (one attack).

    Values stay strings: each attack parses (and validates) its own options."""
    per: dict[str, dict[str, str]] = {n: {} for n in names}
    for item in items or []:
        lhs, eq, value = item.partition("=")
        target, _, key = lhs.rpartition(":")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise UsageError(f"--opt {item!r}: expected key=value or ATTACK:key=value")
        if target:
            if target not in per:
                raise UsageError(f"--opt {item!r}: attack {target!r} is not among the selected "
                                 f"attacks ({', '.join(names)})")
            per[target][key] = value.strip()
        else:
            for n in names:
                per[n][key] = value.strip()
    return per


def check_budget(threat: Any, obs_dim: int, allow_large: bool = False) -> None:
    """Refuse normalized-space budgets that cannot be meant as small perturbations."""
    if threat.space != "normalized" or allow_large:
        return
    cap = MAX_NORMALIZED_LINF * (1.0 if threat.norm == "linf" else math.sqrt(obs_dim))
    if threat.eps > cap:
        raise UsageError(
            f"--eps {threat.eps:g} ({threat.norm}) is larger than {cap:.3g} in the normalized "
            f"observation space (unit-variance coordinates; published budgets are 0.05-0.3): "
            "pass --space raw if this is a raw-observation budget, or --allow-large-eps"
        )


# ---------------------------------------------------------------------------- options
@dataclass
class AttackOptions:
    """The attacks and their threat model (``certrl attack --help`` explains each).

    ``attacks``: registered names, ``"all"`` (every observation attack) or ``"all-action"``;
    ``options``: per-attack options keyed by attack name (``{"pgd": {"steps": 20}}``; each
    attack parses and validates its own); ``eps=None``: the environment's published budget;
    ``cache_dir=None``: ``<results dir>/.cache`` (``"none"`` disables the cache)."""

    attacks: Sequence[str]
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    eps: float | None = None
    norm: str = "linf"
    space: str = "auto"
    episode_budget: float | None = None
    eps_bar: float | None = None
    alpha: float | None = None
    episodes: int = 50
    smoothing_sigma: float | None = None
    allow_large_eps: bool = False
    cache_dir: str | None = None
    retrain: bool = False

    def validate(self, registry: dict[str, Any] | None = None) -> list[str]:
        """Raise :class:`UsageError` for an option out of range; returns the selected attack
        names (``all`` / ``all-action`` expanded, duplicates dropped)."""
        text = self.attacks if isinstance(self.attacks, str) else ",".join(self.attacks)
        names = select_attacks(text, load_registry() if registry is None else registry)
        for target in self.options:
            if target not in names:
                raise UsageError(f"options for attack {target!r}: it is not among the selected "
                                 f"attacks ({', '.join(names)})")
        if self.norm not in ("linf", "l2"):
            raise UsageError(f"--norm must be linf or l2, got {self.norm!r}")
        if self.space not in ("auto", "normalized", "raw"):
            raise UsageError(f"--space must be auto, normalized or raw, got {self.space!r}")
        if self.alpha is not None and not (math.isfinite(self.alpha) and 0 <= self.alpha <= 1):
            raise UsageError(f"--alpha must be in [0, 1], got {self.alpha}")
        if self.smoothing_sigma is not None and not (
                math.isfinite(self.smoothing_sigma) and self.smoothing_sigma > 0):
            raise UsageError(f"--smoothing-sigma must be > 0, got {self.smoothing_sigma}")
        if self.eps is not None and not (math.isfinite(self.eps) and self.eps >= 0):
            raise UsageError(f"--eps must be a finite number >= 0, got {self.eps}")
        return names


@dataclass
class AttackOutcome:
    """What :func:`run_attack` computed: the ``attacks`` section (this run's attacks merged with
    the earlier ones the results file kept) and what the merge did."""

    section: dict[str, Any]
    #: the attacks run this time (the selection minus ``skipped``)
    names: list[str] = field(default_factory=list)
    #: selected attacks not run: continuous actions only, and the policy is discrete
    skipped: list[str] = field(default_factory=list)
    #: earlier results of the same configuration kept in the section
    kept: list[str] = field(default_factory=list)
    #: earlier results of another configuration replaced (dropped from the section)
    dropped: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- pieces
def _threat(opts: AttackOptions, eps: float | None, policy: Any, spec: Any, space: str) -> Any:
    from certrl.attacks.base import AttackError, ThreatModel

    if eps is None:
        if spec.default_eps is None:
            raise UsageError(f"{spec.gym_id} has no published default budget: pass --eps "
                             "(e.g. --eps 0.1)")
        eps = float(spec.default_eps)
    try:
        threat = ThreatModel(eps=float(eps), norm=opts.norm, space=space,
                             episode_budget=opts.episode_budget, eps_bar=opts.eps_bar)
    except AttackError as e:
        raise UsageError(str(e)) from None
    check_budget(threat, policy.obs_dim, opts.allow_large_eps)
    return threat


def _hook_options(name: str, entry: Any, user: Mapping[str, Any], opts: Any,
                  job: Any, cache_dir: str) -> dict[str, Any]:
    """The options an attack is built with: the user's, plus for learned attacks the cache,
    ``retrain`` (``opts.retrain``), the progress setting and the victim's mode."""
    out: dict[str, Any] = dict(user)
    meta = getattr(entry, "options", {}) or {}
    if meta.get("learned"):
        out.setdefault("cache_dir", cache_dir)
        if opts.retrain:
            out.setdefault("retrain", "true")
        if job.progress is not None:
            out.setdefault("progress", job.progress)
        if meta.get("mode_option") and not job.deterministic:  # --stochastic victim
            out.setdefault(meta["mode_option"], "false")
    return out


def _build(entry: Any, threat: Any, policy: Any, spec: Any, opts: dict[str, Any],
           implicit: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """Build an attack's hook with the user's options plus the command-wide ``implicit`` ones
    (``smoothing_sigma`` for observation attacks, ``alpha`` for action attacks) that the
    attack accepts: an implicit option the attack rejects (its :class:`AttackError` names it)
    is dropped and the attack built without it. Returns the hook and the options used.

    With smoothing, observation attacks that accept ``smoothing_sigma`` optimize the
    expectation over the smoothing noise (EOT); the others run as transfer attacks against the
    smoothed policy."""
    from certrl.attacks.base import AttackError

    extra = {k: v for k, v in implicit.items() if k not in opts}
    while True:
        used = {**opts, **extra}
        try:
            return entry.factory(threat, policy, spec, **used), used
        except AttackError as e:
            rejected = [k for k in extra if k in str(e)]
            if not rejected:
                raise
            for k in rejected:
                del extra[k]


def paired_drop(clean: np.ndarray, attacked: np.ndarray, seed: int) -> dict[str, Any]:
    """Mean of the per-episode differences ``clean_i - attacked_i`` (same episode seeds) with
    its 95% bootstrap CI, and the relative drop of the mean."""
    import warnings

    from certrl.stats import mean_ci

    d = clean - attacked
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = mean_ci(d, seed=seed)
    cm = float(clean.mean())
    return {
        "drop_mean": float(d.mean()),
        "drop_ci": [est.low, est.high],
        "relative_drop": float(d.mean() / cm) if cm > 0 else None,  # % only for positive returns
    }


def _audit(results: list[Any], hook: Any, threat: Any, kind: str) -> dict[str, float]:
    """Check every episode against the threat model; the largest norms applied."""
    from certrl.attacks.base import BudgetViolation

    check = getattr(hook, "audit", None)
    for r in results:
        if callable(check):
            check(r)
        elif kind == "obs":
            threat.audit(r)
        elif kind != "action":  # pragma: no cover - registry kinds are obs / action
            raise BudgetViolation(f"cannot audit attack kind {kind!r}")
    return {
        "obs_linf_max": max((r.obs_linf_max for r in results), default=0.0),
        "obs_l2_max": max((r.obs_l2_max for r in results), default=0.0),
        "obs_episode_l2_max": max((r.obs_l2_total for r in results), default=0.0),
        "act_linf_max": max((r.act_linf_max for r in results), default=0.0),
        "act_episode_l2_max": max((r.act_l2_total for r in results), default=0.0),
    }


def _plain(x: Any) -> Any:
    """Options as JSON (tensors / paths as strings)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)


# ---------------------------------------------------------------------------- the job
def run_attack(job: Job, opts: AttackOptions,
               log: Callable[[str], None] = _stderr) -> AttackOutcome:
    """Run the clean episodes of ``job`` and every attack of ``opts`` on the same episode seeds.

    What it computes: per attack the attacked returns, their summary and the paired drop vs
    clean, each episode audited against the threat model (``||delta_t||_{norm} <= eps`` per
    step in ``space``, plus ``episode_budget`` / ``eps_bar`` when given; action attacks: their
    own ``alpha`` / action-space budget), and the strongest attack.

    No guarantee: these are *empirical upper bounds* on the worst-case return under the threat
    model (what the attacks found; a stronger attack may do worse). The certified lower bounds
    are :func:`certrl.pipeline.certify.run_certify` and :func:`certrl.pipeline.bound.run_bound`.

    The section merges the results file's earlier attacks of the same configuration (see the
    module docstring). Bad options raise :class:`UsageError`; an attack leaving its threat model
    raises :class:`~certrl.attacks.base.BudgetViolation` (a bug in the attack).
    """
    from certrl.attacks.base import AttackError
    from certrl.backends import WorkerError

    try:
        return _run_attack(job, opts, log)
    except AttackError as e:
        raise UsageError(str(e)) from None
    except WorkerError as e:
        if e.kind == "AttackError":
            raise UsageError(str(e)) from None
        raise


def _run_attack(job: Job, opts: AttackOptions, log: Callable[[str], None]) -> AttackOutcome:
    from certrl.runner import returns_array, run_section
    from certrl.smoothing import resolve_space, smoothing_hook

    registry = load_registry()
    names = opts.validate(registry)
    per_opts = {n: dict(opts.options.get(n, {})) for n in names}
    policy, spec = job.policy, job.spec
    skipped = [n for n in names if policy.discrete
               and (registry[n].options or {}).get("continuous_only")]
    if skipped and len(skipped) == len(names):
        raise UsageError(f"{', '.join(skipped)}: continuous actions only, and this policy is "
                         "discrete")
    if skipped:
        log(f"certrl: skipping {', '.join(skipped)} (continuous actions only)")
        names = [n for n in names if n not in skipped]
    space = resolve_space(policy, opts.space)
    eps = opts.eps
    if eps is None and spec.default_eps is None and all(n in ALPHA_ONLY for n in names):
        eps = 0.0  # mixing/replacement attacks are sized by --alpha alone
    threat = _threat(opts, eps, policy, spec, space)
    cache_dir = opts.cache_dir if opts.cache_dir is not None else str(
        job.results_file.parent / ".cache")
    # the smoothed policy as certify defines it (noise per frame on Atari)
    smoothing = (smoothing_hook(opts.smoothing_sigma, space, spec)
                 if opts.smoothing_sigma is not None else None)
    smooth_hooks = [smoothing] if smoothing is not None else []
    n = opts.episodes
    mode = "deterministic" if job.deterministic else "stochastic"
    sm = f", smoothed sigma={opts.smoothing_sigma:g}" if smoothing is not None else ""
    kinds_sel = {registry[k].kind for k in names}
    what = (f"threat {threat.describe()}" if "obs" in kinds_sel else
            f"action attacks, alpha={opts.alpha if opts.alpha is not None else 'default'}, "
            f"radius {threat.eps:g}")
    log(f"certrl: attacking {job.label} on {spec.gym_id}: {', '.join(names)}; "
        f"{what}; {n} episodes, seed {job.seed}, {mode}{sm}, {job.workers} "
        f"worker(s)")

    # 1. build every attack first (bad options fail before any episode runs; learned attacks
    #    train or load here)
    built: dict[str, tuple[Any, dict[str, Any], bool | None, float]] = {}
    for name in names:
        entry = registry[name]
        hook_opts = _hook_options(name, entry, per_opts[name], opts, job, cache_dir)
        implicit: dict[str, Any] = {}
        if entry.kind == "obs" and opts.smoothing_sigma is not None:
            implicit["smoothing_sigma"] = opts.smoothing_sigma
        if entry.kind == "action" and opts.alpha is not None:
            implicit["alpha"] = opts.alpha
        t0 = time.perf_counter()
        hook, used = _build(entry, threat, policy, spec, hook_opts, implicit)
        eot = None if opts.smoothing_sigma is None else "smoothing_sigma" in used
        built[name] = (hook, used, eot, time.perf_counter() - t0)

    # 2. clean episodes (the same seeds as every attack)
    clean_res, clean_stats = run_section(job, "attack-clean", n, obs_hooks=smooth_hooks,
                                         desc="clean")
    clean = returns_array(clean_res)
    clean_sec = {
        "summary": returns_summary(clean, job.seed),
        "returns": clean.tolist(),
        "lengths": [r.length for r in clean_res],
        "smoothing": None if smoothing is None else smoothing.config(),
    }

    # 3. attacks
    results: dict[str, Any] = {}
    action_alpha = opts.alpha
    for name in names:
        entry = registry[name]
        hook, used, eot, build_s = built[name]
        if entry.kind == "action":
            res, st = run_section(job, f"attack-{name}", n, obs_hooks=smooth_hooks,
                                  act_hooks=[hook], config={"attack": name}, desc=name)
        else:
            res, st = run_section(job, f"attack-{name}", n, obs_hooks=[hook, *smooth_hooks],
                                  config={"attack": name, "threat": threat.to_json()}, desc=name)
        audit = _audit(res, hook, threat, entry.kind)
        rets = returns_array(res)
        details = getattr(hook, "details", None)
        config = details() if callable(details) else hook.config()
        results[name] = {
            "kind": entry.kind,
            "description": entry.description,
            "summary": returns_summary(rets, job.seed),
            "returns": rets.tolist(),
            "lengths": [r.length for r in res],
            **paired_drop(clean, rets, job.seed),
            "config": _plain(config),
            "options": _plain({k: v for k, v in used.items() if k != "progress"}),
            "threat": threat.to_json() if entry.kind == "obs" else {
                "kind": "action", "alpha": config.get("alpha"), "eps": threat.eps,
                "eps_bar": threat.eps_bar},
            "audit": audit,
            "eot": eot,
            "build_seconds": round(build_s, 2),
            "throughput": {"steps": st.steps, "seconds": round(st.seconds, 3),
                           "steps_per_second": round(st.steps_per_second, 1),
                           "resumed_episodes": getattr(st, "resumed", 0)},
        }

    # 4. merge with earlier attacks of the same configuration
    key = {"seed": job.seed, "episodes": n, "deterministic": job.deterministic,
           "smoothing": clean_sec["smoothing"], "threat": threat.to_json(),
           "alpha": action_alpha}
    kept, dropped = _earlier_results(job, key, results)
    all_results = {**kept, **results}
    strongest = min(all_results, key=lambda k: (all_results[k]["summary"]["mean"], k))
    s = all_results[strongest]["summary"]
    kinds = {r["kind"] for r in all_results.values()}
    act_text = (f"action attacks: alpha={action_alpha if action_alpha is not None else 'default'}"
                f", action-space radius {threat.eps:g} (raw action units)")
    if kinds == {"action"}:
        sec_threat: dict[str, Any] = {"kind": "action", "eps": threat.eps, "norm": threat.norm,
                                      "space": "action", "alpha": action_alpha,
                                      "episode_budget": None, "eps_bar": threat.eps_bar}
        threat_text = act_text
    else:
        sec_threat = threat.to_json()
        threat_text = threat.describe() + (f"; {act_text}" if "action" in kinds else "")
    section = {
        "threat": sec_threat,
        "threat_text": threat_text,
        "alpha": action_alpha,
        "episodes": n,
        "seed": job.seed,
        "deterministic": job.deterministic,
        "smoothing": clean_sec["smoothing"],
        "clean": clean_sec,
        "results": all_results,
        "min": {"name": strongest, "mean": s["mean"], "mean_ci": s["mean_ci"],
                "drop_mean": all_results[strongest]["drop_mean"],
                "kind": all_results[strongest]["kind"]},
        "key": key,
        "throughput": {"clean_steps_per_second": round(clean_stats.steps_per_second, 1)},
    }
    return AttackOutcome(section=section, names=list(names), skipped=skipped,
                         kept=list(kept), dropped=dropped)


def _earlier_results(job: Job, key: dict[str, Any], results: dict[str, Any]
                     ) -> tuple[dict[str, Any], list[str]]:
    """The results file's earlier attacks: those of the same configuration ``key`` (same
    policy and environment) not run again, kept; the names of those of another, dropped."""
    from certrl.results import load_results

    kept: dict[str, Any] = {}
    dropped: list[str] = []
    if job.results_file.exists():
        try:
            old = load_results(job.results_file)
        except Exception:
            old = {}
        same_file = (old.get("policy", {}).get("sha256") == job.policy.info.sha256
                     and old.get("env", {}).get("id") == job.spec.gym_id)
        prev = old.get(SECTION) if same_file else None
        if isinstance(prev, dict) and isinstance(prev.get("results"), dict):
            if prev.get("key") == key:
                kept = {k: v for k, v in prev["results"].items() if k not in results}
            else:
                dropped = [k for k in prev["results"] if k not in results]
    return kept, dropped


def save_attack(job: Job, outcome: AttackOutcome, command: str) -> dict[str, Any]:
    """Write the ``attacks`` section into the job's results file and remove the finished
    journals (the clean run's and each attack's); returns the file's content."""
    from certrl.pipeline.job import write_results
    from certrl.runner import finish_journal

    data = write_results(job, command, {SECTION: outcome.section})
    for sec in ["attack-clean", *(f"attack-{k}" for k in outcome.names)]:
        finish_journal(job, sec)
    return data
