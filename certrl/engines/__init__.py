"""Fast simulation engines for the lockstep evaluator.

Importing this package registers its engines in :data:`certrl.evaluator.ENGINES`
(:func:`certrl.evaluator.make_batch` imports it lazily, so ``--engine auto|mujoco`` always
sees them). Every engine here must reproduce Gymnasium's observations, rewards,
``terminated`` and ``truncated`` bit for bit (``tests/test_engines.py``).
"""

from __future__ import annotations

from certrl.engines.mujoco_batch import (
    MujocoBatch,
    engine_threads,
    register,
    set_engine_threads,
)

register()

__all__ = ["MujocoBatch", "engine_threads", "register", "set_engine_threads"]
