"""What a race found: its records and config in, every figure and the verdict derived.

Like pytest-benchmark's ``Stats``, the result keeps the data and computes each figure once, on
first use; nothing is stored twice. ``violations`` is empty exactly when the race passed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.contention import Contention
from pytest_seatrace.core.document import (
    HistoryDoc,
    OperationDoc,
    RacedDoc,
    RaceDoc,
    ResourceDoc,
    SampleDoc,
    ShardDoc,
    StatusReasonDoc,
    WinDoc,
)
from pytest_seatrace.core.judge import invariant_violations, threshold_violations
from pytest_seatrace.core.notes import classification_notes
from pytest_seatrace.core.records import (
    BODY_KEEP,
    SAMPLE_KINDS,
    SAMPLE_LOSERS,
    Outcome,
    Raced,
    RaceRun,
    Record,
    ShardInfo,
    Stop,
)
from pytest_seatrace.core.redact import redact_text
from pytest_seatrace.core.stats import Latency, Percentiles, Spread
from pytest_seatrace.core.violations import Violation

NOT_SENT = "(not sent)"
"""The operation of a client that sent nothing (its set-up failed)."""
SAMPLE_WINNERS = 2
"""Winning responses per resource shown as samples (every winner is in ``winners``)."""
STATUS_REASONS_SHOWN = 50
"""Rows of a race document's ``status_reasons``; the rarer reasons of a status fold into one."""


@dataclass(frozen=True, slots=True)
class Win:
    """An acknowledged winner: who won, when, and the start of what the service said."""

    __module__ = "pytest_seatrace"  # the public name: tracebacks and pickles say it

    client: int
    round: int
    status: int
    latency_ns: int
    body: bytes

    def to_dict(self) -> WinDoc:
        return {
            "client": self.client,
            "round": self.round,
            "status": self.status,
            "latency_ns": self.latency_ns,
            "body": redact_text(self.body.decode("utf-8", "replace")),
        }


@dataclass(frozen=True, slots=True)
class RoundSummary:
    __module__ = "pytest_seatrace"  # the public name: tracebacks and pickles say it

    round: int
    requests: int
    wins: int
    rejections: int
    errors: int
    unknown: int
    violations: int


