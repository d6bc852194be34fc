"""certrl: certified-robustness evaluation for reinforcement-learning policies."""

__version__ = "0.1.0"
