"""pytest-seatrace: prove that a service never sells the same seat twice."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_seatrace.core.errors import RaceUsageError, RaceViolation
from pytest_seatrace.core.records import Outcome
from pytest_seatrace.core.result import RaceResult, Win
from pytest_seatrace.core.violations import Violation, ViolationKind
from pytest_seatrace.engine.plan import Attempt
from pytest_seatrace.version import __version__

if TYPE_CHECKING:
    from pytest_seatrace.race import Race
    from pytest_seatrace.service import ServiceHandle

__all__ = [
    "Attempt",
    "Outcome",
    "Race",
    "RaceResult",
    "RaceUsageError",
    "RaceViolation",
    "ServiceHandle",
    "Violation",
    "ViolationKind",
    "Win",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """``Race`` (the fixture's type) loads the engine, ``ServiceHandle`` the service runner: on demand."""
    if name == "Race":
        from pytest_seatrace.race import Race

        return Race
    if name == "ServiceHandle":
        from pytest_seatrace.service import ServiceHandle

        return ServiceHandle
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
