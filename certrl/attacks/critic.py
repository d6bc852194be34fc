"""Critic attacks: Robust Sarsa (RS), RS+MAD and the plain (non-robust) Sarsa critic attack.

Paper: Zhang et al. 2020, "Robust Deep Reinforcement Learning against Adversarial Perturbations
on State Observations" (NeurIPS; SA-PPO), appendix "Robust Sarsa attack".

Threat model: per-step ``linf`` / ``l2`` ball of radius ``eps`` in the :class:`ThreatModel`'s
space (``normalized`` by default), with the optional episode l2 budget and temporal coupling
applied by :meth:`ThreatModel.project` on every step.

1. **Learn the victim's action value.** Roll out the *fixed* victim (seeded, batched plain
   Gymnasium environments; stochastic actions by default so the data cover more than the
   deterministic action manifold) and fit ``Q^pi(s, a)`` with on-policy TD(0) (Sarsa) on
   ``(s, a, r, s', a' ~ pi(s'))`` plus the robustness penalty of Robust Sarsa::

       L = E[(Q(s, a) - r - gamma (1 - done) Q(s', a'))^2]
           + lambda * E[max_{||a_hat - a||_inf <= sarsa_eps} (Q(s, a_hat) - Q(s, a))^2]

   The inner maximization runs ``robust_pgd_steps`` sign-gradient steps from a random start in
   the ball (exact for a ``Q`` linear in ``a``: the maximum is ``(sarsa_eps ||dQ/da||_1)^2``).
   ``lambda = 0`` is plain Sarsa: the ``critic`` attack.
2. **Attack.** At each step take ``attack_steps`` projected sign-gradient steps (size
   ``step_frac * eps``) on the observation that *minimize* ``Q(s, pi(s_hat))`` with ``s`` the
   true state (``rs+mad`` adds ``mad_weight * KL(pi(.|s) || pi(.|s_hat))`` to maximize, MAD
   of the same paper), keeping the best iterate.

Conventions. ``Q`` takes the victim's *normalized* true state (``policy.normalize(raw)``) —
whatever the threat model's space — and the action in ``[-1, 1]`` coordinates per dimension
(``2 (a - low) / (high - low) - 1``; one-hot for discrete victims, whose ``pi(s_hat)`` in the
attack is the softmax relaxation). ``Q`` is learned in units of ``r_scale / (1 - gamma)``
(``r_scale`` = mean ``|r|`` of the data) so that its values are O(1) on every environment; the
attack only needs its ordering. ``sarsa_eps`` is in those action coordinates.

Robust Sarsa's strength depends on ``(sarsa_eps, lambda)``; as in the paper's scan
(``scan_attacks.sh``) ``rs`` trains one ``Q`` per grid point (default ``{0.02, 0.1} x {0.1,
1.0}``), attacks ``select_episodes`` selection episodes (master seed ``10000 + seed``, so never
the evaluation episodes) with each and keeps the one giving the lowest mean return; the chosen
setting and the whole scan are in the hook's ``config()``.

Smoothed victims (``smoothing_sigma``): the attack objective is averaged over ``eot_samples``
(8) draws of the smoothing noise from the episode's attack stream (EOT); ``Q`` itself is fitted
on the unsmoothed victim's transitions and the grid point is selected without noise (an
approximation of ``Q`` of the smoothed policy, recorded as such in the configuration).
Trained ``Q`` networks and the selection are cached (see :mod:`certrl.attacks.learned`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from certrl.attacks.base import AttackError, ThreatModel, register_attack
from certrl.attacks.learned import (
    EnvBatch,
    LearnedAttackHook,
    action_repr,
    as_bool,
    as_float,
    as_floats,
    as_int,
    cache_key,
    can_sample,
    check_options,
    env_action_repr,
    load_cached,
    policy_fingerprint,
    progress_bar,
    projected_sign_ascent,
    resolve_cache_dir,
    save_cached,
    single_thread,
    victim_act,
    weights_digest,
)
from certrl.envs import EnvSpec
from certrl.evaluator import EvalConfig, StepContext, run_episodes
from certrl.policies.base import Policy, build_mlp

SELECTION_SEED_OFFSET = 10_000


# ====================================================================== settings and data
@dataclass
class SarsaSettings:
    """Data collection and TD-fit settings (the paper: 30 iterations x 2048 samples; scaled
    down so that the default grid finishes in a few minutes on two CPU cores)."""

    samples: int = 16384
    n_envs: int = 8
    train_steps: int = 3000
    batch: int = 256
    lr: float = 1e-3
    gamma: float = 0.99
    hidden: int = 64
    robust_pgd_steps: int = 3
    collect: str = "stochastic"  # or "deterministic"
    seed: int = 0


@dataclass
class SarsaData:
    """On-policy transitions: normalized states, action coordinates, rewards, next states, the
    victim's next actions and terminal flags (``done`` = terminated; truncated transitions
    bootstrap)."""

    s: Tensor
    a: Tensor
    r: Tensor
    s2: Tensor
    a2: Tensor
    done: Tensor

    def __len__(self) -> int:
        return int(self.r.shape[0])


def collect_transitions(policy: Policy, spec: EnvSpec, settings: SarsaSettings) -> SarsaData:
    """Roll out the fixed victim on ``settings.n_envs`` seeded environments until
    ``settings.samples`` transitions are collected. ``a'`` is the action the victim actually
    took next (exact on-policy Sarsa); for transitions that ended an episode it is drawn from
    the victim at the final observation."""
    s = settings
    det = s.collect == "deterministic" or not can_sample(policy)
    with single_thread(s.seed):
        gen = torch.Generator().manual_seed(s.seed)
        envs = EnvBatch(spec, s.n_envs, s.seed)
        T = max(1, math.ceil(s.samples / s.n_envs))
        S, A, R, S2, D, E = [], [], [], [], [], []
        try:
            for _ in range(T):
                x = torch.as_tensor(envs.obs, dtype=torch.float32)
                with torch.no_grad():
                    nobs = policy.normalize(x)
                a = victim_act(policy, nobs, det, gen)
                nxt, r, term, trunc = envs.step(a.numpy(), policy.discrete)
                with torch.no_grad():
                    n2 = policy.normalize(torch.as_tensor(nxt, dtype=torch.float32))
                S.append(nobs)
                A.append(env_action_repr(policy, a))
                R.append(torch.as_tensor(r, dtype=torch.float32))
                S2.append(n2)
                D.append(torch.as_tensor(term))
                E.append(torch.as_tensor(term | trunc))
        finally:
            envs.close()
        st, at, ended = torch.stack(S), torch.stack(A), torch.stack(E)  # [T, N, ...]
        a2 = torch.zeros_like(at)
        a2[:-1] = at[1:]
        fresh = ended.clone()
        fresh[-1] = True  # the rollout's last transition has no recorded next action
        s2 = torch.stack(S2)
        idx = fresh.nonzero(as_tuple=True)
        if idx[0].numel():
            a2[idx] = env_action_repr(policy, victim_act(policy, s2[idx], det, gen))
    return SarsaData(
        s=st.flatten(0, 1),
        a=at.flatten(0, 1),
        r=torch.stack(R).flatten(0, 1),
        s2=s2.flatten(0, 1),
        a2=a2.flatten(0, 1),
        done=torch.stack(D).flatten(0, 1).to(torch.float32),
    )


# ====================================================================== Q network and fit
class QNet(nn.Module):
    """``Q(s, a)``: MLP on ``[normalized state, action coordinates]``, 2 tanh hidden layers."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = build_mlp([obs_dim + act_dim, hidden, hidden, 1], "tanh")

    def forward(self, s: Tensor, a: Tensor) -> Tensor:
        return self.net(torch.cat([s, a], dim=-1)).squeeze(-1)


