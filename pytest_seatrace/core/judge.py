"""The rules that decide pass or fail, from records, figures and config: one function per rule.

Per (round, resource): the winner count against ``expect`` (with timed-out requests as either
outcome), the final state read by ``verify=`` against the acknowledged wins, raising
predicates, errors, and the sanity rule that a wrong URL never passes. With ``model=``, each
partition's history is the model's to judge (``core.linearizability``) and ``expect`` is judged
beside it only when the test gave it. What went wrong while racing (the engine's ``Problem``
facts) is worded here too, and thresholds are judged on the race's figures. ``judge`` runs them
all, in that order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

from pytest_seatrace.core.config import RaceConfig, describe_range
from pytest_seatrace.core.figures import Figures
from pytest_seatrace.core.linearizability import HistoryCheck
from pytest_seatrace.core.reasons import answer_label
from pytest_seatrace.core.records import HookFailed, Outcome, Problem, Record, WaveHung
from pytest_seatrace.core.thresholds import Threshold
from pytest_seatrace.core.violations import Violation, ViolationKind
from pytest_seatrace.history.model import Model

NEVER_WIN_STATUSES = frozenset(
    {400, 401, 403, 404, 405, 406, 407, 410, 411, 413, 414, 415, 421, 422, 426, 431, 501, 505}
)
"""A resource where every response is the same one of these could not have been won by anyone:
a wrong URL, method, credential or body. It must never pass silently, even when ``expect``
admits zero winners."""


@dataclass(frozen=True, slots=True)
class Group:
    """The records of one resource in one round, and what the final state says of it."""

    resource: Hashable
    round: int
    records: Sequence[Record]
    holders: int | None

    @property
    def wins(self) -> int:
        return sum(1 for r in self.records if r.outcome is Outcome.WIN)

    @property
    def unknown(self) -> int:
        return sum(1 for r in self.records if r.outcome is Outcome.UNKNOWN)


def groups(
    records: Sequence[Record], config: RaceConfig, held: Mapping[tuple[int, int], int] | None
) -> list[Group]:
    by_key: dict[tuple[int, int], list[Record]] = {}
    for rec in records:
        by_key.setdefault((rec.round, rec.resource), []).append(rec)
    return [
        Group(config.resources[index], rnd, recs, None if held is None else held.get((rnd, index)))
        for (rnd, index), recs in sorted(by_key.items())
    ]


def invariant_violations(
    records: Sequence[Record], config: RaceConfig, held: Mapping[tuple[int, int], int] | None = None
) -> list[Violation]:
    """Every rule over every (round, resource) group; ``held`` maps (round, resource index) to
    the holders that ``verify=`` read from the final state. With a model, ``expect`` (the winner
    count and a double booking in the final state) is judged only when the test gave it: the
    default ``expect=1`` would call a book/cancel race too-many. The final state is set against
    the wins (lost, phantom) only where every win is one of the model's main update (a booking):
    a won cancel or read holds no seat."""
    counted = config.model is None or config.expect_given
    bookings = config.model is None or _main_only(config.model)
    out: list[Violation] = []
    for group in groups(records, config, held):
        if counted:
            out += winner_count(group, config.expect, config.timeout)
        if bookings:
            out += reconcile(group, config.expect, double=counted)
        out += raising_predicates(group)
        out += errors(group, config.allow_errors)
        out += no_winner_possible(group, config.expect)
        out += not_raced(group, config)
    return out


def winner_count(group: Group, expect: range, timeout: float) -> list[Violation]:
    """Too many or too few winners; indeterminate when timed-out requests decide it."""
    wins, unknown, holders = group.wins, group.unknown, group.holders
    possible = range(wins, wins + unknown + 1)
    inside = [n in expect for n in possible]
    allowed, most = describe_range(expect), expect.stop - 1
    if not any(inside):
        too_many = wins > most
        return [
            Violation(
                ViolationKind.TOO_MANY if too_many else ViolationKind.TOO_FEW,
                group.resource,
                group.round,
                allowed,
                str(wins) if not unknown else f"{wins}..{wins + unknown}",
                _winner_detail(group.records),
                excess=wins - most if too_many else 0,
            )
        ]
    if all(inside):
        return []
    if holders is not None and holders in possible:  # settled by the final state
        if holders >= expect.start:  # too many is reported as "double" by reconcile
            return []
        detail = f"{_unknown_text(group.records, timeout)}; the final state holds {holders}"
        return [Violation(ViolationKind.TOO_FEW, group.resource, group.round, allowed, str(holders), detail)]
    return [
        Violation(
            ViolationKind.INDETERMINATE,
            group.resource,
            group.round,
            allowed,
            f"{wins}..{wins + unknown}",
            f"{_unknown_text(group.records, timeout)}; their outcome decides; "
            "pass verify= to settle it from the final state",
        )
    ]


def _unknown_text(records: Sequence[Record], timeout: float) -> str:
    """Why a group's unknowns have no answer: timed out after their final write, or before it
    (held, the server able to act on their headers), or closed unanswered by the server."""
    unknown = [r for r in records if r.outcome is Outcome.UNKNOWN]
    timed = sum(1 for r in unknown if r.timed_out)
    held = sum(1 for r in unknown if r.timed_out and not r.sent_ns)
    parts = [f"{timed - held} timed out after the final write (timeout={timeout:g}s)"] if timed > held else []
    if held:
        parts.append(f"{held} timed out held, before their final byte went (timeout={timeout:g}s)")
    if len(unknown) > timed:
        parts.append(f"{len(unknown) - timed} closed unanswered by the server")
    return " and ".join(parts) or "0 unknown"


def _main_only(model: Model) -> bool:
    """Whether every raced request is the model's main update (``Seats()``, ``Seats(book=...)``)."""
    return all(f.name == model.main and not f.reads for f in model.functions)


