"""ONNX policies: graphs from torch.onnx.export, SB3's documented export and onnx.helper are
converted to torch modules that reproduce onnxruntime, act like SB3's predict, have gradients,
and (for MLPs) are accepted by bound propagation."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import nn

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from certrl.certificates.propagation import BoundError, extract_mlp, output_bounds  # noqa: E402
from certrl.policies import PolicyError, detect_format, load_policy, validate_spaces  # noqa: E402
from certrl.policies.base import Policy  # noqa: E402
from certrl.policies.onnx import SUPPORTED_OPS, OnnxGraphModule, is_onnx_file, load_onnx  # noqa: E402

BATCHES = (1, 4, 33)


# ----------------------------------------------------------------------------------- helpers
def _export(module: nn.Module, path: Path, obs_dim: int, *, dynamo: bool = False,
            dynamic: bool = True) -> Path:
    module.eval()
    kwargs: dict[str, Any] = {"dynamic_axes": {"input": {0: "batch"}}} if dynamic else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.zeros(1, obs_dim),), str(path), input_names=["input"],
                          opset_version=18 if dynamo else 17, dynamo=dynamo, **kwargs)
    return path


def _ort(path: Path, x: np.ndarray) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})


def _head(policy: Policy, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return policy.head_output(policy.normalize(torch.as_tensor(x, dtype=torch.float32))).numpy()


def _assert_grad(policy: Policy) -> None:
    x = torch.randn(5, policy.obs_dim, requires_grad=True)
    (g,) = torch.autograd.grad(policy.head_output(policy.normalize(x)).sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


def _save(graph: Any, path: Path, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="certrl-test")
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def _init(name: str, a: np.ndarray) -> Any:
    return numpy_helper.from_array(np.asarray(a, dtype=np.float32), name)


def _io(name: str, dims: list[Any], elem: int = TensorProto.FLOAT) -> Any:
    return helper.make_tensor_value_info(name, elem, dims)


class _Normalized(nn.Module):
    def __init__(self, obs_dim: int, act: type[nn.Module], out: int, inv: bool) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.register_buffer("mu", torch.randn(obs_dim, generator=g))
        self.register_buffer("sd", torch.rand(obs_dim, generator=g) + 0.5)
        self.inv = inv
        self.net = nn.Sequential(nn.Linear(obs_dim, 16), act(), nn.Linear(16, 16), act(),
                                 nn.Linear(16, out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inv:
            return self.net((x - self.mu) * (1.0 / self.sd))
        return self.net(torch.clamp((x - self.mu) / self.sd, -5.0, 5.0))


# ------------------------------------------------------------------------ torch.onnx.export
@pytest.mark.parametrize("act", [nn.Tanh, nn.ReLU])
@pytest.mark.parametrize("norm", [None, "div_clip", "mul"])
def test_torch_export_mlp(tmp_path: Path, act: type[nn.Module], norm: str | None) -> None:
    torch.manual_seed(0)
    if norm is None:
        module: nn.Module = nn.Sequential(nn.Linear(5, 16), act(), nn.Linear(16, 2))
    else:
        module = _Normalized(5, act, 2, inv=norm == "mul")
    path = _export(module, tmp_path / "mlp.onnx", 5)
    policy = load_onnx(path)
    assert policy.info.format == "onnx" and policy.head == "linear" and policy.obs_dim == 5
    assert isinstance(policy.net, nn.Sequential) and "mlp" in policy.info.details["structure"]
    rng = np.random.default_rng(0)
    for b in BATCHES:
        x = rng.normal(size=(b, 5)).astype(np.float32) * 2
        np.testing.assert_allclose(_head(policy, x), _ort(path, x)[0], atol=1e-5)
    if norm is None:
        assert not policy.has_normalization
        assert "raw observations" in policy.info.details["graph_normalization"]
    else:
        assert policy.has_normalization
        assert policy.obs_norm is not None
        np.testing.assert_allclose(policy.obs_norm.mean, module.mu.numpy(), atol=1e-7)
        np.testing.assert_allclose(np.sqrt(policy.obs_norm.var), module.sd.numpy(), rtol=1e-6)
        assert policy.obs_norm.clip == (5.0 if norm == "div_clip" else np.inf)
    _assert_grad(policy)
    policy.with_action_bounds(np.full(2, -1e3), np.full(2, 1e3))
    spec = extract_mlp(policy)
    assert spec.in_dim == 5 and spec.out_dim == 2
    x0 = torch.randn(3, 5)
    bounds = output_bounds(policy, policy.normalize(x0), 0.01, method="ibp")
    y = policy.head_output(policy.normalize(x0))
    assert (bounds.lower <= y).all() and (y <= bounds.upper).all()


def test_dynamo_export(tmp_path: Path) -> None:
    pytest.importorskip("onnxscript")
    torch.manual_seed(1)
    module = _Normalized(4, nn.Tanh, 3, inv=False)
    try:
        path = _export(module, tmp_path / "dyn.onnx", 4, dynamo=True)
    except Exception as e:  # noqa: BLE001 - exporter availability, not certrl
        pytest.skip(f"dynamo exporter unavailable: {e}")
    policy = load_onnx(path)
    assert isinstance(policy.net, nn.Sequential) and policy.has_normalization
    rng = np.random.default_rng(1)
    for b in BATCHES:
        x = rng.normal(size=(b, 4)).astype(np.float32) * 3
        np.testing.assert_allclose(_head(policy, x), _ort(path, x)[0], atol=1e-5)
    np.testing.assert_allclose(np.sqrt(policy.obs_norm.var), module.sd.numpy(), rtol=1e-6)
    data = tmp_path / "dyn.onnx.data"  # the dynamo exporter keeps tensors >= 1 KiB outside
    if data.exists():
        assert policy.info.details["external_data"] == [str(data.resolve())]
        data.rename(tmp_path / "elsewhere.data")
        with pytest.raises(PolicyError, match="missing"):
            load_onnx(path)


# ---------------------------------------------------------------- SB3's documented export
class OnnxableSB3Policy(nn.Module):
    """SB3 export guide: ``policy(observation, deterministic=True)`` (PPO: actions, values,
    log_prob; SAC / TD3 actor: the tanh-squashed action)."""

    def __init__(self, policy: nn.Module) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, observation: torch.Tensor) -> Any:
        return self.policy(observation, deterministic=True)


@pytest.fixture(scope="module")
def sb3(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Any, Path, str]]:
    sb3 = pytest.importorskip("stable_baselines3")
    d = tmp_path_factory.mktemp("sb3")
    kw = {"policy_kwargs": {"net_arch": [16, 16]}, "seed": 0, "device": "cpu"}
    out: dict[str, tuple[Any, Path, str]] = {}
    ppo = sb3.PPO("MlpPolicy", "Pendulum-v1", **kw)
    with torch.no_grad():
        ppo.policy.action_net.weight.normal_(0.0, 1.0)  # some actions fall outside [-2, 2]
    out["ppo_box"] = (ppo, _export(OnnxableSB3Policy(ppo.policy), d / "ppo_box.onnx", 3),
                      "Pendulum-v1")
    ppo_d = sb3.PPO("MlpPolicy", "CartPole-v1", **kw)
    out["ppo_discrete"] = (ppo_d, _export(OnnxableSB3Policy(ppo_d.policy), d / "ppo_d.onnx", 4),
                           "CartPole-v1")
    # the guide's exact call: a static batch of 1
    out["ppo_discrete_static"] = (ppo_d, _export(OnnxableSB3Policy(ppo_d.policy),
                                                 d / "ppo_d_static.onnx", 4, dynamic=False),
                                  "CartPole-v1")
    sac = sb3.SAC("MlpPolicy", "Pendulum-v1", **kw)
    with torch.no_grad():
        sac.policy.actor.mu.weight.mul_(10.0)
    out["sac"] = (sac, _export(OnnxableSB3Policy(sac.policy.actor), d / "sac.onnx", 3),
                  "Pendulum-v1")
    return out


def _obs(env_id: str, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scale = {"Pendulum-v1": np.array([1.0, 1.0, 8.0]), "CartPole-v1": np.array([2.0, 2, 0.2, 2])}
    return (rng.uniform(-1, 1, size=(n, len(scale[env_id]))) * scale[env_id]).astype(np.float32)


def _checked(name: str, sb3: dict[str, tuple[Any, Path, str]]) -> tuple[Any, Path, Policy]:
    model, path, env_id = sb3[name]
    env = gym.make(env_id)
    try:
        policy = validate_spaces(load_onnx(path), env.observation_space, env.action_space, env_id)
    finally:
        env.close()
    return model, path, policy


def _sb3_predict(model: Any, obs: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return model.predict(obs, deterministic=True)[0]


def test_sb3_ppo_box(sb3: dict[str, tuple[Any, Path, str]]) -> None:
    model, path, policy = _checked("ppo_box", sb3)
    assert policy.head == "linear" and not policy.has_normalization
    assert isinstance(policy.net, nn.Sequential)
    for b in BATCHES:
        x = _obs("Pendulum-v1", b, seed=b)
        np.testing.assert_allclose(_head(policy, x), _ort(path, x)[0], atol=1e-5)
    obs = _obs("Pendulum-v1", 64)
    ours, theirs = policy.predict(obs), _sb3_predict(model, obs)
    assert (np.abs(_head(policy, obs)) > 2).any()  # the clip is exercised
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    _assert_grad(policy)
    spec = extract_mlp(policy)
    assert [layer.kind for layer in spec.layers] == ["affine", "tanh", "affine", "tanh", "affine"]


def test_sb3_ppo_discrete(sb3: dict[str, tuple[Any, Path, str]]) -> None:
    model, path, policy = _checked("ppo_discrete", sb3)
    assert policy.head == "categorical" and policy.n_actions == 2
    assert "ArgMax" in policy.info.details["output"]
    for b in BATCHES:
        x = _obs("CartPole-v1", b, seed=b)
        np.testing.assert_array_equal(policy.predict(x), _ort(path, x)[0].reshape(-1))
        with torch.no_grad():
            ref = model.policy.get_distribution(torch.as_tensor(x)).distribution.logits
            got = torch.log_softmax(torch.as_tensor(_head(policy, x)), -1)
        np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-5)
    obs = _obs("CartPole-v1", 200)
    ours, theirs = policy.predict(obs), _sb3_predict(model, obs)
    assert len(set(ours.tolist())) == 2
    np.testing.assert_array_equal(ours, theirs)
    _assert_grad(policy)
    assert extract_mlp(policy).out_dim == 2


def test_sb3_documented_static_batch(sb3: dict[str, tuple[Any, Path, str]]) -> None:
    model, path, policy = _checked("ppo_discrete_static", sb3)
    assert policy.info.details["input_shape"] == [1, 4]
    x = _obs("CartPole-v1", 1, seed=5)
    np.testing.assert_array_equal(policy.predict(x), _ort(path, x)[0].reshape(-1))
    obs = _obs("CartPole-v1", 37, seed=6)  # any batch size, although the graph says 1
    np.testing.assert_array_equal(policy.predict(obs), _sb3_predict(model, obs))
    assert isinstance(policy.net, nn.Sequential)


def test_sb3_sac_tanh(sb3: dict[str, tuple[Any, Path, str]]) -> None:
    model, path, policy = _checked("sac", sb3)
    assert policy.head == "deterministic"
    assert "tanh-squashed" in policy.info.details["output"]
    for b in BATCHES:
        x = _obs("Pendulum-v1", b, seed=b)
        np.testing.assert_allclose(_head(policy, x), _ort(path, x)[0], atol=1e-5)
    obs = _obs("Pendulum-v1", 64)
    ours, theirs = policy.predict(obs), _sb3_predict(model, obs)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    assert np.abs(ours).max() > 1.0  # rescaled to [-2, 2], not left in [-1, 1]
    _assert_grad(policy)
    spec = extract_mlp(policy)
    assert spec.layers[-1].kind == "tanh" and spec.head == "deterministic"


# ----------------------------------------------------------------------- hand-built graphs
def _gemm_graph(path: Path, variant: str, obs: Any = 4) -> Path:
    rng = np.random.default_rng(7)
    w1, b1 = rng.normal(size=(4, 8)), rng.normal(size=8)
    w2, b2 = rng.normal(size=(8, 3)), rng.normal(size=3)
    inits = [_init("w1", w1), _init("b1", b1), _init("w2", w2), _init("b2", b2)]
    nodes = [helper.make_node("Flatten", ["obs"], ["f"], axis=1)]
    if variant == "gemm":  # weights stored [in, out] (transB=0), alpha / beta
        nodes += [helper.make_node("Gemm", ["f", "w1", "b1"], ["h"], alpha=0.5, beta=2.0)]
    else:  # MatMul + Add
        nodes += [helper.make_node("MatMul", ["f", "w1"], ["m"]),
                  helper.make_node("Add", ["m", "b1"], ["h"])]
    inits += [_init("lo", -0.5), _init("hi", 0.7)]
    nodes += [helper.make_node("Clip", ["h", "lo", "hi"], ["c"]),
              helper.make_node("LeakyRelu", ["c"], ["r"], alpha=0.1),
              helper.make_node("MatMul", ["r", "w2"], ["m2"]),
              helper.make_node("Add", ["b2", "m2"], ["y"])]
    graph = helper.make_graph(nodes, "mlp", [_io("obs", ["N", obs])], [_io("y", ["N", 3])], inits)
    return _save(graph, path)


@pytest.mark.parametrize("variant", ["gemm", "matmul"])
def test_hand_built_mlp(tmp_path: Path, variant: str) -> None:
    path = _gemm_graph(tmp_path / "g.onnx", variant)
    policy = load_onnx(path)
    assert isinstance(policy.net, nn.Sequential), policy.info.details["structure"]
    rng = np.random.default_rng(0)
    for b in BATCHES:
        x = rng.normal(size=(b, 4)).astype(np.float32)
        np.testing.assert_allclose(_head(policy, x), _ort(path, x)[0], atol=1e-5)
    _assert_grad(policy)
    policy.with_action_bounds(np.full(3, -5.0), np.full(3, 5.0))
    kinds = [layer.kind for layer in extract_mlp(policy).layers]
    assert kinds == ["affine", "clamp", "leaky_relu", "affine"]
    assert {"Clip", "Flatten", "LeakyRelu", "MatMul"} <= set(policy.info.details["ops"])


def test_hand_built_normalization_opset11_elu(tmp_path: Path) -> None:
    """(x - mean) * inv_std then Clip with attribute bounds (opset < 11) and Elu/Softplus."""
    rng = np.random.default_rng(2)
    mean, inv = rng.normal(size=(1, 3)), rng.uniform(0.5, 2.0, size=3)
    w, b = rng.normal(size=(2, 3)), rng.normal(size=2)
    nodes = [helper.make_node("Sub", ["x", "mean"], ["s"]),
             helper.make_node("Mul", ["inv", "s"], ["z"]),
             helper.make_node("Clip", ["z"], ["zc"], min=-3.0, max=3.0),
             helper.make_node("Gemm", ["zc", "w", "b"], ["h"], transB=1),
             helper.make_node("Elu", ["h"], ["e"], alpha=0.7),
             helper.make_node("Softplus", ["e"], ["y"])]
    inits = [_init("mean", mean), _init("inv", inv), _init("w", w), _init("b", b)]
    graph = helper.make_graph(nodes, "n", [_io("x", ["B", 3])], [_io("y", ["B", 2])], inits)
    path = _save(graph, tmp_path / "n.onnx", opset=10)
    policy = load_onnx(path)
    assert policy.obs_norm is not None and policy.obs_norm.clip == 3.0
    np.testing.assert_allclose(policy.obs_norm.mean, mean.ravel().astype(np.float32), atol=1e-7)
    np.testing.assert_allclose(np.sqrt(policy.obs_norm.var), 1 / inv.astype(np.float32),
                               rtol=1e-6)
    assert "inv_std" in policy.info.details["graph_normalization"]
    x = (rng.normal(size=(9, 3)) * 4).astype(np.float32)
    np.testing.assert_allclose(_head(policy, x), _ort(path, x)[0], atol=1e-5)
    assert isinstance(policy.net, nn.Sequential)
    # a Sequential, but Softplus is not an activation bound propagation relaxes
    with pytest.raises(BoundError, match="Softplus"):
        extract_mlp(policy.with_action_bounds(np.zeros(2), np.ones(2)))


def test_interpreter_fallback(tmp_path: Path) -> None:
    """A residual connection is not a chain: the graph interpreter runs it (with gradients)."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], transB=1),
             helper.make_node("Tanh", ["h"], ["t"]),
             helper.make_node("Add", ["t", "h"], ["r"]),
             helper.make_node("Shape", ["r"], ["shape"]),
             helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "zero1"], ["n1"]),
             helper.make_node("Concat", ["n1", "minus1"], ["target"], axis=0),
             helper.make_node("Reshape", ["r", "target"], ["rr"]),
             helper.make_node("Sqrt", ["sq_in"], ["sq"]),
             helper.make_node("Mul", ["rr", "sq"], ["y0"]),
             helper.make_node("Sigmoid", ["y0"], ["y"])]
    inits = [_init("w1", rng.normal(size=(5, 3))), _init("b1", rng.normal(size=5)),
             numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
             numpy_helper.from_array(np.array([0], dtype=np.int64), "zero1"),
             numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus1"),
             _init("sq_in", rng.uniform(1, 2, size=5))]
    graph = helper.make_graph(nodes, "res", [_io("x", ["B", 3])], [_io("y", ["B", 5])], inits)
    path = _save(graph, tmp_path / "res.onnx")
    policy = load_onnx(path)
    assert isinstance(policy.net, OnnxGraphModule)
    assert "interpreter" in policy.info.details["structure"]
    for b in BATCHES:
        x = rng.normal(size=(b, 3)).astype(np.float32)
        np.testing.assert_allclose(_head(policy, x), _ort(path, x)[0], atol=1e-5)
    _assert_grad(policy)
    with pytest.raises(BoundError):
        extract_mlp(policy.with_action_bounds(np.zeros(5), np.ones(5)))


