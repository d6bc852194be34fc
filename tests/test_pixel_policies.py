"""Pixel (Atari CNN) policies: SB3 CnnPolicy zips, CleanRL Atari state dicts, TorchScript and ONNX
CNN modules load as one flattened-input Policy that reproduces the original network (values,
actions and input gradients), with the /255 scaling as its observation normalization."""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from certrl.policies import ObsNormalization, PolicyError, load_policy, validate_spaces
from certrl.policies.base import Policy

SHAPE = (4, 84, 84)
OBS_DIM = 4 * 84 * 84
N_ACTIONS = 6
IMAGE = spaces.Box(0, 255, SHAPE, np.uint8)
ENV_ID = "FakeAtari-v0"


class FakeAtari(gym.Env):
    """Random channels-first frame stacks, like AtariWrapper + VecFrameStack(4) + transpose."""

    def __init__(self, action_space: gym.Space | None = None,
                 obs_space: gym.Space | None = None) -> None:
        self.observation_space = obs_space or IMAGE
        self.action_space = action_space or spaces.Discrete(N_ACTIONS)

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        return self.observation_space.sample(), 0.0, False, False, {}


def _frames(n: int, seed: int = 0, shape: tuple[int, ...] = SHAPE) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _flat(frames: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(frames.reshape(len(frames), -1), dtype=torch.float32)


def _head(policy: Policy, x: torch.Tensor) -> torch.Tensor:
    return policy.head_output(policy.normalize(x))


def _perturb(module: nn.Module, seed: int = 0, scale: float = 0.05) -> None:
    """Random offsets on every parameter (biases start at zero), so matching is not trivial."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)


def _check_structure(policy: Policy, shape: tuple[int, ...] = SHAPE) -> None:
    net = policy.net
    assert isinstance(net, nn.Sequential)
    assert isinstance(net[0], nn.Unflatten) and tuple(net[0].unflattened_size) == shape
    convs = [m for m in net if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(4, 4), (2, 2), (1, 1)]
    assert [c.kernel_size for c in convs] == [(8, 8), (4, 4), (3, 3)]
    assert any(isinstance(m, nn.Flatten) for m in net) and isinstance(net[-1], nn.Linear)


def _assert_pixel_norm(policy: Policy) -> None:
    x = _flat(_frames(3, seed=9))
    assert policy.obs_norm is not None and policy.obs_norm.is_pixel_scale
    torch.testing.assert_close(policy.normalize(x), x / 255.0, rtol=0, atol=1e-7)


def _grad_pair(policy: Policy, reference: Any, weights: torch.Tensor, log_softmax: bool = False,
               shape: tuple[int, ...] = SHAPE) -> tuple[torch.Tensor, torch.Tensor]:
    """d(w . output)/d(raw observation) through certrl and through the reference network."""
    x = _flat(_frames(3, seed=5, shape=shape)).requires_grad_(True)
    out = _head(policy, x)
    if log_softmax:
        out = torch.log_softmax(out, -1)
    (g,) = torch.autograd.grad((out * weights).sum(), x)
    xi = x.detach().reshape(3, *shape).clone().requires_grad_(True)
    (g_ref,) = torch.autograd.grad((reference(xi) * weights).sum(), xi)
    return g, g_ref.reshape(3, -1)


# ------------------------------------------------------------------------------ SB3 CnnPolicy
def _sb3_model(algo: str, policy_kwargs: dict[str, Any] | None = None,
               env: gym.Env | None = None, policy: str = "CnnPolicy") -> Any:
    from stable_baselines3 import A2C, DQN, PPO

    env = env or FakeAtari()
    kw: dict[str, Any] = {"policy_kwargs": dict(policy_kwargs or {}), "seed": 0,
                          "device": "cpu"}
    if algo == "DQN":
        model = DQN(policy, env, buffer_size=100, learning_starts=10**9, **kw)
    elif algo == "PPO":
        model = PPO(policy, env, n_steps=8, batch_size=8, **kw)
    else:
        model = A2C(policy, env, **kw)
    _perturb(model.policy, seed=len(algo) + len(str(policy_kwargs)))
    return model


def _sb3_out(model: Any, obs: torch.Tensor, algo: str) -> torch.Tensor:
    """Q-values (DQN) or the normalized log-probabilities of SB3's action distribution."""
    if algo == "DQN":
        return model.policy.q_net(obs)
    return model.policy.get_distribution(obs).distribution.logits


SB3_CASES = [
    ("DQN", {}),
    ("PPO", {}),
    ("A2C", {}),
    ("PPO", {"share_features_extractor": False}),
    ("PPO", {"net_arch": [64]}),
    ("DQN", {"net_arch": [64]}),
    ("A2C", {"normalize_images": False, "net_arch": [32, 16], "activation_fn": nn.ReLU}),
]


@pytest.mark.parametrize(("algo", "policy_kwargs"), SB3_CASES,
                         ids=[f"{a}-{'-'.join(k) or 'default'}" for a, k in SB3_CASES])
def test_sb3_cnn_policy(tmp_path: Path, algo: str, policy_kwargs: dict[str, Any]) -> None:
    model = _sb3_model(algo, policy_kwargs)
    model.save(tmp_path / "model.zip")
    policy = load_policy(tmp_path / "model.zip")

    assert policy.obs_dim == OBS_DIM and policy.obs_shape == SHAPE
    assert policy.head == ("qvalues" if algo == "DQN" else "categorical")
    assert policy.n_actions == N_ACTIONS
    _check_structure(policy)
    details = policy.info.details
    assert details["observation"] == "pixels" and details["obs_shape"] == list(SHAPE)
    assert details["features_extractor"] == "NatureCNN"
    assert policy.describe()["obs_shape"] == list(SHAPE)
    scaled = policy_kwargs.get("normalize_images", True)
    if scaled:
        _assert_pixel_norm(policy)
    else:
        assert policy.obs_norm is None and details["pixel_scaling"] == "none"
    if policy_kwargs.get("net_arch"):
        n_linear = sum(isinstance(m, nn.Linear) for m in policy.net)
        assert n_linear == 2 + len(policy_kwargs["net_arch"])

    frames = _frames(33, seed=1)
    with torch.no_grad():
        ours = _head(policy, _flat(frames))
        ref = _sb3_out(model, torch.as_tensor(frames), algo)
        if algo != "DQN":
            ours = torch.log_softmax(ours, -1)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
        # a single row goes through the padded path
        one = _head(policy, _flat(frames[:1]))
        one = one if algo == "DQN" else torch.log_softmax(one, -1)
        torch.testing.assert_close(one, ref[:1], rtol=1e-5, atol=1e-5)
    sb3_actions, _ = model.predict(frames, deterministic=True)
    np.testing.assert_array_equal(policy.predict(_flat(frames).numpy()), sb3_actions)
    assert (ref - ref.mean(0)).abs().max() > 1e-3  # the outputs depend on the frames

    w = torch.randn(3, N_ACTIONS, generator=torch.Generator().manual_seed(2))
    g, g_ref = _grad_pair(policy, lambda xi: _sb3_out(model, xi, algo), w,
                          log_softmax=algo != "DQN")
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-7)

    env = FakeAtari()
    assert validate_spaces(policy, env.observation_space, env.action_space, ENV_ID) is policy


