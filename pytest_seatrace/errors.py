"""Kept so ``from pytest_seatrace.errors import RaceViolation`` goes on working; see ``core.errors``."""

from __future__ import annotations

from pytest_seatrace.core.errors import RaceUsageError, RaceViolation

__all__ = ["RaceUsageError", "RaceViolation"]
