"""certrl as a library: the same jobs as the command line, from Python.

    import certrl

    policy = certrl.load_policy("demo:cartpole", env="cartpole")
    clean = certrl.evaluate(policy, env="cartpole", episodes=50)
    cert = certrl.certify(policy, env="cartpole", sigma=0.2, budgets=[0, 0.2], episodes=200)
    print(clean.mean, cert.lower_bound(0.2))
    print(cert.statement)

Every function takes a policy (a file, an RL Zoo / Hugging Face folder, ``demo:NAME``, or a
:class:`~certrl.policies.Policy` from :func:`load_policy`) and an environment (an alias such as
``"hopper"``, a Gymnasium id, ``"package.module:ClassOrFactory"``, a callable returning a
``gymnasium.Env``, or an :class:`~certrl.envs.EnvSpec`), runs exactly what the command of the
same name runs (same seeds: the same numbers as ``certrl certify ...`` with the same options),
and returns a typed result whose ``to_json()`` is the results-file section the command writes.
With ``out="DIR"`` the results file is written too (and ``resume=True`` continues an
interrupted run from its journal); without it nothing is left on disk.

Differences from the command line, deliberate: ``workers`` defaults to 1 (worker processes
are spawned, which needs the ``if __name__ == "__main__":`` guard in scripts; pass
``workers=N`` for parallel runs, the numbers do not change), progress lines are off unless
``verbose=True``, and bad input raises (``ValueError`` subclasses with the CLI's one-line
messages: :class:`~certrl.errors.UsageError`, :class:`~certrl.policies.PolicyError`,
:class:`~certrl.envs.EnvError`) instead of exiting.
"""

from __future__ import annotations

import copy
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from certrl.envs import EnvSpec
from certrl.errors import UsageError
from certrl.policies.base import Policy
from certrl.runner import Job

__all__ = [
    "AttackResult",
    "BoundResult",
    "CertificationResult",
    "EvaluationResult",
    "StressResult",
    "attack",
    "bound",
    "certify",
    "diagnose",
    "DiagnosisResult",
    "evaluate",
    "load_policy",
    "make_env",
    "stress",
]

EnvLike = str | EnvSpec | Callable[..., Any]
_R = TypeVar("_R")
PolicyLike = str | Path | Policy


# ---------------------------------------------------------------------------- results
@dataclass(frozen=True)
class _Result:
    """A results-file section with its numbers as attributes."""

    section: dict[str, Any] = field(repr=False)
    #: the results file written (``out=`` given), else ``None``
    results_file: Path | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        """The results-file section, exactly as the command writes it (a deep copy)."""
        return copy.deepcopy(self.section)


@dataclass(frozen=True)
class EvaluationResult(_Result):
    """Clean returns of a policy (``certrl evaluate``; results-file section ``evaluation``).

    ``mean``, ``iqm`` and their 95% stratified-bootstrap CIs (``mean_ci``, ``iqm_ci``)."""

    returns: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)
    mean: float = 0.0
    mean_ci: tuple[float, float] = (0.0, 0.0)
    iqm: float = 0.0
    iqm_ci: tuple[float, float] = (0.0, 0.0)
    episodes: int = 0

    @staticmethod
    def of(section: dict[str, Any], results_file: Path | None = None) -> EvaluationResult:
        s = section["summary"]
        return EvaluationResult(
            section, results_file, np.asarray(section["returns"], dtype=float), s["mean"],
            tuple(s["mean_ci"]), s["iqm"], tuple(s["iqm_ci"]), section["episodes"])


