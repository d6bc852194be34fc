"""Dynamics uncertainty (`certrl stress`, :mod:`certrl.dynamics`): the parameters really change
the physics and are restored, the nominal point reproduces the plain evaluation bit for bit,
grids / samples / drift are reproducible and batch-invariant, the RRLS sets match the RRLS
source, and the command writes a `stress` section that gate and report read."""

from __future__ import annotations

import json

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import torch

from certrl.cli import main
from certrl.dynamics import (
    RRLS_SETS,
    STREAM_DYNAMICS,
    DynamicsHook,
    ParamSpec,
    StressError,
    apply_values,
    check_params,
    grid_cells,
    heatmap,
    mesh_values,
    nominal_value,
    parse_params,
    restore_nominal,
    sample_points,
    summarize_cells,
    uncertainty_set,
)
from certrl.envs import resolve_env
from certrl.evaluator import EvalConfig, run_episodes
from certrl.results import load_results
from tests._fixtures import random_bundle, random_policy

torch.set_num_threads(1)
HOPPER = resolve_env("hopper")


@pytest.fixture(scope="module")
def hopper_policy():
    return random_policy("Hopper-v5", seed=1)


def _trajectory(env: gym.Env, actions: np.ndarray) -> np.ndarray:
    env.reset(seed=123)
    d = env.unwrapped.data
    out = []
    for a in actions:
        # step the physics directly so termination never cuts the comparison short
        env.unwrapped.do_simulation(a, env.unwrapped.frame_skip)
        out.append(np.concatenate([d.qpos, d.qvel]))
    return np.array(out)


def _rets(results) -> list[float]:
    return [r.ret for r in sorted(results, key=lambda r: r.index)]


# ---------------------------------------------------------------------------- parsing
def test_parse_params_forms_and_errors():
    ps = parse_params("torso_mass=0.5:1.5, friction=abs:0.1:3,gravity=1.2")
    assert [(p.name, p.low, p.high, p.absolute) for p in ps] == [
        ("torso_mass", 0.5, 1.5, False), ("friction", 0.1, 3.0, True), ("gravity", 1.2, 1.2, False)]
    assert ps[0].kind == "mass" and ps[0].target == "torso"
    assert ps[1].kind == "friction" and ps[1].target is None
    assert ParamSpec("front_left_leg_mass", 1, 2).target == "front_left_leg"
    for bad, msg in [("torso_mass=1.5:0.5", "LOW <= HIGH"), ("torso_mass=0:1", "> 0"),
                     ("friction=-1:1", ">= 0"), ("torso_mass", "NAME=LO:HI"),
                     ("torso_mass=a:b", "expected"), ("friction=1,friction=2", "twice"),
                     ("", "empty"), ("torso_mass=nan:1", "expected")]:
        with pytest.raises(StressError, match=msg):
            parse_params(bad)


def test_unknown_parameter_lists_valid_names():
    env = gym.make("Hopper-v5")
    try:
        with pytest.raises(StressError, match="unknown dynamics parameter 'tail_mass'.*torso_mass"):
            check_params(env.unwrapped.model, parse_params("tail_mass=1:2"))
        with pytest.raises(StressError, match="unknown"):
            check_params(env.unwrapped.model, parse_params("world_mass=1:2"))  # body 0
        check_params(env.unwrapped.model, parse_params(
            "torso_mass=1:2,floor_friction=1:2,thigh_joint_damping=1:2,damping=1:2,gravity=1:2"))
    finally:
        env.close()
    cart = gym.make("CartPole-v1")
    try:
        with pytest.raises(StressError, match="MuJoCo"):
            check_params(cart.unwrapped, parse_params("friction=1:2"))
    finally:
        cart.close()