def test_sb3_cnn_continuous_actions(tmp_path: Path) -> None:
    """PPO CnnPolicy on Box actions (CarRacing-like): Gaussian mean, clipped like predict."""
    box = spaces.Box(-1.0, 1.0, (2,), np.float32)
    model = _sb3_model("PPO", env=FakeAtari(action_space=box))
    model.save(tmp_path / "car.zip")
    policy = load_policy(tmp_path / "car.zip")
    assert policy.head == "gaussian" and policy.act_dim == 2 and policy.obs_shape == SHAPE
    _check_structure(policy)
    frames = _frames(20, seed=3)
    with torch.no_grad():
        mean = model.policy.get_distribution(torch.as_tensor(frames)).distribution.mean
        torch.testing.assert_close(_head(policy, _flat(frames)), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(policy.predict(_flat(frames).numpy()),
                               model.predict(frames, deterministic=True)[0], atol=1e-5)


def test_sb3_mlp_policy_on_frames_is_scaled(tmp_path: Path) -> None:
    """SB3 also divides uint8 frames by 255 for MlpPolicy (FlattenExtractor)."""
    model = _sb3_model("PPO", {"net_arch": [8]}, policy="MlpPolicy")
    model.save(tmp_path / "mlp.zip")
    policy = load_policy(tmp_path / "mlp.zip")
    assert policy.obs_shape == SHAPE and policy.info.details["features_extractor"] == \
        "FlattenExtractor"
    _assert_pixel_norm(policy)
    frames = _frames(17, seed=4)
    with torch.no_grad():
        ours = torch.log_softmax(_head(policy, _flat(frames)), -1)
        ref = _sb3_out(model, torch.as_tensor(frames), "PPO")
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def _rewrite_policy_pth(src: Path, dst: Path, edit: Any) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename == "policy.pth":
                state = torch.load(io.BytesIO(data), weights_only=True)
                edit(state)
                buf = io.BytesIO()
                torch.save(state, buf)
                data = buf.getvalue()
            zout.writestr(item, data)
    return dst


def test_sb3_refusals(tmp_path: Path) -> None:
    model = _sb3_model("DQN")
    model.save(tmp_path / "dqn.zip")

    def five_by_five(state: dict[str, torch.Tensor]) -> None:
        state["q_net.features_extractor.cnn.0.weight"] = torch.zeros(32, 4, 5, 5)

    bad = _rewrite_policy_pth(tmp_path / "dqn.zip", tmp_path / "bad.zip", five_by_five)
    with pytest.raises(PolicyError, match="only NatureCNN-style extractors") as e:
        load_policy(bad)
    assert "32x5x5" in str(e.value) and "\n" not in str(e.value)

    def renamed(state: dict[str, torch.Tensor]) -> None:
        state["q_net.features_extractor.body.0.weight"] = state.pop(
            "q_net.features_extractor.cnn.0.weight")

    custom = _rewrite_policy_pth(tmp_path / "dqn.zip", tmp_path / "custom.zip", renamed)
    with pytest.raises(PolicyError, match="custom features extractor.*body.0.weight"):
        load_policy(custom)

    def small_head(state: dict[str, torch.Tensor]) -> None:
        state["q_net.features_extractor.linear.0.weight"] = torch.zeros(512, 1024)

    wrong = _rewrite_policy_pth(tmp_path / "dqn.zip", tmp_path / "wrong.zip", small_head)
    with pytest.raises(PolicyError, match="3136 features but the first dense layer takes 1024"):
        load_policy(wrong)


def test_sb3_sac_cnn_refused(tmp_path: Path) -> None:
    from stable_baselines3 import SAC

    env = FakeAtari(action_space=spaces.Box(-1.0, 1.0, (2,), np.float32))
    SAC("CnnPolicy", env, buffer_size=10, learning_starts=10**9, device="cpu").save(
        tmp_path / "sac.zip")
    with pytest.raises(PolicyError, match="SAC with a learned features extractor"):
        load_policy(tmp_path / "sac.zip")


# ------------------------------------------------------------------------- CleanRL Atari nets
def _nature_trunk(channels: int = 4) -> list[nn.Module]:
    return [nn.Conv2d(channels, 32, 8, stride=4), nn.ReLU(), nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(), nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(3136, 512), nn.ReLU()]


class AtariQNetwork(nn.Module):
    """The layout of CleanRL's dqn_atari.py QNetwork."""

    def __init__(self, n: int = N_ACTIONS) -> None:
        super().__init__()
        self.network = nn.Sequential(*_nature_trunk(), nn.Linear(512, n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(x / 255.0)


class AtariAgent(nn.Module):
    """The layout of CleanRL's ppo_atari.py Agent; ``forward`` gives the actor's logits."""

    def __init__(self, n: int = N_ACTIONS) -> None:
        super().__init__()
        self.network = nn.Sequential(*_nature_trunk())
        self.actor = nn.Linear(512, n)
        self.critic = nn.Linear(512, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.actor(self.network(x / 255.0))


@pytest.mark.parametrize("kind", ["dqn_atari", "ppo_atari"])
def test_cleanrl_atari(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    module = AtariQNetwork() if kind == "dqn_atari" else AtariAgent()
    _perturb(module, seed=1, scale=0.02)
    module.eval()
    torch.save(module.state_dict(), tmp_path / "agent.pt")
    frames = _frames(21, seed=6)
    with torch.no_grad():
        ref = module(torch.as_tensor(frames, dtype=torch.float32))
    for space in (None, IMAGE):
        policy = load_policy(tmp_path / "agent.pt", observation_space=space)
        assert policy.info.format == "cleanrl" and policy.info.details["cleanrl_actor"] == kind
        assert policy.head == ("qvalues" if kind == "dqn_atari" else "categorical")
        assert policy.obs_shape == SHAPE and policy.n_actions == N_ACTIONS
        assert policy.info.details["obs_shape_from"].startswith(
            "environment" if space is not None else "inferred")
        _check_structure(policy)
        _assert_pixel_norm(policy)
        with torch.no_grad():
            torch.testing.assert_close(_head(policy, _flat(frames)), ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(policy.predict(_flat(frames).numpy()),
                                      ref.argmax(-1).numpy())
    assert (ref - ref.mean(0)).abs().max() > 1e-3
    w = torch.randn(3, N_ACTIONS, generator=torch.Generator().manual_seed(3))
    g, g_ref = _grad_pair(policy, module, w)
    assert g.abs().sum() > 0
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-7)

    with pytest.raises(PolicyError, match="frames of another size"):
        load_policy(tmp_path / "agent.pt", observation_space=spaces.Box(0, 255, (4, 64, 64),
                                                                         np.uint8))
    with pytest.raises(PolicyError, match="channels-last"):
        load_policy(tmp_path / "agent.pt", observation_space=spaces.Box(0, 255, (84, 84, 4),
                                                                         np.uint8))


def test_cleanrl_refusals(tmp_path: Path) -> None:
    other = nn.Sequential(nn.Conv2d(4, 16, 5, stride=2), nn.ReLU(), nn.Conv2d(16, 32, 3),
                          nn.ReLU(), nn.Flatten(), nn.Linear(32 * 36 * 36, 6))
    sd = {f"network.{k}": v for k, v in other.state_dict().items()}
    torch.save(sd, tmp_path / "other.pt")
    with pytest.raises(PolicyError, match="only NatureCNN-style extractors") as e:
        load_policy(tmp_path / "other.pt", observation_space=IMAGE)
    assert "16x5x5, 32x3x3" in str(e.value)
    c51 = AtariQNetwork(n=6 * 51).state_dict()
    c51["atoms"] = torch.linspace(-10, 10, 51)
    torch.save(c51, tmp_path / "c51.pt")
    with pytest.raises(PolicyError, match="C51"):
        load_policy(tmp_path / "c51.pt")


# --------------------------------------------------------------------------- validate_spaces
def test_validate_spaces_pixels(tmp_path: Path) -> None:
    torch.save(AtariQNetwork().state_dict(), tmp_path / "q.pt")
    policy = load_policy(tmp_path / "q.pt")
    actions = spaces.Discrete(N_ACTIONS)
    assert validate_spaces(policy, IMAGE, actions, ENV_ID) is policy
    cases = [
        (spaces.Box(-1, 1, (8,)), r"policy expects \(4, 84, 84\) pixels, X-v0 gives 8 vector obs"),
        (spaces.Box(-1, 1, (OBS_DIM,)), "gives 28224 vector observations"),
        (spaces.Box(0, 255, (84, 84, 4), np.uint8), r"channels-last frames \(84, 84, 4\)"),
        (spaces.Box(0, 255, (1, 84, 84), np.uint8), r"gives \(1, 84, 84\) frames"),
    ]
    for space, pattern in cases:
        with pytest.raises(PolicyError, match=pattern) as e:
            validate_spaces(policy, space, actions, "X-v0")
        assert "\n" not in str(e.value)
    with pytest.raises(PolicyError, match="among 6 actions"):
        validate_spaces(policy, IMAGE, spaces.Discrete(4), "X-v0")
    # a vector policy on an image environment
    from certrl.policies.base import build_mlp

    vec = Policy(build_mlp([8, 4, 6]), "qvalues", 8, n_actions=6)
    with pytest.raises(PolicyError, match=r"8 vector observations but X-v0 gives \(4, 84, 84\)"):
        validate_spaces(vec, IMAGE, actions, "X-v0")
    # the observation shape survives rebuilding (e.g. when normalization changes)
    from certrl.policies._nets import rebuild

    again = rebuild(policy, obs_norm=ObsNormalization.pixels())
    assert again.obs_shape == SHAPE
    with pytest.raises(PolicyError, match="pixel policy"):
        stats = tmp_path / "stats.npz"
        np.savez(stats, mean=np.zeros(OBS_DIM), var=np.ones(OBS_DIM))
        load_policy(tmp_path / "q.pt", obs_stats=stats)


# ------------------------------------------------------------------------ TorchScript / ONNX
def test_torchscript_cnn(tmp_path: Path) -> None:
    torch.manual_seed(1)
    module = AtariQNetwork().eval()
    _perturb(module, seed=2, scale=0.02)
    torch.jit.save(torch.jit.script(module), str(tmp_path / "q.ts"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        policy = load_policy(tmp_path / "q.ts", observation_space=IMAGE,
                             action_space=spaces.Discrete(N_ACTIONS))
        with pytest.raises(PolicyError, match="convolutional module.*--env"):
            load_policy(tmp_path / "q.ts")
    assert policy.info.format == "torchscript" and policy.head == "categorical"
    assert policy.obs_dim == OBS_DIM and policy.obs_shape == SHAPE
    _assert_pixel_norm(policy)
    frames = _frames(19, seed=7)
    x = _flat(frames)
    with torch.no_grad():
        ref = module(torch.as_tensor(frames, dtype=torch.float32))
        torch.testing.assert_close(_head(policy, x), ref, rtol=1e-5, atol=1e-5)
        # the net itself takes flattened [0, 1] pixels
        torch.testing.assert_close(policy.net(x / 255.0), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(policy.predict(x.numpy()), ref.argmax(-1).numpy())
    w = torch.randn(3, N_ACTIONS, generator=torch.Generator().manual_seed(4))
    g, g_ref = _grad_pair(policy, module, w)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-7)
    env = FakeAtari()
    assert validate_spaces(policy, env.observation_space, env.action_space, ENV_ID) is policy


@pytest.fixture
def ort() -> Any:
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


def _export_onnx(module: nn.Module, path: Path, shape: tuple[int, ...], dynamo: bool = False
                 ) -> Path:
    module.eval()
    kw: dict[str, Any] = ({"dynamic_shapes": ({0: torch.export.Dim("batch")},)} if dynamo
                          else {"dynamic_axes": {"input": {0: "batch"}}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(2, *shape),), str(path), input_names=["input"],
                          opset_version=18 if dynamo else 17, dynamo=dynamo, **kw)
    return path


def _run_ort(ort: Any, path: Path, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]


@pytest.mark.parametrize("dynamo", [False, True], ids=["torchscript-exporter", "dynamo"])
def test_onnx_nature_cnn(tmp_path: Path, dynamo: bool, ort: Any) -> None:
    torch.manual_seed(2)
    module = AtariQNetwork()
    _perturb(module, seed=3, scale=0.02)
    path = _export_onnx(module, tmp_path / "q.onnx", SHAPE, dynamo=dynamo)
    policy = load_policy(path, observation_space=IMAGE, action_space=spaces.Discrete(N_ACTIONS))
    assert policy.info.format == "onnx" and policy.head == "categorical"
    assert policy.obs_shape == SHAPE and policy.info.details["structure"].startswith("cnn")
    _check_structure(policy)
    _assert_pixel_norm(policy)
    frames = _frames(33, seed=8)
    ref = _run_ort(ort, path, frames.astype(np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(_head(policy, _flat(frames)).numpy(), ref, rtol=1e-5,
                                   atol=1e-5)
    np.testing.assert_array_equal(policy.predict(_flat(frames).numpy()), ref.argmax(-1))
    w = torch.randn(3, N_ACTIONS, generator=torch.Generator().manual_seed(5))
    g, g_ref = _grad_pair(policy, module, w)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-7)


class _OddCNN(nn.Module):
    """Padding, groups, dilation, max-pooling and a ``* (1/255)`` scaling (not NatureCNN)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2), nn.Tanh(), nn.Flatten(),
            nn.Linear(8 * 5 * 5, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x * (1.0 / 255.0))


def test_onnx_conv_options(tmp_path: Path, ort: Any) -> None:
    torch.manual_seed(3)
    shape = (3, 20, 20)
    module = _OddCNN()
    path = _export_onnx(module, tmp_path / "odd.onnx", shape)
    space = spaces.Box(0, 255, shape, np.uint8)
    policy = load_policy(path, observation_space=space, action_space=spaces.Discrete(3))
    assert policy.info.details["structure"].startswith("cnn"), policy.info.details["structure"]
    kinds = [type(m).__name__ for m in policy.net]
    assert kinds[:6] == ["Unflatten", "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "Tanh"]
    assert policy.net[4].groups == 2 and policy.net[4].dilation == (2, 2)
    frames = _frames(9, seed=10, shape=shape)
    ref = _run_ort(ort, path, frames.astype(np.float32))
    with torch.no_grad():
        np.testing.assert_allclose(_head(policy, _flat(frames)).numpy(), ref, rtol=1e-5,
                                   atol=1e-5)
    g, g_ref = _grad_pair(policy, module, torch.ones(3, 3), shape=shape)
    torch.testing.assert_close(g, g_ref, rtol=1e-4, atol=1e-7)
    # the wrong frames, and no environment at all
    with pytest.raises(PolicyError, match=r"takes images \[batch, 3, 20, 20\].*\(3, 16, 16\)"):
        load_policy(path, observation_space=spaces.Box(0, 255, (3, 16, 16), np.uint8))
    with pytest.raises(PolicyError, match="an image input: pass --env"):
        load_policy(path)