@dataclass(frozen=True)
class RaceResult:
    """Everything one race call measured, derived from its records and config."""

    __module__ = "pytest_seatrace"  # the public name: tracebacks and pickles say it

    name: str
    config: RaceConfig = field(repr=False)
    history: tuple[Record, ...] = field(default=(), repr=False)
    """Every request's record, in the order the waves finished."""
    duration: float = 0.0
    """Seconds spent racing (resets and ``verify=`` between rounds excluded)."""
    clock: tuple[int, int] = (0, 0)
    """One (``time.time_ns()``, ``time.perf_counter_ns()``) pair taken at the start, mapping
    the history's monotonic stamps to wall time."""
    held: Mapping[tuple[int, int], int] | None = field(default=None, repr=False)
    """Holders per (round, resource index) read by ``verify=``; ``None`` without it."""
    problems: tuple[Violation, ...] = field(default=(), repr=False)
    """Violations found while running (a ``verify=`` that raised)."""
    interrupted: bool = False
    """Cut short (Ctrl-C): the figures cover the waves that finished."""
    checked: bool = True
    """False for a call made with ``check=False``: its violations were not raised (a race a hook
    stopped is raised even then: ``True``)."""
    never_fired: tuple[tuple[int, int], ...] = field(default=(), repr=False)
    """(round, resource index) pairs a stopped race never fired."""
    raced: Raced | None = field(default=None, repr=False)
    """What was raced (method, URL, base URL, HTTP version), for reports."""
    shard_infos: tuple[ShardInfo, ...] = field(default=(), repr=False)
    """The shards of a sharded race, as the engine saw them (``shards`` adds their figures)."""
    connections_replaced: int = 0
    """Kept connections the server had closed (its keep-alive) replaced before the release."""
    stopped: Stop | None = field(default=None, repr=False)
    """Where and why the race ended before its last wave (a hook failed, Ctrl-C); ``None``: it
    finished."""

    @classmethod
    def from_run(cls, name: str, config: RaceConfig, run: RaceRun, *, checked: bool = True) -> RaceResult:
        if run.mode is not None and run.mode != config.sync:  # what ``auto`` chose
            config = replace(config, sync=run.mode)  # type: ignore[arg-type]
        hook = run.stopped is not None and run.stopped.by == "hook"
        return cls(
            checked=checked or hook,  # a race a hook stopped is raised even under check=False
            never_fired=run.not_run,
            raced=run.raced,
            name=name,
            config=config,
            history=run.records,
            duration=run.duration,
            clock=run.clock,
            held=run.held,
            problems=run.problems,
            interrupted=run.interrupted,
            shard_infos=run.shards,
            connections_replaced=run.replaced,
            stopped=run.stopped,
        )

    # -- the config, as the result names it --------------------------------------------------

    @property
    def mode(self) -> str:
        return self.config.sync

    @property
    def resources(self) -> tuple[Hashable, ...]:
        return self.config.resources

    @property
    def concurrency(self) -> int:
        return self.config.concurrency

    @property
    def expect(self) -> range:
        return self.config.expect

    @property
    def rounds(self) -> int:
        return self.config.rounds

    @property
    def settings(self) -> dict[str, Any]:
        return self.config.describe()

    # -- counts ----------------------------------------------------------------------------

    @cached_property
    def _outcomes(self) -> Counter[Outcome]:
        return Counter(r.outcome for r in self.history)

    @property
    def requests(self) -> int:
        return len(self.history)

    @property
    def wins(self) -> int:
        return self._outcomes[Outcome.WIN]

    @property
    def rejections(self) -> int:
        return self._outcomes[Outcome.REJECTION]

    @property
    def errors(self) -> int:
        return self._outcomes[Outcome.ERROR]

    @property
    def unknown(self) -> int:
        return self._outcomes[Outcome.UNKNOWN]

    @property
    def not_run(self) -> list[tuple[int, Hashable]]:
        """(round, resource) pairs never raced: the race stopped on a hung service."""
        return [(rnd, self.resources[index]) for rnd, index in self.never_fired]

    @property
    def early(self) -> int:
        """Requests answered before their held bytes went out (not synchronised)."""
        return sum(1 for r in self.history if r.early)

    @cached_property
    def error_reasons(self) -> Counter[str]:
        """Errors per reason, with what the service said (``500 database is locked``)."""
        return Counter(r.reason or "error" for r in self.history if r.outcome is Outcome.ERROR)

    @cached_property
    def notes(self) -> tuple[str, ...]:
        """Advice on the classification (rejections of several kinds, or all "not allowed to
        try"), suggesting ``reject=``; never part of the verdict."""
        return classification_notes(self.history, self.config)

    @cached_property
    def status_counts(self) -> Counter[int]:
        return Counter(r.status for r in self.history if r.status)

    @cached_property
    def winners(self) -> dict[Hashable, list[Win]]:
        out: dict[Hashable, list[Win]] = {}
        for rec in self.history:
            if rec.outcome is Outcome.WIN:
                out.setdefault(self.resources[rec.resource], []).append(
                    Win(rec.client, rec.round, rec.status, rec.latency_ns, (rec.body or b"")[:BODY_KEEP])
                )
        return out

    @cached_property
    def status_reasons(self) -> Counter[tuple[int, str]]:
        """Answered requests per (status, what the service said): the status breakdown with
        reasons (``(500, "database is locked")``); the reason is empty for wins and bodies that
        said nothing."""
        return Counter((r.status, r.said or "") for r in self.history if r.status)

    @cached_property
    def samples(self) -> dict[Hashable, list[Record]]:
        """A few responses per resource for reports: up to ``SAMPLE_WINNERS`` winners, then the
        others one per kind (status and reason, in the order first seen) in turn, at least
        ``SAMPLE_LOSERS`` when there are that many and one of each kind up to ``SAMPLE_KINDS``.
        Only responses whose body the engine kept, and failures that got no response."""
        wins: dict[int, list[Record]] = {}
        kinds: dict[int, dict[tuple[int, Outcome, str | None], list[Record]]] = {}
        for rec in self.history:
            if rec.outcome is Outcome.WIN:
                bucket, cap = wins.setdefault(rec.resource, []), SAMPLE_WINNERS
            elif rec.body is not None or (not rec.status and rec.reason):
                kind = (rec.status, rec.outcome, rec.said if rec.status else rec.reason)
                bucket, cap = kinds.setdefault(rec.resource, {}).setdefault(kind, []), SAMPLE_LOSERS
            else:
                continue
            if len(bucket) < cap:
                bucket.append(rec)
        out: dict[Hashable, list[Record]] = {}
        for i, res in enumerate(self.resources):
            others = _in_turn(list(kinds.get(i, {}).values()))
            if wins.get(i) or others:
                out[res] = wins.get(i, []) + others
        return out

    # -- timing ----------------------------------------------------------------------------

    @cached_property
    def latency(self) -> Latency:
        recs = self.history
        return Latency(
            all=Percentiles.of(r.latency_ns for r in recs if r.outcome is not Outcome.UNKNOWN and r.sent_ns),
            winners=Percentiles.of(r.latency_ns for r in recs if r.outcome is Outcome.WIN),
            losers=Percentiles.of(r.latency_ns for r in recs if r.outcome is Outcome.REJECTION),
        )

    @property
    def rps(self) -> float:
        return self.requests / self.duration if self.duration > 0 else 0.0

    @cached_property
    def spread(self) -> Spread:
        return Spread.of(self.history, self.resources)

    @cached_property
    def shards(self) -> tuple[ShardDoc, ...]:
        """Per shard of a sharded race: gateway spec, host, clock offset and error, its clients'
        own start spread; empty for a race in the test process."""
        out = []
        for info in self.shard_infos:
            own = [r for r in self.history if r.shard == info.number]
            spread = Spread.of(own, self.resources).median_ns
            doc: ShardDoc = {
                "shard": info.number,
                "spec": info.spec,
                "host": info.host,
                "pid": info.pid,
                "clock_offset_ns": info.offset_ns,
                "clock_error_ns": info.error_ns,
                "start_late_ns": info.late_ns,
                "spread_median_ns": None if spread != spread else spread,  # NaN: nothing sent
                "requests": len(own),
                "failure": info.failure,
            }
            out.append(doc)
        return tuple(out)

    @cached_property
    def contention(self) -> Contention:
        """How many requests the service had in flight together, per round and resource:
        measured from its ``X-Arrival-Ns`` stamps, else estimated from the answers' timing."""
        return Contention.of(self.history, self.concurrency)

    @property
    def clock_error_ns(self) -> int:
        """The largest clock-mapping error bound of the shards (0 without shards)."""
        return max((info.error_ns for info in self.shard_infos), default=0)

    # -- verdict ---------------------------------------------------------------------------

    @cached_property
    def violations(self) -> tuple[Violation, ...]:
        found = [*invariant_violations(self.history, self.config, self.held), *self.problems]
        return (*found, *threshold_violations(self))

    @property
    def passed(self) -> bool:
        return not self.violations

    @property
    def double_bookings(self) -> int:
        """Wins (or final-state holders) beyond what ``expect`` allows, per resource and round."""
        excess: dict[tuple[Hashable, int | None], int] = {}
        for v in self.violations:
            if v.excess:
                key = (v.resource, v.round)
                excess[key] = max(excess.get(key, 0), v.excess)
        return sum(excess.values())

    @cached_property
    def per_round(self) -> tuple[RoundSummary, ...]:
        counts = [Counter[Outcome]() for _ in range(self.rounds)]
        for rec in self.history:
            counts[rec.round - 1][rec.outcome] += 1
        bad = Counter(v.round for v in self.violations if v.round is not None)
        return tuple(
            RoundSummary(
                round=i + 1,
                requests=sum(c.values()),
                wins=c[Outcome.WIN],
                rejections=c[Outcome.REJECTION],
                errors=c[Outcome.ERROR],
                unknown=c[Outcome.UNKNOWN],
                violations=bad[i + 1],
            )
            for i, c in enumerate(counts)
        )

    def violation_rate(self) -> str:
        """E.g. ``"too-many in 3 of 20 rounds"``; empty for a single round."""
        if self.rounds <= 1:
            return ""
        bad = sum(1 for r in self.per_round if r.violations)
        kinds = sorted({v.kind.value for v in self.violations if v.round is not None})
        what = ", ".join(kinds) if kinds else "violations"
        return f"{what} in {bad} of {self.rounds} rounds"

    def by_resource(self) -> list[ResourceDoc]:
        """Per resource counts over all rounds, in resource order (the seed's execution pattern)."""
        counts = [Counter[int]() for _ in self.resources]
        for rec in self.history:
            counts[rec.resource][rec.outcome] += 1
        return [
            {
                "resource": str(res),
                "requests": sum(c.values()),
                "wins": c[Outcome.WIN],
                "rejections": c[Outcome.REJECTION],
                "errors": c[Outcome.ERROR],
                "unknown": c[Outcome.UNKNOWN],
            }
            for res, c in zip(self.resources, counts, strict=True)
        ]

    # -- operations (a race that mixes them) -------------------------------------------

    @cached_property
    def operations(self) -> tuple[str, ...]:
        """The operations raced (``POST /seats/{resource}/book``), in the order first seen."""
        return tuple(dict.fromkeys(r.operation for r in self.history if r.operation))

    @property
    def mixed(self) -> bool:
        """More than one operation under one start: reports break statuses down per operation."""
        return len(self.operations) > 1

    def by_operation(self) -> list[OperationDoc]:
        """Per operation counts and statuses, in the order first seen (``(not sent)`` last:
        clients whose set-up failed)."""
        outcomes: dict[str, Counter[Outcome]] = {}
        statuses: dict[str, Counter[int]] = {}
        for rec in self.history:
            name = rec.operation or NOT_SENT
            outcomes.setdefault(name, Counter())[rec.outcome] += 1
            if rec.status:
                statuses.setdefault(name, Counter())[rec.status] += 1
        names = [*self.operations, *([NOT_SENT] if NOT_SENT in outcomes else [])]
        return [
            {
                "operation": name,
                "requests": sum(outcomes[name].values()),
                "wins": outcomes[name][Outcome.WIN],
                "rejections": outcomes[name][Outcome.REJECTION],
                "errors": outcomes[name][Outcome.ERROR],
                "unknown": outcomes[name][Outcome.UNKNOWN],
                "status_counts": {str(k): v for k, v in sorted(statuses.get(name, Counter()).items())},
            }
            for name in names
        ]

    # -- the race document -----------------------------------------------------------------

    def _raced_doc(self) -> RacedDoc | None:
        raced = self.raced
        if raced is None:
            return None
        return {
            "method": raced.method,
            "url": raced.url,
            "base_url": raced.base_url,
            "http_version": raced.http_version,
            "stripped": list(raced.stripped),
            "sync": self.config.sync,
            "hold": self.config.hold if self.config.sync == "last-byte" else None,
        }

    def to_dict(self, *, history: bool = False) -> RaceDoc:
        """The race document (builtins only: JSON- and execnet-safe); computed once per race."""
        names = {r: str(r) for r in self.resources}
        doc: RaceDoc = {
            "name": self.name,
            "mode": self.mode,
            "passed": self.passed,
            "interrupted": self.interrupted,
            "checked": self.checked,
            "resources": [names[r] for r in self.resources],
            "concurrency": self.concurrency,
            "expect": {"min": self.expect.start, "max": self.expect.stop - 1},
            "rounds": self.rounds,
            "requests": self.requests,
            "wins": self.wins,
            "rejections": self.rejections,
            "errors": self.errors,
            "unknown": self.unknown,
            "early": self.early,
            "double_bookings": self.double_bookings,
            "error_reasons": dict(self.error_reasons),
            "notes": list(self.notes),
            "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
            "status_reasons": status_reason_rows(self.status_reasons),
            "latency": self.latency.to_dict(),
            "rps": self.rps,
            "duration_s": self.duration,
            "spread": self.spread.to_dict(names),
            "winners": {names[r]: [w.to_dict() for w in ws] for r, ws in self.winners.items()},
            "violations": [v.to_dict() for v in self.violations],
            "violation_rate": self.violation_rate(),
            "not_run": [{"round": rnd, "resource": str(res)} for rnd, res in self.not_run],
            "raced": self._raced_doc(),
            "samples": {names[res]: [_sample_doc(rec) for rec in recs] for res, recs in self.samples.items()},
            "per_round": [
                {
                    "round": r.round,
                    "requests": r.requests,
                    "wins": r.wins,
                    "rejections": r.rejections,
                    "errors": r.errors,
                    "unknown": r.unknown,
                    "violations": r.violations,
                }
                for r in self.per_round
            ],
            "by_resource": self.by_resource(),
            "settings": self.settings,
            "clock": {"time_ns": self.clock[0], "perf_counter_ns": self.clock[1]},
        }
        if self.mixed:
            doc["by_operation"] = self.by_operation()
        if self.shard_infos:
            doc["shards"] = list(self.shards)
        doc["connections_replaced"] = self.connections_replaced
        if self.stopped is not None:
            doc["stopped"] = self.stopped.to_dict()
        doc["contention"] = self.contention.to_dict([names[r] for r in self.resources])
        if history:
            doc["history"] = history_columns(self.history, self.resources)
        return doc