# ---------------------------------------------------------------------------- physics
def test_heavier_torso_changes_the_trajectory_and_restore_brings_it_back():
    env = gym.make("Hopper-v5")
    model = env.unwrapped.model
    actions = np.random.default_rng(0).uniform(-1, 1, size=(60, 3))
    base = _trajectory(env, actions)
    nominal = apply_values(model, parse_params("torso_mass=2.0"), [2.0])
    assert model.body_mass[1] == pytest.approx(2 * 3.6651914291880923, rel=1e-12)
    heavy = _trajectory(env, actions)
    assert np.abs(heavy - base).max() > 0.05  # same actions, different motion
    restore_nominal(model, nominal)
    again = _trajectory(env, actions)
    assert np.array_equal(again, base)  # bit for bit
    # friction of every geom (the foot touches the floor within 60 steps)
    apply_values(model, parse_params("friction=0.05"), [0.05], nominal)
    slippery = _trajectory(env, actions)
    assert np.abs(slippery - base).max() > 1e-3
    restore_nominal(model, nominal)
    env.close()


def test_each_kind_writes_its_model_entries():
    env = gym.make("Hopper-v5")
    m = env.unwrapped.model
    nom_f, nom_d = m.geom_friction.copy(), m.dof_damping.copy()
    nom_m, nom_g = m.body_mass.copy(), m.opt.gravity.copy()
    params = parse_params("friction=0.5,thigh_joint_damping=abs:7,gravity=abs:5,thigh_mass=abs:2")
    nominal = apply_values(m, params, [0.5, 7.0, 5.0, 2.0])
    assert np.array_equal(m.geom_friction[:, 0], 0.5 * nom_f[:, 0])
    assert np.array_equal(m.geom_friction[:, 1:], nom_f[:, 1:])  # torsional/rolling untouched
    jid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "thigh_joint")
    dof = int(m.jnt_dofadr[jid])
    expect_d = nom_d.copy()
    expect_d[dof] = 7.0
    assert np.array_equal(m.dof_damping, expect_d)
    assert np.allclose(m.opt.gravity, [0, 0, -5.0])
    assert m.body_mass[2] == 2.0 and np.array_equal(np.delete(m.body_mass, 2),
                                                    np.delete(nom_m, 2))
    # subtree masses follow (root subtree = total mass), so centre-of-mass frames are right
    assert m.body_subtreemass[1] == pytest.approx(nom_m.sum() - nom_m[2] + 2.0, rel=1e-12)
    mujoco.mj_forward(m, env.unwrapped.data)
    d = env.unwrapped.data
    com = (m.body_mass[1:, None] * d.xipos[1:]).sum(0) / m.body_mass[1:].sum()
    assert np.allclose(d.subtree_com[1], com, atol=1e-12)
    # floor only; later parameters win over earlier ones on the same entry
    apply_values(m, parse_params("friction=abs:0.3,floor_friction=abs:1.7"), [0.3, 1.7], nominal)
    assert m.geom_friction[0, 0] == 1.7 and np.all(m.geom_friction[1:, 0] == 0.3)
    # absolute damping: only the damped (actuated) dofs, the root stays free
    apply_values(m, parse_params("damping=abs:3"), [3.0], nominal)
    assert np.array_equal(m.dof_damping, np.where(nom_d != 0, 3.0, 0.0))
    restore_nominal(m, nominal)
    assert np.array_equal(m.body_mass, nom_m) and np.array_equal(m.opt.gravity, nom_g)
    assert np.array_equal(m.geom_friction, nom_f) and np.array_equal(m.dof_damping, nom_d)
    assert nominal_value(m, ParamSpec("torso_mass", 1, 1, True)) == pytest.approx(3.66519143)
    assert nominal_value(m, ParamSpec("friction", 1, 1, True)) is None  # floor 1, foot 2
    assert nominal_value(m, ParamSpec("gravity", 1, 1, True)) == pytest.approx(9.81)
    env.close()