def reconcile(group: Group, expect: range, *, double: bool = True) -> list[Violation]:
    """The final state against acknowledged wins: lost, phantom and (with ``double``) double
    bookings."""
    holders = group.holders
    if holders is None:
        return []
    wins, unknown, most = group.wins, group.unknown, expect.stop - 1
    out = []
    if holders < wins:
        out.append(
            Violation(
                ViolationKind.LOST,
                group.resource,
                group.round,
                f">= {wins}",
                str(holders),
                "acknowledged wins missing from state",
            )
        )
    if holders > wins + unknown:
        out.append(
            Violation(
                ViolationKind.PHANTOM,
                group.resource,
                group.round,
                f"<= {wins + unknown}",
                str(holders),
                "holders nobody was told of",
            )
        )
    if double and holders > most:
        out.append(
            Violation(
                ViolationKind.DOUBLE,
                group.resource,
                group.round,
                describe_range(expect),
                str(holders),
                "held in the final state",
                excess=holders - most,
            )
        )
    return out


def raising_predicates(group: Group) -> list[Violation]:
    """A ``success=``/``reject=`` predicate or an attempt that raised: fails even with ``allow_errors``."""
    fatal = [r for r in group.records if r.fatal]
    if not fatal:
        return []
    detail = f"{fatal[0].reason} (fails even with allow_errors=True)"
    return [Violation(ViolationKind.PREDICATE, group.resource, group.round, "0", str(len(fatal)), detail)]


def errors(group: Group, allow_errors: bool) -> list[Violation]:
    """5xx and transport failures, unless ``allow_errors=True``."""
    failed = [r for r in group.records if r.outcome is Outcome.ERROR and not r.fatal]
    if not failed or allow_errors:
        return []
    reasons = Counter(r.reason or "error" for r in failed).most_common(2)
    detail = "; ".join(f"{n}× {text}" for text, n in reasons)
    return [Violation(ViolationKind.ERROR, group.resource, group.round, "0", str(len(failed)), detail)]