def robust_inner_max(
    q: nn.Module,
    s: Tensor,
    a: Tensor,
    eps: float,
    steps: int,
    gen: torch.Generator | None = None,
) -> Tensor:
    """``argmax_{||a_hat - a||_inf <= eps} (Q(s, a_hat) - Q(s, a))^2`` by ``steps`` sign-gradient
    steps of size ``2 eps / steps`` from a uniform random start in the ball (the gradient of the
    squared difference vanishes at ``a_hat = a``). For ``Q`` linear in ``a`` it returns a corner
    with ``|Q(s, a_hat) - Q(s, a)| = eps ||dQ/da||_1``, the exact maximum. Returns ``a_hat``
    (detached)."""
    s, a = s.detach(), a.detach()
    with torch.no_grad():
        q0 = q(s, a)
    delta = (torch.rand(a.shape, generator=gen) * 2 - 1) * eps
    size = 2.0 * eps / max(1, steps)
    for _ in range(steps):
        d = delta.clone().requires_grad_(True)
        with torch.enable_grad():
            obj = ((q(s, a + d) - q0) ** 2).sum()
            (g,) = torch.autograd.grad(obj, d)
        delta = torch.clamp(delta + size * g.sign(), -eps, eps).detach()
    return a + delta


def robust_penalty(
    q: nn.Module, s: Tensor, a: Tensor, eps: float, steps: int, gen: torch.Generator | None
) -> Tensor:
    """Mean over the batch of ``max_{a_hat in B_eps(a)} (Q(s, a_hat) - Q(s, a))^2`` (gradient
    with respect to ``Q``'s parameters through both terms, the maximizer held fixed)."""
    a_hat = robust_inner_max(q, s, a, eps, steps, gen)
    return ((q(s, a_hat) - q(s, a)) ** 2).mean()