def test_fixed_batch_graph(tmp_path: Path) -> None:
    """A Reshape to a constant [1, 4] only runs on one row: converted per row, any batch."""
    rng = np.random.default_rng(6)
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Gemm", ["r", "w", "b"], ["h"], transB=1),
             helper.make_node("Tanh", ["h"], ["t"]),
             helper.make_node("Exp", ["t"], ["y"])]
    inits = [numpy_helper.from_array(np.array([1, 4], dtype=np.int64), "shape"),
             _init("w", rng.normal(size=(2, 4))), _init("b", rng.normal(size=2))]
    graph = helper.make_graph(nodes, "fixed", [_io("x", [1, 4])], [_io("y", [1, 2])], inits)
    policy = load_onnx(_save(graph, tmp_path / "fixed.onnx"))
    assert "fixed at 1" in policy.info.details["batch"]
    assert isinstance(policy.net, OnnxGraphModule)  # Exp is not an activation module
    x = rng.normal(size=(7, 4)).astype(np.float32)
    ref = np.concatenate([_ort(tmp_path / "fixed.onnx", x[i:i + 1])[0] for i in range(7)])
    np.testing.assert_allclose(_head(policy, x), ref, atol=1e-5)
    _assert_grad(policy)


# -------------------------------------------------------------------------- heads and spaces
def _logits_graph(path: Path, obs: Any = 4, int_output: bool = False) -> Path:
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["logits"], transB=1)]
    out = "logits"
    if int_output:
        nodes.append(helper.make_node("Cast", ["logits"], ["a"], to=TensorProto.INT64))
        out = "a"
    graph = helper.make_graph(
        nodes, "cls", [_io("x", ["B", obs])],
        [_io(out, ["B", 2], TensorProto.INT64 if int_output else TensorProto.FLOAT)],
        [_init("w", rng.normal(size=(2, 4))), _init("b", rng.normal(size=2))])
    return _save(graph, path)


