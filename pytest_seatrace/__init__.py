"""pytest-seatrace: prove that a service never sells the same seat twice."""

from __future__ import annotations

import importlib.metadata
from typing import TYPE_CHECKING, Any

from pytest_seatrace.engine.plan import Attempt
from pytest_seatrace.errors import RaceUsageError, RaceViolation
from pytest_seatrace.results import Outcome, RaceResult, Violation, Win

if TYPE_CHECKING:
    from pytest_seatrace.fixtures import Race

try:
    __version__ = importlib.metadata.version("pytest-seatrace")  # pyproject.toml is the one source
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
    __version__ = "0+unknown"

__all__ = [
    "Attempt",
    "Outcome",
    "Race",
    "RaceResult",
    "RaceUsageError",
    "RaceViolation",
    "Violation",
    "Win",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """``Race`` (the fixture's type, for annotations) loads the engine, so only on demand."""
    if name == "Race":
        from pytest_seatrace.fixtures import Race

        return Race
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
