"""``certrl attack``: empirical worst cases of a policy under observation or action attacks.

What it does (one results-file section, ``attacks``):

1. ``--episodes`` *clean* episodes (seed ``--seed``: episode ``i`` always gets the same
   environment seed; with ``--smoothing-sigma`` the clean run is the smoothed policy with the
   same smoothing noise as the attacked runs: common random numbers);
2. for every selected attack, the same episode indices with the attack's hook in the loop
   (learned attacks first train or load their critic / adversary, cached by policy hash under
   ``<out>/.cache``);
3. every attacked episode is audited against the threat model
   (:meth:`certrl.attacks.base.ThreatModel.audit`; action attacks against their own budget): a
   violation is a bug in the attack and stops the command with exit code 3;
4. a table: mean ± std, IQM with its 95% stratified-bootstrap CI, and the drop vs clean as the
   mean of the *paired* per-episode differences (same seeds) with its bootstrap CI; then the
   strongest attack (lowest mean return).

Threat models (see :mod:`certrl.attacks.base`): observation attacks perturb each observation
by ``delta_t`` with ``||delta_t||_{norm} <= eps`` in ``--space`` (``normalized`` = the policy's
``(o - mu) / sqrt(var + eps)``, where SA-PPO / ATLA / PA-AD budgets are defined; the default
when the policy has normalization statistics), optionally with a total episode l2 budget
(``--episode-budget``) and GRAD temporal coupling ``||delta_t - delta_(t-1)|| <= eps_bar``
(``--eps-bar``). Action attacks (``kind == "action"`` in the registry) use ``--alpha`` (PR / NR-MDP
mixing, Tessler et al. 2019) and ``--eps`` as their action-space radius where they have one.

Sanity rule for budgets in the normalized space (documented in ``--help``): normalized
observations have unit variance under the policy's training distribution, so a per-coordinate
shift of more than ``MAX_NORMALIZED_LINF`` (= 2) standard deviations, or an l2 radius above
``2 sqrt(obs_dim)``, is no longer a "small" perturbation and is almost always a raw-space budget
passed with the wrong ``--space``; it is refused (exit 2) unless ``--allow-large-eps``. The
published budgets are all far below: Hopper 0.075, Walker2d 0.05, HalfCheetah / Ant 0.15,
InvertedPendulum 0.3, Reacher 1.5 (SA-DDPG).

Results merge: attacks run by earlier ``certrl attack`` commands stay in the section when they
were run with the same clean configuration (seed, episodes, policy mode, smoothing) and the same
threat model; otherwise the section is replaced (and the command says so).
"""

from __future__ import annotations

import argparse
import importlib
import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from certrl.cli import (
    EXIT_OK,
    EXIT_RUNTIME,
    UsageError,
    _add_common,
    _add_policy_args,
    _add_run_args,
    _add_threat_args,
    _command_line,
    _fmt,
    _policy_json,
    build_job,
    returns_summary,
)

MAX_NORMALIZED_LINF = 2.0
ATTACK_MODULES = ("critic", "learned", "gradient", "action")
_OPTIONAL_MODULES = ("gradient", "action")
SECTION = "attacks"


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


# ---------------------------------------------------------------------------- CLI
def register(sub: Any) -> None:
    p = sub.add_parser(
        "attack",
        help="return under observation / action attacks (table + strongest attack)",
        description="Empirical robustness: run attacks (random, FGSM/PGD, MAD, critic / Robust "
        "Sarsa, learned adversaries, action attacks) on the same episode seeds as a clean run.",
    )
    _add_policy_args(p)
    _add_run_args(p, episodes=50)
    p.add_argument("--attack", required=True, metavar="NAME[,NAME...]|all|all-action",
                   help="attacks to run: registered names (e.g. pgd,mad,rs), all (every "
                   "observation attack) or all-action (every action attack)")
    _add_threat_args(p)
    p.add_argument("--episode-budget", type=float, default=None, metavar="B",
                   help="total l2 budget over the episode, sqrt(sum_t ||delta_t||^2) <= B")
    p.add_argument("--eps-bar", type=float, default=None,
                   help="temporal coupling (GRAD): ||delta_t - delta_(t-1)|| <= eps_bar")
    p.add_argument("--alpha", type=float, default=None,
                   help="action attacks: PR/NR-MDP probability / mixing weight (e.g. 0.1)")
    p.add_argument("--opt", action="append", metavar="[ATTACK:]KEY=VALUE",
                   help="attack option (repeatable); ATTACK: restricts it to one attack, e.g. "
                   "--opt pgd:steps=20 --opt optimal:train_steps=100000")
    p.add_argument("--smoothing-sigma", type=float, default=None, metavar="SIGMA",
                   help="attack the smoothed policy (Gaussian noise SIGMA in --space units after "
                   "the attack); attacks that support it optimize the expectation over the noise")
    p.add_argument("--allow-large-eps", action="store_true",
                   help=f"accept normalized-space budgets above {MAX_NORMALIZED_LINF:g} (l_inf) "
                   f"or {MAX_NORMALIZED_LINF:g}*sqrt(obs_dim) (l2)")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="trained critics / adversaries cache (default <out>/.cache; none "
                   "disables)")
    p.add_argument("--retrain", action="store_true",
                   help="learned attacks: train again even when the cache has them")
    _add_common(p)
    p.set_defaults(handler=cmd_attack)


