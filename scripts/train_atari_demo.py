"""Train the pixel demo agents ``demo:pong`` (one-round Pong) and ``demo:freeway`` (Freeway,
250 steps) and export them as certrl CNN bundles (``certrl/demo/NAME.json`` + ``.safetensors``).

Usage::

    .venv/bin/python scripts/train_atari_demo.py --game pong-one-round --sigma 0.1 --out pong
    .venv/bin/python scripts/train_atari_demo.py --game freeway-250 --sigma 0.1 --out freeway

Why imitation and not RL: Kumar et al. train SB3 DQN for 10M steps per agent; on this project's
2 CPU cores SB3's Atari DQN runs at ~60 environment steps per second with its updates
(``--measure-rl 150 --threads 1`` on ``pong-one-round``, the other core busy: 62 steps/s,
10M steps in ~45 hours per agent and sigma). The demo agents are instead NatureCNN networks
(SB3 ``CnnPolicy`` layout, 4 x 84 x 84 uint8 input, /255 inside) trained by DAgger (Ross et
al. 2011) from a *scripted teacher that reads the emulator RAM* (the ball and paddle in
Pong, the chicken's height in Freeway, both planning a few steps ahead on a clone of the
emulator state): the student only ever sees pixels. The student is trained on
noisy frames (N(0, sigma^2) per pixel in [0, 1] units, fresh per frame, the smoothing noise
certrl adds), so the smoothed agent keeps its play, as Kumar et al.'s agents are trained at
their sigma.

Procedure (all seeded by ``--seed``): iteration 0 rolls out the teacher; iterations 1..K roll
out the noisy student (beta-mixture with the teacher, beta = 0.5^k) and label every visited
state with the teacher's action; after each iteration the student is trained with cross-entropy
on the aggregate for ``--steps`` Adam steps (lr 2.5e-4, batches of 64; the first round at
sigma / 2), from SB3's orthogonal initialization. The exported agent is the
last iteration's. The manifest's ``training`` dict records every setting and the per-iteration
teacher-agreement and returns (clean and smoothed) on held-out seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from certrl.envs import resolve_env

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- teachers
def _pong_positions(ale) -> tuple[float | None, float | None]:
    """(player paddle centre y, ball centre y) in screen rows, read off the RGB screen (the
    green paddle in columns 140..143, the white ball), ``None`` when not on screen."""
    play = ale.getScreenRGB()[34:194]
    pad = np.flatnonzero((play[:, 140:144, 1] == 186).any(axis=1))
    ball = np.flatnonzero((play[:, :, 0] == 236).any(axis=1))
    return (float(pad.mean()) + 34 if pad.size else None,
            float(ball.mean()) + 34 if ball.size else None)


def _pong_track(ale) -> int:
    py, by = _pong_positions(ale)
    if py is None or by is None:
        return 1  # FIRE (serve)
    if py < by - 3:
        return 3  # LEFT: the paddle moves down the screen
    if py > by + 3:
        return 2  # RIGHT: up
    return 0


def pong_teacher(env, horizon: int = 40) -> int:
    """A planning teacher: from a clone of the emulator state, try each candidate action for
    one step followed by ``horizon`` steps of ball tracking, and take the one that wins the
    point soonest (else loses it latest). Tracking alone wins ~30% of one-round points against
    Pong's built-in player with sticky actions; planning wins ~75% (measured on 16 seeds)."""
    u = env.unwrapped
    ale, codes = u.ale, u.ale_env._action_set
    state = ale.cloneState()
    track = _pong_track(ale)
    best, best_v = track, -np.inf
    for a in (track, 0, 2, 3):
        ale.restoreState(state)
        v = 0.0
        for h in range(horizon + 1):
            act = a if h == 0 else _pong_track(ale)
            r = 0.0
            for _ in range(4):
                r = ale.act(codes[act], 1.0)
                if r != 0:
                    break
            if r != 0:
                v = float(r) - 1e-3 * h
                break
        if v > best_v + 1e-9:
            best, best_v = a, v
    ale.restoreState(state)
    return int(best)