def test_float_logits_and_discrete_space(tmp_path: Path) -> None:
    path = _logits_graph(tmp_path / "cls.onnx")
    env = gym.make("CartPole-v1")
    try:
        cat = load_onnx(path, action_space=env.action_space)
        assert cat.head == "categorical" and cat.n_actions == 2
        open_head = load_onnx(path)
        assert open_head.head == "linear" and open_head.info.details["head_from_env"]
        checked = validate_spaces(open_head, env.observation_space, env.action_space,
                                  "CartPole-v1")
    finally:
        env.close()
    assert checked.head == "categorical"
    x = _obs("CartPole-v1", 20)
    np.testing.assert_array_equal(checked.predict(x), _ort(path, x)[0].argmax(-1))
    np.testing.assert_array_equal(cat.predict(x), checked.predict(x))


def test_integer_output_not_argmax(tmp_path: Path) -> None:
    path = _logits_graph(tmp_path / "int.onnx", int_output=True)
    with pytest.raises(PolicyError, match="export the logits"):
        load_onnx(path)


def test_symbolic_obs_dim(tmp_path: Path) -> None:
    path = _gemm_graph(tmp_path / "sym.onnx", "gemm", obs="obs_dim")
    with pytest.raises(PolicyError, match="--env") as e:
        load_onnx(path)
    assert "\n" not in str(e.value)
    space = gym.spaces.Box(-1.0, 1.0, shape=(4,), dtype=np.float32)
    policy = load_onnx(path, observation_space=space)
    assert policy.obs_dim == 4 and policy.info.details["obs_dim_from_env"]
    assert load_policy(path, observation_space=space).obs_dim == 4
    wrong = gym.spaces.Box(-1.0, 1.0, shape=(5,), dtype=np.float32)
    with pytest.raises(PolicyError, match="check --env"):
        load_onnx(path, observation_space=wrong)


