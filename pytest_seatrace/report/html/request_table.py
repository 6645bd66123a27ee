"""Each race's table of requests, sortable and filterable by the page's script.

Capped per race and over the page, so a session of many races stays a few MB: winners, then
errors, timeouts and early answers, then an even sample of the rest; the page says so.
"""

from __future__ import annotations

import math
from typing import Any

from pytest_seatrace.core.document import RaceDoc
from pytest_seatrace.report.html.markup import (
    EARLY_MARK,
    OUTCOMES,
    early_column,
    esc,
    even_spread,
    outcome_class,
)
from pytest_seatrace.report.wording import format_ms

MAX_TABLE_ROWS = 2000
"""Rows of a race's request table at most: winners, then errors, timeouts and early answers,
then an even sample of the rest."""
MAX_TABLE_ROWS_TOTAL = 20_000
"""Rows of every request table together, so a session of many races stays a few MB; races
are served in report order (failing first), each getting at least ``MIN_TABLE_ROWS``."""
MIN_TABLE_ROWS = 200


REQUEST_COLUMNS = (
    ("sent ms", "when its final write went out, ms since the race's first send"),
    ("client", "client number within its resource"),
    ("resource", "resource id"),
    ("round", "round"),
    ("status", "HTTP status (- for none)"),
    ("outcome", "how the response counted"),
    ("latency ms", "final write to complete response"),
    ("arrival ms", "the service's X-Arrival-Ns stamp, ms since the race's first arrival there"),
    ("early", "answered before its held bytes were sent"),
    ("reason", "why it is an error or unknown, else what a rejection's body said"),
)
LEFT_COLUMNS = ("resource", "outcome", "early", "reason")


OUTCOME_FILTERS = (("", "any"), *((o, o) for o in OUTCOMES), ("early", "early answers"))


def _table_rows(history: dict[str, list[Any]], cap: int) -> tuple[list[int], int]:
    """The requests a table shows, at most ``cap``: winners, then errors, unknowns and early
    answers, then an even sample of the rest; in sending order. Returns (rows, priority rows)."""
    outcome, early = history["outcome"], early_column(history)
    everyone = range(len(outcome))
    if len(everyone) <= cap:
        rows, first = list(everyone), []
    else:
        first = [i for i in everyone if outcome[i] == "win"]
        first += [i for i in everyone if outcome[i] != "win" and (outcome[i] != "rejection" or early[i])]
        first = first[:cap]
        chosen = set(first)
        rows = first + even_spread([i for i in everyone if i not in chosen], cap - len(first))
    sent, rounds = history["start_ns"], history.get("round") or [1] * len(outcome)
    rows.sort(key=lambda i: (rounds[i], sent[i] or math.inf, i))
    return rows, len(first)


def request_table(index: int, race: RaceDoc, cap: int) -> tuple[str, int]:
    """The race's table of requests (sortable and filterable with the script), and its rows."""
    history = race.get("history")
    if not history or not history["start_ns"]:
        return "", 0
    total = len(history["start_ns"])
    rows, first = _table_rows(history, cap)
    sent, end, server = history["start_ns"], history["end_ns"], history.get("server_ns") or [0] * total
    t0 = min((s for s in sent if s), default=0)
    s0 = min((s for s in server if s), default=0)
    early = early_column(history)
    reasons = history.get("reason") or [""] * total  # older documents have no reasons
    out = []
    for n, i in enumerate(rows):
        kind = outcome_class(history["outcome"][i])
        marks = f' data-o="{kind}" class="{kind}"' + (" data-early" if early[i] else "")
        status = history["status"][i]
        sent_cell = (
            f'<td data-k="{(sent[i] - t0) / 1e6:.4f}">{(sent[i] - t0) / 1e6:.3f}</td>'
            if sent[i]
            else '<td data-k="-1">-</td>'
        )
        latency = (
            f'<td data-k="{end[i] - sent[i]}">{format_ms(end[i] - sent[i], 2)}</td>'
            if sent[i] and end[i] >= sent[i]
            else '<td data-k="-1">-</td>'
        )
        arrival = (
            f'<td data-k="{(server[i] - s0) / 1e6:.4f}">{(server[i] - s0) / 1e6:.3f}</td>'
            if server[i]
            else '<td data-k="-1">-</td>'
        )
        out.append(
            f'<tr data-n="{n}"{marks}>{sent_cell}<td>{esc(history["client"][i])}</td>'
            f'<td class="l">{esc(history["resource"][i])}</td><td>{esc(history["round"][i])}</td>'
            f'<td data-k="{esc(status or 0)}">{esc(status or "-")}</td>'
            f'<td class="l"><i class="sw {kind}"></i>{esc(history["outcome"][i])}</td>{latency}{arrival}'
            f'<td class="l">{EARLY_MARK if early[i] else ""}</td><td class="wrap">{esc(reasons[i])}</td></tr>'
        )
    if len(rows) == total:
        note = f"All {total:,} requests, in sending order."
    else:
        note = (
            f"{len(rows):,} of {total:,} requests (at most {cap:,} rows here): "
            f"{first:,} winners, errors, timeouts and early answers first, then an even sample of the "
            "rest, in sending order. The JSON report has every request."
        )
    head = "".join(
        f'<th class="{"l" if name in LEFT_COLUMNS else ""}" title="{esc(tip)}">{esc(name)}</th>'
        for name, tip in REQUEST_COLUMNS
    )
    options = "".join(f'<option value="{v}">{esc(label)}</option>' for v, label in OUTCOME_FILTERS)
    tools = (
        f'<div class="tools" data-table="req-{index}" hidden>'
        '<label>filter <input type="search" placeholder="client, resource, status…"></label>'
        f"<label>outcome <select>{options}</select></label><output></output></div>"
    )
    table = (
        f'<div class="scroll"><table class="requests" id="req-{index}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(out)}</tbody></table></div>"
    )
    return f'<h3>Requests</h3><p class="note">{note}</p>{tools}{table}', len(rows)