def freeway_teacher(env, horizon: int = 12) -> int:
    """A planning teacher: try UP, NOOP, DOWN for one step followed by ``horizon`` steps of
    UP, from a clone of the emulator state, and take the one that ends highest (RAM 14: the
    chicken's height; a hit sends it back to the bottom in the hard difficulty; a crossing
    counts 1000). Always-UP scores 1-3 in 250 steps depending on the cars' phase."""
    u = env.unwrapped
    ale, codes = u.ale, u.ale_env._action_set
    state = ale.cloneState()
    best, best_v = 1, -np.inf
    for a in (1, 0, 2):
        ale.restoreState(state)
        score = 0.0
        for h in range(horizon + 1):
            act = a if h == 0 else 1
            for _ in range(4):
                score += ale.act(codes[act], 1.0)
        v = 1000.0 * score + float(ale.getRAM()[14])
        if v > best_v + 1e-9:
            best, best_v = a, v
    ale.restoreState(state)
    return int(best)


TEACHERS = {"pong-one-round": pong_teacher, "pong": pong_teacher,
            "freeway-250": freeway_teacher, "freeway": freeway_teacher}


# ----------------------------------------------------------------------------- student
def nature_cnn(n_actions: int) -> nn.Sequential:
    """NatureCNN (Mnih et al. 2015; SB3 ``CnnPolicy``) on [B, 4, 84, 84] inputs in [0, 1],
    initialized as SB3 does (orthogonal, gain sqrt(2); the head 0.01). With PyTorch's default
    init the student stayed at the majority class for thousands of steps."""
    net = nn.Sequential(
        nn.Conv2d(4, 32, 8, stride=4), nn.ReLU(),
        nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
        nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(), nn.Linear(512, n_actions))
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.orthogonal_(m.weight, gain=float(np.sqrt(2)))
            nn.init.zeros_(m.bias)
    nn.init.orthogonal_(net[-1].weight, gain=0.01)
    return net


def noisy(x: np.ndarray, sigma: float, rng: np.random.Generator) -> torch.Tensor:
    """uint8 stacks [B, 4, 84, 84] -> [0, 1] floats with N(0, sigma^2) on every real frame
    (the all-zero frames that pad an episode's first stacks stay noise-free, as in
    certrl's FrameSmoothing)."""
    f = torch.from_numpy(x).float() / 255.0
    if sigma > 0:
        z = torch.from_numpy(rng.standard_normal(f.shape, dtype=np.float32))
        real = torch.from_numpy(x.reshape(x.shape[0], x.shape[1], -1).any(axis=2))
        f = f + sigma * z * real[:, :, None, None]
    return f


def rollout(spec, net, teacher, episodes: list[int], sigma: float, beta: float,
            rng: np.random.Generator, width: int = 8, record: bool = True):
    """Lockstep rollouts; returns (obs uint8, teacher actions, returns, agreement). Without
    ``record`` (evaluation) the teacher is not consulted."""
    envs = [spec.make() for _ in range(width)]
    queue = list(episodes)
    obs_buf, act_buf, rets, agree = [], [], [], []
    slots: list[dict] = []
    for e in envs:
        if not queue:
            break
        o, _ = e.reset(seed=queue.pop(0))
        slots.append({"env": e, "obs": o, "ret": 0.0, "t": 0})
    while slots:
        x = np.stack([s["obs"] for s in slots])
        labels = [teacher(s["env"]) for s in slots] if record or net is None else None
        if net is None:
            acts = labels
        else:
            with torch.no_grad():
                pred = net(noisy(x, sigma, rng)).argmax(1).numpy().tolist()
            if labels is None:
                acts = pred
            else:
                agree.extend(int(p == t) for p, t in zip(pred, labels, strict=True))
                acts = [t if rng.random() < beta else p for p, t in zip(pred, labels,
                                                                         strict=True)]
        if record:
            obs_buf.append(x)
            act_buf.extend(labels)
        keep = []
        for s, a in zip(slots, acts, strict=True):
            o, r, te, tr, _ = s["env"].step(a)
            s["ret"] += r
            s["t"] += 1
            s["obs"] = o
            if te or tr:
                rets.append(s["ret"])
                if queue:
                    o, _ = s["env"].reset(seed=queue.pop(0))
                    s.update(obs=o, ret=0.0, t=0)
                    keep.append(s)
                else:
                    s["env"].close()
            else:
                keep.append(s)
        slots = keep
    X = np.concatenate(obs_buf) if obs_buf else np.zeros((0, 4, 84, 84), np.uint8)
    return X, np.asarray(act_buf, dtype=np.int64), rets, (float(np.mean(agree)) if agree else 1.0)


