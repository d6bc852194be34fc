"""Train the small demo policies shipped in ``certrl/demo/`` and export them as certrl bundles.

Usage::

    .venv/bin/python scripts/train_demo_policies.py --only hopper
    .venv/bin/python scripts/train_demo_policies.py --only hopper-noisy   # from scratch, with noise
    .venv/bin/python scripts/train_demo_policies.py --only cartpole --only pendulum

Each demo is trained with Stable-Baselines3 on CPU (``torch.set_num_threads(1)``), exported with
:func:`certrl.policies.bundle.save_bundle` into ``certrl/demo/NAME.json`` + ``NAME.safetensors``,
checked against SB3's own ``model.predict(..., deterministic=True)`` on random observations
(max abs difference <= 1e-5, or identical discrete actions), reloaded with
:func:`certrl.policies.bundle.load_bundle` and evaluated with a plain gymnasium loop (no SB3):
20 deterministic episodes with ``env.reset(seed=s)``, s = 0..19, plus the same 20 episodes under
per-step Gaussian observation noise (sigma 0.2 in the policy's normalized input space, fresh
noise each step, noise generator ``np.random.default_rng(10_000 + s)``). The measured returns and
all settings are written into the manifest's ``training`` dict.

During training a callback evaluates the current policy every ``eval_freq`` steps on
*selection* seeds 1000..1004 (disjoint from the reported seeds 0..19) and keeps the best
checkpoint; the exported policy is the best of those checkpoints and the final one.
Intermediate SB3 files (model zips, VecNormalize statistics) go to ``--workdir``
(default ``/tmp/certrl_demo_train``); with ``--noisy-init warm``, ``hopper-noisy`` warm-starts from
``WORKDIR/hopper`` (or ``--warm-start-bundle``).

Demos (settings; the measured returns are filled in below once trained)
------------------------------------------------------------------------

``hopper`` -- PPO, Hopper-v5, seed 0, 1.5M steps, 4 DummyVecEnv envs, VecNormalize(norm_obs,
norm_reward, clip_obs=10, gamma=0.99), n_steps 512, batch 64, n_epochs 10, lr 3e-4, gamma 0.99,
gae_lambda 0.95, clip 0.2, default MlpPolicy (64-64 tanh, log_std_init 0). Export: layers
[11, 64, 64, 3] tanh, head gaussian, no squash, obs_norm from VecNormalize.obs_rms.

``hopper-noisy`` -- the same recipe trained from scratch (``--noisy-init scratch``, seed 1,
1.5M steps, eval every 150k) with N(0, 0.2^2 I) noise added to the normalized observation at
every step (a VecEnvWrapper after VecNormalize; VecNormalize statistics keep updating); the
checkpoint is selected on the *smoothed* return. Shipped: the 300k-step checkpoint. (A warm
start from the shipped ``hopper`` bundle, ``--warm-start-bundle certrl/demo/hopper.json``, 600k
steps at lr 1e-4, reached a smoothed 1139 ± 227 only.)

``hopper-smooth`` (the ``make demo`` policy) -- a smoothed Hopper that keeps its gait. The
plain recipe above fails at this: warm-started PPO under observation noise (ramped to 0.1 or
0.2, lr 1e-4 or 3e-5) lost the clean gait within 300k steps (clean return 3,300 -> 1,100-1,600)
without gaining smoothed return, and training with noise from scratch (sigma 0.1, seeds 1 and
2) stalled at ~700 after 600k steps; DAgger distillation of ``hopper`` onto noisy inputs
plateaued at a smoothed 1,200-1,600. What works is an *asymmetric actor-critic*
(``train_hopper_smooth``): the environment hands PPO ``concat(z + sigma n, z)`` with ``z`` the
normalized observation, the actor (the deployed policy) reads the noisy half and the critic the
clean half, so advantages are not blurred by the noise; VecNormalize statistics are frozen (the
actor's input space does not drift). Stages, all seeded:

1. ``--only hopper --timesteps 400000``: the ``hopper`` recipe; its best checkpoint (300k
   steps, clean 3,263 on the selection seeds) is the warm start (actor, critic, statistics);
2. ``--only hopper-smooth --sigma 0.1 --lr 1e-4 --noise-ramp 100000 --timesteps 1000000
   --selection-episodes 10`` (seed 2): sigma ramped 0 -> 0.1 over 100k steps, checkpoints every
   100k selected on the smoothed return (best: 600k steps);
3. ``--only hopper-smooth --sigma 0.1 --lr 5e-5 --noise-ramp 1 --timesteps 600000
   --eval-freq 50000 --selection-episodes 20 --seed 4 --warm-start WORKDIR_OF_2/hopper-smooth``
   (stage 2's ``selected_*`` checkpoint; in the shipped run they were copied from its
   ``best_*`` by hand, the same files): sigma 0.1 throughout, checkpoints
   every 50k on 20 selection episodes. Shipped: the 350k-step checkpoint (deterministic
   3,261.8 +- 2.5, smoothed 2,909.2 +- 483.6 on seeds 0..19; ``certrl certify`` on 1,000 fresh
   episodes: 2,583.7, 95% CI 2,538.9 .. 2,630.6; the warm start of stage 2 itself, the 300k
   checkpoint, gets 2,239.4, 95% CI 2,193.8 .. 2,283.1, and the shipped ``hopper`` 1,652).

The same stages at sigma 0.2 (stage 2 with ``--noise-ramp 300000 --timesteps 1200000``, stage 3
seed 5) kept the clean gait (3,250) but reached a smoothed 2,072 (500 episodes) only, so the
demo is certified at sigma 0.1.

``cartpole-noisy`` -- PPO as ``cartpole`` but on CartPole-v0 (200 steps, Kumar et al.'s
setting), 200k steps, with N(0, 0.2^2 I) noise on the raw observation at every step, selected
on the smoothed return (shipped: the 10k-step checkpoint).

``cartpole`` -- PPO, CartPole-v1, seed 0, 100k steps, 8 envs, n_steps 32, batch 256,
n_epochs 20, gamma 0.98, gae_lambda 0.8, lr linear 1e-3 -> 0, clip linear 0.2 -> 0, ent 0,
default MlpPolicy (64-64 tanh). No normalization. Export: layers [4, 64, 64, 2], categorical.

``pendulum`` -- TD3, Pendulum-v1, seed 0, 20k steps, net_arch [256, 256] (relu), lr 1e-3,
gamma 0.98, buffer 200k, learning_starts 10k, train_freq 1 episode, gradient_steps -1,
Gaussian action noise sigma 0.1. Export: layers [3, 256, 256, 1] relu + tanh output, head
deterministic (rescaled to [-2, 2]).

Measured returns (20 episodes, seeds 0..19, bundle reloaded via load_bundle)
-----------------------------------------------------------------------------

=================  ===========  ======================  =======================
demo               env          deterministic           smoothed (sigma 0.2)
=================  ===========  ======================  =======================
hopper             Hopper-v5    3132.28 +- 483.56       1116.86 +- 397.87
hopper-noisy       Hopper-v5    1151.87 +- 9.55         1468.96 +- 651.92
hopper-smooth      Hopper-v5    3261.78 +- 2.45         2909.22 +- 483.60 (sigma 0.1)
cartpole           CartPole-v1  500.00 +- 0.00          37.40 +- 15.99
cartpole-noisy     CartPole-v0  193.15 +- 9.72          183.00 +- 22.84
pendulum           Pendulum-v1  -133.78 +- 82.92        -371.61 +- 117.87
=================  ===========  ======================  =======================

(smoothing in the normalized space for the Hopper policies, raw otherwise; all returns and
settings are also in each manifest's ``training`` dict.)
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from certrl.policies.base import ObsNormalization, Policy, build_mlp  # noqa: E402
from certrl.policies.bundle import load_bundle, save_bundle  # noqa: E402

DEMOS = ("hopper", "hopper-noisy", "hopper-smooth", "cartpole", "cartpole-noisy", "pendulum")
#: hopper-smooth: env steps of the noise ramp after the warm start, and in all
SMOOTH_RAMP = 300_000
SMOOTH_STEPS = 1_200_000
EVAL_SEEDS = list(range(20))
SELECTION_SEEDS = [1000, 1001, 1002, 1003, 1004]
SMOOTHING_SIGMA = 0.2
NOISE_SEED_OFFSET = 10_000
MAX_ARTIFACT_BYTES = 1 << 20

ACT_NAMES = {nn.Tanh: "tanh", nn.ReLU: "relu"}


# --------------------------------------------------------------------------- export
@dataclass
class Export:
    """Everything ``save_bundle`` needs, kept in memory (also used for checkpoint selection)."""

    env_id: str
    state: dict[str, torch.Tensor]
    layers: list[int]
    activation: str
    head: str
    action_space: dict[str, Any]
    obs_norm: ObsNormalization | None = None
    output_activation: str | None = None
    squash: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def to_policy(self) -> Policy:
        """The same :class:`Policy` ``load_bundle`` would build (used during training)."""
        net = build_mlp(self.layers, self.activation, self.output_activation)
        net.load_state_dict({k: v for k, v in self.state.items() if k != "log_std"}, strict=True)
        kwargs: dict[str, Any] = {}
        if self.action_space["type"] == "discrete":
            kwargs["n_actions"] = int(self.action_space["n"])
        else:
            kwargs["action_low"] = np.asarray(self.action_space["low"], dtype=np.float32)
            kwargs["action_high"] = np.asarray(self.action_space["high"], dtype=np.float32)
        return Policy(
            net,
            self.head,  # type: ignore[arg-type]
            self.layers[0],
            log_std=self.state.get("log_std"),
            squash=self.squash,
            obs_norm=self.obs_norm,
            **kwargs,
        )

    def save(self, path: Path, training: dict[str, Any]) -> Path:
        return save_bundle(
            path,
            state=self.state,
            layers=self.layers,
            activation=self.activation,
            head=self.head,
            action_space=self.action_space,
            obs_norm=self.obs_norm,
            output_activation=self.output_activation,
            squash=self.squash,
            env_id=self.env_id,
            training=training,
        )


def _space_json(space: gym.Space) -> dict[str, Any]:
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "discrete", "n": int(space.n)}
    assert isinstance(space, gym.spaces.Box)
    return {
        "type": "box",
        "low": [float(v) for v in space.low.ravel()],
        "high": [float(v) for v in space.high.ravel()],
    }


def _linears(seq: nn.Sequential) -> tuple[list[nn.Linear], list[str]]:
    lin = [m for m in seq if isinstance(m, nn.Linear)]
    acts = [ACT_NAMES[type(m)] for m in seq if type(m) in ACT_NAMES]
    return lin, acts


def _obs_norm(vecnorm: Any) -> ObsNormalization | None:
    if vecnorm is None:
        return None
    rms = vecnorm.obs_rms
    return ObsNormalization(
        mean=np.array(rms.mean, dtype=np.float64),
        var=np.array(rms.var, dtype=np.float64),
        clip=float(vecnorm.clip_obs),
        epsilon=float(vecnorm.epsilon),
    )


def export_ppo(model: Any, vecnorm: Any, env_id: str) -> Export:
    """PPO MlpPolicy: ``mlp_extractor.policy_net`` (Linear, act, Linear, act) + ``action_net``."""
    p = model.policy
    lin, acts = _linears(p.mlp_extractor.policy_net)
    lin.append(p.action_net)
    if len(set(acts)) != 1 or len(acts) != len(lin) - 1:
        raise RuntimeError(f"unexpected PPO policy_net layout: {p.mlp_extractor.policy_net}")
    state: dict[str, torch.Tensor] = {}
    for k, layer in enumerate(lin):
        state[f"{2 * k}.weight"] = layer.weight.detach().cpu().clone()
        state[f"{2 * k}.bias"] = layer.bias.detach().cpu().clone()
    space = model.action_space
    if isinstance(space, gym.spaces.Box):
        state["log_std"] = p.log_std.detach().cpu().clone()
        head = "gaussian"
    else:
        head = "categorical"
    return Export(
        env_id=env_id,
        state=state,
        layers=[lin[0].in_features] + [layer.out_features for layer in lin],
        activation=acts[0],
        head=head,
        action_space=_space_json(space),
        obs_norm=_obs_norm(vecnorm),
    )


def export_td3(model: Any, vecnorm: Any, env_id: str) -> Export:
    """TD3 actor: ``actor.mu`` = (Linear, relu, Linear, relu, Linear, Tanh)."""
    mu = model.actor.mu
    lin, acts = _linears(mu)
    if not isinstance(mu[-1], nn.Tanh):
        raise RuntimeError(f"unexpected TD3 actor layout: {mu}")
    hidden = acts[:-1]  # the last tanh is the output activation
    if len(set(hidden)) != 1 or len(hidden) != len(lin) - 1:
        raise RuntimeError(f"unexpected TD3 actor layout: {mu}")
    state: dict[str, torch.Tensor] = {}
    for k, layer in enumerate(lin):
        state[f"{2 * k}.weight"] = layer.weight.detach().cpu().clone()
        state[f"{2 * k}.bias"] = layer.bias.detach().cpu().clone()
    return Export(
        env_id=env_id,
        state=state,
        layers=[lin[0].in_features] + [layer.out_features for layer in lin],
        activation=hidden[0],
        head="deterministic",
        output_activation="tanh",
        action_space=_space_json(model.action_space),
        obs_norm=_obs_norm(vecnorm),
    )


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def run_episodes(policy: Policy, env_id: str, seeds: list[int], sigma: float = 0.0) -> list[float]:
    """Plain gymnasium loop (no SB3). ``sigma > 0``: add N(0, sigma^2 I) to the *normalized*
    observation at every step (fresh noise each step, deterministic action on the noisy input),
    noise drawn from ``np.random.default_rng(NOISE_SEED_OFFSET + seed)``."""
    env = gym.make(env_id)
    returns = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        rng = np.random.default_rng(NOISE_SEED_OFFSET + seed)
        total, done = 0.0, False
        while not done:
            x = torch.as_tensor(np.asarray(obs, dtype=np.float32))[None]
            if sigma > 0:
                z = policy.normalize(x)
                eps = torch.as_tensor(rng.standard_normal(z.shape), dtype=torch.float32)
                a = policy.act_normalized(z + sigma * eps, deterministic=True)
            else:
                a = policy.act(x, deterministic=True)
            action = int(a[0]) if policy.discrete else a[0].numpy()
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    env.close()
    return returns


def summarize(returns: list[float]) -> dict[str, Any]:
    r = np.asarray(returns, dtype=np.float64)
    return {
        "mean": round(float(r.mean()), 2),
        "std": round(float(r.std()), 2),
        "min": round(float(r.min()), 2),
        "max": round(float(r.max()), 2),
        "returns": [round(float(v), 2) for v in r],
    }


def sample_observations(env_id: str, n: int = 512, seed: int = 0) -> np.ndarray:
    """Random-action rollout observations, spread out with Gaussian noise and a few far-off
    points (exercising the normalization clip)."""
    env = gym.make(env_id)
    env.action_space.seed(seed)
    rng = np.random.default_rng(seed)
    obs_list = []
    obs, _ = env.reset(seed=seed)
    while len(obs_list) < n:
        obs_list.append(np.asarray(obs, dtype=np.float64))
        obs, _, term, trunc, _ = env.step(env.action_space.sample())
        if term or trunc:
            obs, _ = env.reset()
    env.close()
    obs = np.stack(obs_list)
    scale = obs.std(0) + 0.1
    obs = obs + rng.standard_normal(obs.shape) * scale
    obs[-16:] *= 20.0
    return obs.astype(np.float32)


def verify_against_sb3(model: Any, vecnorm: Any, policy: Policy, obs: np.ndarray) -> float:
    """Max |bundle action - SB3 deterministic action| on ``obs`` (raw observations)."""
    sb3_in = vecnorm.normalize_obs(obs) if vecnorm is not None else obs
    sb3_act, _ = model.predict(sb3_in, deterministic=True)
    ours = policy.predict(obs, deterministic=True)
    if policy.discrete:
        mismatch = int((np.asarray(sb3_act).ravel() != ours.ravel()).sum())
        if mismatch:
            raise RuntimeError(f"bundle and SB3 disagree on {mismatch}/{len(obs)} discrete actions")
        return 0.0
    diff = float(np.abs(np.asarray(sb3_act, dtype=np.float64) - ours).max())
    if diff > 1e-5:
        raise RuntimeError(f"bundle and SB3 actions differ by {diff:.3g} (> 1e-5)")
    return diff


# --------------------------------------------------------------------------- training helpers
def make_selection_callback(exporter: Any, env_id: str, eval_freq: int, sigma: float, workdir):
    from stable_baselines3.common.callbacks import BaseCallback

    class SelectBest(BaseCallback):
        """Every ``eval_freq`` env steps: evaluate the exported policy on the selection seeds
        (smoothed return if ``sigma > 0``) and keep the best export and SB3 checkpoint."""

        def __init__(self) -> None:
            super().__init__()
            self.next_eval = eval_freq
            self.best_score = -np.inf
            self.best: Export | None = None
            self.history: list[dict[str, Any]] = []
            self.t0 = time.time()

        def _vecnorm(self) -> Any:
            from stable_baselines3.common.vec_env import VecNormalize

            env = self.model.get_env()
            while env is not None:
                if isinstance(env, VecNormalize):
                    return env
                env = getattr(env, "venv", None)
            return None

        def evaluate(self) -> None:
            vecnorm = self._vecnorm()
            exp = exporter(self.model, vecnorm, env_id)
            policy = exp.to_policy()
            clean = float(np.mean(run_episodes(policy, env_id, SELECTION_SEEDS)))
            smooth = (
                float(np.mean(run_episodes(policy, env_id, SELECTION_SEEDS, sigma)))
                if sigma > 0
                else None
            )
            score = smooth if smooth is not None else clean
            buf = [ep["r"] for ep in self.model.ep_info_buffer] if self.model.ep_info_buffer else []
            rec = {
                "timesteps": int(self.num_timesteps),
                "clean": round(clean, 1),
                "smoothed": None if smooth is None else round(smooth, 1),
                "train_ep_return": round(float(np.mean(buf)), 1) if buf else None,
                "elapsed_s": round(time.time() - self.t0, 1),
            }
            self.history.append(rec)
            if score > self.best_score:
                self.best_score = score
                exp.meta = {"selected_at_timesteps": int(self.num_timesteps), "score": score}
                self.best = copy.deepcopy(exp)
                self.model.save(str(workdir / "best_model.zip"))
                if vecnorm is not None:
                    vecnorm.save(str(workdir / "best_vecnormalize.pkl"))
            print(f"[eval] {json.dumps(rec)} best={self.best_score:.1f}", flush=True)

        def _on_training_start(self) -> None:
            # warm starts continue counting timesteps; evaluate the starting point too
            self.next_eval = self.num_timesteps + eval_freq
            if self.num_timesteps > 0:
                self.evaluate()

        def _on_step(self) -> bool:
            if self.num_timesteps >= self.next_eval:
                self.next_eval += eval_freq
                self.evaluate()
            return True

    return SelectBest()


def _noise_wrapper_cls():
    from stable_baselines3.common.vec_env import VecEnvWrapper

    class _GaussianObsNoise(VecEnvWrapper):
        """Adds N(0, sigma^2 I) to the (already normalized) observations at every step; with
        ``ramp_steps > 0`` sigma grows linearly from 0 over the first ``ramp_steps`` env steps."""

        def __init__(self, venv: Any, sigma: float, seed: int, ramp_steps: int = 0) -> None:
            super().__init__(venv)
            self.sigma = float(sigma)
            self.ramp_steps = int(ramp_steps)
            self.steps = 0
            self.rng = np.random.default_rng(seed)

        def _noisy(self, obs: np.ndarray) -> np.ndarray:
            sigma = self.sigma
            if self.ramp_steps > 0:
                sigma *= min(1.0, self.steps / self.ramp_steps)
            return (obs + sigma * self.rng.standard_normal(obs.shape)).astype(np.float32)

        def reset(self) -> np.ndarray:
            return self._noisy(self.venv.reset())

        def step_wait(self):
            obs, rewards, dones, infos = self.venv.step_wait()
            self.steps += self.num_envs
            for info in infos:
                if "terminal_observation" in info:
                    info["terminal_observation"] = self._noisy(info["terminal_observation"])
            return self._noisy(obs), rewards, dones, infos

    return _GaussianObsNoise


def versions() -> dict[str, str]:
    import mujoco
    import stable_baselines3

    return {
        "stable_baselines3": stable_baselines3.__version__,
        "torch": torch.__version__,
        "gymnasium": gym.__version__,
        "mujoco": mujoco.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def finish(
    name: str,
    exp: Export,
    model: Any,
    vecnorm: Any,
    training: dict[str, Any],
    out_dir: Path,
) -> dict[str, Any]:
    """Verify against SB3, save, reload via load_bundle, evaluate, re-save with the returns."""
    obs = sample_observations(exp.env_id)
    diff = verify_against_sb3(model, vecnorm, exp.to_policy(), obs)
    training["verified_against_sb3"] = {
        "n_obs": int(len(obs)),
        "max_abs_action_diff": diff,
        "tolerance": 1e-5,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    path = exp.save(out_dir / f"{name}.json", training)
    policy = load_bundle(path)
    # the reloaded bundle must act exactly like the in-memory export
    ref = exp.to_policy().predict(obs)
    if not np.array_equal(policy.predict(obs), ref):
        raise RuntimeError("reloaded bundle differs from the in-memory export")
    t0 = time.time()
    clean = summarize(run_episodes(policy, exp.env_id, EVAL_SEEDS))
    smooth = summarize(run_episodes(policy, exp.env_id, EVAL_SEEDS, SMOOTHING_SIGMA))
    space = "normalized (VecNormalize obs_rms)" if exp.obs_norm is not None else "raw"
    training["evaluation"] = {
        "loop": "certrl.policies.bundle.load_bundle + plain gymnasium loop (no SB3)",
        "episodes": len(EVAL_SEEDS),
        "env_reset_seeds": f"{EVAL_SEEDS[0]}..{EVAL_SEEDS[-1]}",
        "deterministic": clean,
        "smoothed": {
            "sigma": SMOOTHING_SIGMA,
            "space": space,
            "noise": "fresh N(0, sigma^2 I) each step on the policy input; deterministic action",
            "noise_rng": f"np.random.default_rng({NOISE_SEED_OFFSET} + seed)",
            **smooth,
        },
        "eval_wall_clock_s": round(time.time() - t0, 1),
    }
    path = exp.save(out_dir / f"{name}.json", training)
    path.with_suffix(".safetensors").chmod(0o644)  # safetensors writes 0600
    sizes = {p.name: p.stat().st_size for p in (path, path.with_suffix(".safetensors"))}
    for fname, size in sizes.items():
        if size >= MAX_ARTIFACT_BYTES:
            raise RuntimeError(f"{fname} is {size} bytes (>= 1 MiB)")
    summary = {
        "name": name,
        "deterministic_mean": clean["mean"],
        "deterministic_std": clean["std"],
        "smoothed_mean": smooth["mean"],
        "smoothed_std": smooth["std"],
        "train_wall_clock_s": training.get("wall_clock_s"),
        "sizes": sizes,
        "selected": training.get("checkpoint_selection", {}).get("selected"),
    }
    print(f"[done] {json.dumps(summary)}", flush=True)
    return summary


def select(cb: Any, final: Export, final_score: float) -> tuple[Export, dict[str, Any]]:
    info: dict[str, Any] = {
        "method": "best of periodic checkpoints and the final model on selection seeds",
        "selection_seeds": SELECTION_SEEDS,
        "history": cb.history,
        "final_score": round(final_score, 2),
    }
    if cb.best is not None and cb.best_score > final_score:
        info["selected"] = f"checkpoint at {cb.best.meta['selected_at_timesteps']} steps"
        info["selected_score"] = round(cb.best_score, 2)
        return cb.best, info
    info["selected"] = "final"
    info["selected_score"] = round(final_score, 2)
    return final, info


def score_of(exp: Export, sigma: float) -> float:
    return float(np.mean(run_episodes(exp.to_policy(), exp.env_id, SELECTION_SEEDS, sigma)))


# --------------------------------------------------------------------------- demos
HOPPER_PPO = {
    "n_steps": 512,
    "batch_size": 64,
    "n_epochs": 10,
    "learning_rate": 3e-4,
    "gamma": 0.99,
    "gae_lambda": 0.95,
    "clip_range": 0.2,
    "ent_coef": 0.0,
    "vf_coef": 0.5,
    "max_grad_norm": 0.5,
}
HOPPER_VECNORM = {"norm_obs": True, "norm_reward": True, "clip_obs": 10.0, "gamma": 0.99}


def _load_policy_weights(model: Any, bundle_json: str) -> None:
    """Copy a gaussian certrl-mlp bundle's actor (and log_std) into an SB3 PPO MlpPolicy."""
    from safetensors.torch import load_file

    manifest = json.loads(Path(bundle_json).read_text())
    state = load_file(str(Path(bundle_json).with_name(manifest["weights"])))
    p = model.policy
    lin, _ = _linears(p.mlp_extractor.policy_net)
    lin.append(p.action_net)
    with torch.no_grad():
        for k, layer in enumerate(lin):
            layer.weight.copy_(state[f"net.{2 * k}.weight"])
            layer.bias.copy_(state[f"net.{2 * k}.bias"])
        p.log_std.copy_(state["log_std"])


