"""What a race found: per-request records, the statistics over them, and the verdict.

Pure data and arithmetic: no pytest, no I/O. The engine fills ``Record`` objects; everything
else (``RaceResult``, summary rows, JSON) is derived from those records alone, so records from
several shards or processes merge by concatenation.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

BODY_KEEP = 1024
"""Bytes of a winning response body kept for reports (the first KiB)."""


class Outcome(enum.IntEnum):
    """How one response counts towards the invariant."""

    WIN = 0
    REJECTION = 1
    ERROR = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(slots=True)
class Record:
    """One request of a race: small on purpose, 50,000 of them must stay in a few MB.

    ``sent_ns`` is when its final write returned (gate mode: when it was handed to the client),
    ``end_ns`` when the response was complete (or the outcome was decided), both
    ``time.perf_counter_ns``. ``server_ns`` is the service's ``X-Arrival-Ns`` stamp, or 0.
    """

    resource: int
    client: int
    round: int
    sent_ns: int = 0
    end_ns: int = 0
    status: int = 0
    outcome: Outcome = Outcome.ERROR
    reason: str | None = None
    body: bytes | None = None
    server_ns: int = 0
    fatal: bool = False
    """Fails the race even with ``allow_errors=True``: a predicate or attempt function raised."""

    @property
    def latency_ns(self) -> int:
        return max(0, self.end_ns - self.sent_ns) if self.sent_ns else 0


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Latency percentiles in nanoseconds, exact over every sample (linear interpolation)."""

    count: int
    min: float
    avg: float
    med: float
    p90: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, samples: Iterable[int]) -> Percentiles:
        data = sorted(samples)
        if not data:
            return cls(0, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan)
        return cls(
            count=len(data),
            min=float(data[0]),
            avg=sum(data) / len(data),
            med=percentile(data, 50),
            p90=percentile(data, 90),
            p95=percentile(data, 95),
            p99=percentile(data, 99),
            max=float(data[-1]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            **{
                name: (None if math.isnan(value) else value)
                for name, value in (
                    ("min_ns", self.min),
                    ("avg_ns", self.avg),
                    ("med_ns", self.med),
                    ("p90_ns", self.p90),
                    ("p95_ns", self.p95),
                    ("p99_ns", self.p99),
                    ("max_ns", self.max),
                )
            },
        }


def percentile(sorted_data: Sequence[int], pct: float) -> float:
    """The ``pct`` percentile of already sorted data, interpolated like numpy's default."""
    if not sorted_data:
        return math.nan
    rank = (len(sorted_data) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_data) - 1)
    return sorted_data[low] + (sorted_data[high] - sorted_data[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class Latency:
    all: Percentiles
    winners: Percentiles
    losers: Percentiles

    def to_dict(self) -> dict[str, Any]:
        return {"all": self.all.to_dict(), "winners": self.winners.to_dict(), "losers": self.losers.to_dict()}


@dataclass(frozen=True, slots=True)
class Spread:
    """Start spread: time between the first and the last final write of a resource (per round).

    ``median_ns``/``max_ns`` are over every (resource, round); ``by_resource`` keeps the widest
    round of each resource. ``server_*`` are the same measured from the service's arrival stamps,
    when it sends ``X-Arrival-Ns``.
    """

    median_ns: float
    max_ns: float
    by_resource: dict[Hashable, int]
    server_median_ns: float | None = None
    server_max_ns: float | None = None

    def to_dict(self, names: dict[Hashable, str]) -> dict[str, Any]:
        return {
            "median_ns": _num(self.median_ns),
            "max_ns": _num(self.max_ns),
            "by_resource": {names[r]: v for r, v in self.by_resource.items()},
            "server_median_ns": self.server_median_ns,
            "server_max_ns": self.server_max_ns,
        }


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule. ``kind``: too-many, too-few, indeterminate, error, predicate,
    no-winner-possible, lost, phantom, double, verify (the ``verify=`` callable failed), threshold."""

    kind: str
    resource: Hashable | None
    round: int | None
    allowed: str
    found: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "resource": None if self.resource is None else str(self.resource),
            "round": self.round,
            "allowed": self.allowed,
            "found": self.found,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Win:
    """An acknowledged winner: who won, when, and the start of what the service said."""

    client: int
    round: int
    status: int
    latency_ns: int
    body: bytes

    def to_dict(self) -> dict[str, Any]:
        return {
            "client": self.client,
            "round": self.round,
            "status": self.status,
            "latency_ns": self.latency_ns,
            "body": self.body.decode("utf-8", "replace"),
        }


@dataclass(frozen=True, slots=True)
class RoundSummary:
    round: int
    requests: int
    wins: int
    rejections: int
    errors: int
    unknown: int
    violations: int


@dataclass(frozen=True)
class RaceResult:
    """Everything one race call measured. ``violations`` is empty exactly when it passed."""

    name: str
    mode: str
    resources: tuple[Hashable, ...]
    concurrency: int
    expect: range
    rounds: int
    requests: int
    wins: int
    rejections: int
    errors: int
    unknown: int
    error_reasons: Counter[str]
    winners: dict[Hashable, list[Win]]
    status_counts: Counter[int]
    latency: Latency
    rps: float
    duration: float
    spread: Spread
    violations: tuple[Violation, ...]
    per_round: tuple[RoundSummary, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    history: tuple[Record, ...] = field(default=(), repr=False)
    clock: tuple[int, int] = (0, 0)
    """One (``time.time_ns()``, ``time.perf_counter_ns()``) pair taken at the start, mapping
    the history's monotonic stamps to wall time."""
    interrupted: bool = False
    """Cut short (Ctrl-C): the figures cover the waves that finished."""

    @property
    def passed(self) -> bool:
        return not self.violations

    @property
    def double_bookings(self) -> int:
        """Wins (or final-state holders) beyond what ``expect`` allows, per resource and round."""
        excess: dict[tuple[Hashable, int | None], int] = {}
        for v in self.violations:
            low = v.found.split("..")[0]  # "3..5" with unknowns: at least 3
            if v.kind in ("too-many", "double") and low.isdigit():
                key = (v.resource, v.round)
                excess[key] = max(excess.get(key, 0), int(low) - (self.expect.stop - 1))
        return sum(excess.values())

    def violation_rate(self) -> str:
        """E.g. ``"violations in 3 of 20 rounds"``; empty for a single round."""
        if self.rounds <= 1:
            return ""
        bad = sum(1 for r in self.per_round if r.violations)
        kinds = sorted({v.kind for v in self.violations if v.round is not None})
        what = ", ".join(kinds) if kinds else "violations"
        return f"{what} in {bad} of {self.rounds} rounds"

    def to_dict(self, *, history: bool = False) -> dict[str, Any]:
        """Builtins only (JSON- and execnet-safe)."""
        names = {r: str(r) for r in self.resources}
        data: dict[str, Any] = {
            "name": self.name,
            "mode": self.mode,
            "passed": self.passed,
            "interrupted": self.interrupted,
            "resources": [names[r] for r in self.resources],
            "concurrency": self.concurrency,
            "expect": {"min": self.expect.start, "max": self.expect.stop - 1},
            "rounds": self.rounds,
            "requests": self.requests,
            "wins": self.wins,
            "rejections": self.rejections,
            "errors": self.errors,
            "unknown": self.unknown,
            "double_bookings": self.double_bookings,
            "error_reasons": dict(self.error_reasons),
            "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
            "latency": self.latency.to_dict(),
            "rps": self.rps,
            "duration_s": self.duration,
            "spread": self.spread.to_dict(names),
            "winners": {names[r]: [w.to_dict() for w in ws] for r, ws in self.winners.items()},
            "violations": [v.to_dict() for v in self.violations],
            "violation_rate": self.violation_rate(),
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
        if history:
            data["history"] = history_columns(self.history, self.resources)
        return data

    def by_resource(self) -> list[dict[str, Any]]:
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


def history_columns(records: Sequence[Record], resources: Sequence[Hashable]) -> dict[str, list[Any]]:
    """The request history as columns: small in JSON even at 50,000 requests."""
    return {
        "start_ns": [r.sent_ns for r in records],
        "end_ns": [r.end_ns for r in records],
        "client": [r.client for r in records],
        "resource": [str(resources[r.resource]) for r in records],
        "round": [r.round for r in records],
        "status": [r.status for r in records],
        "outcome": [r.outcome.label for r in records],
        "server_ns": [r.server_ns for r in records],
    }


def _num(value: float) -> float | None:
    return None if math.isnan(value) else value