def no_winner_possible(group: Group, expect: range) -> list[Violation]:
    """A resource nobody could win (one never-win status everywhere, or no answer at all).

    It guards against a wrong URL, so it never applies to responses the test's own
    ``success=``/``reject=``/``error=`` classified: ``expect=0, reject=401`` may see only 401s.
    """
    if group.wins or group.unknown or any(r.by_rule for r in group.records):
        return []
    recs = group.records
    statuses = {r.status for r in recs}
    reason = ""
    if statuses == {0} and all(r.outcome is Outcome.ERROR for r in recs):
        common = Counter(r.reason or "error" for r in recs).most_common(1)
        reason = f"no attempt could win: every request failed ({common[0][0]})"
    elif len(statuses) == 1 and next(iter(statuses)) in NEVER_WIN_STATUSES:
        said = {r.said for r in recs}
        answer = answer_label(next(iter(statuses)), None, said.pop() if len(said) == 1 else None)
        reason = f"no attempt could win: every response was {answer} (wrong URL, method or body?)"
    if not reason:
        return []
    allowed = describe_range(expect)
    return [Violation(ViolationKind.NO_WINNER_POSSIBLE, group.resource, group.round, allowed, "0", reason)]


STUCK_SHOWN = 2
"""Operations that cannot follow the prefix, named in a not-linearizable violation's detail."""

NOT_RACED_HINTS = {
    ("last-byte", "body"): 'the handler acts on its headers: use hold="headers"',
    ("last-byte", "headers"): 'something answers incomplete requests (a proxy?): use sync="gate"',
}
SINGLE_PACKET_EARLY_HINT = (
    "the server starts the handler at HEADERS (hypercorn does), so a handler that ignores the body "
    'answers before the gate: use sync="last-byte" (its default hold="headers" holds it)'
)


def early_hint(sync: str, hold: str | None) -> str:
    """What to try when requests were answered before the gate: one hint per start and hold."""
    if sync == "single-packet":
        return SINGLE_PACKET_EARLY_HINT
    return NOT_RACED_HINTS.get((sync, hold or ""), "")


def not_raced(group: Group, config: RaceConfig) -> list[Violation]:
    """Every request was answered before its held bytes went out: nothing was synchronised."""
    recs = group.records
    if not recs or not all(r.early for r in recs):
        return []
    hint = early_hint(config.sync, config.hold)
    detail = f"all {len(recs)} requests were answered before the gate opened, so none was raced" + (
        f"; {hint}" if hint else ""
    )
    return [
        Violation(ViolationKind.NOT_RACED, group.resource, group.round, "held until the gate", "0", detail)
    ]


def _winner_detail(recs: Sequence[Record]) -> str:
    """The winners, or with none what the others got (``no winner: 95× 409 seat taken``)."""
    wins = [r for r in recs if r.outcome is Outcome.WIN]
    if not wins:
        common = Counter(answer_label(r.status, r.reason, r.said) for r in recs).most_common(2)
        return "no winner: " + "; ".join(f"{n}× {label}" for label, n in common) if common else "no winner"
    shown = ", ".join(f"client {r.client} ({r.status})" for r in wins[:5])
    more = f" and {len(wins) - 5} more" if len(wins) > 5 else ""
    return f"winners: {shown}{more}"


