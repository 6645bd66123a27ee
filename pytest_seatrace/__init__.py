"""pytest-seatrace: prove that a service never sells the same seat twice."""

from __future__ import annotations

from pytest_seatrace.engine.plan import Attempt
from pytest_seatrace.errors import RaceUsageError, RaceViolation
from pytest_seatrace.results import Outcome, RaceResult, Violation, Win

__version__ = "0.1.0"

__all__ = [
    "Attempt",
    "Outcome",
    "RaceResult",
    "RaceUsageError",
    "RaceViolation",
    "Violation",
    "Win",
    "__version__",
]