@dataclass(frozen=True)
class CertificationResult(_Result):
    """Policy smoothing certificates (``certrl certify``; section ``certificates``).

    ``lower_bounds[B]``: with probability ``>= 1 - alpha`` over certrl's sampling, for every
    adversary perturbing the observations adaptively with total l2 norm ``<= B`` over the
    episode (in ``space``), the smoothed policy's expected return is ``>= lower_bounds[B]``
    (all budgets at once). ``statement`` says it in words for the largest budget.
    """

    sigma: float = 0.0
    alpha: float = 0.05
    space: str = ""
    lower_bounds: dict[float, float] = field(default_factory=dict)
    statement: str = ""
    smoothed_mean: float = 0.0
    clean_mean: float = 0.0
    evaluation: dict[str, Any] = field(default_factory=dict, repr=False)
    passed: bool | None = None

    @staticmethod
    def of(section: dict[str, Any], evaluation: dict[str, Any],
           results_file: Path | None = None) -> CertificationResult:
        gate = section.get("gate")
        return CertificationResult(
            section, results_file, section["sigma"], section["alpha"], section["space"],
            {float(r["budget"]): float(r["expected_return_lower_bound"])
             for r in section["budgets"]},
            section["statement"], section["clean_smoothed"]["summary"]["mean"],
            section["clean_unsmoothed"]["summary"]["mean"], evaluation,
            None if gate is None else bool(gate["passed"]))

    def lower_bound(self, budget: float) -> float:
        """The certified expected return at ``budget`` (one of the certified budgets)."""
        try:
            return self.lower_bounds[float(budget)]
        except KeyError:
            raise UsageError(f"budget {budget:g} was not certified; certified budgets: "
                             f"{', '.join(f'{b:g}' for b in self.lower_bounds)}") from None


@dataclass(frozen=True)
class AttackResult(_Result):
    """Empirical attacks (``certrl attack``; section ``attacks``): upper bounds on the worst
    case, no guarantee. ``means[name]``: mean attacked return of each attack (in this results
    file: earlier attacks of the same threat are kept); ``strongest``: the attack with the
    lowest mean; ``clean_mean``: the same episodes without attack."""

    means: dict[str, float] = field(default_factory=dict)
    clean_mean: float = 0.0
    strongest: str = ""
    strongest_mean: float = 0.0

    @staticmethod
    def of(section: dict[str, Any], results_file: Path | None = None) -> AttackResult:
        means = {name: float(r["summary"]["mean"]) for name, r in section["results"].items()}
        return AttackResult(section, results_file, means,
                            float(section["clean"]["summary"]["mean"]), section["min"]["name"],
                            float(section["min"]["mean"]))


@dataclass(frozen=True)
class BoundResult(_Result):
    """Per-step certificates by bound propagation (``certrl bound``; section ``bounds``):
    ``certified_fraction`` of the states visited by clean episodes where the certificate holds
    at ``eps`` (``certified_fraction_ci``: 95% CI over episodes); ``statement`` says what is
    proved."""

    eps: float = 0.0
    norm: str = ""
    method: str = ""
    certified_fraction: float = 0.0
    certified_fraction_ci: tuple[float, float] = (0.0, 0.0)
    statement: str = ""

    @staticmethod
    def of(section: dict[str, Any], results_file: Path | None = None) -> BoundResult:
        frac = section["at_eps"]["certified_fraction"]
        return BoundResult(section, results_file, float(section["eps"]), str(section["norm"]),
                           str(section["method"]), float(frac["value"]),
                           (float(frac["ci"][0]), float(frac["ci"][1])), section["statement"])


@dataclass(frozen=True)
class StressResult(_Result):
    """Returns under changed dynamics (``certrl stress``; section ``stress``): the worst
    point's mean return and the lower end of its 95% CI, and the nominal model's mean."""

    worst_case_mean: float = 0.0
    worst_case_lower: float = 0.0
    worst_case_values: dict[str, float] = field(default_factory=dict)
    nominal_mean: float = 0.0

    @staticmethod
    def of(section: dict[str, Any], results_file: Path | None = None) -> StressResult:
        w = section["worst_case"]
        return StressResult(section, results_file, float(w["mean"]), float(w["lower"]),
                            dict(w["values"]), float(section["nominal"]["summary"]["mean"]))


@dataclass(frozen=True)
class DiagnosisResult(_Result):
    """Where and along which directions the policy is fragile (``certrl diagnose``; section
    ``diagnosis``). Empirical, no guarantee. ``dimension_shares``: observation dimension name ->
    share of the most sensitive direction; ``sensitivity_median``: median top singular value of
    the action Jacobian; ``min_perturbation_median``: median smallest perturbation an attack
    found to change the action (``None`` when skipped or never found); ``subspace_overlap``:
    with ``compare``, the overlap of the two policies' unstable subspaces (1: the same)."""

    dimension_shares: dict[str, float] = field(default_factory=dict)
    sensitivity_median: float = 0.0
    min_perturbation_median: float | None = None
    subspace_overlap: float | None = None
    statement: str = ""

    @staticmethod
    def of(section: dict[str, Any], results_file: Path | None = None) -> DiagnosisResult:
        ms = section.get("min_perturbation")
        cmp = section.get("comparison")
        return DiagnosisResult(
            section, results_file, {r["name"]: r["share"] for r in section["dimension_shares"]},
            float(section["sensitivity"]["0.5"]),
            None if not ms else ms["quantiles"]["0.5"],
            None if not cmp else float(cmp["subspace_overlap"]), section["statement"])


