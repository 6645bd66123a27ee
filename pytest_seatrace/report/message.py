"""The message of a ``RaceViolation``: which resources broke, who won them, and the histories a
model could not linearize (``history_table``).

Rendered from the race document (``RaceResult.to_dict()``), the one the summary and the report
files read, so the three say the same thing in the same words.
"""

from __future__ import annotations

from pytest_seatrace.core.document import RaceDoc, ViolationDoc
from pytest_seatrace.core.violations import WINNER_KINDS, ViolationKind
from pytest_seatrace.report.history_table import history_tables
from pytest_seatrace.report.wording import early_note, stopped_text

MAX_ROWS = 20
MAX_WINNERS = 3
BODY_SHOWN = 40
"""Characters of a winner's body (already redacted in the document) shown per winner."""

_WINNER_KINDS = frozenset(kind.value for kind in WINNER_KINDS)


def _winners(race: RaceDoc, v: ViolationDoc) -> str:
    """Who won the violation's resource (in its round): ``client 3 → 201 '{"order_id": 1}'``."""
    wins = race["winners"].get(v["resource"], []) if v["resource"] is not None else []
    wins = [w for w in wins if v["round"] is None or w["round"] == v["round"]]
    shown = ", ".join(
        f"client {w['client']} → {w['status']} {w['body'][:BODY_SHOWN]!r}" for w in wins[:MAX_WINNERS]
    )
    if len(wins) > MAX_WINNERS:
        shown += f", +{len(wins) - MAX_WINNERS} more"
    return shown


def _head(race: RaceDoc) -> str:
    violations = race["violations"]
    rate = f" ({race['violation_rate']})" if race["rounds"] > 1 else ""
    only_hook = all(v["kind"] == ViolationKind.HOOK.value for v in violations)
    what = "race could not finish" if only_hook else f"race broke its invariant{rate}"
    head = (
        f"{what}: {len(violations)} violation(s) over "
        f"{len(race['resources'])} resource(s) × {race['concurrency']} clients, {race['requests']} requests "
        f"({race['wins']} wins, {race['rejections']} rejections, {race['errors']} errors, "
        f"{race['unknown']} unknown)"
    )
    stopped = stopped_text(race)
    if stopped is not None:
        head += f"\n{stopped}"
    raced = race["raced"]
    if raced is not None:
        hold = f", hold={raced['hold']}" if raced["hold"] is not None else ""
        head += f"\nraced: {raced['method']} {raced['url']} ({race['mode']}{hold}, {raced['http_version']})"
    return head


def violation_message(race: RaceDoc) -> str:
    """The message of a race that broke a rule or could not finish, from its document."""
    from tabulate import tabulate

    rounds = race["rounds"] > 1  # with one round, no "round" column
    violations = race["violations"]
    rows = [
        [
            "-" if v["resource"] is None else v["resource"],
            *([v["round"]] if rounds else []),
            v["kind"],
            v["allowed"],
            v["found"],
            (_winners(race, v) or v["detail"]) if v["kind"] in _WINNER_KINDS else v["detail"],
        ]
        for v in violations[:MAX_ROWS]
    ]
    headers = [
        "resource",
        *(["round"] if rounds else []),
        "violation",
        "allowed",
        "found",
        "winners / detail",
    ]
    table = tabulate(rows, headers=headers, tablefmt="simple")
    more = f"\n… and {len(violations) - MAX_ROWS} more violations" if len(violations) > MAX_ROWS else ""
    early = early_note(race)
    tables = history_tables(race)
    return (
        f"{_head(race)}\n{table}{more}"
        + (f"\n{early}" if early else "")
        + (f"\n\n{tables}" if tables else "")
    )
