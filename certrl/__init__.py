"""certrl: certified-robustness evaluation for reinforcement-learning policies.

The public API (:mod:`certrl.api`; loaded on first use, so ``import certrl`` stays light)::

    policy = certrl.load_policy("demo:cartpole", env="cartpole")
    result = certrl.certify(policy, env="cartpole", sigma=0.2, budgets=[0, 0.2])
    result.lower_bounds, result.statement, result.to_json()
"""

from __future__ import annotations

from typing import Any

from certrl._version import __version__

_API = ("load_policy", "make_env", "evaluate", "certify", "attack", "bound", "stress",
        "diagnose", "EvaluationResult", "CertificationResult", "AttackResult", "BoundResult",
        "StressResult", "DiagnosisResult")

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        from certrl import api

        return getattr(api, name)
    raise AttributeError(f"module 'certrl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])
