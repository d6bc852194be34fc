"""Fast simulation engines for the lockstep evaluator.

:mod:`certrl.engines.base` holds the interface (:class:`EnvBatch`, the :data:`ENGINES`
registry, :func:`make_batch`); importing this package registers the fast engines in it (the
evaluator imports it, so ``--engine auto|mujoco`` always sees them). Every engine here must
reproduce Gymnasium's observations, rewards, ``terminated`` and ``truncated`` bit for bit
(``tests/test_engines.py``).
"""

from __future__ import annotations

from certrl.engines.base import (
    ENGINES,
    EnvBatch,
    default_batch_size,
    engine_class,
    make_batch,
)
from certrl.engines.mujoco_batch import (
    MujocoBatch,
    engine_threads,
    register,
    set_engine_threads,
)

register()

__all__ = ["ENGINES", "EnvBatch", "MujocoBatch", "default_batch_size", "engine_class",
           "make_batch", "engine_threads", "register", "set_engine_threads"]
