"""The race engine: anyio, raw sockets with h11 or httpx; it measures and returns records.

Imports ``core`` only, never the plugin or the reports; no pytest anywhere below here.
``run_race`` (and with it anyio, httpx and h11) is imported on first use, so loading the
plugin costs a pytest run nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pytest_seatrace.core.config import SYNC_MODES, RaceConfig, Rule, SyncMode, make_rule
from pytest_seatrace.engine.plan import (
    Attempt,
    AttemptFn,
    RacePlan,
    RequestSpec,
    Reset,
    TargetOptions,
    Verify,
)

if TYPE_CHECKING:
    from pytest_seatrace.engine.runner import run_race


def __getattr__(name: str) -> Any:
    if name == "run_race":
        from pytest_seatrace.engine.runner import run_race

        return run_race
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "SYNC_MODES",
    "Attempt",
    "AttemptFn",
    "RaceConfig",
    "RacePlan",
    "RequestSpec",
    "Reset",
    "Rule",
    "SyncMode",
    "TargetOptions",
    "Verify",
    "make_rule",
    "run_race",
]
