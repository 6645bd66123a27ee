"""Notes on how a race's responses were classified: advice that never changes the verdict.

Without ``reject=``, every 4xx (or, with ``success=``, every non-win below 500) counts as a
clean loss. That reading can hide a failure: a CSRF 403 beside the 409s of the real losers, or a
service that refused everyone. The notes say when the rejections look like that, and suggest
``reject=``, under which anything that matches no rule is an error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.records import Outcome, Record

NOT_ALLOWED_STATUSES = frozenset({401, 403, 404, 405, 407})
"""Statuses that usually mean "not allowed to try" (credentials, permission, URL, method,
proxy), not "lost the race"."""

KINDS_SHOWN = 4
"""Kinds of rejection a note lists by name; the rest are counted."""


def _kind(status: int, reason: str) -> str:
    return f"{status} {reason}" if reason else str(status)


def _mixed_within_a_resource(rejections: Iterable[Record]) -> bool:
    """Whether one resource's rejections fall into several kinds. A reason that differs only from
    one resource to the next (``seat 1 is taken``, ``seat 2 is taken``) is one kind of loss."""
    seen: dict[int, tuple[int, str]] = {}
    for rec in rejections:
        kind = (rec.status, rec.said or "")
        if seen.setdefault(rec.resource, kind) != kind:
            return True
    return False


def classification_notes(records: Iterable[Record], config: RaceConfig) -> tuple[str, ...]:
    """The notes of a race that gave no ``reject=``: rejections of several kinds (status and
    short reason, the status alone where no reason is known), and rejections that are all
    "not allowed to try" statuses. Empty when the test said what a loss is."""
    if config.reject_given:
        return ()
    rejections = [r for r in records if r.outcome is Outcome.REJECTION]
    if not rejections:
        return ()
    kinds = Counter((r.status, r.said or "") for r in rejections)
    notes = []
    if _mixed_within_a_resource(rejections):
        named = kinds.most_common(KINDS_SHOWN)
        shown = ", ".join(f"{n}× {_kind(status, reason)}" for (status, reason), n in named)
        if len(kinds) > KINDS_SHOWN:
            shown += f" and {len(kinds) - KINDS_SHOWN} more"
        notes.append(
            f"rejections of {len(kinds)} kinds ({shown}): if only some of them mean a lost race, "
            "name those with reject= (the rest then count as errors)"
        )
    statuses = sorted({status for status, _ in kinds})
    if set(statuses) <= NOT_ALLOWED_STATUSES:
        codes = ", ".join(str(s) for s in statuses)
        suggestion = codes if len(statuses) == 1 else f"[{codes}]"
        notes.append(
            f"every rejection was {codes}, which usually means not allowed to try (credentials, "
            "permission, URL or method), not lost the race: check the request, or if that is "
            f"how this service says sold out, say so with reject={suggestion}"
        )
    return tuple(notes)