SAMPLE_BODY = 200
"""Bytes of a sample's body shown in reports."""


def _in_turn(kinds: list[list[Record]]) -> list[Record]:
    """The first sample of each kind, then the second of each, … (see ``RaceResult.samples``)."""
    cap = min(SAMPLE_KINDS, max(SAMPLE_LOSERS, len(kinds)))
    out: list[Record] = []
    for turn in range(SAMPLE_LOSERS):
        out += [kind[turn] for kind in kinds if turn < len(kind)]
    return out[:cap]


def shown_reason(rec: Record) -> str:
    """The reason reports show beside a request: why it is an error or unknown (``500 database
    is locked``), else what a rejection's body said (``seat taken``); empty for a win."""
    return rec.reason or rec.said or ""


def status_reason_rows(counts: Counter[tuple[int, str]]) -> list[StatusReasonDoc]:
    """``status_reasons`` as document rows by status, the most frequent reason first; at most
    ``STATUS_REASONS_SHOWN`` rows: the most frequent kinds, the rarer reasons of a status folded
    into one ``(N other reasons)`` row."""
    ranked = [key for key, _ in counts.most_common()]
    last = {status: i for i, (status, _) in enumerate(ranked)}  # a status's rarest kind
    kept = min(len(ranked), STATUS_REASONS_SHOWN)
    while kept and kept + sum(1 for i in last.values() if i >= kept) > STATUS_REASONS_SHOWN:
        kept -= 1  # one more kind folded: room for its status's fold row
    rest: dict[int, list[tuple[int, str]]] = {}
    for key in ranked[kept:]:
        rest.setdefault(key[0], []).append(key)
    rows = [(key, counts[key]) for key in ranked[:kept]]
    for status, keys in rest.items():
        if len(keys) == 1:  # one row either way: show it
            rows.append((keys[0], counts[keys[0]]))
        else:
            rows.append(((status, f"({len(keys)} other reasons)"), sum(counts[key] for key in keys)))
    rows.sort(key=lambda item: (item[0][0], item[0][1].startswith("("), -item[1], item[0][1]))
    return [{"status": status, "reason": reason, "count": n} for (status, reason), n in rows]