# ---------------------------------------------------------------------------- plumbing
def _log(verbose: bool) -> Callable[[str], None]:
    if verbose:
        return lambda line: print(line, file=sys.stderr)
    return lambda line: None


@contextmanager
def _out_dir(out: str | Path | None) -> Iterator[tuple[Path, bool]]:
    """``out`` (results are written there) or a temporary directory (nothing kept)."""
    if out is not None:
        yield Path(out), True
        return
    with tempfile.TemporaryDirectory(prefix="certrl-") as d:
        yield Path(d), False


def _command(name: str, **kwargs: Any) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items() if v is not None)
    return f"certrl.{name}({args})"


def _execute(policy: PolicyLike, env: EnvLike, episodes: int, out: str | Path | None,
             run: dict[str, Any], compute: Callable[[Job], Any],
             save: Callable[[Job, Any, str], Any], command: str,
             wrap: Callable[[Any, Path | None], _R]) -> _R:
    """Build the job (results in ``out``, or in a temporary directory that is removed),
    ``compute`` its outcome, ``save`` it when ``out`` is given, and ``wrap`` it as a result."""
    from certrl.pipeline.job import build_job

    if env is None:
        raise UsageError("env is required: an alias ('hopper'), a Gymnasium id, "
                         "'package.module:Class' or a callable returning a gymnasium.Env")
    with _out_dir(out) as (d, keep):
        job = build_job(policy, env, episodes=episodes, out=d, **run)
        outcome = compute(job)
        if keep:
            save(job, outcome, command)
        return wrap(outcome, job.results_file if keep else None)


def _run_kwargs(seed: int, workers: int | None, batch_size: int | None, engine: str,
                deterministic: bool, env_kwargs: dict[str, Any] | None,
                reward_bounds: tuple[float, float] | None, resume: bool,
                progress: bool | None, loader: dict[str, Any] | None) -> dict[str, Any]:
    return {"seed": seed, "workers": 1 if workers is None else workers,
            "batch_size": batch_size, "engine": engine, "deterministic": deterministic,
            "env_kwargs": env_kwargs, "reward_bounds": reward_bounds, "resume": resume,
            "progress": bool(progress), **(loader or {})}


# ---------------------------------------------------------------------------- API
def make_env(env: EnvLike, env_kwargs: dict[str, Any] | None = None,
             reward_bounds: tuple[float, float] | None = None) -> EnvSpec:
    """The :class:`~certrl.envs.EnvSpec` certrl uses for ``env`` (horizon, reward bounds and
    their kind, default attack budget); ``spec.make()`` builds a ``gymnasium.Env``."""
    from certrl.pipeline.job import resolve_job_env

    return resolve_job_env(env, env_kwargs, reward_bounds)


def load_policy(
    policy: str | Path,
    env: EnvLike | None = None,
    *,
    env_kwargs: dict[str, Any] | None = None,
    vecnormalize: str | Path | None = None,
    obs_stats: str | Path | None = None,
    fmt: str | None = None,
    unsafe_pickle: bool = False,
) -> Policy:
    """Load a policy file or folder as a batched, differentiable :class:`Policy`.

    With ``env`` the loader uses the environment's spaces (observation size, discrete or
    continuous actions, action bounds) and the policy is checked against them; without it,
    files that do not record the action bounds get them when first used with an environment.
    ``policy.predict(obs, deterministic=True)`` returns actions like SB3's ``predict`` (for
    files that do not record the action bounds, ONNX and TorchScript, once ``env`` is given).
    """
    from certrl.pipeline.job import load_for_env, zoo_env_kwargs
    from certrl.policies import load_policy as _load

    kw = {"vecnormalize": vecnormalize, "obs_stats": obs_stats, "fmt": fmt,
          "unsafe_pickle": unsafe_pickle}
    if env is None:
        return _load(policy, **kw)
    spec = make_env(env, env_kwargs or zoo_env_kwargs(policy) or None)
    return load_for_env(policy, spec, kw)


