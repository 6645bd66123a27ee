"""A race's checked histories as document entries (``histories``): the verdict of each partition,
and for one that is not a pass its operations, numbered in the longest linearizable prefix found and
marked where they cannot follow it, so the message's table and the page's timeline read the same.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pytest_seatrace.core.document import CheckedHistoryDoc, CheckedOperationDoc
from pytest_seatrace.core.linearizability import HistoryCheck
from pytest_seatrace.core.reasons import answer_label
from pytest_seatrace.core.records import Record
from pytest_seatrace.history.operation import Operation

MS_DIGITS = 3
"""Milliseconds are kept to the microsecond: finer than any clock error a race can claim."""


def histories_doc(
    checks: Sequence[HistoryCheck], records: Sequence[Record], model: str
) -> list[CheckedHistoryDoc]:
    """One entry per checked partition; ms count from the race's earliest call instant."""
    origin = min((op.call for c in checks for op in c.operations), default=0.0)
    return [_entry(c, records, model, origin) for c in checks]


def _entry(c: HistoryCheck, records: Sequence[Record], model: str, origin: float) -> CheckedHistoryDoc:
    verdict = c.verdict
    order = {op.process: at for at, op in enumerate(verdict.prefix, 1)} if verdict.valid is False else {}
    stuck = {op.process for op in verdict.cannot_follow}
    shown = [] if verdict.valid else sorted(c.operations, key=lambda op: (op.call, op.process))
    return {
        "round": c.round,
        "resource": str(c.resource),
        "model": model,
        "valid": verdict.valid,
        "elapsed_s": verdict.elapsed,
        "explanation": verdict.explanation(lambda op: f"client {records[op.process].client}"),
        "operations": [_operation(op, records[op.process], origin, order, stuck) for op in shown],
    }


def _operation(
    op: Operation, rec: Record, origin: float, order: dict[int, int], stuck: set[int]
) -> CheckedOperationDoc:
    return {
        "process": op.process,
        "client": rec.client,
        "op": op.op,
        "f": op.f,
        "input": None if op.input is None else repr(op.input),
        "type": op.type,
        "call_ms": _ms(op.call - origin),
        "return_ms": None if math.isinf(op.ret) or op.type == "info" else _ms(op.ret - origin),
        "response": response_text(rec, op),
        "order": order.get(op.process),
        "stuck": op.process in stuck,
    }


def response_text(rec: Record, op: Operation) -> str:
    """What the service answered, as a count names it (``409 seat taken``, ``timed out``), and what
    a read observed in the model's terms (``200 → 1``)."""
    label = "timed out" if rec.timed_out else answer_label(rec.status, rec.reason, rec.said)
    return label if op.output is None else f"{label} → {op.output!r}"


def _ms(ns: float) -> float:
    return round(ns / 1e6, MS_DIGITS)
