"""The error every layer raises for bad input.

:class:`UsageError` is a ``ValueError``: the API (:mod:`certrl.api`) raises it with a one-line
message saying what is wrong and what to do, and the CLI prints that line and exits with code 2
(as it does for :class:`~certrl.policies.base.PolicyError`, :class:`~certrl.envs.EnvError`,
:class:`~certrl.results.ResultsError` and :class:`~certrl.evaluator.EvaluationError`).
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad input: an option out of range, options that do not go together (exit code 2)."""


class EvaluationError(RuntimeError):
    """The policy or an environment misbehaved during evaluation (NaN actions, an environment
    whose ``reset`` / ``step`` raised or returned the wrong observation size; exit code 2)."""


def positive(name: str, v: int | float, allow_zero: bool = False) -> None:
    """Raise :class:`UsageError` unless ``v > 0`` (``>= 0`` with ``allow_zero``)."""
    if v < 0 or (v == 0 and not allow_zero):
        raise UsageError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {v}")