def evaluate(
    policy: PolicyLike,
    env: EnvLike,
    *,
    episodes: int = 100,
    seed: int = 0,
    deterministic: bool = True,
    workers: int | None = None,
    batch_size: int | None = None,
    engine: str = "auto",
    env_kwargs: dict[str, Any] | None = None,
    reward_bounds: tuple[float, float] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    loader: dict[str, Any] | None = None,
) -> EvaluationResult:
    """Clean return of ``policy`` on ``env`` over ``episodes`` seeded episodes
    (``certrl evaluate``): episode ``i`` of seed ``s`` is the same episode in every command."""
    from certrl.pipeline.job import run_evaluation, write_results
    from certrl.runner import finish_journal

    run = _run_kwargs(seed, workers, batch_size, engine, deterministic, env_kwargs,
                      reward_bounds, resume, progress, loader)

    def save(job: Job, section: dict[str, Any], command: str) -> None:
        write_results(job, command, {"evaluation": section})
        finish_journal(job, "evaluation")

    return _execute(policy, env, episodes, out, run, lambda job: run_evaluation(job, episodes),
                    save, _command("evaluate", episodes=episodes, seed=seed),
                    EvaluationResult.of)


def certify(
    policy: PolicyLike,
    env: EnvLike,
    *,
    sigma: float = 0.2,
    budgets: Sequence[float] = (0.0, 0.05, 0.1, 0.2, 0.4),
    alpha: float = 0.05,
    episodes: int = 1000,
    space: str = "auto",
    band: str = "auto",
    quantiles: Sequence[float] = (0.1, 0.25, 0.5),
    clean_episodes: int | None = None,
    attack: bool = True,
    attack_episodes: int | None = None,
    per_state: bool = False,
    per_state_n: int = 1000,
    fail_under: float | None = None,
    smoothing_unit: str = "auto",
    seed: int = 0,
    deterministic: bool = True,
    workers: int | None = None,
    batch_size: int | None = None,
    engine: str = "auto",
    env_kwargs: dict[str, Any] | None = None,
    reward_bounds: tuple[float, float] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    verbose: bool = False,
    loader: dict[str, Any] | None = None,
) -> CertificationResult:
    """Policy smoothing certificates (Kumar, Levine & Feizi, ICLR 2022; ``certrl certify``).

    Guarantee: with probability ``>= 1 - alpha`` over certrl's sampling, for every budget ``B``
    in ``budgets`` at once and every adversary that perturbs observations adaptively with
    total l2 norm ``<= B`` over the episode (in ``space``: ``normalized`` when the policy has
    normalization statistics, else ``raw``), the expected return of the policy smoothed with
    Gaussian noise ``sigma`` is ``>= result.lower_bounds[B]``. Needs the environment's per-step
    reward bounds (``reward_bounds=(lo, hi)`` when it does not document them). With
    ``fail_under`` episodes are sampled sequentially and ``result.passed`` is the gate's
    decision (anytime-valid, error ``<= alpha``). On frame-stacked observations (the Atari
    environments) the noise is drawn once per frame and ``B`` is summed over frames
    (``smoothing_unit="frame"``, Kumar et al.'s setting; ``"input"``: the whole observation).
    With ``attack`` (default), an adaptive l2 PGD with the same budget runs on the smoothed
    policy at every ``B > 0`` (``attack_episodes``, default ``min(episodes, 50)``; per frame on
    the Atari environments), an empirical upper bound beside each certified lower bound.
    """
    from certrl.pipeline.certify import CertifyOptions, run_certify, save_certify

    opts = CertifyOptions(
        sigma=sigma, budgets=list(budgets), alpha=alpha, episodes=episodes, space=space,
        band=band, quantiles=list(quantiles), clean_episodes=clean_episodes, attack=attack,
        attack_episodes=attack_episodes, per_state=per_state, per_state_n=per_state_n,
        fail_under=fail_under, smoothing_unit=smoothing_unit)
    opts.validate()
    run = _run_kwargs(seed, workers, batch_size, engine, deterministic, env_kwargs,
                      reward_bounds, resume, progress, loader)
    return _execute(
        policy, env, episodes, out, run, lambda job: run_certify(job, opts, log=_log(verbose)),
        save_certify, _command("certify", sigma=sigma, budgets=list(budgets), episodes=episodes,
                               seed=seed),
        lambda o, f: CertificationResult.of(o.section, o.evaluation, f))


