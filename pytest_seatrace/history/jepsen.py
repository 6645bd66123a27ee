"""Jepsen histories in and out: EDN with one map per line (what Knossos and Elle read), and the
``jepsen.util`` log lines of older Jepsen tests (Porcupine's etcd data). An ``:invoke`` pairs with the
next ``:ok``/``:fail``/``:info`` of its process; an invoke never completed is ``info``."""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

from pytest_seatrace.history.edn import EdnError, Keyword, dump, parse
from pytest_seatrace.history.operation import OP_TYPES, Operation, OpType, freeze

_LOG_LINE = re.compile(r"jepsen\.util\s+-\s+(\S+)\s+(:\S+)\s+(:\S+)\s*(.*)$")
_FIELDS = {"process", "type", "f", "value", "key", "time", "index", "op"}


@dataclass(frozen=True, slots=True)
class _Event:
    line: int
    process: int
    type: str
    f: str
    value: Any
    key: Hashable
    time: int | None
    op: str


def read_edn(text: str) -> list[Operation]:
    """Operations from a history of one EDN map per line, in the order they were invoked. ``:time`` (ns)
    gives the instants when every line has one, else the line order does. Events of a non-integer
    ``:process`` (Jepsen's ``:nemesis``) are not client operations and are skipped."""
    return _pair(_edn_events(text))


def read_jepsen_log(text: str) -> list[Operation]:
    """Operations from ``INFO jepsen.util - 3 :invoke :cas [1 2]`` log lines; other lines are skipped."""
    return _pair(_log_events(text))


def write_edn(operations: Iterable[Operation]) -> str:
    """One map per line: :process :type :f :value :index :time (ns) and :key, :op when set. Invokes come
    before completions at the same instant; an ``info`` completes after everything else."""
    ops = list(operations)
    finite = [t for op in ops for t in (op.call, op.ret) if math.isfinite(t)]
    last = max(finite, default=0.0)
    events: list[tuple[float, int, int, Operation]] = []
    for n, op in enumerate(ops):
        events.append((op.call, 0, n, op))
        events.append((op.ret if op.completed else math.inf, 1, n, op))
    events.sort(key=lambda e: e[:3])
    lines = []
    for index, (at, completes, _, op) in enumerate(events):
        kind = op.type if completes else "invoke"
        value = op.output if completes and op.completed else op.input
        fields: dict[Any, Any] = {
            Keyword("process"): op.process,
            Keyword("type"): Keyword(kind),
            Keyword("f"): Keyword(op.f),
            Keyword("value"): value,
            Keyword("index"): index,
            Keyword("time"): round((at if math.isfinite(at) else last) * 1e9),
        }
        if op.key is not None:
            fields[Keyword("key")] = op.key
        if op.op:
            fields[Keyword("op")] = op.op
        lines.append(dump(fields))
    return "".join(line + "\n" for line in lines)


def _edn_events(text: str) -> Iterator[_Event]:
    for line, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            value = parse(raw)
        except EdnError as error:
            raise EdnError(f"line {line}: {error}") from None
        if not isinstance(value, dict):
            raise EdnError(
                f"line {line}: expected a map {{:process … :type … :f …}}, got {raw.strip()[:40]!r}"
            )
        fields = {k.name: v for k, v in value.items() if isinstance(k, Keyword) and k.name in _FIELDS}
        missing = [name for name in ("process", "type", "f") if name not in fields]
        if missing:
            raise EdnError(f"line {line}: no :{missing[0]}")
        event = _event(line, fields["process"], fields["type"], fields["f"], fields.get("value"))
        if event is not None:
            time, op = fields.get("time"), fields.get("op", "")
            yield _Event(
                line,
                event.process,
                event.type,
                event.f,
                event.value,
                freeze(fields.get("key")),
                time if isinstance(time, int) and not isinstance(time, bool) else None,
                op if isinstance(op, str) else str(op),
            )


def _log_events(text: str) -> Iterator[_Event]:
    for line, raw in enumerate(text.splitlines(), 1):
        match = _LOG_LINE.search(raw)
        if match is None:
            continue
        try:
            process, kind, f = (parse(group) for group in match.groups()[:3])
            value = parse(match.group(4)) if match.group(4).strip() else None
        except EdnError as error:
            raise EdnError(f"line {line}: {error}") from None
        event = _event(line, process, kind, f, value)
        if event is not None:
            yield event


def _event(line: int, process: Any, kind: Any, f: Any, value: Any) -> _Event | None:
    if not isinstance(process, int) or isinstance(process, bool):
        return None
    if not isinstance(kind, Keyword) or kind.name not in ("invoke", *OP_TYPES):
        raise EdnError(f"line {line}: :type {dump(kind)}: expected :invoke, :ok, :fail or :info")
    if not isinstance(f, Keyword | str):
        raise EdnError(f"line {line}: :f {dump(f)}: expected a keyword")
    name = f.name if isinstance(f, Keyword) else f
    return _Event(line, process, kind.name, name, freeze(value), None, None, "")


def _pair(events: Iterable[_Event]) -> list[Operation]:
    events = list(events)
    timed = bool(events) and all(e.time is not None for e in events)

    def instant(e: _Event) -> float:
        return cast(int, e.time) / 1e9 if timed else float(e.line)

    pending: dict[int, _Event] = {}
    done: list[tuple[int, Operation]] = []
    for e in events:
        if e.type == "invoke":
            if e.process in pending:
                raise EdnError(
                    f"line {e.line}: process {e.process} invokes again before its :invoke on line "
                    f"{pending[e.process].line} completed"
                )
            pending[e.process] = e
            continue
        start = pending.pop(e.process, None)
        if start is None:
            raise EdnError(f"line {e.line}: :{e.type} for process {e.process}, which has no :invoke pending")
        kind = cast(OpType, e.type)
        ret = instant(e) if kind != "info" else math.inf
        output = e.value if kind != "info" else None
        done.append((start.line, _operation(start, kind, output, instant(start), ret)))
    done += [
        (start.line, _operation(start, "info", None, instant(start), math.inf)) for start in pending.values()
    ]
    return [op for _, op in sorted(done, key=lambda pair: pair[0])]


def _operation(start: _Event, kind: OpType, output: Any, call: float, ret: float) -> Operation:
    return Operation(start.process, start.f, start.value, kind, output, call, ret, start.key, start.op)
