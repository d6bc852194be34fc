"""Subcommands of the ``certrl`` CLI that live in their own modules."""
