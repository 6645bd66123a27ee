"""pytest-seatrace: prove that a service never sells the same seat twice.

Public names only, each loaded on first use (PEP 562): the plugin imports this package in every
pytest run, and a session that races nothing should not pay for the result, the judge or the
engine. The classes name this module as theirs (``__module__``), so tracebacks and pickles
point here, not at the module that happens to hold them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pytest_seatrace.core.errors import RaceUsageError, RaceViolation
    from pytest_seatrace.core.figures import RoundSummary, Win
    from pytest_seatrace.core.records import Outcome, Record
    from pytest_seatrace.core.result import RaceResult
    from pytest_seatrace.core.stats import Latency, Percentiles, Spread, percentile
    from pytest_seatrace.core.violations import Violation, ViolationKind
    from pytest_seatrace.engine.plan import Attempt
    from pytest_seatrace.race import Race
    from pytest_seatrace.service import ServiceHandle
    from pytest_seatrace.version import __version__

_HOMES = {
    "Attempt": "pytest_seatrace.engine.plan",
    "Latency": "pytest_seatrace.core.stats",
    "Outcome": "pytest_seatrace.core.records",
    "Percentiles": "pytest_seatrace.core.stats",
    "Race": "pytest_seatrace.race",
    "RaceResult": "pytest_seatrace.core.result",
    "RaceUsageError": "pytest_seatrace.core.errors",
    "RaceViolation": "pytest_seatrace.core.errors",
    "Record": "pytest_seatrace.core.records",
    "RoundSummary": "pytest_seatrace.core.figures",
    "ServiceHandle": "pytest_seatrace.service",
    "Spread": "pytest_seatrace.core.stats",
    "Violation": "pytest_seatrace.core.violations",
    "ViolationKind": "pytest_seatrace.core.violations",
    "Win": "pytest_seatrace.core.figures",
    "__version__": "pytest_seatrace.version",
    "percentile": "pytest_seatrace.core.stats",
}
"""Where each public name is defined; the TYPE_CHECKING imports above say the same to mypy."""

__all__ = [
    "Attempt",
    "Latency",
    "Outcome",
    "Percentiles",
    "Race",
    "RaceResult",
    "RaceUsageError",
    "RaceViolation",
    "Record",
    "RoundSummary",
    "ServiceHandle",
    "Spread",
    "Violation",
    "ViolationKind",
    "Win",
    "__version__",
    "percentile",
]


if not TYPE_CHECKING:  # mypy reads the imports above; a misspelt name stays a mypy error

    def __getattr__(name: str) -> Any:
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        globals()[name] = value  # the next lookup is a plain attribute
        return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
