"""The exceptions a race raises at the user: a broken invariant, or a wrong call."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pytest_seatrace.results import RaceResult


class RaceUsageError(Exception):
    """The race was asked for something it cannot do (bad argument, missing base URL, ...)."""


class RaceViolation(AssertionError):
    """The invariant, the error rule or a threshold failed; ``.result`` keeps every figure."""

    def __init__(self, message: str, result: RaceResult) -> None:
        super().__init__(message)
        self.result = result