def test_unsupported_ops(tmp_path: Path) -> None:
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], transB=1),
             helper.make_node("Conv", ["h", "k"], ["y"])]
    graph = helper.make_graph(nodes, "conv", [_io("x", ["B", 4])], [_io("y", ["B", 2])],
                              [_init("w", np.ones((2, 4))), _init("b", np.zeros(2)),
                               _init("k", np.ones((2, 2, 1)))])
    with pytest.raises(PolicyError, match="unsupported ONNX op.*Conv") as e:
        load_onnx(_save(graph, tmp_path / "conv.onnx"))
    assert "\n" not in str(e.value) and "Gemm" in str(e.value)
    custom = helper.make_graph([helper.make_node("FusedGemm", ["x", "w", "b"], ["y"],
                                                 domain="com.microsoft")],
                               "fused", [_io("x", ["B", 4])], [_io("y", ["B", 2])],
                               [_init("w", np.ones((2, 4))), _init("b", np.zeros(2))])
    model = helper.make_model(custom, opset_imports=[helper.make_opsetid("", 17),
                                                     helper.make_opsetid("com.microsoft", 1)])
    onnx.save(model, str(tmp_path / "fused.onnx"))
    with pytest.raises(PolicyError, match="com.microsoft.FusedGemm"):
        load_onnx(tmp_path / "fused.onnx")
    assert "Gemm" in SUPPORTED_OPS and "Conv" not in SUPPORTED_OPS