def fit_sarsa(
    data: SarsaData,
    settings: SarsaSettings,
    sarsa_eps: float = 0.0,
    sarsa_reg: float = 0.0,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Fit ``Q`` to ``data`` by semi-gradient TD(0) (targets from the same network, detached, as
    in the reference) plus ``sarsa_reg`` times the robustness penalty; Adam with a linearly
    decaying learning rate. Returns the state dict (with ``r_scale`` and ``gamma`` buffers: the
    learned value in reward units is ``Q * r_scale / (1 - gamma)``) and fit statistics."""
    s = settings
    n = len(data)
    if n == 0:
        raise AttackError("no transitions to fit the critic on")
    r_scale = max(float(data.r.abs().mean()), 1e-8)
    c = (1.0 - s.gamma) / r_scale
    with single_thread(s.seed + 1):
        gen = torch.Generator().manual_seed(s.seed + 1)
        q = QNet(data.s.shape[1], data.a.shape[1], s.hidden)
        opt = torch.optim.Adam(q.parameters(), lr=s.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: max(0.1, 1.0 - i / max(1, s.train_steps))
        )
        bs = min(s.batch, n)
        td_hist: list[float] = []
        reg_hist: list[float] = []
        t0 = time.perf_counter()
        for _ in range(s.train_steps):
            idx = torch.randint(0, n, (bs,), generator=gen)
            st, at = data.s[idx], data.a[idx]
            with torch.no_grad():
                target = c * data.r[idx] + s.gamma * (1 - data.done[idx]) * q(
                    data.s2[idx], data.a2[idx]
                )
            td = ((q(st, at) - target) ** 2).mean()
            loss = td
            if sarsa_reg > 0 and sarsa_eps > 0:
                reg = robust_penalty(q, st, at, sarsa_eps, s.robust_pgd_steps, gen)
                loss = td + sarsa_reg * reg
                reg_hist.append(float(reg.detach()))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            td_hist.append(float(td.detach()))
        with torch.no_grad():
            q_mean = float(q(data.s, data.a).mean()) / c
    state = {k: v.detach().clone() for k, v in q.state_dict().items()}
    state["r_scale"] = torch.tensor(r_scale)
    state["gamma"] = torch.tensor(s.gamma)
    tail = max(1, len(td_hist) // 10)
    stats = {
        "sarsa_eps": sarsa_eps,
        "sarsa_reg": sarsa_reg,
        "td_loss": float(np.mean(td_hist[-tail:])),
        "reg_loss": float(np.mean(reg_hist[-tail:])) if reg_hist else 0.0,
        "mean_q": q_mean,
        "fit_seconds": round(time.perf_counter() - t0, 2),
    }
    return state, stats


def load_qnet(state: dict[str, Tensor]) -> QNet:
    """A frozen :class:`QNet` from a :func:`fit_sarsa` state dict (sizes read from it)."""
    w = state["net.0.weight"]
    q = QNet(int(w.shape[1]), 0, int(w.shape[0]))
    q.load_state_dict({k: v for k, v in state.items() if k.startswith("net.")})
    q.eval()
    for p in q.parameters():
        p.requires_grad_(False)
    return q


# ====================================================================== MAD term
def _mad_kl(policy: Policy, nobs_clean: Tensor, nobs_adv: Tensor) -> Tensor:
    """Per-row ``KL(pi(.|s) || pi(.|s_hat))`` (MAD, Zhang et al. 2020): Gaussian heads with a
    noise model use the closed form, deterministic heads ``0.5 ||a - a_hat||^2`` in action
    coordinates, discrete heads the categorical KL of the softmax."""
    m0, ls0 = policy.distribution_params(nobs_clean)
    m0, ls0 = m0.detach(), ls0.detach() if ls0 is not None else None
    if policy.discrete:
        p0 = torch.log_softmax(m0, -1)
        p1 = torch.log_softmax(policy.distribution_params(nobs_adv)[0], -1)
        return (p0.exp() * (p0 - p1)).sum(-1)
    m1, ls1 = policy.distribution_params(nobs_adv)
    if policy.head == "gaussian" and ls0 is not None and ls1 is not None:
        v0, v1 = torch.exp(2 * ls0), torch.exp(2 * ls1)
        return (ls1 - ls0 + (v0 + (m0 - m1) ** 2) / (2 * v1) - 0.5).sum(-1)
    a0 = action_repr(policy, nobs_clean).detach()
    return 0.5 * ((action_repr(policy, nobs_adv) - a0) ** 2).sum(-1)


# ====================================================================== the attack hook
class QAttackHook(LearnedAttackHook):
    """Minimize ``Q(s, pi(s_hat))`` (minus ``mad_weight`` times the MAD KL) by projected
    sign-gradient descent on the observation."""

    name = "rs"

    def __init__(
        self,
        threat: ThreatModel,
        q_state: dict[str, Tensor] | None,
        obs_dim: int,
        hidden: int,
        info: dict[str, Any],
        steps: int = 10,
        step_frac: float = 0.1,
        mad_weight: float = 0.0,
        name: str = "rs",
    ) -> None:
        super().__init__(threat, info)
        self.q_state = q_state
        self.obs_dim = obs_dim
        self.hidden = hidden
        self.steps = steps
        self.step_frac = step_frac
        self.mad_weight = mad_weight
        self.name = name
        self.q: QNet | None = None

    def _build(self) -> None:
        if self.q_state is not None:
            self.q = load_qnet(self.q_state)

    def objective(self, x: Tensor, nobs_true: Tensor, noise: Tensor | None = None) -> Any:
        """The quantity the attack *maximizes* over ``x_hat`` (per row): ``-Q(s, pi(x_hat))``
        (+ the MAD KL). ``noise [B, K, d]``: smoothing-noise draws; the objective is then the
        mean over ``k`` of its value at ``x_hat + noise_k`` (EOT)."""
        assert self._policy is not None and self.q is not None
        policy, q = self._policy, self.q
        k = 1 if noise is None else int(noise.shape[1])
        s_true = nobs_true if noise is None else nobs_true.repeat_interleave(k, 0)

        def f(xh: Tensor) -> Tensor:
            if noise is not None:
                xh = (xh[:, None, :] + noise).reshape(-1, xh.shape[1])
            nh = self.to_policy_space(xh)
            val = -q(s_true, action_repr(policy, nh))
            if self.mad_weight:
                val = val + self.mad_weight * _mad_kl(policy, s_true, nh)
            return val.reshape(-1, k).mean(1)

        return f

    def perturbation(self, x: Tensor, ctx: StepContext) -> Tensor:
        if self.q is None:
            self._build()
        with torch.no_grad():
            nobs_true = self.to_policy_space(x)
        return projected_sign_ascent(
            self.objective(x, nobs_true, self.eot_noise(ctx, x.shape[1])),
            x,
            self.threat,
            self.threat.project_step,
            self.steps,
            self.step_frac * self.threat.eps,
        )

    def q_value(self, nobs_true: Tensor, nobs_hat: Tensor) -> Tensor:
        """``Q(s, pi(s_hat))`` (for checks and reports)."""
        if self.q is None:
            self._build()
        assert self._policy is not None and self.q is not None
        with torch.no_grad():
            return self.q(nobs_true, action_repr(self._policy, nobs_hat))


# ====================================================================== factories
_SARSA_FIELDS = set(SarsaSettings.__dataclass_fields__)
_ATTACK_OPTS = {
    "sarsa_eps",
    "sarsa_reg",
    "attack_steps",
    "step_frac",
    "select_episodes",
    "deterministic",
    "cache_dir",
    "progress",
    "retrain",
    "smoothing_sigma",
    "eot_samples",
}


def _sarsa_settings(options: dict[str, Any]) -> SarsaSettings:
    kw: dict[str, Any] = {}
    for k in _SARSA_FIELDS:
        if k not in options:
            continue
        if k == "collect":
            v = str(options[k])
            if v not in ("stochastic", "deterministic"):
                raise AttackError("collect must be stochastic or deterministic")
            kw[k] = v
        elif k in ("lr", "gamma"):
            kw[k] = as_float(k, options[k])
        else:
            kw[k] = as_int(k, options[k])
    s = SarsaSettings(**kw)
    if s.samples < 2 or s.n_envs < 1 or s.train_steps < 1 or s.batch < 1:
        raise AttackError("samples, n_envs, train_steps and batch must be positive")
    if not 0 <= s.gamma < 1:
        raise AttackError("gamma must be in [0, 1)")
    return s


def _eval_hook(
    hook: QAttackHook, policy: Policy, spec: EnvSpec, episodes: int, seed: int, det: bool
) -> float:
    cfg = EvalConfig(seed=SELECTION_SEED_OFFSET + seed, batch_size=episodes, deterministic=det)
    with single_thread():
        res = run_episodes(policy, spec, list(range(episodes)), cfg, obs_hooks=[hook])
    return float(np.mean([r.ret for r in res]))


def build_q_attack(
    name: str, threat: ThreatModel, policy: Policy, spec: EnvSpec, options: dict[str, Any]
) -> QAttackHook:
    """Train (or load) the critics of the grid, pick the strongest, return its hook.

    Options: the :class:`SarsaSettings` fields (``samples``, ``n_envs``, ``train_steps``,
    ``batch``, ``lr``, ``gamma``, ``hidden``, ``robust_pgd_steps``, ``collect``, ``seed``),
    ``sarsa_eps`` / ``sarsa_reg`` (grids, lists or ``"0.02,0.1"``; not for ``critic``),
    ``attack_steps`` (10), ``step_frac`` (0.1), ``mad_weight`` (``rs+mad``, 1.0),
    ``select_episodes`` (4), ``deterministic`` (victim in selection, True), ``cache_dir``,
    ``retrain``, ``progress``."""
    allowed = _SARSA_FIELDS | _ATTACK_OPTS | ({"mad_weight"} if name == "rs+mad" else set())
    check_options(name, options, allowed)
    ss = _sarsa_settings(options)
    if name == "critic":
        grid = [(0.0, 0.0)]
    else:
        eps_grid = as_floats("sarsa_eps", options.get("sarsa_eps", [0.02, 0.1]))
        reg_grid = as_floats("sarsa_reg", options.get("sarsa_reg", [0.1, 1.0]))
        if min(eps_grid) < 0 or min(reg_grid) < 0:
            raise AttackError("sarsa_eps and sarsa_reg must be >= 0")
        grid = [(e, g) for e in eps_grid for g in reg_grid]
    steps = as_int("attack_steps", options.get("attack_steps", 10))
    step_frac = as_float("step_frac", options.get("step_frac", 0.1))
    mad_weight = as_float("mad_weight", options.get("mad_weight", 1.0)) if name == "rs+mad" else 0.0
    n_sel = as_int("select_episodes", options.get("select_episodes", 4))
    det = as_bool("deterministic", options.get("deterministic", True))
    retrain = as_bool("retrain", options.get("retrain", False))
    progress = options.get("progress")
    if steps < 1 or n_sel < 1:
        raise AttackError("attack_steps and select_episodes must be >= 1")
    cache_dir: Path | None = resolve_cache_dir(options.get("cache_dir"))
    attack_settings = {
        "sarsa": asdict(ss),
        "grid": grid,
        "attack_steps": steps,
        "step_frac": step_frac,
        "mad_weight": mad_weight,
        "select_episodes": n_sel,
        "deterministic": det,
    }
    base_info: dict[str, Any] = {
        "objective": "min Q(s, pi(s_hat))" + (f" - {mad_weight:g} KL" if mad_weight else ""),
        "q_space": "normalized state, action in [-1, 1] coordinates",
        "attack_steps": steps,
        "step_frac": step_frac,
        "sarsa": asdict(ss),
    }
    if mad_weight:
        base_info["mad_weight"] = mad_weight

    sigma = options.get("smoothing_sigma")
    smoothing_sigma = None if sigma in (None, "", "none") else as_float("smoothing_sigma", sigma)
    eot_samples = as_int("eot_samples", options.get("eot_samples", 8))

    def make(q_state: dict[str, Tensor] | None, info: dict[str, Any]) -> QAttackHook:
        h = QAttackHook(
            threat,
            q_state,
            policy.obs_dim,
            ss.hidden,
            {**base_info, **info, "weights_sha256": weights_digest(q_state)},
            steps=steps,
            step_frac=step_frac,
            mad_weight=mad_weight,
            name=name,
        )
        h.set_smoothing(smoothing_sigma, eot_samples)
        if smoothing_sigma is not None:
            h.info["q_fit"] = "unsmoothed victim transitions (EOT only in the attack objective)"
        return h

    if threat.eps == 0:
        return make(None, {"trained": False})
    sel_key = cache_key(name, policy, spec, threat, attack_settings)
    if not retrain:
        hit = load_cached(cache_dir, name, sel_key)
        if hit is not None:
            tensors, meta = hit
            return make(tensors, {**meta["info"], "cached": True})

    # one Q per grid point (cached individually, shared by rs and rs+mad and across threats)
    data: SarsaData | None = None
    fits: list[tuple[tuple[float, float], dict[str, Tensor], dict[str, Any], bool]] = []
    bar = progress_bar(len(grid), f"fitting {name} critics", progress)
    null_threat = ThreatModel(eps=0.0)
    for e, g in grid:
        q_settings = {"sarsa": asdict(ss), "sarsa_eps": e, "sarsa_reg": g}
        qkey = cache_key("sarsa-q", policy, spec, null_threat, q_settings)
        hit = None if retrain else load_cached(cache_dir, "sarsa-q", qkey)
        if hit is not None:
            fits.append(((e, g), hit[0], hit[1].get("stats", {}), True))
        else:
            if data is None:
                data = collect_transitions(policy, spec, ss)
            state, stats = fit_sarsa(data, ss, e, g)
            meta = {
                "attack": "sarsa-q",
                "policy_sha256": policy_fingerprint(policy),
                "env": spec.gym_id,
                "settings": q_settings,
                "stats": stats,
            }
            save_cached(cache_dir, "sarsa-q", qkey, state, meta)
            fits.append(((e, g), state, stats, False))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    scan: list[dict[str, Any]] = []
    best = 0
    if len(fits) > 1:
        for i, ((e, g), state, stats, _) in enumerate(fits):
            h = make(state, {})
            h.smoothing_sigma = None  # select on the unsmoothed victim (the key ignores sigma)
            ret = _eval_hook(h, policy, spec, n_sel, ss.seed, det)
            scan.append({"sarsa_eps": e, "sarsa_reg": g, "selection_return": ret, **stats})
            if ret < scan[best]["selection_return"]:
                best = i
    else:
        (e, g), _, stats, _ = fits[0]
        scan.append({"sarsa_eps": e, "sarsa_reg": g, **stats})
    (e, g), state, _, _ = fits[best]
    info = {
        "sarsa_eps": e,
        "sarsa_reg": g,
        "scan": scan,
        "selection": (
            f"lowest mean return over {n_sel} selection episodes (seed "
            f"{SELECTION_SEED_OFFSET + ss.seed})"
            if len(fits) > 1
            else "single setting"
        ),
        "cached": False,
    }
    save_cached(
        cache_dir,
        name,
        sel_key,
        state,
        {
            "attack": name,
            "policy_sha256": policy_fingerprint(policy),
            "env": spec.gym_id,
            "threat": threat.to_json(),
            "settings": attack_settings,
            "info": info,
        },
    )
    return make(state, info)


@register_attack("critic", learned=True, eot=True, mode_option="deterministic")
def critic_attack(
    threat: ThreatModel, policy: Policy, spec: EnvSpec, **options: Any
) -> QAttackHook:
    """Critic attack: min Q(s, pi(s_hat)) with a plain Sarsa Q of the victim (lambda = 0)."""
    return build_q_attack("critic", threat, policy, spec, options)


@register_attack("rs", learned=True, eot=True, mode_option="deterministic")
def robust_sarsa_attack(
    threat: ThreatModel, policy: Policy, spec: EnvSpec, **options: Any
) -> QAttackHook:
    """Robust Sarsa attack (Zhang et al. 2020): strongest Q of a (sarsa_eps, lambda) scan."""
    return build_q_attack("rs", threat, policy, spec, options)


@register_attack("rs+mad", learned=True, eot=True, mode_option="deterministic")
def rs_mad_attack(
    threat: ThreatModel, policy: Policy, spec: EnvSpec, **options: Any
) -> QAttackHook:
    """RS+MAD: min Q(s, pi(s_hat)) - mad_weight * KL(pi(s) || pi(s_hat)) with the RS critic."""
    return build_q_attack("rs+mad", threat, policy, spec, options)