#: Action attacks whose size is ``--alpha`` (they need no ``--eps``).
ALPHA_ONLY = frozenset({"action-pr", "action-nr"})


def _threat(args: argparse.Namespace, policy: Any, spec: Any, space: str) -> Any:
    from certrl.attacks.base import AttackError, ThreatModel

    eps = args.eps
    if eps is None:
        if spec.default_eps is None:
            raise UsageError(f"{spec.gym_id} has no published default budget: pass --eps "
                             "(e.g. --eps 0.1)")
        eps = float(spec.default_eps)
    try:
        threat = ThreatModel(eps=float(eps), norm=args.norm, space=space,
                             episode_budget=args.episode_budget, eps_bar=args.eps_bar)
    except AttackError as e:
        raise UsageError(str(e)) from None
    check_budget(threat, policy.obs_dim, args.allow_large_eps)
    return threat


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


def _hook_options(name: str, entry: Any, user: dict[str, str], args: argparse.Namespace,
                  job: Any, cache_dir: str) -> dict[str, Any]:
    opts: dict[str, Any] = dict(user)
    meta = getattr(entry, "options", {}) or {}
    if meta.get("learned"):
        opts.setdefault("cache_dir", cache_dir)
        if args.retrain:
            opts.setdefault("retrain", "true")
        if job.progress is not None:
            opts.setdefault("progress", job.progress)
        if meta.get("mode_option") and not job.deterministic:  # --stochastic victim
            opts.setdefault(meta["mode_option"], "false")
    return opts


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


