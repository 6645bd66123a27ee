"""The exceptions a race raises at the user: a broken invariant, or a wrong call."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_seatrace.core.result import RaceResult


PUBLIC_MODULE = "pytest_seatrace"
"""Where users import these from, and what tracebacks and pickles name."""


class RaceUsageError(Exception):
    """The race was asked for something it cannot do (bad argument, missing base URL, ...).

    ``.result`` is the race's result when the mistake showed only after it ran (an attempt that
    never awaited ``a.gate()``); else ``None``.
    """

    __module__ = PUBLIC_MODULE

    def __init__(self, message: str, result: RaceResult | None = None) -> None:
        super().__init__(message)
        self.result = result


class RaceViolation(AssertionError):
    """The invariant, the error rule or a threshold failed; ``.result`` keeps every figure."""

    __module__ = PUBLIC_MODULE

    def __init__(self, message: str, result: RaceResult) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled with its result: ``Exception`` would call ``RaceViolation(message)``, which fails."""
        return (type(self), (*self.args, self.result), self.__dict__)
