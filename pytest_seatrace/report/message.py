"""The message of a ``RaceViolation``: which resources broke, and who won them."""

from __future__ import annotations

from pytest_seatrace.core.judge import early_hint
from pytest_seatrace.core.redact import redact_text
from pytest_seatrace.core.result import RaceResult
from pytest_seatrace.core.violations import WINNER_KINDS, ViolationKind

MAX_ROWS = 20
MAX_WINNERS = 3


def violation_message(result: RaceResult) -> str:
    from tabulate import tabulate

    rounds = result.rounds > 1  # with one round, no "round" column
    rows = []
    for v in result.violations[:MAX_ROWS]:
        wins = result.winners.get(v.resource, []) if v.resource is not None else []
        wins = [w for w in wins if v.round is None or w.round == v.round]
        shown = ", ".join(
            f"client {w.client} → {w.status} {redact_text(w.body[:40].decode('utf-8', 'replace'))!r}"
            for w in wins[:MAX_WINNERS]
        )
        if len(wins) > MAX_WINNERS:
            shown += f", +{len(wins) - MAX_WINNERS} more"
        rows.append(
            [
                "-" if v.resource is None else v.resource,
                *([v.round] if rounds else []),
                v.kind,
                v.allowed,
                v.found,
                (shown or v.detail) if v.kind in WINNER_KINDS else v.detail,
            ]
        )
    headers = [
        "resource",
        *(["round"] if rounds else []),
        "violation",
        "allowed",
        "found",
        "winners / detail",
    ]
    table = tabulate(rows, headers=headers, tablefmt="simple")
    more = (
        f"\n… and {len(result.violations) - MAX_ROWS} more violations"
        if len(result.violations) > MAX_ROWS
        else ""
    )
    rate = f" ({result.violation_rate()})" if result.rounds > 1 else ""
    only_hook = all(v.kind is ViolationKind.HOOK for v in result.violations)
    what = "race could not finish" if only_hook else f"race broke its invariant{rate}"
    head = (
        f"{what}: {len(result.violations)} violation(s) over "
        f"{len(result.resources)} resource(s) × {result.concurrency} clients, {result.requests} requests "
        f"({result.wins} wins, {result.rejections} rejections, {result.errors} errors, "
        f"{result.unknown} unknown)"
    )
    if result.stopped is not None:
        head += f"\nstopped: {result.stopped.reason}"
    raced = result.raced
    if raced is not None:
        hold = f", hold={result.config.hold}" if result.mode == "last-byte" else ""
        head += f"\nraced: {raced.method} {raced.url} ({result.mode}{hold}, {raced.http_version})"
    return f"{head}\n{table}{more}{_early_note(result)}"


def _early_note(result: RaceResult) -> str:
    """Early answers among the requests, with what to try, unless a violation already says it."""
    if not result.early:
        return ""
    hint = early_hint(result.mode, result.config.hold if result.mode == "last-byte" else None)
    if hint and any(hint in v.detail for v in result.violations):
        return ""
    return (
        f"\nearly answers: {result.early} of {result.requests} were answered before their held "
        "bytes were sent (not synchronised)" + (f"; {hint}" if hint else "")
    )