def test_hook_applies_per_episode_and_restores_on_close():
    env = gym.make("Hopper-v5")
    m = env.unwrapped.model
    nom = m.body_mass.copy()
    hook = DynamicsHook(parse_params("torso_mass=0.5:1.5"), values=[1.5])
    hook.bind(None, HOPPER, 1)
    hook.before_reset(env.unwrapped, 0, np.random.default_rng(0))
    assert m.body_mass[1] == pytest.approx(1.5 * nom[1], rel=1e-12)
    hook.close([env.unwrapped])
    assert np.array_equal(m.body_mass, nom)
    # sampled: each episode's generator decides; drift: a bounded random walk
    sh = DynamicsHook(parse_params("torso_mass=0.5:1.5"), drift=0.1)
    sh.bind(None, HOPPER, 1)
    rng = np.random.default_rng(5)
    sh.before_reset(env.unwrapped, 0, rng)
    start = m.body_mass[1] / nom[1]
    assert 0.5 <= start <= 1.5
    seen = []
    for t in range(200):
        sh.before_step(env.unwrapped, 0, t, rng)
        seen.append(m.body_mass[1] / nom[1])
    seen = np.array(seen)
    assert seen[0] == pytest.approx(start)  # step 0 runs at the episode's start values
    assert np.all(seen >= 0.5 - 1e-12) and np.all(seen <= 1.5 + 1e-12)
    assert np.abs(np.diff(seen)).max() <= 0.1 + 1e-12 and np.ptp(seen) > 0.1
    sh.close([env.unwrapped])
    assert np.array_equal(m.body_mass, nom)
    with pytest.raises(StressError, match="drift"):
        DynamicsHook(parse_params("torso_mass=0.5:1.5"), drift=2.0)
    env.close()


# ---------------------------------------------------------------------------- evaluation
@pytest.mark.parametrize("engine", ["gym", "mujoco"])
def test_nominal_cell_reproduces_plain_evaluation(hopper_policy, engine):
    cfg = EvalConfig(seed=4, batch_size=3, engine=engine)
    plain = _rets(run_episodes(hopper_policy, HOPPER, range(4), cfg))
    params = parse_params("torso_mass=0.5:1.5,friction=0.5:2,gravity=0.9:1.1")
    nominal = _rets(run_episodes(hopper_policy, HOPPER, range(4), cfg,
                                 env_hooks=[DynamicsHook(params, [1.0, 1.0, 1.0])]))
    assert nominal == plain
    heavy = _rets(run_episodes(hopper_policy, HOPPER, range(4), cfg,
                               env_hooks=[DynamicsHook(params, [1.5, 1.0, 1.0])]))
    assert all(abs(a - b) > 1e-6 for a, b in zip(heavy, plain, strict=True))


def test_engines_and_batch_sizes_agree_under_changed_dynamics(hopper_policy):
    params = parse_params("torso_mass=0.5:1.5,friction=0.5:2")
    out = {}
    for engine, bs in [("gym", 1), ("gym", 4), ("mujoco", 3)]:
        cfg = EvalConfig(seed=2, batch_size=bs, engine=engine)
        out[engine, bs] = _rets(run_episodes(hopper_policy, HOPPER, range(5), cfg,
                                             env_hooks=[DynamicsHook(params, [0.7, 1.6])]))
    assert out["gym", 1] == out["gym", 4] == out["mujoco", 3]


def test_sampled_and_drifting_parameters_are_batch_invariant(hopper_policy):
    params = parse_params("torso_mass=0.5:1.5,friction=abs:0.5:2")
    runs = []
    for bs in (1, 4):
        cfg = EvalConfig(seed=9, batch_size=bs, engine="gym")
        res = sorted(run_episodes(hopper_policy, HOPPER, range(5), cfg,
                                  env_hooks=[DynamicsHook(params, drift=0.02)]),
                     key=lambda r: r.index)
        runs.append(res)
    assert [r.ret for r in runs[0]] == [r.ret for r in runs[1]]
    assert [r.extras for r in runs[0]] == [r.extras for r in runs[1]]
    starts = [r.extras["dynamics"] for r in runs[0]]
    # episode i's start values come from its own generator of STREAM_DYNAMICS
    from certrl.evaluator import episode_rng

    u = episode_rng(9, 3, STREAM_DYNAMICS).random(2)
    assert starts[3]["torso_mass"] == pytest.approx(0.5 + u[0])
    assert starts[3]["friction"] == pytest.approx(0.5 + 1.5 * u[1])
    assert len({s["torso_mass"] for s in starts}) == 5
    assert all(r.extras["dynamics_end"] != r.extras["dynamics"] for r in runs[0] if r.length > 2)


