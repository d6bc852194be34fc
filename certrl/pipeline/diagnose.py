"""Where and along which observation directions a policy is fragile (the ``diagnosis``
section; ``certrl diagnose`` and :func:`certrl.diagnose`).

After Korkmaz, "Understanding and Diagnosing Deep Reinforcement Learning" (ICML 2024): on the
states clean episodes visit (the same episodes as ``certrl evaluate`` with the same seed), the
local sensitivity of the action to the observation, its most sensitive directions, how those
directions move over an episode, and (``compare``) whether another policy -- a robustly trained
one, say -- is sensitive along the same directions or along others.

Per visited state ``s`` (in the attack space: normalized observations when the policy has
normalization statistics, else raw), with ``J(s)`` the Jacobian of the action (continuous:
before clipping; discrete: the logits) with respect to the observation
(:func:`certrl.diagnostics.action_jacobian`):

* ``sensitivity``: the top singular value of ``J`` (largest action change per unit l2 of
  observation change), and ``linf_gain`` = ``max_i ||J_i||_1`` (the same per unit l_inf);
* the top singular directions (right singular vectors), their per-dimension shares (named
  from the environment: ``rooty pos``, ``thigh_joint vel``, ...), and the ``|cos|`` between
  consecutive steps' top direction (1: the fragile direction stays put; near 0: it jumps);
* ``min_perturbation``: the smallest perturbation (``norm``) an attack found that changes the
  greedy action or moves the clipped action by more than ``tol`` (bisection over PGD,
  :func:`certrl.diagnostics.min_perturbation`) -- an *empirical upper bound* on the true minimal
  perturbation at that state, no guarantee (``certrl bound`` gives the certified side);
* the unstable subspace: the top eigenvectors of the average ``J^T J`` over the visited
  states; with ``compare``, the other policy's subspace on the *same states and coordinates*
  (its raw-space Jacobian mapped into this policy's attack space) and their overlap
  ``||U1^T U2||_F^2 / k`` with the principal angles.

Nothing here is a certificate: every number describes the visited states only.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from certrl.errors import UsageError

if TYPE_CHECKING:
    from certrl.runner import Job

SECTION = "diagnosis"
#: states of at most this many steps enter the per-episode similarity heat map
HEATMAP_STEPS = 120


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


@dataclass
class DiagnoseOptions:
    """The diagnosis settings (``certrl diagnose --help`` explains each)."""

    episodes: int = 10
    space: str = "auto"
    norm: str = "linf"
    tol: float | None = None
    eps_max: float | None = None
    directions: int = 3
    search: bool = True
    search_states: int = 5000
    trace_episodes: int = 3
    compare: str | None = None

    def validate(self) -> None:
        if self.norm not in ("linf", "l2"):
            raise UsageError(f"--norm must be linf or l2, got {self.norm!r}")
        if self.space not in ("auto", "normalized", "raw"):
            raise UsageError(f"--space must be auto, normalized or raw, got {self.space!r}")
        if self.directions < 1:
            raise UsageError(f"--directions must be >= 1, got {self.directions}")
        if self.search_states < 1:
            raise UsageError(f"--search-states must be >= 1, got {self.search_states}")
        if self.trace_episodes < 0:
            raise UsageError(f"--trace-episodes must be >= 0, got {self.trace_episodes}")
        for name, v in (("--tol", self.tol), ("--eps-max", self.eps_max)):
            if v is not None and not (math.isfinite(v) and v > 0):
                raise UsageError(f"{name} must be a finite number > 0, got {v}")


@dataclass
class DiagnoseOutcome:
    """What :func:`run_diagnose` computed: the ``diagnosis`` section."""

    section: dict[str, Any]


def _quantiles(x: np.ndarray) -> dict[str, float | None]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"0.1": None, "0.5": None, "0.9": None}
    return {f"{q:g}": float(np.quantile(x, q)) for q in (0.1, 0.5, 0.9)}


def _named_shares(shares: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
    order = np.argsort(-shares, kind="stable")
    return [{"index": int(i), "name": names[i], "share": float(shares[i])} for i in order]


def _basis_json(eig: torch.Tensor, basis: torch.Tensor, names: list[str]) -> list[dict[str, Any]]:
    out = []
    for j in range(basis.shape[1]):
        v = basis[:, j].detach().double().numpy()
        top = np.argsort(-np.abs(v), kind="stable")[:3]
        out.append({"eigenvalue": float(eig[j]), "vector": [float(x) for x in v],
                    "top": [{"name": names[i], "weight": float(v[i])} for i in top]})
    return out


def default_eps_max(spec: Any, space: str) -> float:
    """The search radius: 4x the environment's published budget when the budget's space is
    the search space (normalized observations), else 1.0."""
    if spec.default_eps and space == "normalized":
        return float(4 * spec.default_eps)
    return 1.0


def _jacobian_in(policy: Any, raw: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``policy``'s action Jacobian at raw states, with respect to coordinates ``c`` where
    ``raw = offset + c / scale`` (``scale``: d(coordinates)/d(raw) of the primary policy)."""
    from certrl.diagnostics import action_jacobian

    j_raw = action_jacobian(policy, raw, space="raw")  # [N, k, d] d(action)/d(raw)
    return j_raw / scale.to(j_raw.dtype)  # chain rule: d raw / d c = 1 / scale