def history_violations(
    checks: Sequence[HistoryCheck], records: Sequence[Record], model: object
) -> list[Violation]:
    """A partition that is not linearizable, or that the budget left undecided, as a violation."""
    allowed = f"linearizable under {type(model).__name__}"
    bookings = isinstance(model, Model) and _main_only(model)
    out: list[Violation] = []
    for c in checks:
        verdict = c.verdict
        excess = 0
        if verdict.valid is False:
            detail = _stuck_detail(c, records)
            kind, found = ViolationKind.NOT_LINEARIZABLE, "not linearizable"
            if bookings:  # the acknowledged bookings no order can place: sold twice
                excess = sum(1 for op in verdict.cannot_follow if op.type == "ok")
        elif verdict.valid is None:
            detail = (
                f"the check of {len(c.operations)} operations ran out of the race's time budget "
                f"(CHECK_BUDGET_S = {c.budget_s:g}s, shared by its histories): unknown, never a pass"
            )
            kind, found = ViolationKind.HISTORY_UNKNOWN, "unknown"
        else:
            continue
        out.append(Violation(kind, c.resource, c.round, allowed, found, detail, excess=excess))
    return out


def _stuck_detail(c: HistoryCheck, records: Sequence[Record]) -> str:
    """``12 of 100 operations linearize; none of these can follow: client 7 book() -> ok``."""
    verdict = c.verdict
    stuck = verdict.cannot_follow
    shown = "; ".join(
        f"client {records[op.process].client} {verdict.describe(op)}" for op in stuck[:STUCK_SHOWN]
    )
    more = f" and {len(stuck) - STUCK_SHOWN} more" if len(stuck) > STUCK_SHOWN else ""
    return (
        f"{len(verdict.prefix)} of {len(c.operations)} operations linearize; "
        f"none of these can follow them: {shown}{more}"
    )


def threshold_violations(thresholds: Sequence[Threshold], figures: Figures) -> list[Violation]:
    out = []
    for th in thresholds:
        value = th.measure(figures)
        if not th.holds(value):
            shown = th.format_value(value)
            out.append(
                Violation(ViolationKind.THRESHOLD, None, None, th.text, shown, f"{th.metric} = {shown}")
            )
    return out


def problem_violation(problem: Problem, timeout: float) -> Violation:
    """What went wrong while racing, as a violation: a hung wave, a failed hook, a ``verify=``
    that returned no count."""
    if isinstance(problem, WaveHung):
        return Violation(
            ViolationKind.HUNG,
            None,
            problem.round,
            "answers within timeout",
            "none",
            f"every request of a wave of round {problem.round} timed out (timeout={timeout:g}s): "
            f"the service seems hung, so the race stopped; {problem.not_run} (round, resource) pairs "
            "were not run (RaceResult.not_run); raise timeout= if the service is just slow",
        )
    if isinstance(problem, HookFailed):
        return Violation(
            ViolationKind.HOOK,
            None,
            None,
            "every hook returns",
            problem.error_type,
            f"{problem.reason}; the race stopped with what it had",
        )
    return Violation(
        ViolationKind.VERIFY,
        problem.resource,
        problem.round,
        "an int",
        problem.type_name,
        f"verify({problem.resource!r}) returned {problem.value}, expected the number of holders (int)",
    )


def judge(
    records: Sequence[Record],
    config: RaceConfig,
    figures: Figures,
    held: Mapping[tuple[int, int], int] | None = None,
    problems: Sequence[Problem] = (),
    checks: Sequence[HistoryCheck] = (),
) -> tuple[Violation, ...]:
    """Every violation of a race: the rules per (round, resource), the model's verdicts on the
    histories ``checks`` holds, what went wrong while racing, then the thresholds; empty exactly
    when it passed."""
    return (
        *invariant_violations(records, config, held),
        *history_violations(checks, records, config.model),
        *(problem_violation(p, config.timeout) for p in problems),
        *threshold_violations(config.thresholds, figures),
    )


def double_bookings(violations: Sequence[Violation]) -> int:
    """Wins (or final-state holders) beyond what ``expect`` allows, per resource and round; with a
    model of bookings alone (``Seats()``), the acknowledged bookings no order of the history can
    place."""
    excess: dict[tuple[Hashable, int | None], int] = {}
    for v in violations:
        if v.excess:
            key = (v.resource, v.round)
            excess[key] = max(excess.get(key, 0), v.excess)
    return sum(excess.values())