# ---------------------------------------------------------------------------- designs, sets
def test_meshes_and_samples():
    p = ParamSpec("torso_mass", 0.1, 3.0, True)
    rr = mesh_values(p, 10, "rrls")
    assert np.allclose(rr, np.arange(0.1, 3.0, 0.29), atol=1e-12, rtol=0) and len(rr) == 10
    assert mesh_values(ParamSpec("x_mass", 0.5, 1.5), 5) == [0.5, 0.75, 1.0, 1.25, 1.5]
    assert mesh_values(ParamSpec("x_mass", 2, 2), 5) == [2.0]
    axes, cells = grid_cells(parse_params("torso_mass=0.5:1.5,friction=1"), 3)
    assert axes == [[0.5, 1.0, 1.5], [1.0]] and cells == [(0.5, 1.0), (1.0, 1.0), (1.5, 1.0)]
    with pytest.raises(StressError, match="--grid"):
        mesh_values(p, 0)
    params = parse_params("torso_mass=0.5:1.5,friction=abs:0.1:3")
    a, b = sample_points(params, 6, seed=1), sample_points(params, 3, seed=1)
    assert a[:3] == b  # prefix-stable
    assert a != sample_points(params, 6, seed=2)
    arr = np.array(a)
    assert np.all((arr[:, 0] >= 0.5) & (arr[:, 0] <= 1.5) & (arr[:, 1] >= 0.1) & (arr[:, 1] <= 3))


RRLS_EXPECTED = {  # SuReLI/RRLS rrls/envs/*.py ParamsBound.THREE_DIM, and the body index written
    "Hopper-v5": [("floor_friction", 0.1, 3.0, 0), ("torso_mass", 0.1, 3.0, 1),
                  ("thigh_mass", 0.1, 4.0, 2)],
    "Walker2d-v5": [("floor_friction", 0.1, 4.0, 0), ("torso_mass", 0.1, 5.0, 1),
                    ("thigh_mass", 0.1, 6.0, 2)],
    "HalfCheetah-v5": [("friction", 0.1, 4.0, None), ("torso_mass", 0.1, 7.0, 1),
                       ("bthigh_mass", 0.1, 3.0, 2)],
    "Ant-v5": [("torso_mass", 0.1, 3.0, 1), ("front_left_leg_mass", 0.01, 3.0, 2),
               ("front_right_leg_mass", 0.01, 3.0, 5)],
    "Humanoid-v5": [("torso_mass", 0.1, 16.0, 1), ("left_thigh_mass", 0.1, 5.0, 7),
                    ("right_foot_mass", 0.1, 8.0, 6)],
}


@pytest.mark.parametrize("env_id", sorted(RRLS_EXPECTED))
def test_rrls_sets_match_the_rrls_source(env_id):
    u = uncertainty_set(env_id, "rrls")
    exp = RRLS_EXPECTED[env_id]
    assert [(p.name, p.low, p.high) for p in u.params] == [e[:3] for e in exp]
    assert all(p.absolute for p in u.params) and u.grid == 10 and u.mesh == "rrls"
    env = gym.make(env_id)
    m = env.unwrapped.model
    try:
        check_params(m, list(u.params))
        values = [p.low + 0.37 * (p.high - p.low) for p in u.params]
        apply_values(m, list(u.params), values)
        for (name, _, _, idx), v in zip(exp, values, strict=True):
            if name.endswith("_mass"):
                assert m.body_mass[idx] == v  # the body RRLS writes (model.body_mass[idx])
            elif idx is None:
                assert np.all(m.geom_friction[:, 0] == v)  # HalfCheetah: geom_friction[:, 0]
            else:
                assert m.geom_friction[idx, 0] == v  # geom 0 = floor
    finally:
        env.close()
    assert [p.name for p in uncertainty_set(env_id, "rrls-1d").params] == [exp[0][0]]
    assert uncertainty_set("HalfCheetah-v5", "rrls-1d").params[0].high == 3.0
    assert [p.name for p in uncertainty_set("Humanoid-v5", "rrls-2d").params] == [
        "torso_mass", "right_foot_mass"]