def run_diagnose(job: Job, opts: DiagnoseOptions,
                 log: Callable[[str], None] = _stderr,
                 loader_kwargs: dict[str, Any] | None = None) -> DiagnoseOutcome:
    """Run ``opts.episodes`` clean episodes of ``job`` recording the visited states, and
    diagnose the policy's sensitivity at every one of them (see the module docstring).

    No guarantee: sensitivities, directions and the minimal perturbations found are measured
    on the visited states only; each minimal perturbation is an upper bound on the true
    minimum (an attack found it). Deterministic given the seed (the states are those of the
    seeded episodes; the search is seeded), whatever the worker count or batch size.
    """
    from certrl.diagnostics import (
        action_jacobian,
        dimension_shares,
        min_perturbation,
        similarity_matrix,
        subspace_overlap,
        temporal_similarity,
        top_directions,
        unstable_subspace,
    )
    from certrl.envs import observation_names
    from certrl.pipeline.bound import StateRecorder, default_tol
    from certrl.runner import run_section
    from certrl.smoothing import resolve_space

    opts.validate()
    policy, spec = job.policy, job.spec
    if not job.deterministic:
        raise UsageError("certrl diagnose studies the deterministic action: drop --stochastic")
    if getattr(policy, "obs_shape", None) is not None:
        raise UsageError(
            "certrl diagnose does not support pixel (CNN) policies yet: its per-dimension "
            f"Jacobians, shares and minimal-perturbation search over {policy.obs_dim:,} pixels "
            "take hours "
            "on a CPU; use certrl attack and certrl certify for them")
    space = resolve_space(policy, opts.space)
    tol = None
    if not policy.discrete:
        tol = default_tol(policy) if opts.tol is None else float(opts.tol)
    eps_max = opts.eps_max or default_eps_max(spec, space)
    other = None
    if opts.compare:
        from certrl.pipeline.job import load_for_env
        from certrl.policies.base import PolicyError

        try:
            other = load_for_env(opts.compare, spec, loader_kwargs)
        except PolicyError as e:
            raise UsageError(f"--compare {opts.compare}: {e}") from None
        if other.obs_dim != policy.obs_dim:
            raise UsageError(f"--compare {opts.compare}: it takes {other.obs_dim} observations, "
                             f"{job.label} takes {policy.obs_dim}")
    env = spec.make()
    try:
        names = observation_names(env)
    finally:
        env.close()
    if len(names) != policy.obs_dim:
        names = [f"obs[{i}]" for i in range(policy.obs_dim)]

    log(f"certrl: diagnosing {job.label} on {spec.gym_id}: {opts.episodes} clean episodes, "
        f"{space} observations, minimal {'l_inf' if opts.norm == 'linf' else 'l2'} "
        f"perturbations up to {eps_max:g}{'' if opts.search else ' (skipped)'}"
        f"{f', compared with {opts.compare}' if opts.compare else ''}, "
        f"{job.workers} worker(s)")
    recorder = StateRecorder("raw")  # raw: the compared policy may normalize differently
    res, stats = run_section(job, SECTION, opts.episodes, obs_hooks=[recorder],
                             desc="clean (recording states)")
    res = sorted(res, key=lambda r: r.index)
    d = policy.obs_dim
    raw_np = np.concatenate([np.asarray(r.extras.get("states") or np.zeros((0, d)),
                                        dtype=np.float32).reshape(-1, d) for r in res])
    episode = np.concatenate([np.full(r.length, r.index) for r in res])
    tstep = np.concatenate([np.arange(r.length) for r in res])
    if raw_np.shape[0] != episode.size:
        raise UsageError("the recorded states do not match the episode lengths (a results "
                         "journal from an older certrl?): rerun without --resume")
    raw = torch.as_tensor(raw_np)
    scale = (policy.normalization_scale().to(torch.float32) if space == "normalized"
             else torch.ones(d))
    with torch.no_grad():
        x = policy.normalize(raw) if space == "normalized" else raw

    # 1. Jacobians, top directions, shares
    jac = action_jacobian(policy, x, space=space)  # [N, k, d] in the attack space
    sing, vecs = top_directions(jac, k=opts.directions)
    sens = sing[:, 0].double().numpy()
    linf_gain = jac.abs().sum(dim=2).amax(dim=1).double().numpy()
    shares = dimension_shares(sing, vecs).double().numpy()
    eig, basis = unstable_subspace(jac, k_dims=opts.directions)
    v1 = vecs[:, 0, :]

    # 2. per-episode stability of the top direction
    cos_prev = np.full(episode.size, np.nan)
    per_episode = []
    for r in res:
        sel = np.flatnonzero(episode == r.index)
        tsim = temporal_similarity(v1[sel]).double().numpy() if sel.size > 1 else np.zeros(0)
        cos_prev[sel[1:]] = tsim
        per_episode.append({
            "episode": int(r.index), "steps": int(r.length), "return": float(r.ret),
            "terminated": bool(r.terminated),
            "event": {"step": int(r.length - 1), "kind": "terminated"} if r.terminated else None,
            "sensitivity_median": float(np.median(sens[sel])) if sel.size else None,
            "top_direction_cos_mean": float(tsim.mean()) if tsim.size else None,
        })
    heat = None
    if res:
        sel = np.flatnonzero(episode == res[0].index)
        pick = sel[np.unique(np.linspace(0, sel.size - 1, min(HEATMAP_STEPS, sel.size))
                             .round().astype(int))] if sel.size else sel
        if pick.size:
            heat = {"episode": int(res[0].index), "steps": [int(t) for t in tstep[pick]],
                    "abs_cos": np.round(similarity_matrix(v1[pick]).double().numpy(), 4)
                    .tolist()}

    # 3. minimal perturbations found by the attack (empirical upper bounds)
    min_eps = np.full(episode.size, np.nan)
    search = None
    if opts.search and episode.size:
        idx = np.unique(np.linspace(0, episode.size - 1, min(opts.search_states, episode.size))
                        .round().astype(int))
        found = min_perturbation(policy, x[idx], norm=opts.norm, tol=tol, eps_max=eps_max,
                                 seed=job.seed, space=space).double().numpy()
        min_eps[idx] = found
        ok = np.isfinite(found)
        budget = spec.default_eps if space == "normalized" and opts.norm == "linf" else None
        search = {
            "states": int(idx.size), "eps_max": eps_max, "norm": opts.norm, "tol": tol,
            "found_fraction": float(ok.mean()),
            "quantiles": _quantiles(found),
            "published_eps": budget,
            "fraction_within_published_eps": (None if budget is None
                                              else float(np.mean(found <= budget))),
            "what": "smallest perturbation an attack found that changes the greedy action "
                    "(discrete) or moves the clipped action by more than tol in l_inf "
                    "(continuous): an upper bound on the true minimum at each state, no "
                    "guarantee",
        }

    # 4. the other policy on the same states and coordinates
    comparison = None
    if other is not None:
        jac_b = _jacobian_in(other, raw, scale)
        sing_b, vecs_b = top_directions(jac_b, k=opts.directions)
        eig_b, basis_b = unstable_subspace(jac_b, k_dims=opts.directions)
        ov = subspace_overlap(basis, basis_b)
        per_state = (v1 * vecs_b[:, 0, :]).sum(dim=1).abs().double().numpy()
        tsim_b = []
        for r in res:
            sel = np.flatnonzero(episode == r.index)
            if sel.size > 1:
                tsim_b.append(temporal_similarity(vecs_b[sel, 0, :]).double().numpy())
        tb = np.concatenate(tsim_b) if tsim_b else np.zeros(0)
        comparison = {
            "policy": opts.compare,
            "sha256": other.info.sha256,
            "coordinates": f"{job.label}'s {space} observation space, on its visited states",
            "subspace_overlap": float(ov["overlap"]),
            "principal_angles_deg": [float(a) for a in ov["principal_angles_deg"]],
            "top_direction_abs_cos": {"mean": float(per_state.mean()), **_quantiles(per_state)},
            "sensitivity": {"mean": float(sing_b[:, 0].double().mean()),
                            **_quantiles(sing_b[:, 0].double().numpy())},
            "top_direction_cos_between_steps": float(tb.mean()) if tb.size else None,
            "dimension_shares": _named_shares(dimension_shares(sing_b, vecs_b).double()
                                              .numpy(), names),
            "unstable_subspace": _basis_json(eig_b, basis_b, names),
        }

    # 5. traces of the first episodes
    traces = []
    dom = np.abs(v1.double().numpy()).argmax(axis=1)
    for r in res[: opts.trace_episodes]:
        sel = np.flatnonzero(episode == r.index)
        traces.append({
            "episode": int(r.index), "terminated": bool(r.terminated),
            "t": [int(t) for t in tstep[sel]],
            "sensitivity": [float(v) for v in sens[sel]],
            "linf_gain": [float(v) for v in linf_gain[sel]],
            "top_direction_cos_prev": [None if not np.isfinite(v) else float(v)
                                       for v in cos_prev[sel]],
            "dominant_dimension": [int(i) for i in dom[sel]],
            "min_perturbation": [None if not np.isfinite(v) else float(v)
                                 for v in min_eps[sel]],
        })
    allcos = cos_prev[np.isfinite(cos_prev)]
    section = {
        "space": space, "norm": opts.norm, "episodes": len(res), "seed": job.seed,
        "deterministic": job.deterministic, "states": int(episode.size),
        "observation_names": names, "discrete": bool(policy.discrete), "tol": tol,
        "returns": [r.ret for r in res], "lengths": [r.length for r in res],
        "terminated": [r.terminated for r in res],
        "sensitivity": {"what": "top singular value of d(action)/d(observation) (logits for "
                                "discrete actions; the action before clipping otherwise)",
                        "mean": float(sens.mean()) if sens.size else None, **_quantiles(sens)},
        "linf_gain": {"mean": float(linf_gain.mean()) if linf_gain.size else None,
                      **_quantiles(linf_gain)},
        "dimension_shares": _named_shares(shares, names),
        "top_direction_cos_between_steps": {
            "mean": float(allcos.mean()) if allcos.size else None, **_quantiles(allcos)},
        "unstable_subspace": _basis_json(eig, basis, names),
        "min_perturbation": search,
        "per_episode": per_episode,
        "similarity_heatmap": heat,
        "traces": traces,
        "comparison": comparison,
        "statement": _statement(job.label, space, shares, names, search, allcos),
        "rollout": {"steps": stats.steps, "seconds": round(stats.seconds, 3)},
    }
    return DiagnoseOutcome(section=section)


