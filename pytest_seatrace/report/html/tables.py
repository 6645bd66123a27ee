"""The page's tables of one race: statuses, operations, violations, winners, sample responses."""

from __future__ import annotations

from collections.abc import Sequence

from pytest_seatrace.core.document import RaceDoc, status_counts
from pytest_seatrace.report.html.markup import EARLY_MARK, esc, extra, outcome_class, plain_table
from pytest_seatrace.report.wording import (
    OPERATION_HEADERS,
    format_ms,
    ordered_statuses,
    share,
    statuses_text,
)

MAX_VIOLATION_ROWS = 200
MAX_WINNER_RESOURCES = 10
MAX_WINNERS_LISTED = 5
MAX_SAMPLE_RESOURCES = 10
MAX_SAMPLES_LISTED = 5
BODY_SHOWN = 200


StatusRow = tuple[str, str, int]
"""(status or ``no response``, what the bodies said, count)."""


def status_rows(race: RaceDoc) -> list[StatusRow]:
    return ordered_statuses(status_counts(race))


def status_table(rows: Sequence[StatusRow]) -> str:
    """Status, count and share; with a reason column when a body said something."""
    total = sum(n for _, _, n in rows) or 1
    if any(reason for _, reason, _ in rows):
        shown = [(code, reason, n, share(n, total)) for code, reason, n in rows]
        return plain_table(("status", "reason", "count", "share"), shown, left=(0, 1))
    return plain_table(("status", "count", "share"), [(code, n, share(n, total)) for code, _, n in rows])


def operations_table(race: RaceDoc) -> str:
    """A race that mixed operations: its outcomes and statuses per operation."""
    ops = race.get("by_operation")
    if not ops:
        return ""
    rows = [
        (
            op["operation"],
            op["requests"],
            op["wins"],
            op["rejections"],
            op["errors"],
            op["unknown"],
            statuses_text(op["status_counts"]),
        )
        for op in ops
    ]
    return "<h3>Per operation</h3>" + plain_table(OPERATION_HEADERS, rows, left=(0, 6))


def violations_table(race: RaceDoc) -> str:
    violations = race["violations"]
    if not violations:
        return '<p class="note">No violations.</p>'
    rows = [
        (
            v["kind"],
            "-" if v["resource"] is None else v["resource"],
            "-" if v["round"] is None else v["round"],
            v["allowed"],
            v["found"],
            v["detail"],
        )
        for v in violations[:MAX_VIOLATION_ROWS]
    ]
    more = len(violations) - len(rows)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="{"wrap" if i in (1, 5) else "l" if i == 0 else ""}">{esc(c)}</td>'
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    heads = ("violation", "resource", "round", "allowed", "found", "detail")
    head = "".join(f'<th class="{"l" if i in (0, 1, 5) else ""}">{h}</th>' for i, h in enumerate(heads))
    text = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    rate = race["violation_rate"]
    if rate:
        text = f'<p class="note">{esc(rate)}</p>' + text
    if more > 0:
        text += f'<p class="note">and {more} more violations (see the JSON report)</p>'
    return text


def winners_table(race: RaceDoc) -> str:
    """Who won the resources that broke the rule, with the start of what the service said."""
    violated = []
    for v in race["violations"]:
        res = v["resource"]
        if res is not None and res not in violated and race["winners"].get(res):
            violated.append(res)
    if not violated:
        return ""
    rows = []
    for res in violated[:MAX_WINNER_RESOURCES]:
        wins = race["winners"][res]
        for w in wins[:MAX_WINNERS_LISTED]:
            body = w["body"]
            body = body[:BODY_SHOWN] + ("…" if len(body) > BODY_SHOWN else "")
            rows.append(
                f'<tr><td class="wrap">{esc(res)}</td><td>{esc(w["client"])}</td><td>{esc(w["round"])}</td>'
                f"<td>{esc(w['status'])}</td><td>{format_ms(w['latency_ns'], 2)}</td>"
                f'<td class="body">{esc(body)}</td></tr>'
            )
        if len(wins) > MAX_WINNERS_LISTED:
            rows.append(
                f'<tr><td class="wrap">{esc(res)}</td><td colspan="5" class="l">'
                f"and {len(wins) - MAX_WINNERS_LISTED} more winners</td></tr>"
            )
    more = len(violated) - MAX_WINNER_RESOURCES
    note = f'<p class="note">and {more} more resources with violations</p>' if more > 0 else ""
    return (
        "<h3>Winners of the resources that broke the rule</h3><table><thead><tr>"
        '<th class="l">resource</th><th>client</th><th>round</th><th>status</th><th>latency ms</th>'
        f'<th class="l">body (start)</th></tr></thead><tbody>{"".join(rows)}</tbody></table>{note}'
    )


def samples_table(race: RaceDoc) -> str:
    """A few responses per resource, losers included: what the service said, in its words."""
    samples = extra(race, "samples")
    if not samples:
        return ""
    violated = [str(v["resource"]) for v in race["violations"] if v["resource"] is not None]
    order = list(dict.fromkeys([*violated, *(str(r) for r in race["resources"]), *map(str, samples)]))
    listed = [res for res in order if samples.get(res)]
    rows = []
    for res in listed[:MAX_SAMPLE_RESOURCES]:
        for sample in samples[res][:MAX_SAMPLES_LISTED]:
            kind = outcome_class(sample.get("outcome"))
            body = str(sample.get("body", ""))[:BODY_SHOWN]
            rows.append(
                f'<tr><td class="wrap">{esc(res)}</td><td>{esc(sample.get("client", ""))}</td>'
                f"<td>{esc(sample.get('round', ''))}</td><td>{esc(sample.get('status') or '-')}</td>"
                f'<td class="l"><i class="sw {kind}"></i>{esc(sample.get("outcome", ""))}</td>'
                f"<td>{format_ms(sample.get('latency_ns'), 2)}</td>"
                f'<td class="l">{EARLY_MARK if sample.get("early") else ""}</td>'
                f'<td class="body">{esc(body)}</td><td class="wrap">{esc(sample.get("reason", ""))}</td></tr>'
            )
    more = len(listed) - MAX_SAMPLE_RESOURCES
    note = f'<p class="note">and {more} more resources (see the JSON report)</p>' if more > 0 else ""
    heads = (
        "resource",
        "client",
        "round",
        "status",
        "outcome",
        "latency ms",
        "early",
        "body (start)",
        "reason",
    )
    left = ("resource", "outcome", "early", "body (start)", "reason")
    head = "".join(f'<th class="{"l" if h in left else ""}">{h}</th>' for h in heads)
    return (
        '<h3>Sample responses</h3><p class="note">The first responses seen per resource, losers '
        f"included (violating resources first, {MAX_SAMPLE_RESOURCES} resources at most).</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{note}"
    )