def test_unknown_sets():
    with pytest.raises(StressError, match="no published uncertainty set for CartPole-v1"):
        uncertainty_set("CartPole-v1", "rrls")
    with pytest.raises(StressError, match="unknown uncertainty set 'm2td3'.*rrls-2d"):
        uncertainty_set("Hopper-v5", "m2td3")
    assert set(RRLS_SETS) >= {"Hopper", "Walker2d", "HalfCheetah", "Ant", "Humanoid"}


# ---------------------------------------------------------------------------- statistics
def test_summarize_cells_worst_case_and_average():
    rng = np.random.default_rng(0)
    cells = [rng.normal(100, 5, 20), rng.normal(60, 5, 20), rng.normal(80, 5, 20)]
    s = summarize_cells(cells, seed=0)
    means = [c.mean() for c in cells]
    assert s["worst_index"] == 1
    wc, av = s["worst_case"], s["average"]
    assert wc["mean"] == pytest.approx(min(means), rel=1e-12)
    assert wc["lower"] < wc["mean"] < wc["upper"]
    # the worst cell is far from the others: the CI is that cell's bootstrap CI of the mean
    se = cells[1].std(ddof=1) / np.sqrt(20)
    assert wc["mean"] - wc["lower"] == pytest.approx(1.96 * se, rel=0.25)
    assert av["mean"] == pytest.approx(np.mean(means), rel=1e-12)
    assert av["lower"] < av["mean"] < av["upper"]
    again = summarize_cells(cells, seed=0)  # seeded
    assert again["worst_case"] == wc and again["average"] == av
    # a constant worst cell: no uncertainty about it
    const = summarize_cells([np.full(6, 3.0), np.full(6, 10.0) + np.arange(6)], seed=0)
    assert const["worst_case"]["lower"] == const["worst_case"]["upper"] == 3.0
    # two tied noisy cells: the min-of-means CI is wider below than either cell's alone
    tied = [rng.normal(50, 10, 10), rng.normal(50, 10, 10)]
    t = summarize_cells(tied, seed=1)
    from certrl.dynamics import cell_summary

    assert t["worst_case"]["lower"] < min(cell_summary(c, 1)["mean_ci"][0] for c in tied) + 1.0
    with pytest.raises(StressError, match="same number"):
        summarize_cells([np.ones(3), np.ones(4)], seed=0)


def test_heatmap_layout():
    params = parse_params("torso_mass=0.5:1.5,friction=2,gravity=0.8:1.2")
    axes, cells = grid_cells(params, 3)
    means = np.array([100 * a + c for a, _, c in cells])
    g = heatmap(params, axes, means, [1.0, 1.0, 1.0])
    assert g["names"] == ["torso_mass", "gravity"]
    assert g["values1"] == [0.5, 1.0, 1.5] and g["values2"] == [0.8, 1.0, 1.2]
    assert g["mean"][2][0] == pytest.approx(150 + 0.8) and g["mean"][0][2] == pytest.approx(51.2)
    assert heatmap(params[:1], axes[:1], means[:3], [1.0]) is None


# ---------------------------------------------------------------------------- command line
def _stress_cli(pol, out, *extra):
    return main(["stress", str(pol), "--env", "hopper", "--out", str(out), "--seed", "3",
                 "--no-progress", *extra])


