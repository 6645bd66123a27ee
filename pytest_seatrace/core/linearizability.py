"""A race with ``model=`` judged by its history (design §7): each round's operations, checked per
partition of the model (its resource by default) against the model, under one time budget per race.

Every partition is checked, so every one that fails is reported, not just the first; a partition the
budget did not decide is unknown (``core.judge`` words both as violations: unknown is never a pass).
The verdicts are kept with the partition's operations, which the race document shows as a table and
a timeline.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.histories import operations
from pytest_seatrace.core.records import Record, ShardInfo
from pytest_seatrace.history.checker import Verdict, check, partition
from pytest_seatrace.history.operation import Operation

CHECK_BUDGET_S = 10.0
"""Seconds of wall time all the linearizability checks of one race share. A race's histories are
mostly one wave of identical operations, decided in milliseconds; a pathological one must not hold
the test for ever: what the budget leaves undecided is ``history-unknown``, a violation."""


@dataclass(frozen=True, slots=True)
class HistoryCheck:
    """One partition of one round, as checked: its operations (``process`` is the record's index
    in the race's history) and the model's verdict on them."""

    round: int
    resource: Hashable
    """The partition's key: the resource id under the default partition."""
    operations: tuple[Operation, ...]
    verdict: Verdict
    budget_s: float = CHECK_BUDGET_S
    """The time budget the race's checks shared (what an unknown verdict names)."""


def check_histories(
    records: Sequence[Record], config: RaceConfig, shards: Sequence[ShardInfo] = ()
) -> tuple[HistoryCheck, ...]:
    """Every partition of every round checked against ``config.model`` (none without a model), one
    ``check`` call each, sharing ``CHECK_BUDGET_S``: a partition reached after the budget is spent
    is unknown."""
    model = config.model
    if model is None:
        return ()
    budget = CHECK_BUDGET_S
    deadline = time.monotonic() + budget
    out: list[HistoryCheck] = []
    for rnd in sorted({rec.round for rec in records if rec.call_ns}):
        ops = operations(records, model, config.resources, shards, rnd)
        for key, part in partition(ops, model.partition).items():
            verdict = check(part, model, timeout=max(0.0, deadline - time.monotonic()))
            out.append(HistoryCheck(rnd, key, tuple(part), verdict, budget))
    return tuple(out)


def overall(checks: Sequence[HistoryCheck]) -> bool | None:
    """False when a partition is not linearizable, else None when one is unknown, else True."""
    valid = [c.verdict.valid for c in checks]
    if False in valid:
        return False
    return None if None in valid else True
