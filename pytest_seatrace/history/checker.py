"""``check``: is a history linearizable under a model? Each partition of the history is searched alone
(P-compositionality: a history is linearizable when every partition is)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field

from pytest_seatrace.history.operation import Operation
from pytest_seatrace.history.search import Search, Stepper

STEPS_PER_TURN = 512
"""Search steps a partition takes before the next one's turn (and the clock is read again)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """``valid`` is True (linearizable), False (not), or None (the time budget ran out: unknown, never a
    pass). On False, ``partition`` is the key of a partition that fails, ``prefix`` the longest order of
    its operations the model accepts, and ``cannot_follow`` the operations that could come next by
    their instants yet none of which the model accepts after it."""

    valid: bool | None
    partitions: int
    elapsed: float
    partition: Hashable = None
    prefix: tuple[Operation, ...] = ()
    cannot_follow: tuple[Operation, ...] = ()
    describe: Callable[[Operation], str] = field(default=repr, compare=False, repr=False)

    def explanation(self, who: Callable[[Operation], str] | None = None) -> str:
        """Lines for a failure message: the prefix in order, then what cannot follow it; ``who`` names
        an operation's caller (default ``process 3``; a race says ``client 7``)."""
        name = who or (lambda op: f"process {op.process}")
        if self.valid is None:
            return f"unknown: the time budget ran out after {self.elapsed:.3f}s"
        if self.valid:
            return f"linearizable ({self.partitions} partition(s), {self.elapsed:.3f}s)"
        lines = [f"not linearizable: partition {self.partition!r}", "longest linearizable prefix:"]
        at = 1
        for run in _runs(self.prefix, self.describe):
            where = f"{at}" if len(run) == 1 else f"{at}-{at + len(run) - 1}"
            also = f" (and {len(run) - 1} identical)" if len(run) > 1 else ""
            lines.append(f"  {where}. {name(run[0])}{also}: {self.describe(run[0])}")
            at += len(run)
        lines.append("cannot follow it:")
        for op, more in _grouped(self.cannot_follow, self.describe):
            also = f" (and {more} identical)" if more else ""
            lines.append(f"  {name(op)}{also}: {self.describe(op)}")
        return "\n".join(lines)


def check(operations: Iterable[Operation], model: Stepper, *, timeout: float | None = None) -> Verdict:
    """Search each partition of ``operations`` for an order the model accepts, within ``timeout`` seconds
    of wall time in all (None: no limit). Partitions take turns, as Porcupine runs them in parallel, so
    one that fails fast is not kept waiting behind a long one. No state survives between calls."""
    started = time.monotonic()
    deadline = math.inf if timeout is None else started + timeout
    describe: Callable[[Operation], str] = getattr(model, "describe", repr)
    parts = partition(operations, getattr(model, "partition", lambda op: op.key))
    _check_names(parts.values(), getattr(model, "names", ()), type(model).__name__)
    pure: Callable[[Operation], bool] = getattr(model, "observes_only", lambda op: False)
    running = {key: Search(ops, model, pure) for key, ops in parts.items()}
    while running:
        for key, search in list(running.items()):
            if time.monotonic() > deadline:
                return Verdict(None, len(parts), time.monotonic() - started, describe=describe)
            outcome = search.run(STEPS_PER_TURN)
            if outcome is None:
                continue
            del running[key]
            if not outcome.linearizable:
                ops = parts[key]
                return Verdict(
                    False,
                    len(parts),
                    time.monotonic() - started,
                    key,
                    tuple(ops[i] for i in outcome.prefix),
                    tuple(ops[i] for i in outcome.stuck),
                    describe,
                )
    return Verdict(True, len(parts), time.monotonic() - started, describe=describe)


def partition(
    operations: Iterable[Operation], key: Callable[[Operation], Hashable]
) -> dict[Hashable, list[Operation]]:
    """Operations grouped by the model's partition key, in order of first appearance."""
    parts: dict[Hashable, list[Operation]] = {}
    for op in operations:
        parts.setdefault(key(op), []).append(op)
    return parts


def _check_names(parts: Iterable[list[Operation]], names: Sequence[str], model: str) -> None:
    """An operation the model has no function for is a usage error, even where the search would not
    need to place it (an ``info``)."""
    for ops in parts if names else ():
        for op in ops:
            if op.f not in names:
                raise ValueError(f"{model} has no function {op.f!r} (it has {', '.join(names)})")


def _runs(ops: Sequence[Operation], describe: Callable[[Operation], str]) -> list[list[Operation]]:
    """Consecutive operations described alike, so a prefix of 998 rejections reads as one line."""
    runs: list[list[Operation]] = []
    for op in ops:
        if runs and describe(runs[-1][0]) == describe(op):
            runs[-1].append(op)
        else:
            runs.append([op])
    return runs


def _grouped(ops: Sequence[Operation], describe: Callable[[Operation], str]) -> list[tuple[Operation, int]]:
    """One of each kind of operation and how many more there are, so 998 rejections read as one line."""
    kinds: dict[str, list[Operation]] = {}
    for op in ops:
        kinds.setdefault(describe(op), []).append(op)
    return [(same[0], len(same) - 1) for same in kinds.values()]
