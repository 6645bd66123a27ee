"""The race engine: anyio, raw sockets with h11 or httpx; no pytest anywhere below here."""

from __future__ import annotations

from pytest_seatrace.engine.plan import (
    SYNC_MODES,
    Attempt,
    AttemptFn,
    RaceConfig,
    RequestSpec,
    Reset,
    Rule,
    SyncMode,
    TargetOptions,
    Verify,
    make_rule,
)
from pytest_seatrace.engine.runner import run_race

__all__ = [
    "SYNC_MODES",
    "Attempt",
    "AttemptFn",
    "RaceConfig",
    "RequestSpec",
    "Reset",
    "Rule",
    "SyncMode",
    "TargetOptions",
    "Verify",
    "make_rule",
    "run_race",
]