def test_bad_inputs(tmp_path: Path) -> None:
    two = helper.make_graph([helper.make_node("Add", ["x", "z"], ["y"])], "two",
                            [_io("x", ["B", 4]), _io("z", ["B", 4])], [_io("y", ["B", 4])])
    with pytest.raises(PolicyError, match="exactly one observation input"):
        load_onnx(_save(two, tmp_path / "two.onnx"))
    image = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "img",
                              [_io("x", ["B", 3, 8, 8])], [_io("y", ["B", 3, 8, 8])])
    with pytest.raises(PolicyError, match="vector observations"):
        load_onnx(_save(image, tmp_path / "img.onnx"))
    good = _gemm_graph(tmp_path / "good.onnx", "gemm")
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(good.read_bytes()[:60])
    assert detect_format(damaged) == "onnx"
    with pytest.raises(PolicyError, match="not a loadable ONNX model"):
        load_onnx(damaged)


def test_onnx_not_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _gemm_graph(tmp_path / "g.onnx", "gemm")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError
    assert detect_format(path) == "onnx"
    with pytest.raises(PolicyError, match="pip install onnx"):
        load_onnx(path)


# ------------------------------------------------------------------------- loader and CLI
def test_detect_format(tmp_path: Path) -> None:
    from tests._fixtures import random_bundle

    path = _gemm_graph(tmp_path / "g.onnx", "gemm")
    assert detect_format(path) == "onnx"
    other = tmp_path / "graph.bin"  # content, not the name
    other.write_bytes(path.read_bytes())
    assert detect_format(other) == "onnx"
    torch.save({"w": torch.zeros(2)}, tmp_path / "ckpt.pt")
    assert detect_format(tmp_path / "ckpt.pt") == "torch"
    bundle = random_bundle(tmp_path, "CartPole-v1", hidden=8)
    assert detect_format(bundle) == "bundle"
    assert detect_format(bundle.with_suffix(".safetensors")) == "bundle"
    heads = [b"PK\x03\x04\x14\x00\x00\x00\x08\x00", b"\x80\x02}q\x00(X\x05\x00\x00\x00",
             b'{"format": "x"}', b"\x08\x01\x00\x00\x00\x00\x00\x00{\"__meta",
             b"\x08\x01\x12\x00\x00\x00\x00\x00{\"a\":", b"\x08\x00\x00\x00"]
    for head in heads:
        assert not is_onnx_file(tmp_path / "x.onnx", head), head
        assert not is_onnx_file(tmp_path / "x.bin", head), head
    assert is_onnx_file(path, path.read_bytes()[:16])
    renamed = tmp_path / "ckpt.onnx"  # a pickle named .onnx
    renamed.write_bytes((tmp_path / "ckpt.pt").read_bytes())
    assert detect_format(renamed) == "torch"