def attack(
    policy: PolicyLike,
    env: EnvLike,
    *,
    attacks: str | Sequence[str] = "all",
    options: dict[str, dict[str, Any]] | None = None,
    eps: float | None = None,
    norm: str = "linf",
    space: str = "auto",
    episodes: int = 50,
    episode_budget: float | None = None,
    eps_bar: float | None = None,
    alpha: float | None = None,
    smoothing_sigma: float | None = None,
    allow_large_eps: bool = False,
    cache_dir: str | None = None,
    retrain: bool = False,
    seed: int = 0,
    deterministic: bool = True,
    workers: int | None = None,
    batch_size: int | None = None,
    engine: str = "auto",
    env_kwargs: dict[str, Any] | None = None,
    reward_bounds: tuple[float, float] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    verbose: bool = False,
    loader: dict[str, Any] | None = None,
) -> AttackResult:
    """Empirical attacks on ``policy`` (``certrl attack``): ``attacks`` are registered names
    (``"pgd"``, ``["mad", "critic"]``), ``"all"`` (every observation attack) or
    ``"all-action"``; ``options`` per attack, e.g. ``{"pgd": {"steps": 20}}``.

    Threat model: every step's observation moved by ``||delta||_norm <= eps`` (default: the
    environment's published budget, l_inf on normalized observations), audited on every
    step. No guarantee: each number is an upper bound on the worst-case return.
    """
    from certrl.attacks.base import AttackError
    from certrl.pipeline.attack import (
        AttackOptions,
        load_registry,
        run_attack,
        save_attack,
        select_attacks,
    )

    text = attacks if isinstance(attacks, str) else ",".join(attacks)
    names = select_attacks(text, load_registry())
    opts = AttackOptions(attacks=names, options={n: dict((options or {}).get(n, {}))
                                                 for n in names},
                         eps=eps, norm=norm, space=space, episode_budget=episode_budget,
                         eps_bar=eps_bar, alpha=alpha, episodes=episodes,
                         smoothing_sigma=smoothing_sigma, allow_large_eps=allow_large_eps,
                         cache_dir=cache_dir, retrain=retrain)
    try:
        opts.validate()
        run = _run_kwargs(seed, workers, batch_size, engine, deterministic, env_kwargs,
                          reward_bounds, resume, progress, loader)
        if out is None and cache_dir is None:
            opts.cache_dir = "none"  # nothing left on disk: no learned-attack cache either
        return _execute(
            policy, env, episodes, out, run, lambda job: run_attack(job, opts, log=_log(verbose)),
            save_attack, _command("attack", attacks=names, eps=eps, episodes=episodes, seed=seed),
            lambda o, f: AttackResult.of(o.section, f))
    except AttackError as e:
        raise UsageError(str(e)) from None


def bound(
    policy: PolicyLike,
    env: EnvLike,
    *,
    eps: float | None = None,
    norm: str = "linf",
    space: str = "auto",
    method: str = "crown",
    tol: float | None = None,
    eps_grid: Sequence[float] | None = None,
    episodes: int = 50,
    pgd_states: int = 2000,
    pgd_steps: int = 20,
    pgd_restarts: int = 4,
    allow_large_eps: bool = False,
    seed: int = 0,
    workers: int | None = None,
    batch_size: int | None = None,
    engine: str = "auto",
    env_kwargs: dict[str, Any] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    verbose: bool = False,
    loader: dict[str, Any] | None = None,
) -> BoundResult:
    """Per-step certificates of the deployed (unsmoothed) policy by bound propagation
    (``certrl bound``; IBP or CROWN on the policy's MLP).

    Guarantee (per visited state, sound in float32): for every observation perturbation with
    ``||delta||_norm <= eps`` (in ``space``), the action moves by at most the certified
    deviation (continuous actions; the state counts as certified when that is ``<= tol``) or the
    greedy action is unchanged (discrete). ``certified_fraction`` estimates over the states
    clean episodes visit, not the states an attacker steers to.
    """
    from certrl.pipeline.bound import BoundOptions, run_bound, save_bound

    opts = BoundOptions(eps=eps, norm=norm, space=space, method=method, tol=tol,
                        eps_grid=None if eps_grid is None else list(eps_grid),
                        episodes=episodes, pgd_states=pgd_states, pgd_steps=pgd_steps,
                        pgd_restarts=pgd_restarts, allow_large_eps=allow_large_eps)
    opts.validate()
    run = _run_kwargs(seed, workers, batch_size, engine, True, env_kwargs, None, resume,
                      progress, loader)
    return _execute(
        policy, env, episodes, out, run, lambda job: run_bound(job, opts, log=_log(verbose)),
        save_bound, _command("bound", eps=eps, norm=norm, episodes=episodes, seed=seed),
        lambda o, f: BoundResult.of(o.section, f))