def _statement(label: str, space: str, shares: np.ndarray, names: list[str],
               search: dict[str, Any] | None, cos: np.ndarray) -> str:
    top = np.argsort(-shares, kind="stable")[:3]
    dims = ", ".join(f"{names[i]} ({shares[i]:.0%})" for i in top)
    out = (f"On the states its clean episodes visit, {label}'s action is most sensitive along "
           f"{dims} of the {space} observation")
    if cos.size:
        out += f"; the most sensitive direction keeps |cos| {np.mean(cos):.2f} from step to step"
    if search and search["quantiles"]["0.5"] is not None:
        nm = "l_inf" if search["norm"] == "linf" else "l2"
        out += (f"; an attack changed the action with a median {nm} perturbation of "
                f"{search['quantiles']['0.5']:.3g} ({search['found_fraction']:.0%} of "
                f"{search['states']} states within {search['eps_max']:g})")
    return out + ". Empirical, no guarantee."


def save_diagnose(job: Job, outcome: DiagnoseOutcome, command: str) -> dict[str, Any]:
    """Write the ``diagnosis`` section and remove the finished journal."""
    from certrl.pipeline.job import write_results
    from certrl.runner import finish_journal

    data = write_results(job, command, {SECTION: outcome.section})
    finish_journal(job, SECTION)
    return data
