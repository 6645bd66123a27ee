"""A history that is not linearizable, as a table for the violation message: the longest prefix the
model accepts, numbered in its order, then the operations that cannot follow it (``✗``).

Read from the race document's ``histories``. Short at any size: identical operations in a row of the
prefix (and identical ones among those that cannot follow) share a row, as ``Verdict.explanation``
groups them, and the rows are capped.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

from pytest_seatrace.core.document import CheckedHistoryDoc, CheckedOperationDoc, RaceDoc

TABLES_SHOWN = 3
"""Histories drawn as a table in one message; the report's timeline shows every one."""
PREFIX_ROWS = 8
"""Rows of a long prefix shown: its first two and the last ones before it got stuck."""
STUCK_ROWS = 4
"""Rows of operations that cannot follow the prefix."""
HEADERS = ("#", "client", "operation", "call–return ms", "response")
STUCK_MARK = "✗"


def _same(o: CheckedOperationDoc) -> tuple[object, ...]:
    """What makes two operations one row: the same request, the same model call, the same answer."""
    return (o["op"], o["f"], o["input"], o["type"], o["response"])


def _kinds(ops: Sequence[CheckedOperationDoc]) -> list[list[CheckedOperationDoc]]:
    kinds: dict[tuple[object, ...], list[CheckedOperationDoc]] = {}
    for o in ops:
        kinds.setdefault(_same(o), []).append(o)
    return list(kinds.values())


def _row(number: str, ops: Sequence[CheckedOperationDoc]) -> list[str]:
    first = ops[0]
    clients = (
        str(first["client"]) if len(ops) == 1 else f"{len(ops)}× ({first['client']}, {ops[1]['client']}, …)"
    )
    call = min(o["call_ms"] for o in ops)
    returns = [o["return_ms"] for o in ops]
    ret = "∞" if None in returns else f"{max(r for r in returns if r is not None):.3f}"
    described = f"{first['f']}({first['input'] or ''}) -> " + (
        "? (info)" if first["type"] == "info" else first["type"]
    )
    return [number, clients, f"{first['op']} {described}".strip(), f"{call:.3f}–{ret}", first["response"]]


def history_table(history: CheckedHistoryDoc) -> str:
    """The table of one history that is not linearizable, with its heading."""
    from tabulate import tabulate

    ops = history["operations"]
    prefix = sorted((o for o in ops if o["order"] is not None), key=lambda o: o["order"] or 0)
    rows: list[list[str]] = []
    for run in (list(same) for _, same in groupby(prefix, key=_same)):
        at = run[0]["order"]
        rows.append(_row(str(at) if len(run) == 1 else f"{at}-{run[-1]['order']}", run))
    if len(rows) > PREFIX_ROWS:
        hidden = len(rows) - PREFIX_ROWS
        rows = [*rows[:2], ["…", f"and {hidden} more rows", "", "", ""], *rows[2 - PREFIX_ROWS :]]
    stuck = _kinds([o for o in ops if o["stuck"]])
    rows += [_row(STUCK_MARK, kind) for kind in stuck[:STUCK_ROWS]]
    if len(stuck) > STUCK_ROWS:
        rows.append([STUCK_MARK, f"and {len(stuck) - STUCK_ROWS} more kinds", "", "", ""])
    where = f"resource {history['resource']} (round {history['round']})"
    head = f"history of {where} under {history['model']}: not linearizable"
    note = f"rows marked {STUCK_MARK} cannot follow the prefix above: the model accepts none of them next"
    return f"{head}\n{tabulate(rows, headers=HEADERS, tablefmt='simple', disable_numparse=True)}\n{note}"


def history_tables(race: RaceDoc) -> str:
    """Every history of the race that is not linearizable, as tables (``TABLES_SHOWN`` at most);
    empty for a race without a model or with none."""
    failing = [h for h in race.get("histories", []) if h["valid"] is False]
    tables = [history_table(h) for h in failing[:TABLES_SHOWN]]
    if len(failing) > TABLES_SHOWN:
        tables.append(
            f"… and {len(failing) - TABLES_SHOWN} more histories not linearizable (the report shows each)"
        )
    return "\n\n".join(tables)
