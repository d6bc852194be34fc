"""RL Zoo / Hugging Face run folders and sb3-contrib TQC as certrl policies.

Every folder is built here in ``tmp_path`` the way ``rl_zoo3`` writes it (nothing is trained):
a real SB3 / sb3-contrib model saved with ``model.save``, a real ``VecNormalize`` stepped with
random actions and ``.save``-d, and YAML written with ``yaml.dump`` of ``OrderedDict``s exactly as
``rl_zoo3/exp_manager.py`` ``_save_config`` does (so the
``!!python/object/apply:collections.OrderedDict`` tags are present)."""

from __future__ import annotations

import json
import shutil
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
import yaml

from certrl.policies import Policy, PolicyError, detect_format, load_policy, validate_spaces
from certrl.policies.zoo import ZooRun, find_zoo_run, is_zoo_dir, read_zoo_yaml

sb3 = pytest.importorskip("stable_baselines3")
sb3_contrib = pytest.importorskip("sb3_contrib")
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize  # noqa: E402

torch.set_num_threads(1)
ENV = "Pendulum-v1"


def _obs(n: int, seed: int = 0, scale: float = 2.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, 3)) * scale).astype(np.float32)


def _one_line(err: pytest.ExceptionInfo[PolicyError]) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg, msg
    return msg


