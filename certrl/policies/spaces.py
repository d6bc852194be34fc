"""Check a loaded :class:`Policy` against an environment's spaces, with actionable messages."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from certrl.policies._nets import rebuild
from certrl.policies.base import Policy, PolicyError
from certrl.policies.cnn import format_shape

#: Observation sizes of the MuJoCo tasks whose observation changed between versions.
#: ``hint`` is appended when a policy's size matches another version's.
_VERSION_SIZES: dict[str, dict[str, tuple[int, str]]] = {
    "Ant": {
        "v4": (27, "--env Ant-v4 or --env-kwargs '{\"include_cfrc_ext_in_observation\": false}'"),
        "v5": (105, "--env Ant-v5"),
        "v2/v3": (111, "--env Ant-v4 --env-kwargs '{\"use_contact_forces\": true}'"),
    },
    "Humanoid": {
        "v4": (376, "--env Humanoid-v4"),
        "v5": (348, "--env Humanoid-v5"),
    },
    "HumanoidStandup": {
        "v4": (376, "--env HumanoidStandup-v4"),
        "v5": (348, "--env HumanoidStandup-v5"),
    },
}


def _split_env_id(env_id: str) -> tuple[str, str]:
    m = re.match(r"^(?:.*/)?([A-Za-z0-9_]+?)-(v\d+)$", env_id)
    return (m.group(1), m.group(2)) if m else (env_id, "")


def obs_mismatch_message(policy_dim: int, env_dim: int, env_id: str) -> str:
    """One line explaining an observation-size mismatch, with a hint when the policy's size is
    that of another version of the same task (e.g. an Ant-v4 policy on Ant-v5)."""
    msg = f"policy expects {policy_dim} observations but {env_id} gives {env_dim}"
    base, version = _split_env_id(env_id)
    for ver, (size, hint) in _VERSION_SIZES.get(base, {}).items():
        if size == policy_dim and ver != version:
            return f"{msg}: this looks like a {ver} policy — try {hint}"
    return (
        f"{msg}: the policy was trained on another environment or version — check --env and "
        "--env-kwargs"
    )


def _space_name(space: Any) -> str:
    return type(space).__name__


def pixel_mismatch_message(policy_shape: tuple[int, ...], env_shape: tuple[int, ...],
                           env_id: str) -> str | None:
    """One line explaining why a pixel policy (channels-first ``policy_shape``) does not fit an
    environment whose observations have shape ``env_shape``, or ``None`` if they fit."""
    env_shape = tuple(int(v) for v in env_shape)
    if env_shape == tuple(policy_shape):
        return None
    msg = f"policy expects {format_shape(policy_shape)} pixels, {env_id} gives"
    if len(env_shape) != 3:
        size = int(np.prod(env_shape)) if env_shape else 1
        return (
            f"{msg} {size} vector observations (shape {format_shape(env_shape)}): a pixel (CNN) "
            "policy needs an image environment with the same frame preprocessing (e.g. an Atari "
            "env with 84 x 84 grayscale frames stacked 4 deep) — check --env"
        )
    if len(policy_shape) == 3 and env_shape == (*policy_shape[1:], policy_shape[0]):
        return (
            f"{msg} channels-last frames {format_shape(env_shape)}: the policy takes "
            "channels-first stacks — transpose the frames (SB3 VecTransposeImage) or use "
            "certrl's channels-first Atari preprocessing"
        )
    return (
        f"{msg} {format_shape(env_shape)} frames: check the frame size, grayscale and "
        "frame-stack wrappers (--env-kwargs) — the policy was trained with other preprocessing"
    )


def validate_spaces(
    policy: Policy, observation_space: Any, action_space: Any, env_id: str
) -> Policy:
    """Check ``policy`` fits the environment; returns the policy to use.

    Checks the observation size (``Box`` observations: vectors, or images, whose size is the
    product of their shape; a pixel policy, with ``obs_shape``, needs exactly its channels-first
    frame shape), continuous vs discrete actions,
    the action size / number of actions; fills action bounds the policy file did not record from
    the environment's ``Box`` (in place); turns a TorchScript / pickled module whose kind was left
    open into a ``categorical`` policy on a ``Discrete`` environment. Raises :class:`PolicyError`
    with a one-line message on any mismatch.
    """
    from gymnasium import spaces

    if not isinstance(observation_space, spaces.Box):
        raise PolicyError(
            f"{env_id} has {_space_name(observation_space)} observations; certrl supports Box "
            "observations only (vectors, or image frames for pixel policies)"
        )
    env_shape = tuple(int(v) for v in observation_space.shape)
    env_obs = int(np.prod(env_shape))
    if policy.obs_shape is not None:
        mismatch = pixel_mismatch_message(policy.obs_shape, env_shape, env_id)
        if mismatch is not None:
            raise PolicyError(mismatch)
    elif env_obs != policy.obs_dim:
        if len(env_shape) == 3:
            raise PolicyError(
                f"policy expects {policy.obs_dim} vector observations but {env_id} gives "
                f"{format_shape(env_shape)} image frames: a vector-observation policy on an image "
                "environment — check --env"
            )
        raise PolicyError(obs_mismatch_message(policy.obs_dim, env_obs, env_id))

    if isinstance(action_space, spaces.Discrete):
        n = int(action_space.n)
        if int(getattr(action_space, "start", 0)) != 0:
            raise PolicyError(
                f"{env_id} numbers its {n} actions from {action_space.start}; certrl needs a "
                "Discrete space starting at 0"
            )
        if policy.discrete:
            if policy.n_actions != n:
                raise PolicyError(
                    f"policy chooses among {policy.n_actions} actions but {env_id} has {n}: the "
                    "policy was trained on another environment — check --env"
                )
            return policy
        if policy.info.details.get("head_from_env") and policy.act_dim == n:
            info = policy.info
            info.details["head_from_env"] = False
            return rebuild(policy, head="categorical", n_actions=n, info=info)
        raise PolicyError(
            f"policy outputs continuous actions ({policy.act_dim}-dimensional) but {env_id} has "
            f"{n} discrete actions: the policy was trained on another environment — check --env"
        )

    if isinstance(action_space, spaces.Box):
        env_act = int(np.prod(action_space.shape))
        if policy.discrete:
            raise PolicyError(
                f"policy outputs discrete actions (one of {policy.n_actions}) but {env_id} has "
                f"continuous {env_act}-dimensional actions: check --env"
            )
        if policy.act_dim != env_act:
            raise PolicyError(
                f"policy outputs {policy.act_dim} actions but {env_id} takes {env_act}: the policy "
                "was trained on another environment — check --env"
            )
        if not policy.bounds_known:
            low = np.asarray(action_space.low, dtype=np.float32).ravel()
            high = np.asarray(action_space.high, dtype=np.float32).ravel()
            if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
                raise PolicyError(
                    f"{env_id} has unbounded actions and the policy file records no bounds; "
                    "certrl needs finite action bounds"
                )
            policy.with_action_bounds(low, high)
            policy.info.details["head_from_env"] = False
        return policy

    raise PolicyError(
        f"{env_id} has {_space_name(action_space)} actions; certrl supports Box and Discrete"
    )