def cmd_attack(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from certrl.attacks.base import AttackError, BudgetViolation
    from certrl.backends import WorkerError

    try:
        return _run(args, argv)
    except AttackError as e:
        raise UsageError(str(e)) from None
    except BudgetViolation as e:
        print(f"certrl: error: budget violation (a bug in the attack, please report it): {e}",
              file=sys.stderr)
        return EXIT_RUNTIME
    except WorkerError as e:
        if e.kind == "AttackError":
            raise UsageError(str(e)) from None
        if e.kind == "BudgetViolation":
            print(f"certrl: error: budget violation (a bug in the attack, please report it): "
                  f"{e}", file=sys.stderr)
            return EXIT_RUNTIME
        raise


def _run(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    from certrl.results import load_results, update_results
    from certrl.runner import finish_journal, returns_array, run_section
    from certrl.smoothing import GaussianSmoothing, resolve_space

    registry = load_registry()
    names = select_attacks(args.attack, registry)
    per_opts = parse_opts(args.opt, names)
    if args.alpha is not None and not (math.isfinite(args.alpha) and 0 <= args.alpha <= 1):
        raise UsageError(f"--alpha must be in [0, 1], got {args.alpha}")
    if args.smoothing_sigma is not None and not (
            math.isfinite(args.smoothing_sigma) and args.smoothing_sigma > 0):
        raise UsageError(f"--smoothing-sigma must be > 0, got {args.smoothing_sigma}")
    if args.eps is not None and not (math.isfinite(args.eps) and args.eps >= 0):
        raise UsageError(f"--eps must be a finite number >= 0, got {args.eps}")
    job = build_job(args)
    policy, spec = job.policy, job.spec
    skipped = [n for n in names if policy.discrete
               and (registry[n].options or {}).get("continuous_only")]
    if skipped and len(skipped) == len(names):
        raise UsageError(f"{', '.join(skipped)}: continuous actions only, and this policy is "
                         "discrete")
    if skipped:
        print(f"certrl: skipping {', '.join(skipped)} (continuous actions only)",
              file=sys.stderr)
        names = [n for n in names if n not in skipped]
    space = resolve_space(policy, args.space)
    if args.eps is None and spec.default_eps is None and all(
            n in ALPHA_ONLY for n in names):
        args.eps = 0.0  # mixing/replacement attacks are sized by --alpha alone
    threat = _threat(args, policy, spec, space)
    cache_dir = args.cache_dir if args.cache_dir is not None else str(
        job.results_file.parent / ".cache")
    smoothing = (GaussianSmoothing(args.smoothing_sigma, space)
                 if args.smoothing_sigma is not None else None)
    smooth_hooks = [smoothing] if smoothing is not None else []
    n = args.episodes
    mode = "deterministic" if job.deterministic else "stochastic"
    sm = f", smoothed sigma={args.smoothing_sigma:g}" if smoothing is not None else ""
    kinds_sel = {registry[k].kind for k in names}
    what = (f"threat {threat.describe()}" if "obs" in kinds_sel else
            f"action attacks, alpha={args.alpha if args.alpha is not None else 'default'}, "
            f"radius {threat.eps:g}")
    print(f"certrl: attacking {args.policy} on {spec.gym_id}: {', '.join(names)}; "
          f"{what}; {n} episodes, seed {job.seed}, {mode}{sm}, {job.workers} "
          f"worker(s)", file=sys.stderr)

    # 1. build every attack first (bad options fail before any episode runs; learned attacks
    #    train or load here)
    built: dict[str, tuple[Any, dict[str, Any], bool | None, float]] = {}
    for name in names:
        entry = registry[name]
        opts = _hook_options(name, entry, per_opts[name], args, job, cache_dir)
        implicit: dict[str, Any] = {}
        if entry.kind == "obs" and args.smoothing_sigma is not None:
            implicit["smoothing_sigma"] = args.smoothing_sigma
        if entry.kind == "action" and args.alpha is not None:
            implicit["alpha"] = args.alpha
        t0 = time.perf_counter()
        hook, used = _build(entry, threat, policy, spec, opts, implicit)
        eot = None if args.smoothing_sigma is None else "smoothing_sigma" in used
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
    action_alpha = args.alpha
    for name in names:
        entry = registry[name]
        hook, opts, eot, build_s = built[name]
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
            "options": _plain({k: v for k, v in opts.items() if k != "progress"}),
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

    # 4. merge with earlier attacks of the same configuration, write
    key = {"seed": job.seed, "episodes": n, "deterministic": job.deterministic,
           "smoothing": clean_sec["smoothing"], "threat": threat.to_json(),
           "alpha": action_alpha}
    kept: dict[str, Any] = {}
    dropped: list[str] = []
    if job.results_file.exists():
        try:
            old = load_results(job.results_file)
        except Exception:
            old = {}
        same_file = (old.get("policy", {}).get("sha256") == policy.info.sha256
                     and old.get("env", {}).get("id") == spec.gym_id)
        prev = old.get(SECTION) if same_file else None
        if isinstance(prev, dict) and isinstance(prev.get("results"), dict):
            if prev.get("key") == key:
                kept = {k: v for k, v in prev["results"].items() if k not in results}
            else:
                dropped = [k for k in prev["results"] if k not in results]
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
    update_results(job.results_file, command=_command_line(argv), env=spec.to_json(),
                   policy=_policy_json(job, args.policy), sections={SECTION: section})
    for sec in ["attack-clean", *(f"attack-{k}" for k in names)]:
        finish_journal(job, sec)

    print_table(section, spec.gym_id, list(all_results))
    if kept:
        print(f"note: kept {len(kept)} earlier attack result(s) of the same configuration: "
              f"{', '.join(sorted(kept))}")
    if dropped:
        print(f"note: replaced {len(dropped)} earlier attack result(s) run with another "
              f"configuration: {', '.join(sorted(dropped))}")
    print(f"results: {job.results_file}")
    return EXIT_OK


def print_table(section: dict[str, Any], env_id: str, order: list[str],
                file: Any = None) -> None:
    """The attack table: clean first, then attacks from strongest to weakest."""
    out = file or sys.stdout
    c = section["clean"]["summary"]
    rows = sorted(order, key=lambda k: (section["results"][k]["summary"]["mean"], k))
    head = (f"{'attack':<16}{'mean ± std':>22}{'IQM [95% CI]':>30}"
            f"{'drop vs clean [95% CI]':>34}")
    sm = section.get("smoothing")
    label = "clean" + (" (smoothed)" if sm else "")
    print(f"{env_id}, {section['threat_text']}, {section['episodes']} episodes "
          f"(seed {section['seed']})", file=out)
    print(head, file=out)
    print("-" * len(head), file=out)

    def line(name: str, s: dict[str, Any], drop: str) -> str:
        ms = f"{_fmt(s['mean'])} ± {_fmt(s['std'])}"
        iqm = f"{_fmt(s['iqm'])} [{_fmt(s['iqm_ci'][0])}, {_fmt(s['iqm_ci'][1])}]"
        return f"{name:<16}{ms:>22}{iqm:>30}{drop:>34}"

    print(line(label, c, "-"), file=out)
    for k in rows:
        r = section["results"][k]
        rel = r.get("relative_drop")
        rel_s = f" ({100 * rel:.0f}%)" if rel is not None else ""
        drop = (f"{_fmt(r['drop_mean'])}{rel_s} [{_fmt(r['drop_ci'][0])}, "
                f"{_fmt(r['drop_ci'][1])}]")
        print(line(k + ("*" if r.get("kind") == "action" else ""), r["summary"], drop),
              file=out)
    mn = section["min"]
    print(f"strongest attack: {mn['name']} (mean {_fmt(mn['mean'])}, 95% CI "
          f"{_fmt(mn['mean_ci'][0])} .. {_fmt(mn['mean_ci'][1])}; drop "
          f"{_fmt(mn['drop_mean'])})", file=out)
    if any(section["results"][k].get("kind") == "action" for k in rows):
        print("* action attack (alpha / action-space budget, not the observation threat model)",
              file=out)