def _sample_doc(rec: Record) -> SampleDoc:
    return {
        "client": rec.client,
        "round": rec.round,
        "status": rec.status,
        "outcome": rec.outcome.label,
        "latency_ns": rec.latency_ns,
        "early": rec.early,
        "body": redact_text((rec.body or b"")[:SAMPLE_BODY].decode("utf-8", "replace")),
        "reason": shown_reason(rec),
    }


def history_columns(records: Sequence[Record], resources: Sequence[Hashable]) -> HistoryDoc:
    """The request history as columns: small in JSON even at 50,000 requests; with an
    ``operation`` column for a race that mixed operations."""
    columns: HistoryDoc = {
        "start_ns": [r.sent_ns for r in records],
        "end_ns": [r.end_ns for r in records],
        "client": [r.client for r in records],
        "resource": [str(resources[r.resource]) for r in records],
        "round": [r.round for r in records],
        "status": [r.status for r in records],
        "outcome": [r.outcome.label for r in records],
        "server_ns": [r.server_ns for r in records],
        "early": [r.early for r in records],
        "shard": [r.shard for r in records],
        "reason": [shown_reason(r) for r in records],
    }
    if len({r.operation for r in records} - {""}) > 1:
        columns["operation"] = [r.operation or NOT_SENT for r in records]
    return columns