def test_cli_stress_section_gate_and_report(tmp_path, capsys):
    from certrl.report.model import _stress_grid

    pol = random_bundle(tmp_path, "Hopper-v5", seed=2)
    out = tmp_path / "res"
    rc = _stress_cli(pol, out, "--params", "torso_mass=1:1.5,friction=1:2", "--grid", "2",
                     "--episodes", "3", "--workers", "1")
    assert rc == 0
    text = capsys.readouterr().out
    assert "worst case:" in text and "average over 4 points" in text
    assert "torso_mass \\ friction" in text
    path = out / "Hopper-v5_policy.json"
    s = load_results(path)["stress"]
    assert s["design"] == "grid" and s["episodes"] == 3 and len(s["cells"]) == 4
    assert [c["values"] for c in s["cells"]] == [
        {"torso_mass": 1.0, "friction": 1.0}, {"torso_mass": 1.0, "friction": 2.0},
        {"torso_mass": 1.5, "friction": 1.0}, {"torso_mass": 1.5, "friction": 2.0}]
    # the nominal cell and the nominal run both equal `certrl evaluate` with the same seed
    assert main(["evaluate", str(pol), "--env", "hopper", "--episodes", "3", "--seed", "3",
                 "--workers", "1", "--out", str(tmp_path / "ev"), "--no-progress"]) == 0
    ev = load_results(tmp_path / "ev" / "Hopper-v5_policy.json")["evaluation"]["returns"]
    assert s["nominal"]["returns"] == ev == s["cells"][0]["returns"]
    assert s["cells"][2]["returns"] != ev
    means = [np.mean(c["returns"]) for c in s["cells"]]
    wc = s["worst_case"]
    assert wc["index"] == int(np.argmin(means)) and wc["mean"] == pytest.approx(min(means))
    assert wc["lower"] <= wc["mean"] <= wc["upper"]
    assert s["average"]["mean"] == pytest.approx(np.mean(means))
    assert s["grid"]["mean"] == [[means[0], means[1]], [means[2], means[3]]]
    g = _stress_grid(s)
    assert g is not None and g["mean"].shape == (2, 2)
    assert not list((out / ".journal").glob("*.jsonl"))
    capsys.readouterr()
    lo = wc["lower"]
    assert main(["gate", str(path), "--require", f"worst_case_return >= {lo - 1}"]) == 0
    assert main(["gate", str(path), "--require", f"worst_case_return >= {lo + 1}"]) == 1


def test_cli_resume_reuses_journaled_points(tmp_path, capsys):
    from certrl.cli import build_parser
    from certrl.commands.options import job_from_args as build_job
    from certrl.pipeline.stress import _run_point

    pol = random_bundle(tmp_path, "Hopper-v5", seed=2)
    out = tmp_path / "res"
    argv = ["stress", str(pol), "--env", "hopper", "--out", str(out), "--seed", "3",
            "--no-progress", "--params", "torso_mass=0.8:1.2", "--grid", "2", "--episodes", "3",
            "--workers", "1"]
    job = build_job(build_parser().parse_args(argv))
    params = parse_params("torso_mass=0.8:1.2")
    first, _ = _run_point(job, params, (0.8,), 0.0, 3, "")  # "interrupted" after one point
    assert main([*argv, "--resume"]) == 0
    s = load_results(out / "Hopper-v5_policy.json")["stress"]
    assert s["throughput"]["resumed_episodes"] == 3
    assert s["cells"][0]["returns"] == [r.ret for r in first]


def test_cli_samples_and_workers_are_reproducible(tmp_path):
    pol = random_bundle(tmp_path, "Hopper-v5", seed=2)
    secs = []
    for w in ("1", "2"):
        out = tmp_path / f"w{w}"
        assert _stress_cli(pol, out, "--params", "torso_mass=0.5:1.5,floor_friction=abs:0.5:3",
                           "--samples", "2", "--episodes", "2", "--workers", w) == 0
        secs.append(load_results(out / "Hopper-v5_policy.json")["stress"])
    assert secs[1]["throughput"]["workers"] == 2  # whole points on two processes
    assert [c["returns"] for c in secs[0]["cells"]] == [c["returns"] for c in secs[1]["cells"]]
    assert [c["values"] for c in secs[0]["cells"]] == [
        dict(zip(["torso_mass", "floor_friction"], v, strict=True)) for v in sample_points(
            parse_params("torso_mass=0.5:1.5,floor_friction=abs:0.5:3"), 2, seed=3)]
    assert secs[0]["grid"] is None and secs[0]["design"] == "samples"