def train(net, opt, X, Y, sigma, steps, rng, log) -> float:
    """``steps`` Adam steps on batches of 64 drawn with replacement from the aggregate."""
    n = len(X)
    tot, cnt, hits, loss_v = 0.0, 0, 0, float("nan")
    for i in range(1, steps + 1):
        idx = rng.integers(0, n, 64)
        xb = noisy(X[idx], sigma, rng)
        yb = torch.from_numpy(Y[idx])
        out = net(xb)
        loss = nn.functional.cross_entropy(out, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        tot += float(loss.detach()) * len(idx)
        hits += int((out.argmax(1) == yb).sum())
        cnt += len(idx)
        if i % 500 == 0 or i == steps:
            loss_v = tot / cnt
            log(f"    step {i}/{steps}: loss {loss_v:.4f}, accuracy {hits / cnt:.3f} on {n} "
                f"states (sigma {sigma:g})")
            tot, cnt, hits = 0.0, 0, 0
    return loss_v


def measure_rl(spec, seconds: float, seed: int, threads: int) -> None:
    """SB3 DQN (CnnPolicy) with Kumar et al.'s / RL Zoo's Atari hyperparameters on ``spec``
    for ``seconds`` of wall time; learning starts after 1,000 steps (not 100,000) so that the
    measured rate includes the gradient updates (one every 4 steps, batch 32)."""
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.vec_env import DummyVecEnv

    class Stop(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.t0 = time.time()
            self.mark: tuple[float, int] | None = None

        def _on_step(self) -> bool:
            if self.mark is None and self.num_timesteps >= 1_000:
                self.mark = (time.time(), self.num_timesteps)
            return time.time() - self.t0 < seconds

    torch.set_num_threads(threads)
    env = DummyVecEnv([spec.make])
    model = DQN("CnnPolicy", env, learning_rate=1e-4, buffer_size=10_000, learning_starts=1_000,
                batch_size=32, train_freq=4, gradient_steps=1, target_update_interval=1_000,
                exploration_fraction=0.1, exploration_final_eps=0.01,
                optimize_memory_usage=False, seed=seed, verbose=0, device="cpu")
    cb = Stop()
    model.learn(total_timesteps=10**9, callback=cb)
    t1, n1 = time.time(), model.num_timesteps
    if cb.mark is None:
        print(f"measure-rl: only {n1} steps in {seconds:g} s (no updates yet)")
        return
    rate = (n1 - cb.mark[1]) / max(t1 - cb.mark[0], 1e-9)
    print(f"measure-rl: SB3 DQN CnnPolicy on {spec.alias}, {threads} torch thread(s): {rate:.0f} "
          f"env steps/s with updates ({n1} steps in {seconds:g} s); Kumar et al.'s 10M steps "
          f"would take {1e7 / rate / 3600:.1f} hours")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--game", default="pong-one-round", choices=sorted(TEACHERS))
    ap.add_argument("--sigma", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--episodes", type=int, default=48, help="rollouts per iteration")
    ap.add_argument("--steps", type=int, default=3000, help="gradient steps per iteration")
    ap.add_argument("--lr", type=float, default=2.5e-4)
    ap.add_argument("--eval-episodes", type=int, default=48)
    ap.add_argument("--max-states", type=int, default=60_000)
    ap.add_argument("--out", default=None, help="demo name (certrl/demo/NAME.json)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--measure-rl", type=float, default=None, metavar="SECONDS",
                    help="only measure SB3 DQN's training rate on the environment")
    args = ap.parse_args()
    if args.measure_rl is not None:
        measure_rl(resolve_env(args.game), args.measure_rl, args.seed, args.threads)
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t0 = time.time()

    def log(msg: str) -> None:
        print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)

    spec = resolve_env(args.game)
    probe = spec.make()
    n_actions = int(probe.action_space.n)
    probe.close()
    teacher = TEACHERS[args.game]
    net = nature_cnn(n_actions)
    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    eval_seeds = list(range(10**6, 10**6 + args.eval_episodes))  # held out from training
    history = []
    X = np.zeros((0, 4, 84, 84), np.uint8)
    Y = np.zeros(0, np.int64)
    next_seed = 0
    for it in range(args.iterations + 1):
        eps = list(range(next_seed, next_seed + args.episodes))
        next_seed += args.episodes
        beta = 1.0 if it == 0 else 0.5 ** it
        Xi, Yi, rets, agree = rollout(spec, None if it == 0 else net, teacher, eps, args.sigma,
                                      beta, rng)
        X = np.concatenate([X, Xi])[-args.max_states:]
        Y = np.concatenate([Y, Yi])[-args.max_states:]
        log(f"iteration {it}: {'teacher' if it == 0 else f'student (beta {beta:g})'} return "
            f"{np.mean(rets):.3f} over {len(rets)} episodes, {len(Xi)} new states, agreement "
            f"{agree:.3f}")
        # noise curriculum: half of sigma in the first round, then sigma
        sig = args.sigma * (0.5 if it == 0 else 1.0)
        loss = train(net, opt, X, Y, sig, args.steps, rng, log)
        net.eval()
        _, _, clean, _ = rollout(spec, net, teacher, eval_seeds, 0.0, 0.0, rng, record=False)
        _, _, smooth, _ = rollout(spec, net, teacher, eval_seeds, args.sigma, 0.0, rng,
                                  record=False)
        net.train()
        row = {"iteration": it, "states": int(len(X)), "loss": round(loss, 4),
               "rollout_return": float(np.mean(rets)), "teacher_agreement": round(agree, 4),
               "clean_return": float(np.mean(clean)), "smoothed_return": float(np.mean(smooth)),
               "seconds": round(time.time() - t0, 1)}
        history.append(row)
        log(f"  held-out: clean {row['clean_return']:.3f}, smoothed (sigma {args.sigma:g}) "
            f"{row['smoothed_return']:.3f}")
    net.eval()
    training = {
        "algorithm": "DAgger",
        "method": "DAgger from a RAM-reading scripted teacher (see scripts/train_atari_demo.py)",
        "env": spec.alias, "env_id": spec.gym_id, "sigma": args.sigma, "seed": args.seed,
        "iterations": args.iterations, "episodes_per_iteration": args.episodes,
        "gradient_steps_per_iteration": args.steps,
        "optimizer": f"Adam lr {args.lr:g} batch 64 (with replacement)",
        "loss": "cross-entropy", "noise_curriculum": "sigma/2 in iteration 0, then sigma",
        "network": "NatureCNN (conv 32x8s4, 64x4s2, 64x3s1, fc 512), logits head",
        "eval_seeds": f"{eval_seeds[0]}..{eval_seeds[-1]} (held out)",
        "history": history, "train_seconds": round(time.time() - t0, 1),
        "torch_threads": args.threads,
    }
    ckpt = Path(f"/tmp/certrl_atari_{args.game}_seed{args.seed}.pt")
    torch.save({"state_dict": net.state_dict(), "training": training}, ckpt)
    log(f"checkpoint {ckpt}")
    if args.out:
        from certrl.policies.bundle import save_cnn_bundle

        path = save_cnn_bundle(ROOT / "certrl" / "demo" / args.out, net=net,
                               obs_shape=(4, 84, 84), n_actions=n_actions, head="categorical",
                               env_id=spec.gym_id, training=training)
        log(f"wrote {path}")
    else:
        print(json.dumps(training, indent=1))


if __name__ == "__main__":
    main()
