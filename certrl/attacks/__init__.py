"""Observation and action attacks (empirical worst cases), as evaluator hooks.

See :mod:`certrl.attacks.base` for the threat models, the budget audit and the registry."""

from certrl.attacks.base import (
    ATTACKS,
    AttackError,
    BudgetViolation,
    ThreatModel,
    project_ball,
    register_attack,
)

# importing the attack modules registers their attacks in ATTACKS
from certrl.attacks import action, critic, gradient, learned  # noqa: E402, F401  (isort: skip)

__all__ = [
    "ATTACKS",
    "AttackError",
    "BudgetViolation",
    "ThreatModel",
    "project_ball",
    "register_attack",
]