def test_load_policy_and_obs_stats(tmp_path: Path) -> None:
    torch.manual_seed(2)
    plain = _export(nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)),
                    tmp_path / "plain.onnx", 3)
    policy = load_policy(plain)
    assert policy.info.format == "onnx" and not policy.has_normalization
    stats = tmp_path / "stats.npz"
    np.savez(stats, mean=np.array([0.1, -0.2, 0.3]), var=np.array([1.0, 2.0, 4.0]))
    with_stats = load_policy(plain, obs_stats=stats)
    assert with_stats.has_normalization
    normed = _export(_Normalized(3, nn.Tanh, 1, inv=False), tmp_path / "normed.onnx", 3)
    with pytest.raises(PolicyError, match="already normalizes"):
        load_policy(normed, obs_stats=stats)
    env = gym.make("Pendulum-v1")
    try:
        checked = validate_spaces(load_policy(normed), env.observation_space, env.action_space,
                                  "Pendulum-v1")
    finally:
        env.close()
    x = _obs("Pendulum-v1", 6)
    np.testing.assert_allclose(checked.predict(x), np.clip(_ort(normed, x)[0], -2, 2), atol=1e-5)


def test_cli_policy_info(sb3: dict[str, tuple[Any, Path, str]],
                         capsys: pytest.CaptureFixture[str]) -> None:
    from certrl.cli import main

    _, path, _ = sb3["ppo_discrete"]
    rc = main(["policy-info", str(path), "--env", "CartPole-v1"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "onnx" in out and "categorical" in out and "compatible: yes" in out
