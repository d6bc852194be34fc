"""Score normalization: ``(return - random) / (reference - random)``.

``REFERENCE_SCORES`` holds, per Gymnasium id, the return of a random policy and of a reference
("expert") policy, each with its source. 0 = random, 1 = reference; scores above 1 are possible.

Caveats: the D4RL numbers were measured on the MuJoCo ``-v2`` tasks (mujoco-py) and are kept
because they define the widely reported "D4RL normalized score"; the ``-v5`` dynamics/rewards
differ somewhat. A uniform-random policy measured here on gymnasium 1.4.0 ``-v5`` (30 episodes,
seeds 0-29) returned: Hopper 20.0, Walker2d 1.3, HalfCheetah -273.6, Ant -19.4 (Ant-v5 reward
differs notably from Ant-v2's). Pass ``random_score``/``reference_score`` to override.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["REFERENCE_SCORES", "ReferenceScore", "normalize_scores"]


class ReferenceScore(NamedTuple):
    """Random-policy and reference-policy returns of one environment."""

    random: float
    reference: float
    source: str


_D4RL = "D4RL d4rl/infos.py REF_MIN_SCORE/REF_MAX_SCORE (random / expert, MuJoCo -v2)"
_MEASURED = "random: uniform-random policy, 30 episodes, measured with gymnasium 1.4.0"

REFERENCE_SCORES: dict[str, ReferenceScore] = {
    # D4RL (Fu et al. 2020), d4rl/infos.py: random -20.272305, expert 3234.3.
    "Hopper-v5": ReferenceScore(-20.272305, 3234.3, _D4RL),
    # D4RL: random 1.629008, expert 4592.3.
    "Walker2d-v5": ReferenceScore(1.629008, 4592.3, _D4RL),
    # D4RL: random -280.178953, expert 12135.0.
    "HalfCheetah-v5": ReferenceScore(-280.178953, 12135.0, _D4RL),
    # D4RL: random -325.6, expert 3879.7.
    "Ant-v5": ReferenceScore(-325.6, 3879.7, _D4RL),
    # No canonical expert score exists. random: measured (113.6 +- 6.2 s.e.);
    # reference 6000: conventional "solved"-level return of a well-trained SAC agent
    # (e.g. the 'optimal_score' used for Humanoid in illidanlab/opolo-code). Approximate.
    "Humanoid-v5": ReferenceScore(
        113.6, 6000.0, _MEASURED + "; reference: approximate well-trained SAC level"
    ),
    # random: measured (-1.3 +- 1.5 s.e.); reference: gymnasium spec reward_threshold 360.
    "Swimmer-v5": ReferenceScore(
        -1.3, 360.0, _MEASURED + "; reference: gymnasium Swimmer-v5 reward_threshold"
    ),
    # random: measured (5.1 +- 0.8 s.e.); reference: maximum return (reward 1/step, 1000 steps).
    "InvertedPendulum-v5": ReferenceScore(
        5.1, 1000.0, _MEASURED + "; reference: maximum return (1000 steps x reward 1)"
    ),
    # random ~22 (measured 24.5 +- 2.3 s.e.); reference: maximum return (500 steps x reward 1).
    "CartPole-v1": ReferenceScore(
        22.0, 500.0, _MEASURED + " (24.5 +- 2.3), rounded to the usual ~22; reference: max return"
    ),
    # random: measured (-1238.9 +- 49.5 s.e.); reference -150: typical converged SAC/TD3
    # return (theoretical maximum is 0). Approximate.
    "Pendulum-v1": ReferenceScore(
        -1238.9, -150.0, _MEASURED + "; reference: approximate converged SAC/TD3 return"
    ),
    # random: never reaches the goal in 200 steps (-1/step) -> -200 (measured: exactly -200);
    # reference: gymnasium spec reward_threshold -110.
    "MountainCar-v0": ReferenceScore(
        -200.0, -110.0, "random: -1 x 200 steps (measured); reference: gymnasium reward_threshold"
    ),
    # random: measured (-33.05 +- 0.15 s.e.); reference: gymnasium spec reward_threshold 90.
    "MountainCarContinuous-v0": ReferenceScore(
        -33.05, 90.0, _MEASURED + "; reference: gymnasium reward_threshold"
    ),
}


def normalize_scores(
    returns: ArrayLike,
    random_score: float | ArrayLike | None = None,
    reference_score: float | ArrayLike | None = None,
    *,
    env_id: str | None = None,
) -> np.ndarray:
    """Normalize returns: ``(returns - random_score) / (reference_score - random_score)``.

    Args:
        returns: array of any shape, e.g. ``(num_runs, num_tasks)``.
        random_score: random-policy return; scalar or broadcastable to ``returns``
            (e.g. ``(num_tasks,)`` for per-task values). Taken from ``REFERENCE_SCORES[env_id]``
            when ``None``.
        reference_score: reference-policy return, same conventions.
        env_id: Gymnasium id looked up in :data:`REFERENCE_SCORES` for missing values.

    Returns:
        float64 array with the shape of ``returns`` (broadcast).

    Raises:
        KeyError: ``env_id`` needed but unknown. ValueError: missing values or
        ``reference_score == random_score``.
    """
    if random_score is None or reference_score is None:
        if env_id is None:
            raise ValueError("give random_score and reference_score, or an env_id")
        if env_id not in REFERENCE_SCORES:
            raise KeyError(
                f"no reference scores for {env_id!r}; known: "
                f"{sorted(REFERENCE_SCORES)}; pass them explicitly"
            )
        ref = REFERENCE_SCORES[env_id]
        random_score = ref.random if random_score is None else random_score
        reference_score = ref.reference if reference_score is None else reference_score
    r = np.asarray(returns, dtype=np.float64)
    lo = np.asarray(random_score, dtype=np.float64)
    hi = np.asarray(reference_score, dtype=np.float64)
    span = hi - lo
    if np.any(span == 0):
        raise ValueError("reference_score must differ from random_score")
    return (r - lo) / span