def _perturb(model: Any) -> None:
    """Untrained heads are near zero; make every tensor matter for the comparison."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.policy.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)


def _tqc(**kwargs: Any) -> Any:
    kwargs.setdefault("policy_kwargs", {"net_arch": [32, 32]})
    model = sb3_contrib.TQC("MlpPolicy", ENV, seed=0, device="cpu", buffer_size=1000, **kwargs)
    _perturb(model)
    return model


def _assert_matches(policy: Policy, model: Any, obs: np.ndarray, model_obs: np.ndarray) -> None:
    ref, _ = model.predict(model_obs, deterministic=True)
    got = policy.predict(obs, deterministic=True)
    np.testing.assert_allclose(got, np.asarray(ref).reshape(got.shape), atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def tqc_model() -> Any:
    return _tqc()


@pytest.fixture(scope="module")
def vecnorm() -> VecNormalize:
    venv = VecNormalize(DummyVecEnv([lambda: gym.make(ENV)]), clip_obs=5.0)
    venv.seed(0)
    venv.reset()
    rng = np.random.default_rng(0)
    for _ in range(300):
        venv.step(rng.uniform(-2.0, 2.0, size=(1, 1)).astype(np.float32))
    venv.training = False
    return venv


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory, tqc_model: Any,
          vecnorm: VecNormalize) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("saved")
    tqc_model.save(d / "tqc.zip")
    vecnorm.save(str(d / "vecnormalize.pkl"))
    return {"zip": d / "tqc.zip", "pkl": d / "vecnormalize.pkl"}


# ----------------------------------------------------------------------------- zoo writers
def _zoo_dump(mapping: dict[str, Any]) -> str:
    """What ExperimentManager._save_config writes: yaml.dump of a key-sorted OrderedDict."""
    return yaml.dump(OrderedDict([(k, mapping[k]) for k in sorted(mapping)]))


def _args(algo: str, env_id: str, env_kwargs: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"algo": algo, "env": env_id, "env_kwargs": env_kwargs, "eval_episodes": 5,
            "eval_freq": 25000, "gym_packages": [], "hyperparams": None, "log_folder": "logs",
            "log_interval": -1, "n_evaluations": None, "n_timesteps": -1,
            "optimize_hyperparameters": False, "save_freq": -1, "seed": 2471318731,
            "trained_agent": "", "uuid": False, "vec_env": "dummy", "verbose": 1}


def _config(normalize: Any = None, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {"n_timesteps": 20000.0, "policy": "MlpPolicy", "learning_rate": 0.001,
                           "policy_kwargs": "dict(net_arch=[32, 32])", **extra}
    if normalize is not None:
        cfg["normalize"] = normalize
    return cfg


def make_zoo_run(logs: Path, saved: dict[str, Path], *, algo: str = "tqc", env_id: str = ENV,
                 n: int = 1, pkl: bool = True, config: dict[str, Any] | None = None,
                 args_kwargs: dict[str, Any] | None = None, final: bool = True,
                 best: bool = False, checkpoints: tuple[int, ...] = ()) -> Path:
    """logs/<algo>/<EnvName>_<n>/ as rl_zoo3 train writes it."""
    name = env_id.replace("/", "-")
    run = logs / algo / f"{name}_{n}"
    params = run / name
    params.mkdir(parents=True)
    if final:
        shutil.copy(saved["zip"], run / f"{name}.zip")
    if best:
        shutil.copy(saved["zip"], run / "best_model.zip")
    for steps in checkpoints:
        shutil.copy(saved["zip"], run / f"rl_model_{steps}_steps.zip")
    cfg = _config(normalize=True if pkl else None) if config is None else config
    (params / "config.yml").write_text(_zoo_dump(cfg))
    (params / "args.yml").write_text(_zoo_dump(_args(algo, env_id, args_kwargs)))
    (params / "command.txt").write_text(f"python -m rl_zoo3.train --algo {algo} --env {env_id}")
    if pkl:
        shutil.copy(saved["pkl"], params / "vecnormalize.pkl")
    (run / "evaluations.npz").write_bytes(b"")
    (run / "0.monitor.csv").write_text('#{"t_start": 0.0, "env_id": "Pendulum-v1"}\nr,l,t\n')
    return run


def make_hf_repo(base: Path, saved: dict[str, Path], *, algo: str = "tqc", env_id: str = ENV,
                 env_kwargs: dict[str, Any] | None = None) -> Path:
    """A snapshot of huggingface.co/sb3/<algo>-<EnvName> as rl_zoo3 push_to_hub writes it."""
    name = f"{algo}-{env_id.replace('/', '-')}"
    repo = base / name
    repo.mkdir(parents=True)
    shutil.copy(saved["zip"], repo / f"{name}.zip")
    with zipfile.ZipFile(repo / f"{name}.zip") as zf:
        zf.extractall(repo / name)
    shutil.copy(saved["pkl"], repo / "vec_normalize.pkl")
    (repo / "config.yml").write_text(_zoo_dump(_config(normalize=True)))
    (repo / "args.yml").write_text(_zoo_dump(_args(algo, env_id, env_kwargs)))
    kwargs = dict(env_kwargs or {}, render_mode="rgb_array")  # push_to_hub records its video
    (repo / "env_kwargs.yml").write_text(yaml.dump(kwargs))
    (repo / "README.md").write_text(
        f"---\nlibrary_name: stable-baselines3\n---\n# {algo} {env_id}\n")
    (repo / "results.json").write_text('{"mean_reward": -150.0}')
    with zipfile.ZipFile(repo / "train_eval_metrics.zip", "w") as zf:
        zf.writestr("0.monitor.csv", "r,l,t\n")
    return repo


# ----------------------------------------------------------------------------- TQC
@pytest.mark.parametrize("use_sde", [False, True])
def test_tqc_zip_matches_predict(use_sde: bool, tmp_path: Path, tqc_model: Any) -> None:
    model = _tqc(use_sde=True) if use_sde else tqc_model
    model.save(tmp_path / "tqc.zip")
    policy = load_policy(tmp_path / "tqc.zip")
    assert policy.info.algorithm == "TQC" and policy.squash
    assert policy.info.details["use_sde"] is use_sde
    env = gym.make(ENV)
    policy = validate_spaces(policy, env.observation_space, env.action_space, ENV)
    obs = _obs(300)
    _assert_matches(policy, model, obs, obs)
    if use_sde:  # gSDE: only the deterministic action is reproduced
        with pytest.raises(PolicyError, match="deterministic"):
            policy.act(torch.as_tensor(obs), deterministic=False)
    else:
        a = policy.act(torch.as_tensor(obs), deterministic=False)
        assert a.shape == (300, 1) and bool((a.abs() <= 2.0).all())


def test_tqc_gsde_without_mean_clip(tmp_path: Path) -> None:
    model = _tqc(use_sde=True, policy_kwargs={"net_arch": [16], "clip_mean": 0.0})
    model.save(tmp_path / "tqc.zip")
    policy = load_policy(tmp_path / "tqc.zip")
    obs = _obs(200, seed=1)
    _assert_matches(policy, model, obs, obs)


# ----------------------------------------------------------------------------- layouts
def test_zoo_run_folder_with_vecnormalize(tmp_path: Path, tqc_model: Any, vecnorm: VecNormalize,
                                          saved: dict[str, Path]) -> None:
    run = make_zoo_run(tmp_path / "logs", saved)
    assert is_zoo_dir(run) and detect_format(run) == "zoo"
    policy = load_policy(run)
    assert policy.has_normalization and policy.info.algorithm == "TQC"
    zoo = policy.info.details["zoo"]
    assert zoo["layout"] == "rl-zoo" and zoo["algo"] == "tqc" and zoo["env_id"] == ENV
    assert zoo["model"] == str(run / f"{ENV}.zip")
    assert zoo["vecnormalize"] == str(run / ENV / "vecnormalize.pkl")
    assert zoo["model_choice"]["chosen"] == "final" and "enjoy" in zoo["model_choice"]["reason"]
    assert zoo["hyperparams"]["policy_kwargs"] == "dict(net_arch=[32, 32])"
    assert policy.info.details["files"] == [str(run / f"{ENV}.zip"),
                                            str(run / ENV / "vecnormalize.pkl")]
    json.dumps(policy.info.details)
    env = gym.make(ENV)
    policy = validate_spaces(policy, env.observation_space, env.action_space, ENV)
    obs = _obs(300, scale=6.0)  # wide enough that clip_obs=5 matters
    _assert_matches(policy, model=tqc_model, obs=obs, model_obs=vecnorm.normalize_obs(obs))

    # the same run through its params folder and the folders above it
    for path, how in [(run / ENV, "params folder"), (run.parent, "latest run"),
                      (run.parent.parent, "latest run")]:
        assert detect_format(path) == "zoo", path
        got = find_zoo_run(path)
        assert got.model == run / f"{ENV}.zip" and got.root == run, path
        assert got.vecnormalize == run / ENV / "vecnormalize.pkl"
        assert how in got.resolved_from
    inner = load_policy(run / ENV)
    _assert_matches(inner, tqc_model, obs, vecnorm.normalize_obs(obs))


def test_huggingface_repo_folder(tmp_path: Path, tqc_model: Any, vecnorm: VecNormalize,
                                 saved: dict[str, Path]) -> None:
    repo = make_hf_repo(tmp_path, saved)
    assert detect_format(repo) == "zoo"
    run = find_zoo_run(repo)
    assert run.layout == "huggingface" and run.algo == "tqc" and run.env_id == ENV
    assert run.model == repo / f"tqc-{ENV}.zip"  # not train_eval_metrics.zip, not the unzipped dir
    assert run.vecnormalize == repo / "vec_normalize.pkl"
    assert run.env_kwargs == {}  # render_mode (push_to_hub's video) dropped
    assert any("render_mode" in n for n in run.notes)
    assert set(run.files) >= {str(repo / n) for n in ("config.yml", "args.yml", "env_kwargs.yml")}
    policy = load_policy(repo)
    obs = _obs(300, seed=2, scale=6.0)
    _assert_matches(policy, tqc_model, obs, vecnorm.normalize_obs(obs))
    # the unzipped model folder of the repo: pointed at the zip
    with pytest.raises(PolicyError) as err:
        load_policy(repo / f"tqc-{ENV}")
    assert f"tqc-{ENV}.zip" in _one_line(err) and "unzipped" in str(err.value)


def test_model_choice(tmp_path: Path, saved: dict[str, Path]) -> None:
    run = make_zoo_run(tmp_path / "logs", saved, best=True, checkpoints=(5000, 20000, 100000))
    got = find_zoo_run(run)
    assert got.model == run / f"{ENV}.zip" and got.choice == "final"
    assert got.to_json()["model_choice"]["candidates"] == {
        "final": [f"{ENV}.zip"], "best": "best_model.zip",
        "checkpoints": ["rl_model_5000_steps.zip", "rl_model_20000_steps.zip",
                        "rl_model_100000_steps.zip"]}
    assert find_zoo_run(run, prefer="best").model == run / "best_model.zip"
    assert find_zoo_run(run, prefer="checkpoint").model == run / "rl_model_100000_steps.zip"

    (run / f"{ENV}.zip").unlink()  # training stopped before the final save
    got = find_zoo_run(run)
    assert got.model == run / "best_model.zip" and got.choice == "best"
    assert "no final model" in got.choice_reason and "--load-best" in got.choice_reason
    assert got.env_id == ENV and got.vecnormalize is not None
    with pytest.raises(PolicyError) as err:
        find_zoo_run(run, prefer="final")
    assert "best_model.zip" in _one_line(err)

    (run / "best_model.zip").unlink()
    got = find_zoo_run(run)  # the most steps, not the last name in sorted order
    assert got.model == run / "rl_model_100000_steps.zip" and got.choice == "checkpoint"
    assert "--load-last-checkpoint" in got.choice_reason
    assert load_policy(run).info.details["zoo"]["model_choice"]["chosen"] == "checkpoint"
    with pytest.raises(PolicyError, match="unknown model choice"):
        find_zoo_run(run, prefer="newest")


def test_parent_folder_latest_run_and_ambiguity(tmp_path: Path, saved: dict[str, Path]) -> None:
    logs = tmp_path / "logs"
    for n in (1, 2, 10):
        make_zoo_run(logs, saved, n=n)
    got = find_zoo_run(logs / "tqc")
    assert got.root == logs / "tqc" / f"{ENV}_10"  # numeric run id, as get_latest_run_id
    assert "latest run id 10 of 3 runs" in got.resolved_from
    make_zoo_run(logs, saved, algo="sac", env_id="MountainCarContinuous-v0")
    with pytest.raises(PolicyError) as err:
        find_zoo_run(logs)
    msg = _one_line(err)
    assert "sac/MountainCarContinuous-v0" in msg and f"tqc/{ENV}" in msg

    # one folder, models of two environments
    repo = make_hf_repo(tmp_path / "hf", saved)
    shutil.copy(saved["zip"], repo / "sac-MountainCarContinuous-v0.zip")
    assert is_zoo_dir(repo)
    with pytest.raises(PolicyError) as err:
        load_policy(repo)
    msg = _one_line(err)
    assert "sac-MountainCarContinuous-v0.zip (MountainCarContinuous-v0)" in msg
    assert f"tqc-{ENV}.zip ({ENV})" in msg


def test_env_kwargs(tmp_path: Path, saved: dict[str, Path]) -> None:
    cfg = _config(env_kwargs={"ctrl_cost_weight": 0.1, "reset_noise_scale": (0.1, 0.2)})
    run = make_zoo_run(tmp_path / "a", saved, pkl=False, config=cfg)
    assert "!!python/tuple" in (run / ENV / "config.yml").read_text()
    got = find_zoo_run(run)
    assert got.env_kwargs == {"ctrl_cost_weight": 0.1, "reset_noise_scale": (0.1, 0.2)}
    assert got.to_json()["env_kwargs"] == {"ctrl_cost_weight": 0.1, "reset_noise_scale": [0.1, 0.2]}
    assert got.vecnormalize is None and got.normalize is False
    # --env-kwargs given to rl_zoo3 train (args.yml) replace the config's, as enjoy.py does
    run = make_zoo_run(tmp_path / "b", saved, pkl=False, config=cfg,
                       args_kwargs={"ctrl_cost_weight": 0.5})
    assert find_zoo_run(run).env_kwargs == {"ctrl_cost_weight": 0.5}
    repo = make_hf_repo(tmp_path / "hf", saved, env_kwargs={"g": 9.0})
    assert find_zoo_run(repo).env_kwargs == {"g": 9.0}


def test_normalize_settings(tmp_path: Path, saved: dict[str, Path]) -> None:
    # normalize true, pickle missing: the returns would be meaningless
    run = make_zoo_run(tmp_path / "a", saved, pkl=False, config=_config(normalize=True))
    with pytest.raises(PolicyError) as err:
        load_policy(run)
    msg = _one_line(err)
    assert "normalize: True" in msg and "vecnormalize.pkl is missing" in msg
    for setting in ("dict(norm_obs=True, norm_reward=False)", {"norm_obs": True},
                    "__import__('os').system('echo hi')"):
        (run / ENV / "config.yml").write_text(_zoo_dump(_config(normalize=setting)))
        with pytest.raises(PolicyError, match="is missing"):
            find_zoo_run(run)
    # norm_obs false: no observation statistics needed
    (run / ENV / "config.yml").write_text(
        _zoo_dump(_config(normalize="dict(norm_obs=False, norm_reward=True)")))
    got = find_zoo_run(run)
    assert got.vecnormalize is None and any("norm_obs false" in n for n in got.notes)
    # normalize false: a pickle there is ignored, as enjoy.py does
    run = make_zoo_run(tmp_path / "b", saved, config=_config(normalize=False))
    got = find_zoo_run(run)
    assert got.vecnormalize is None and any("ignored" in n for n in got.notes)
    assert not load_policy(run).has_normalization
    # no config.yml at all: the pickle found in the run is used
    (run / ENV / "config.yml").unlink()
    got = find_zoo_run(run)
    assert got.vecnormalize == run / ENV / "vecnormalize.pkl" and got.hyperparams == {}


def test_malicious_yaml_is_refused(tmp_path: Path, saved: dict[str, Path]) -> None:
    marker = tmp_path / "pwned"
    run = make_zoo_run(tmp_path / "logs", saved)
    good = {n: (run / ENV / n).read_text() for n in ("config.yml", "args.yml")}
    attacks = {
        "config.yml": f"!!python/object/apply:os.system [\"touch {marker}\"]\n",
        "args.yml": f"env: !!python/object/new:subprocess.Popen [[touch, {marker}]]\n",
        "env_kwargs.yml": f"g: !!python/object/apply:builtins.eval [\"open('{marker}', 'w')\"]\n",
    }
    for name, text in attacks.items():
        (run / ENV / name).write_text(text)
        assert is_zoo_dir(run)
        with pytest.raises(PolicyError) as err:
            load_policy(run)
        assert "refused YAML tag" in _one_line(err) and name in str(err.value)
        assert not marker.exists()
        if name in good:
            (run / ENV / name).write_text(good[name])
        else:
            (run / ENV / name).unlink()
    (run / ENV / "config.yml").write_text("normalize: !!python/module:os\n")
    with pytest.raises(PolicyError, match="refused"):
        find_zoo_run(run)
    (run / ENV / "config.yml").write_text("normalize: !custom 1\n")
    with pytest.raises(PolicyError, match="unreadable YAML"):
        find_zoo_run(run)
    (run / ENV / "config.yml").write_text("a: &a [*a]\n")  # a cycle
    with pytest.raises(PolicyError, match="nested"):
        find_zoo_run(run)
    assert not marker.exists()


def test_read_zoo_yaml_real_format(tmp_path: Path) -> None:
    # config.yml as in DLR-RM/rl-trained-agents (normalize string, wrapper list, python names
    # written by python-file configs, nested OrderedDicts and tuples)
    path = tmp_path / "config.yml"
    path.write_text(
        "!!python/object/apply:collections.OrderedDict\n"
        "- - - env_wrapper\n"
        "    - - sb3_contrib.common.wrappers.TimeFeatureWrapper\n"
        "  - - n_timesteps\n"
        "    - 1000000.0\n"
        "  - - normalize\n"
        "    - dict(norm_obs=True, norm_reward=False)\n"
        "  - - policy\n"
        "    - MlpPolicy\n"
        "  - - policy_kwargs\n"
        "    - activation_fn: !!python/name:torch.nn.modules.activation.ReLU ''\n"
        "      net_arch: !!python/tuple\n"
        "      - 64\n"
        "      - 64\n"
        "  - - replay_buffer_kwargs\n"
        "    - !!python/object/apply:collections.OrderedDict\n"
        "      - []\n"
    )
    assert read_zoo_yaml(path) == {
        "env_wrapper": ["sb3_contrib.common.wrappers.TimeFeatureWrapper"],
        "n_timesteps": 1000000.0,
        "normalize": "dict(norm_obs=True, norm_reward=False)",
        "policy": "MlpPolicy",
        "policy_kwargs": {"activation_fn": "torch.nn.modules.activation.ReLU",
                          "net_arch": (64, 64)},
        "replay_buffer_kwargs": {},
    }
    empty = tmp_path / "env_kwargs.yml"
    empty.write_text("{}\n")
    assert read_zoo_yaml(empty) == {}


def test_wrapper_note_and_env_id_from_names(tmp_path: Path, saved: dict[str, Path]) -> None:
    run = make_zoo_run(tmp_path / "logs", saved, config=_config(
        normalize=True, env_wrapper=["sb3_contrib.common.wrappers.TimeFeatureWrapper"]))
    (run / ENV / "args.yml").unlink()
    got = find_zoo_run(run)
    assert got.env_id == ENV and got.algo == "tqc"  # from the file and folder names
    assert any("env_wrapper" in n for n in got.notes)
    assert any("file names" in n for n in got.notes)


def test_not_a_zoo_folder(tmp_path: Path, saved: dict[str, Path]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not is_zoo_dir(empty)
    with pytest.raises(PolicyError) as err:
        find_zoo_run(empty)
    assert "it is empty" in _one_line(err)
    with pytest.raises(PolicyError) as err:
        load_policy(empty)
    _one_line(err)
    with pytest.raises(PolicyError, match="not a folder"):
        find_zoo_run(saved["zip"])
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(saved["zip"], loose / "model.zip")
    assert not is_zoo_dir(loose)
    with pytest.raises(PolicyError, match="pass the policy file inside it"):
        load_policy(loose)


def test_zoo_run_to_json_is_json(tmp_path: Path, saved: dict[str, Path]) -> None:
    run = make_zoo_run(tmp_path / "logs", saved, best=True)
    got = find_zoo_run(run)
    assert isinstance(got, ZooRun)
    data = json.loads(json.dumps(got.to_json()))
    assert data["layout"] == "rl-zoo" and data["normalize"] is True
    assert data["files"][0].endswith(f"{ENV}.zip") and data["files"][1].endswith("vecnormalize.pkl")
    with pytest.raises(AttributeError):
        got.model = run  # type: ignore[misc]  # frozen


def test_cli_policy_info(tmp_path: Path, saved: dict[str, Path],
                         capsys: pytest.CaptureFixture[str]) -> None:
    from certrl.cli import main

    run = make_zoo_run(tmp_path / "logs", saved)
    assert main(["policy-info", str(run), "--env", ENV]) == 0
    out = capsys.readouterr().out
    assert "TQC" in out and "compatible" in out
    assert main(["policy-info", str(run), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["zoo"]["layout"] == "rl-zoo" and summary["normalization"] == "yes"


def test_vecnormalize_override_for_a_run_missing_its_pickle(tmp_path: Path,
                                                            saved: dict[str, Path]) -> None:
    run = make_zoo_run(tmp_path / "a", saved, pkl=False, config=_config(normalize=True))
    pol = load_policy(run, vecnormalize=saved["pkl"])
    assert pol.has_normalization and pol.info.details["vecnormalize"] == str(saved["pkl"])
    assert any("missing" in n for n in pol.info.details["zoo"]["notes"])


def test_detected_format_and_recorded_env_kwargs_reach_the_job(tmp_path: Path,
                                                               saved: dict[str, Path]) -> None:
    """policy-info says it is an RL Zoo folder; the run's env_kwargs are what certrl evaluates
    on unless --env-kwargs is given."""
    from certrl.pipeline.job import build_job

    run = make_zoo_run(tmp_path / "logs", saved, args_kwargs={"g": 9.0})
    pol = load_policy(run)
    assert pol.info.format == "sb3/rl-zoo" and pol.info.algorithm == "TQC"
    job = build_job(run, ENV, episodes=2, workers=1, out=tmp_path / "r")
    assert job.spec.kwargs == {"g": 9.0} and job.spec.make().unwrapped.g == 9.0
    job = build_job(run, ENV, episodes=2, workers=1, out=tmp_path / "r",
                    env_kwargs={"g": 5.0})
    assert job.spec.kwargs == {"g": 5.0}
    # a loaded Policy remembers its run's env_kwargs (the API passes Policy objects)
    job = build_job(load_policy(run), ENV, episodes=2, workers=1, out=tmp_path / "r")
    assert job.spec.kwargs == {"g": 9.0}
