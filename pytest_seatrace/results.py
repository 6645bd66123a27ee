"""Kept so imports of ``pytest_seatrace.results`` go on working; the result lives in ``core``."""

from __future__ import annotations

from pytest_seatrace.core.records import BODY_KEEP, Outcome, RaceRun, Record
from pytest_seatrace.core.result import RaceResult, RoundSummary, Win, history_columns
from pytest_seatrace.core.stats import Latency, Percentiles, Spread, percentile
from pytest_seatrace.core.violations import Violation, ViolationKind

__all__ = [
    "BODY_KEEP",
    "Latency",
    "Outcome",
    "Percentiles",
    "RaceResult",
    "RaceRun",
    "Record",
    "RoundSummary",
    "Spread",
    "Violation",
    "ViolationKind",
    "Win",
    "history_columns",
    "percentile",
]