def _run_record(wall: float, selection: dict[str, Any]) -> dict[str, Any]:
    """The provenance every manifest's ``training`` dict ends with."""
    return {
        "wall_clock_s": round(wall, 1),
        "checkpoint_selection": selection,
        "versions": versions(),
        "torch_num_threads": torch.get_num_threads(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "script": "scripts/train_demo_policies.py",
    }


def _save_selected(workdir: Path, model: Any, vecnorm: Any, exp: Export,
                   selection: dict[str, Any]) -> None:
    """Keep the selected SB3 checkpoint (``selected_model.zip``, ``selected_vecnormalize.pkl``,
    ``selected.json``) as the warm start of the next stage (``--warm-start WORKDIR/NAME``)."""
    model.save(str(workdir / "selected_model.zip"))
    vecnorm.save(str(workdir / "selected_vecnormalize.pkl"))
    steps = exp.meta.get("selected_at_timesteps", int(model.num_timesteps))
    (workdir / "selected.json").write_text(
        json.dumps({"timesteps": int(steps), "selection": selection["selected"]})
    )


def train_hopper(args: argparse.Namespace, noisy: bool) -> dict[str, Any]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    name = "hopper-noisy" if noisy else "hopper"
    env_id = "Hopper-v5"
    seed = args.seed if args.seed is not None else (1 if noisy else 0)
    scratch = noisy and args.noisy_init == "scratch"
    timesteps = args.timesteps or (1_000_000 if noisy and not scratch else 1_500_000)
    hyper = dict(HOPPER_PPO)
    if args.lr is not None:
        hyper["learning_rate"] = args.lr
    n_envs = 4
    workdir = Path(args.workdir) / name
    workdir.mkdir(parents=True, exist_ok=True)
    venv = make_vec_env(env_id, n_envs=n_envs, seed=seed, vec_env_cls=DummyVecEnv)
    sigma = SMOOTHING_SIGMA if noisy else 0.0
    training: dict[str, Any] = {
        "algorithm": "PPO",
        "library": "stable-baselines3",
        "env_id": env_id,
        "seed": seed,
        "n_envs": n_envs,
        "vec_env": "DummyVecEnv",
        "hyperparameters": hyper,
        "policy": "MlpPolicy (default: pi/vf 64-64 tanh, ortho init, log_std_init 0)",
        "vec_normalize": dict(HOPPER_VECNORM),
    }
    noise_cls = _noise_wrapper_cls()
    if noisy and not scratch and args.warm_start_bundle:
        # warm start from the shipped bundle (policy weights, log_std and the frozen
        # observation statistics); the value network starts fresh
        vecnorm = VecNormalize(venv, **HOPPER_VECNORM)
        src_policy = load_bundle(args.warm_start_bundle)
        norm = src_policy.obs_norm
        vecnorm.obs_rms.mean = np.asarray(norm.mean, dtype=np.float64).copy()
        vecnorm.obs_rms.var = np.asarray(norm.var, dtype=np.float64).copy()
        vecnorm.obs_rms.count = 1e6
        env = noise_cls(vecnorm, SMOOTHING_SIGMA, seed, args.noise_ramp)
        model = PPO("MlpPolicy", env, device="cpu", seed=seed, verbose=0, **hyper)
        _load_policy_weights(model, args.warm_start_bundle)
        training["warm_start"] = {"from": str(Path(args.warm_start_bundle).name),
                                  "value_network": "fresh"}
    elif noisy and not scratch:
        src = Path(args.warm_start or Path(args.workdir) / "hopper")
        model_zip, vn_pkl = src / "selected_model.zip", src / "selected_vecnormalize.pkl"
        vecnorm = VecNormalize.load(str(vn_pkl), venv)
        vecnorm.training = True
        vecnorm.norm_reward = True
        env = noise_cls(vecnorm, SMOOTHING_SIGMA, seed, args.noise_ramp)
        custom = {"learning_rate": hyper["learning_rate"]}
        model = PPO.load(str(model_zip), env=env, device="cpu", seed=seed, custom_objects=custom)
        prior = json.loads((src / "selected.json").read_text())
        training["warm_start"] = {"from": "hopper", **prior}
    else:
        vecnorm = VecNormalize(venv, **HOPPER_VECNORM)
        env = vecnorm
        if scratch:
            env = noise_cls(vecnorm, SMOOTHING_SIGMA, seed, args.noise_ramp)
        model = PPO("MlpPolicy", env, device="cpu", seed=seed, verbose=0, **hyper)
    if noisy:
        training["warm_start"] = training.get("warm_start")
        training["observation_noise"] = {
            "sigma": SMOOTHING_SIGMA,
            "space": "normalized (added after VecNormalize, before the policy)",
            "when": "every step (reset and step), fresh N(0, sigma^2 I)",
            "ramp_steps": args.noise_ramp,
        }
    eval_freq = args.eval_freq or (150_000 if scratch else 100_000)
    cb = make_selection_callback(export_ppo, env_id, eval_freq, sigma, workdir)
    t0 = time.time()
    model.learn(total_timesteps=timesteps, callback=cb, reset_num_timesteps=scratch or not noisy)
    wall = time.time() - t0
    final = export_ppo(model, vecnorm, env_id)
    model.save(str(workdir / "final_model.zip"))
    vecnorm.save(str(workdir / "final_vecnormalize.pkl"))
    exp, selection = select(cb, final, score_of(final, sigma))
    if selection["selected"] != "final":
        model = PPO.load(str(workdir / "best_model.zip"), device="cpu")
        vecnorm = VecNormalize.load(str(workdir / "best_vecnormalize.pkl"), venv)
    vecnorm.training = False
    _save_selected(workdir, model, vecnorm, exp, selection)
    training.update({"total_timesteps": int(timesteps), **_run_record(wall, selection)})
    return finish(name, exp, model, vecnorm, training, Path(args.out_dir))


def _asymmetric_classes():
    """SB3 pieces of the asymmetric actor-critic of ``hopper-smooth``: the environment hands
    the agent ``concat(z + sigma n, z)`` (noisy and clean normalized observation); the actor
    reads only the noisy half (it is the deployed, smoothed policy), the critic only the
    clean half (a value estimate that the noise does not blur: asymmetric actor-critic,
    Pinto et al. 2018)."""
    from gymnasium import spaces
    from stable_baselines3.common.policies import ActorCriticPolicy
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    class Half(BaseFeaturesExtractor):
        def __init__(self, observation_space: Any, features_dim: int, start: int = 0) -> None:
            super().__init__(observation_space, features_dim)
            self.start = int(start)

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return obs[..., self.start:self.start + self.features_dim]

    class AsymmetricPolicy(ActorCriticPolicy):
        def __init__(self, observation_space: Any, *a: Any, **kw: Any) -> None:
            d = int(observation_space.shape[0]) // 2
            kw.update(features_extractor_class=Half, features_extractor_kwargs={"features_dim": d},
                      share_features_extractor=False)
            super().__init__(observation_space, *a, **kw)
            self.pi_features_extractor = Half(observation_space, d, 0)
            self.vf_features_extractor = Half(observation_space, d, d)
            self.features_extractor = self.pi_features_extractor

    class NoisyAndClean(_noise_wrapper_cls()):  # type: ignore[misc]
        def __init__(self, venv: Any, sigma: float, seed: int, ramp_steps: int) -> None:
            super().__init__(venv, sigma, seed, ramp_steps)
            low = np.concatenate([venv.observation_space.low] * 2) - 10 * sigma
            high = np.concatenate([venv.observation_space.high] * 2) + 10 * sigma
            self.observation_space = spaces.Box(low.astype(np.float32),
                                                high.astype(np.float32), dtype=np.float32)

        def _noisy(self, obs: np.ndarray) -> np.ndarray:
            # the parent's draw (same numbers), then the clean half for the critic
            return np.concatenate([super()._noisy(obs), obs], -1).astype(np.float32)

    return AsymmetricPolicy, NoisyAndClean


def train_hopper_smooth(args: argparse.Namespace) -> dict[str, Any]:
    """``hopper-smooth``: the clean ``hopper`` recipe's selected checkpoint (actor, critic, frozen
    VecNormalize statistics) fine-tuned with PPO as an asymmetric actor-critic: the actor sees
    the normalized observation plus N(0, sigma^2 I) (ramped from 0 over ``--noise-ramp`` steps),
    the critic the clean one. Selected on the smoothed return."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    name, env_id = "hopper-smooth", "Hopper-v5"
    seed = args.seed if args.seed is not None else 2
    ramp = args.noise_ramp or SMOOTH_RAMP
    timesteps = args.timesteps or SMOOTH_STEPS
    hyper = dict(HOPPER_PPO)
    hyper["learning_rate"] = args.lr if args.lr is not None else 1e-4
    workdir = Path(args.workdir) / name
    workdir.mkdir(parents=True, exist_ok=True)
    src = Path(args.warm_start or Path(args.workdir) / "hopper")
    policy_cls, wrapper = _asymmetric_classes()
    venv = make_vec_env(env_id, n_envs=4, seed=seed, vec_env_cls=DummyVecEnv)
    vecnorm = VecNormalize.load(str(src / "selected_vecnormalize.pkl"), venv)
    vecnorm.training = False  # frozen statistics: the actor's input space stays fixed
    vecnorm.norm_reward = True
    env = wrapper(vecnorm, SMOOTHING_SIGMA, seed, ramp)
    model = PPO(policy_cls, env, device="cpu", seed=seed, verbose=0, **hyper)
    prior = PPO.load(str(src / "selected_model.zip"), device="cpu")
    model.policy.load_state_dict(prior.policy.state_dict(), strict=True)
    cb = make_selection_callback(export_ppo, env_id, args.eval_freq or 100_000, SMOOTHING_SIGMA,
                                 workdir)
    t0 = time.time()
    model.learn(total_timesteps=timesteps, callback=cb)
    wall = time.time() - t0
    final = export_ppo(model, vecnorm, env_id)
    exp, selection = select(cb, final, score_of(final, SMOOTHING_SIGMA))
    if selection["selected"] != "final":
        model = PPO.load(str(workdir / "best_model.zip"), device="cpu",
                         custom_objects={"policy_class": policy_cls})
    _save_selected(workdir, model, vecnorm, exp, selection)  # statistics frozen: no reload
    training: dict[str, Any] = {
        "algorithm": "PPO (asymmetric actor-critic)",
        "library": "stable-baselines3",
        "env_id": env_id,
        "seed": seed,
        "n_envs": 4,
        "vec_env": "DummyVecEnv",
        "hyperparameters": hyper,
        "policy": "actor 64-64 tanh on the noisy normalized observation; critic 64-64 tanh on "
                  "the clean one",
        "vec_normalize": {**HOPPER_VECNORM, "frozen": True},
        "warm_start": {"from": src.name, **json.loads((src / "selected.json").read_text())},
        "observation_noise": {"sigma": SMOOTHING_SIGMA, "space": "normalized (actor only)",
                              "when": "every step, fresh N(0, sigma^2 I)", "ramp_steps": ramp},
        "total_timesteps": int(timesteps),
        **_run_record(wall, selection),
    }
    return finish(name, exp, _ActorOnly(model), vecnorm, training, Path(args.out_dir))


class _ActorOnly:
    """``predict`` of an asymmetric model on plain normalized observations (the actor half:
    the critic's half does not influence the action), for :func:`verify_against_sb3`."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def predict(self, obs: np.ndarray, deterministic: bool = True) -> Any:
        return self.model.predict(np.concatenate([obs, obs], -1), deterministic=deterministic)

    def save(self, path: str) -> None:
        self.model.save(path)


CARTPOLE_PPO = {
    "n_steps": 32,
    "batch_size": 256,
    "n_epochs": 20,
    "gamma": 0.98,
    "gae_lambda": 0.8,
    "ent_coef": 0.0,
}


def _linear(v0: float):
    return lambda progress: progress * v0


def train_cartpole(args: argparse.Namespace, noisy: bool = False) -> dict[str, Any]:
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    # cartpole-noisy: the 200-step CartPole-v0 of Kumar et al. (2022), trained with the
    # smoothing noise N(0, 0.2^2 I) on the raw observation at every step (no normalization)
    name, env_id = ("cartpole-noisy", "CartPole-v0") if noisy else ("cartpole", "CartPole-v1")
    seed = args.seed if args.seed is not None else 0
    timesteps = args.timesteps or (200_000 if noisy else 100_000)
    sigma = SMOOTHING_SIGMA if noisy else 0.0
    n_envs = 8
    workdir = Path(args.workdir) / name
    workdir.mkdir(parents=True, exist_ok=True)
    env = make_vec_env(env_id, n_envs=n_envs, seed=seed, vec_env_cls=DummyVecEnv)
    if noisy:
        env = _noise_wrapper_cls()(env, sigma, seed, 0)
    model = PPO(
        "MlpPolicy",
        env,
        device="cpu",
        seed=seed,
        verbose=0,
        learning_rate=_linear(1e-3),
        clip_range=_linear(0.2),
        **CARTPOLE_PPO,
    )
    cb = make_selection_callback(export_ppo, env_id, args.eval_freq or 10_000, sigma, workdir)
    t0 = time.time()
    model.learn(total_timesteps=timesteps, callback=cb)
    wall = time.time() - t0
    final = export_ppo(model, None, env_id)
    exp, selection = select(cb, final, score_of(final, sigma))
    if selection["selected"] != "final":
        model = PPO.load(str(workdir / "best_model.zip"), device="cpu")
    training = {
        "algorithm": "PPO",
        "library": "stable-baselines3",
        "env_id": env_id,
        "seed": seed,
        "n_envs": n_envs,
        "vec_env": "DummyVecEnv",
        "total_timesteps": int(timesteps),
        "hyperparameters": {
            **CARTPOLE_PPO,
            "learning_rate": "linear 1e-3 -> 0",
            "clip_range": "linear 0.2 -> 0",
        },
        "policy": "MlpPolicy (default: pi/vf 64-64 tanh)",
        "vec_normalize": None,
        "observation_noise": (
            {"sigma": sigma, "space": "raw", "when": "every step, fresh N(0, sigma^2 I)"}
            if noisy else None
        ),
        **_run_record(wall, selection),
    }
    return finish(name, exp, model, None, training, Path(args.out_dir))


PENDULUM_TD3 = {
    "learning_rate": 1e-3,
    "gamma": 0.98,
    "buffer_size": 200_000,
    "learning_starts": 10_000,
    "batch_size": 256,
    "tau": 0.005,
    "policy_delay": 2,
    "target_policy_noise": 0.2,
    "target_noise_clip": 0.5,
    "gradient_steps": -1,
}
PENDULUM_NET = [256, 256]


def train_pendulum(args: argparse.Namespace) -> dict[str, Any]:
    from stable_baselines3 import TD3
    from stable_baselines3.common.noise import NormalActionNoise

    name, env_id = "pendulum", "Pendulum-v1"
    seed = args.seed if args.seed is not None else 0
    timesteps = args.timesteps or 20_000
    workdir = Path(args.workdir) / name
    workdir.mkdir(parents=True, exist_ok=True)
    env = gym.make(env_id)
    n_act = env.action_space.shape[0]
    noise = NormalActionNoise(mean=np.zeros(n_act), sigma=0.1 * np.ones(n_act))
    model = TD3(
        "MlpPolicy",
        env,
        device="cpu",
        seed=seed,
        verbose=0,
        train_freq=(1, "episode"),
        action_noise=noise,
        policy_kwargs={"net_arch": PENDULUM_NET},
        **PENDULUM_TD3,
    )
    cb = make_selection_callback(export_td3, env_id, args.eval_freq or 2_000, 0.0, workdir)
    t0 = time.time()
    model.learn(total_timesteps=timesteps, callback=cb)
    wall = time.time() - t0
    final = export_td3(model, None, env_id)
    exp, selection = select(cb, final, score_of(final, 0.0))
    if selection["selected"] != "final":
        model = TD3.load(str(workdir / "best_model.zip"), device="cpu")
    training = {
        "algorithm": "TD3",
        "library": "stable-baselines3",
        "env_id": env_id,
        "seed": seed,
        "n_envs": 1,
        "total_timesteps": int(timesteps),
        "hyperparameters": {
            **PENDULUM_TD3,
            "train_freq": "1 episode",
            "action_noise": "NormalActionNoise(sigma=0.1)",
        },
        "policy": f"MlpPolicy net_arch {PENDULUM_NET} relu, actor output tanh",
        "vec_normalize": None,
        **_run_record(wall, selection),
    }
    return finish(name, exp, model, None, training, Path(args.out_dir))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", choices=DEMOS, help="demo(s) to train (repeatable)")
    ap.add_argument("--timesteps", type=int, default=None, help="override the demo's default")
    ap.add_argument("--seed", type=int, default=None, help="override the demo's default seed")
    ap.add_argument("--eval-freq", type=int, default=None, help="checkpoint selection interval")
    ap.add_argument("--out-dir", default=str(REPO / "certrl" / "demo"))
    ap.add_argument("--workdir", default="/tmp/certrl_demo_train")
    ap.add_argument("--warm-start", default=None, help="hopper-noisy: dir with selected_*")
    ap.add_argument("--warm-start-bundle", default=None,
                    help="hopper-noisy: warm-start from a certrl bundle (certrl/demo/hopper.json)")
    ap.add_argument(
        "--noisy-init",
        choices=("warm", "scratch"),
        default="scratch",
        help="hopper-noisy: train from scratch with noise (default, as shipped) or warm-start",
    )
    ap.add_argument("--noise-ramp", type=int, default=0, help="hopper-noisy: sigma ramp steps")
    ap.add_argument("--lr", type=float, default=None, help="hopper demos: learning rate")
    ap.add_argument("--sigma", type=float, default=None,
                    help="smoothing noise of the noisy demos and of their evaluation (default 0.2)")
    ap.add_argument("--selection-episodes", type=int, default=None,
                    help="checkpoint selection episodes (seeds 1000..; default 5)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.selection_episodes is not None:
        SELECTION_SEEDS[:] = list(range(1000, 1000 + args.selection_episodes))
    if args.sigma is not None:
        global SMOOTHING_SIGMA
        SMOOTHING_SIGMA = float(args.sigma)
    torch.set_num_threads(args.threads)
    demos = args.only or list(DEMOS)
    results = []
    for demo in demos:
        if demo in ("hopper", "hopper-noisy"):
            results.append(train_hopper(args, noisy=demo == "hopper-noisy"))
        elif demo == "hopper-smooth":
            results.append(train_hopper_smooth(args))
        elif demo in ("cartpole", "cartpole-noisy"):
            results.append(train_cartpole(args, noisy=demo == "cartpole-noisy"))
        else:
            results.append(train_pendulum(args))
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
