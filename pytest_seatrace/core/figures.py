"""What a race's records add up to: counts, timing, samples, per-shard and per-operation figures.

Derived from the records and the few settings that frame them (the resources, the concurrency,
the seconds spent racing), each once on first use, like pytest-benchmark's ``Stats``; nothing
here knows the race's rules or its verdict, so thresholds and the judge read figures, never the
result that holds them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field
from functools import cached_property

from pytest_seatrace.core.contention import Contention
from pytest_seatrace.core.document import OperationDoc, ResourceDoc, ShardDoc, WinDoc
from pytest_seatrace.core.records import BODY_KEEP, SAMPLE_KINDS, SAMPLE_LOSERS, Outcome, Record, ShardInfo
from pytest_seatrace.core.redact import redact_text
from pytest_seatrace.core.stats import Latency, Percentiles, Spread

NOT_SENT = "(not sent)"
"""The operation of a client that sent nothing (its set-up failed)."""
SAMPLE_WINNERS = 2
"""Winning responses per resource shown as samples (every winner is in ``winners``)."""


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
class Figures:
    """The figures of one race's records; ``duration`` is the seconds spent racing (resets and
    ``verify=`` between rounds excluded)."""

    records: tuple[Record, ...] = field(repr=False)
    resources: tuple[Hashable, ...]
    concurrency: int
    rounds: int = 1
    duration: float = 0.0
    shard_infos: tuple[ShardInfo, ...] = field(default=(), repr=False)

    # -- counts ----------------------------------------------------------------------------

    @cached_property
    def outcomes(self) -> Counter[Outcome]:
        return Counter(r.outcome for r in self.records)

    @property
    def requests(self) -> int:
        return len(self.records)

    @property
    def wins(self) -> int:
        return self.outcomes[Outcome.WIN]

    @property
    def rejections(self) -> int:
        return self.outcomes[Outcome.REJECTION]

    @property
    def errors(self) -> int:
        return self.outcomes[Outcome.ERROR]

    @property
    def unknown(self) -> int:
        return self.outcomes[Outcome.UNKNOWN]

    @property
    def early(self) -> int:
        """Requests answered before their held bytes went out (not synchronised)."""
        return sum(1 for r in self.records if r.early)

    @cached_property
    def error_reasons(self) -> Counter[str]:
        """Errors per reason, with what the service said (``500 database is locked``)."""
        return Counter(r.reason or "error" for r in self.records if r.outcome is Outcome.ERROR)

    @cached_property
    def status_counts(self) -> Counter[int]:
        return Counter(r.status for r in self.records if r.status)

    @cached_property
    def status_reasons(self) -> Counter[tuple[int, str]]:
        """Answered requests per (status, what the service said): the status breakdown with
        reasons (``(500, "database is locked")``); the reason is empty for wins and bodies that
        said nothing."""
        return Counter((r.status, r.said or "") for r in self.records if r.status)

    @cached_property
    def round_outcomes(self) -> tuple[Counter[Outcome], ...]:
        """Outcomes per round: round ``n`` is item ``n - 1``."""
        counts = [Counter[Outcome]() for _ in range(self.rounds)]
        for rec in self.records:
            counts[rec.round - 1][rec.outcome] += 1
        return tuple(counts)

    def by_resource(self) -> list[ResourceDoc]:
        """Per resource counts over all rounds, in resource order (the seed's execution pattern)."""
        counts = [Counter[int]() for _ in self.resources]
        for rec in self.records:
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

    # -- winners and samples ---------------------------------------------------------------

    @cached_property
    def winners(self) -> dict[Hashable, list[Win]]:
        out: dict[Hashable, list[Win]] = {}
        for rec in self.records:
            if rec.outcome is Outcome.WIN:
                out.setdefault(self.resources[rec.resource], []).append(
                    Win(rec.client, rec.round, rec.status, rec.latency_ns, (rec.body or b"")[:BODY_KEEP])
                )
        return out

    @cached_property
    def samples(self) -> dict[Hashable, list[Record]]:
        """A few responses per resource for reports: up to ``SAMPLE_WINNERS`` winners, then the
        others one per kind (status and reason, in the order first seen) in turn, at least
        ``SAMPLE_LOSERS`` when there are that many and one of each kind up to ``SAMPLE_KINDS``.
        Only responses whose body the engine kept, and failures that got no response."""
        wins: dict[int, list[Record]] = {}
        kinds: dict[int, dict[tuple[int, Outcome, str | None], list[Record]]] = {}
        for rec in self.records:
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
        recs = self.records
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
        return Spread.of(self.records, self.resources)

    @cached_property
    def contention(self) -> Contention:
        """How many requests the service had in flight together, per round and resource:
        measured from its ``X-Arrival-Ns`` stamps, else estimated from the answers' timing."""
        return Contention.of(self.records, self.concurrency)

    # -- shards ----------------------------------------------------------------------------

    @cached_property
    def shards(self) -> tuple[ShardDoc, ...]:
        """Per shard of a sharded race: gateway spec, host, clock offset and error, its clients'
        own start spread; empty for a race in the test process."""
        out = []
        for info in self.shard_infos:
            own = [r for r in self.records if r.shard == info.number]
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

    @property
    def clock_error_ns(self) -> int:
        """The largest clock-mapping error bound of the shards (0 without shards)."""
        return max((info.error_ns for info in self.shard_infos), default=0)

    # -- operations (a race that mixes them) -----------------------------------------------

    @cached_property
    def operations(self) -> tuple[str, ...]:
        """The operations raced (``POST /seats/{resource}/book``), in the order first seen."""
        return tuple(dict.fromkeys(r.operation for r in self.records if r.operation))

    def by_operation(self) -> list[OperationDoc]:
        """Per operation counts and statuses, in the order first seen (``(not sent)`` last:
        clients whose set-up failed)."""
        outcomes: dict[str, Counter[Outcome]] = {}
        statuses: dict[str, Counter[int]] = {}
        for rec in self.records:
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


def _in_turn(kinds: list[list[Record]]) -> list[Record]:
    """The first sample of each kind, then the second of each, … (see ``Figures.samples``)."""
    cap = min(SAMPLE_KINDS, max(SAMPLE_LOSERS, len(kinds)))
    out: list[Record] = []
    for turn in range(SAMPLE_LOSERS):
        out += [kind[turn] for kind in kinds if turn < len(kind)]
    return out[:cap]
