"""A race's records as a history of operations (design §7), for a model's linearizability check.

Each request sent is one operation, its process unique per (round, resource, client): the record's
index in the race. A win is ``ok``, a clean rejection ``fail`` (an observation the model checks),
anything that may have taken effect ``info`` (a timeout, a transport error after the release, a
5xx, an ``error=`` or unclassified answer), which returns at +inf. A request of which nothing was
sent (``call_ns`` 0: a failure before the release) is no operation. A shard's instants are widened
by its clock error, so the history never claims more order than the clocks can show.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Mapping, Sequence

from pytest_seatrace.core.operations import readings
from pytest_seatrace.core.records import Outcome, Record, ShardInfo
from pytest_seatrace.history.model import Function, Model
from pytest_seatrace.history.operation import Operation, OpType, freeze

JEPSEN_TYPES: Mapping[Outcome, OpType] = {
    Outcome.WIN: "ok",
    Outcome.REJECTION: "fail",
    Outcome.ERROR: "info",
    Outcome.UNKNOWN: "info",
}
"""An outcome as Jepsen types it: what may have taken effect is ``info``."""


def function_of(model: Model, operation: str) -> Function | None:
    """The model's function a raced operation name is; an ambiguous name (``{resource|client}``,
    ``core.operations``) is the first of its readings the model covers. ``None``: none covers it."""
    for reading in readings(operation):
        found = model.function_for(reading)
        if found is not None:
            return found
    return None


def jepsen_type(rec: Record) -> OpType:
    """``ok``, ``fail`` or ``info``; a predicate that raised leaves the outcome open: ``info``."""
    return "info" if rec.fatal else JEPSEN_TYPES[rec.outcome]


def operation(process: int, rec: Record, model: Model, key: Hashable, widen_ns: int = 0) -> Operation:
    """One sent request as an operation of ``model``'s history; ``LookupError`` when no function of
    the model covers its operation name."""
    function = function_of(model, rec.operation)
    if function is None:
        model.translate(rec.operation, None, None)  # raises the LookupError that names what it covers
        raise AssertionError("unreachable")  # pragma: no cover
    kind = jepsen_type(rec)
    if function.extract is not None and not function.reads:
        value = rec.input
    else:
        value = freeze(model.default_inputs.get(function.name))
    output = rec.output if function.reads and kind == "ok" else None
    call = float(rec.call_ns - widen_ns)
    ret = math.inf if kind == "info" else float(max(rec.end_ns, rec.call_ns) + widen_ns)
    return Operation(process, function.name, value, kind, output, call, ret, key, rec.operation)


def operations(
    records: Sequence[Record],
    model: Model,
    resources: Sequence[Hashable],
    shards: Sequence[ShardInfo] = (),
    rnd: int | None = None,
) -> list[Operation]:
    """The history of a race (of one round when ``rnd`` is given): one operation per sent request,
    keyed by its resource id, its process the record's index in ``records``. A request no function
    covers has no place in it: the engine refuses such a request before sending it, so only a
    ``race.run`` attempt that raised after its gate (a fatal record, which fails the race by
    itself) can leave one."""
    errors = {info.number: info.error_ns for info in shards}
    return [
        operation(index, rec, model, resources[rec.resource], errors.get(rec.shard, 0))
        for index, rec in _sent(records, rnd)
        if not rec.fatal or function_of(model, rec.operation) is not None
    ]


def _sent(records: Sequence[Record], rnd: int | None) -> Iterator[tuple[int, Record]]:
    for index, rec in enumerate(records):
        if rec.call_ns and (rnd is None or rec.round == rnd):
            yield index, rec
