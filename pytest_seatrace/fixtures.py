"""Kept so ``from pytest_seatrace.fixtures import Race`` goes on working; see ``race``."""

from __future__ import annotations

from pytest_seatrace.race import Race

__all__ = ["Race"]