def stress(
    policy: PolicyLike,
    env: EnvLike,
    *,
    params: str | None = None,
    uncertainty_set: str | None = None,
    grid: int | None = None,
    samples: int | None = None,
    mesh: str | None = None,
    drift: float = 0.0,
    episodes: int = 20,
    seed: int = 0,
    workers: int | None = None,
    batch_size: int | None = None,
    engine: str = "auto",
    env_kwargs: dict[str, Any] | None = None,
    reward_bounds: tuple[float, float] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    verbose: bool = False,
    loader: dict[str, Any] | None = None,
) -> StressResult:
    """Returns under changed dynamics (``certrl stress``): ``params`` as on the command line
    (``"torso_mass=0.5:1.5,friction=0.5:2.0"``, scale factors of the nominal model) on a grid
    (``grid`` values per parameter) or ``samples`` random points, or a published
    ``uncertainty_set`` (``"rrls"``). No guarantee: the worst case is over the evaluated
    points only, with a 95% stratified-bootstrap CI."""
    from certrl.dynamics import StressError
    from certrl.pipeline.stress import StressOptions, design_stress, run_stress, save_stress

    n_workers = 1 if workers is None else workers
    opts = StressOptions(params=params, uncertainty_set=uncertainty_set, grid=grid,
                         samples=samples, mesh=mesh, drift=drift, episodes=episodes,
                         workers=n_workers, batch_size=batch_size)
    try:
        opts.validate()
        from certrl.pipeline.job import zoo_env_kwargs

        design = design_stress(make_env(env, env_kwargs or zoo_env_kwargs(policy) or None),
                               opts, seed=seed)
        run = _run_kwargs(seed, n_workers, batch_size, engine, True, env_kwargs, reward_bounds,
                          resume, progress, loader)
        return _execute(
            policy, env, episodes, out, run,
            lambda job: run_stress(job, opts, log=_log(verbose), design=design), save_stress,
            _command("stress", params=params, grid=grid, samples=samples, episodes=episodes,
                     seed=seed),
            lambda o, f: StressResult.of(o.section, f))
    except StressError as e:
        raise UsageError(str(e)) from None


def diagnose(
    policy: PolicyLike,
    env: EnvLike,
    *,
    episodes: int = 10,
    space: str = "auto",
    norm: str = "linf",
    tol: float | None = None,
    eps_max: float | None = None,
    directions: int = 3,
    search: bool = True,
    search_states: int = 5000,
    trace_episodes: int = 3,
    compare: str | None = None,
    seed: int = 0,
    workers: int | None = None,
    batch_size: int | None = None,
    engine: str = "auto",
    env_kwargs: dict[str, Any] | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool | None = None,
    verbose: bool = False,
    loader: dict[str, Any] | None = None,
) -> DiagnosisResult:
    """Where in an episode and along which observation directions ``policy`` is fragile
    (``certrl diagnose``; after Korkmaz, ICML 2024): action-Jacobian sensitivities and
    directions on the states clean episodes visit, their stability over time, the smallest
    perturbation an attack finds, and with ``compare`` (another policy's file) the overlap of
    the two policies' unstable subspaces on the same states. Empirical, no guarantee."""
    from certrl.pipeline.diagnose import DiagnoseOptions, run_diagnose, save_diagnose

    opts = DiagnoseOptions(episodes=episodes, space=space, norm=norm, tol=tol, eps_max=eps_max,
                           directions=directions, search=search, search_states=search_states,
                           trace_episodes=trace_episodes, compare=compare)
    opts.validate()
    run = _run_kwargs(seed, workers, batch_size, engine, True, env_kwargs, None, resume,
                      progress, loader)
    return _execute(
        policy, env, episodes, out, run, lambda job: run_diagnose(job, opts, log=_log(verbose)),
        save_diagnose, _command("diagnose", episodes=episodes, compare=compare, seed=seed),
        lambda o, f: DiagnosisResult.of(o.section, f))
