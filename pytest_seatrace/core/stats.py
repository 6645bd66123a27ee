"""Figures over records: exact latency percentiles and the start spread."""

from __future__ import annotations

import math
import statistics
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

from pytest_seatrace.core.document import LatencyDoc, PercentilesDoc, SpreadDoc
from pytest_seatrace.core.records import Record


def percentile(sorted_data: Sequence[int], pct: float) -> float:
    """The ``pct`` percentile of already sorted data, interpolated like numpy's default."""
    if not sorted_data:
        return math.nan
    rank = (len(sorted_data) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(sorted_data) - 1)
    return sorted_data[low] + (sorted_data[high] - sorted_data[low]) * (rank - low)


percentile.__module__ = "pytest_seatrace"  # the public name, as the classes below say


def _num(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Latency percentiles in nanoseconds, exact over every sample (linear interpolation)."""

    __module__ = "pytest_seatrace"  # the public name: tracebacks and pickles say it

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

    def to_dict(self) -> PercentilesDoc:
        return {
            "count": self.count,
            "min_ns": _num(self.min),
            "avg_ns": _num(self.avg),
            "med_ns": _num(self.med),
            "p90_ns": _num(self.p90),
            "p95_ns": _num(self.p95),
            "p99_ns": _num(self.p99),
            "max_ns": _num(self.max),
        }


@dataclass(frozen=True, slots=True)
class Latency:
    __module__ = "pytest_seatrace"  # the public name: tracebacks and pickles say it

    all: Percentiles
    winners: Percentiles
    losers: Percentiles

    def to_dict(self) -> LatencyDoc:
        return {"all": self.all.to_dict(), "winners": self.winners.to_dict(), "losers": self.losers.to_dict()}


@dataclass(frozen=True, slots=True)
class Spread:
    """Start spread: time between the first and the last final write of a resource (per round).

    ``median_ns``/``max_ns`` are over every (resource, round); ``by_resource`` keeps the widest
    round of each resource. ``server_*`` are the same measured from the service's arrival stamps,
    when it sends ``X-Arrival-Ns``.
    """

    __module__ = "pytest_seatrace"  # the public name: tracebacks and pickles say it

    median_ns: float
    max_ns: float
    by_resource: dict[Hashable, int]
    server_median_ns: float | None = None
    server_max_ns: float | None = None

    @classmethod
    def of(cls, records: Sequence[Record], resources: Sequence[Hashable]) -> Spread:
        """First-to-last final write per (round, resource), on the client and, if stamped, the server."""
        client: dict[tuple[int, int], list[int]] = {}
        server: dict[tuple[int, int], list[int]] = {}
        for rec in records:
            if rec.early:  # not synchronised: an early answer never waited at the gate
                continue
            if rec.sent_ns:
                client.setdefault((rec.round, rec.resource), []).append(rec.sent_ns)
            if rec.server_ns:
                server.setdefault((rec.round, rec.resource), []).append(rec.server_ns)
        widths = {key: max(v) - min(v) for key, v in client.items()}
        by_resource: dict[Hashable, int] = {}
        for (_, index), width in widths.items():
            res = resources[index]
            by_resource[res] = max(width, by_resource.get(res, 0))
        server_widths = [max(v) - min(v) for v in server.values() if len(v) > 1]
        return cls(
            median_ns=statistics.median(widths.values()) if widths else math.nan,
            max_ns=float(max(widths.values())) if widths else math.nan,
            by_resource=by_resource,
            server_median_ns=statistics.median(server_widths) if server_widths else None,
            server_max_ns=float(max(server_widths)) if server_widths else None,
        )

    def to_dict(self, names: dict[Hashable, str]) -> SpreadDoc:
        return {
            "median_ns": _num(self.median_ns),
            "max_ns": _num(self.max_ns),
            "by_resource": {names[r]: v for r, v in self.by_resource.items()},
            "server_median_ns": self.server_median_ns,
            "server_max_ns": self.server_max_ns,
        }