def test_cli_list_params(capsys):
    assert main(["stress", "--env", "hopper", "--list-params"]) == 0
    text = capsys.readouterr().out
    assert "torso_mass" in text and "3.66519" in text and "floor_friction" in text
    assert "rrls-2d" in text and "floor_friction=[0.1, 3]" in text


@pytest.mark.parametrize("args, msg", [
    (["--params", "tail_mass=0.5:1.5"], "unknown dynamics parameter 'tail_mass'"),
    (["--params", "torso_mass=1.5:0.5"], "LOW <= HIGH"),
    (["--uncertainty-set", "nope"], "unknown uncertainty set 'nope'"),
    (["--params", "friction=0.5:2", "--env", "cartpole"], "not a MuJoCo environment"),
    (["--uncertainty-set", "rrls", "--env", "cartpole"], "not a MuJoCo environment"),
    (["--params", "friction=0.5:2", "--uncertainty-set", "rrls"], "exactly one of"),
    ([], "exactly one of"),
    (["--params", "friction=0.5:2", "--grid", "2", "--samples", "3"], "exclude each other"),
    (["--params", "friction=0.5:2", "--grid", "0"], "--grid must be >= 1"),
    (["--params", "friction=0.5:2", "--drift", "-1"], "--drift"),
])
def test_cli_bad_input_exits_2(tmp_path, capsys, args, msg):
    env = [] if "--env" in args else ["--env", "hopper"]
    rc = main(["stress", "demo:hopper", *env, "--out", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("certrl: error:") and msg in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_cli_missing_policy_exits_2(capsys):
    assert main(["stress", "--env", "hopper", "--params", "friction=1:2"]) == 2
    assert "needs a POLICY" in capsys.readouterr().err


def test_results_are_json_without_nan(tmp_path):
    pol = random_bundle(tmp_path, "Hopper-v5", seed=2)
    out = tmp_path / "res"
    assert _stress_cli(pol, out, "--params", "gravity=0.5:1.5", "--grid", "2", "--episodes", "1",
                       "--workers", "1", "--drift", "0.05") == 0
    raw = (out / "Hopper-v5_policy.json").read_text()
    s = json.loads(raw)["stress"]
    assert "NaN" not in raw
    assert s["worst_case"]["method"] == "degenerate"  # one episode: no bootstrap possible
    assert s["drift"] == 0.05 and s["cells"][0]["dynamics_end"][0]["gravity"] != 0.5


def test_cli_uncertainty_set_uses_the_rrls_mesh(tmp_path):
    pol = random_bundle(tmp_path, "Hopper-v5", seed=2)
    out = tmp_path / "res"
    assert _stress_cli(pol, out, "--uncertainty-set", "rrls-2d", "--grid", "2", "--episodes",
                       "2", "--workers", "1") == 0
    s = load_results(out / "Hopper-v5_policy.json")["stress"]
    assert s["uncertainty_set"]["name"] == "rrls-2d" and s["mesh"] == "rrls"
    assert s["uncertainty_set"]["original_names"] == ["worldfriction", "torsomass"]
    # RRLS mesh with 2 points: low and low + (high - low) / 2 (the upper bound excluded)
    assert [tuple(c["values"].values()) for c in s["cells"]] == [
        (0.1, 0.1), (0.1, 1.55), (1.55, 0.1), (1.55, 1.55)]
    assert s["params"][1] == {"name": "torso_mass", "low": 0.1, "high": 3.0,
                              "mode": "absolute", "nominal": pytest.approx(3.6651914291880923)}
    assert s["grid"]["params"] == ["floor_friction", "torso_mass"]
