"""The rules that decide pass or fail, from records alone (design §1 "Exact semantics")."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

from pytest_seatrace.race_config import RaceConfig
from pytest_seatrace.results import Outcome, RaceResult, Record, Violation

NEVER_WIN_STATUSES = frozenset(
    {400, 401, 403, 404, 405, 406, 407, 410, 411, 413, 414, 415, 421, 422, 426, 431, 501, 505}
)
"""A resource where every response is the same one of these could not have been won by anyone:
a wrong URL, method, credential or body. It must never pass silently, even when ``expect``
admits zero winners."""


def describe_range(expect: range) -> str:
    low, high = expect.start, expect.stop - 1
    return str(low) if low == high else f"{low}..{high}"


def invariant_violations(
    records: Sequence[Record],
    config: RaceConfig,
    held: Mapping[tuple[int, int], int] | None = None,
) -> list[Violation]:
    """Violations per (round, resource); ``held`` maps (round, resource index) to the holders
    that ``verify=`` read from the final state."""
    groups: dict[tuple[int, int], list[Record]] = {}
    for rec in records:
        groups.setdefault((rec.round, rec.resource), []).append(rec)
    out: list[Violation] = []
    allowed = describe_range(config.expect)
    for (rnd, index), recs in sorted(groups.items()):
        resource = config.resources[index]
        counts = Counter(r.outcome for r in recs)
        wins, unknown = counts[Outcome.WIN], counts[Outcome.UNKNOWN]
        possible = range(wins, wins + unknown + 1)
        inside = [n in config.expect for n in possible]
        holders = None if held is None else held.get((rnd, index))
        if not any(inside):
            kind = "too-many" if wins > config.expect.stop - 1 else "too-few"
            found = str(wins) if not unknown else f"{wins}..{wins + unknown}"
            out.append(Violation(kind, resource, rnd, allowed, found, _winner_detail(recs)))
        elif not all(inside) and holders is not None and holders in possible:
            if holders < config.expect.start:  # settled by the final state: too few (too many is "double")
                detail = f"{unknown} timed out; the final state holds {holders}"
                out.append(Violation("too-few", resource, rnd, allowed, str(holders), detail))
        elif not all(inside):
            out.append(
                Violation(
                    "indeterminate",
                    resource,
                    rnd,
                    allowed,
                    f"{wins}..{wins + unknown}",
                    f"{unknown} timed out after the final write; their outcome decides; "
                    "pass verify= to settle it from the final state",
                )
            )
        if holders is not None:
            out.extend(_reconcile(resource, rnd, holders, wins, unknown, config.expect))
        predicate = [r for r in recs if r.fatal]
        if predicate:
            out.append(
                Violation(
                    "predicate",
                    resource,
                    rnd,
                    "0",
                    str(len(predicate)),
                    f"{predicate[0].reason} (fails even with allow_errors=True)",
                )
            )
        errors = [r for r in recs if r.outcome is Outcome.ERROR and not r.fatal]
        if errors and not config.allow_errors:
            reasons = Counter(r.reason or "error" for r in errors).most_common(2)
            detail = "; ".join(f"{n}× {text}" for text, n in reasons)
            out.append(Violation("error", resource, rnd, "0", str(len(errors)), detail))
        if not wins and not unknown:
            sanity = _no_winner_possible(recs)
            if sanity:
                out.append(Violation("no-winner-possible", resource, rnd, allowed, "0", sanity))
    return out


def _reconcile(
    resource: Hashable, rnd: int, holders: int, wins: int, unknown: int, expect: range
) -> list[Violation]:
    out = []
    if holders < wins:
        out.append(
            Violation(
                "lost", resource, rnd, f">= {wins}", str(holders), "acknowledged wins missing from state"
            )
        )
    if holders > wins + unknown:
        out.append(
            Violation(
                "phantom", resource, rnd, f"<= {wins + unknown}", str(holders), "holders nobody was told of"
            )
        )
    if holders > expect.stop - 1:
        out.append(
            Violation(
                "double", resource, rnd, describe_range(expect), str(holders), "held in the final state"
            )
        )
    return out


def _no_winner_possible(recs: Sequence[Record]) -> str:
    statuses = {r.status for r in recs}
    if statuses == {0} and all(r.outcome is Outcome.ERROR for r in recs):
        reasons = Counter(r.reason or "error" for r in recs).most_common(1)
        return f"no attempt could win: every request failed ({reasons[0][0]})"
    if len(statuses) == 1:
        (status,) = statuses
        if status in NEVER_WIN_STATUSES:
            return f"no attempt could win: every response was {status} (wrong URL, method or body?)"
    return ""


def _winner_detail(recs: Sequence[Record]) -> str:
    wins = [r for r in recs if r.outcome is Outcome.WIN]
    shown = ", ".join(f"client {r.client} ({r.status})" for r in wins[:5])
    more = f" and {len(wins) - 5} more" if len(wins) > 5 else ""
    return f"winners: {shown}{more}" if wins else "no winner"


def threshold_violations(result: RaceResult, config: RaceConfig) -> list[Violation]:
    out = []
    for th in config.thresholds:
        value = th.measure(result)
        if not th.holds(value):
            out.append(
                Violation(
                    "threshold",
                    None,
                    None,
                    th.text,
                    th.format_value(value),
                    f"{th.metric} = {th.format_value(value)}",
                )
            )
    return out
