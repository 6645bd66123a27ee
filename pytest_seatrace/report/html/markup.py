"""What every part of the page shares: escaping, outcome colours, plain tables.

Every string of the document is escaped (:func:`esc`): test names, resource ids and response
bodies come from users and services. Each outcome has one colour everywhere (:data:`OUTCOMES`,
CSS classes of the same names): win green, rejection grey, error red, unknown amber; an early
answer (answered before its held bytes were sent) is drawn hollow.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from pytest_seatrace.core.document import PercentilesDoc, RaceDoc

OUTCOMES = ("win", "rejection", "error", "unknown")
"""The outcomes, each with one colour (CSS class of the same name) in every chart and table."""


def esc(value: object) -> str:
    """Escape anything from the document for text and attribute positions alike."""
    return html.escape(str(value), quote=True)


BREAKS = re.compile(r"(::|/|\[|,)")


def wbr_name(value: object) -> str:
    """A test name or id, escaped, with line-break opportunities after ``::``, ``/``, ``[``."""
    return "".join(
        esc(part) + ("<wbr>" if BREAKS.fullmatch(part) else "") for part in BREAKS.split(str(value))
    )


def plain_table(headers: Sequence[str], rows: Iterable[Sequence[object]], left: Sequence[int] = (0,)) -> str:
    """A plain table; cells are escaped here, so callers pass raw values."""
    head = "".join(f'<th class="{"l" if i in left else ""}">{esc(h)}</th>' for i, h in enumerate(headers))
    body = [
        "<tr>"
        + "".join(f'<td class="{"l" if i in left else ""}">{esc(c)}</td>' for i, c in enumerate(row))
        + "</tr>"
        for row in rows
    ]
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def outcome_class(outcome: object) -> str:
    """The outcome's CSS class; anything unknown to this report counts as an error."""
    return outcome if isinstance(outcome, str) and outcome in OUTCOMES else "error"


def early_column(history: dict[str, list[Any]]) -> list[bool]:
    """The history's ``early`` column; documents written before it existed have none."""
    early = history.get("early")
    return [bool(x) for x in early] if early else [False] * len(history["start_ns"])


def percentiles(group: PercentilesDoc) -> list[float | None]:
    """min, p50, p90, p95, p99, max: the columns of every latency table and chart."""
    return [
        group["min_ns"],
        group["med_ns"],
        group["p90_ns"],
        group["p95_ns"],
        group["p99_ns"],
        group["max_ns"],
    ]


def even_spread(items: list[int], room: int) -> list[int]:
    """``room`` items evenly spread over ``items`` (all of them when they fit)."""
    if len(items) <= room:
        return items
    return [items[int(k * len(items) / room)] for k in range(room)] if room > 0 else []


EARLY_MARK = '<i class="sw early"></i>early'


def extra(race: RaceDoc, key: str) -> Any:
    """A key that documents written by older versions lack (``raced``, ``samples``)."""
    return cast("Mapping[str, Any]", race).get(key)
