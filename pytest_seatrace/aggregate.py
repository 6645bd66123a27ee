"""Turn the records of a race into a ``RaceResult``: counts, percentiles, spread, verdict."""

from __future__ import annotations

import dataclasses
import statistics
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence

from pytest_seatrace.race_config import RaceConfig
from pytest_seatrace.results import (
    BODY_KEEP,
    Latency,
    Outcome,
    Percentiles,
    RaceResult,
    Record,
    RoundSummary,
    Spread,
    Violation,
    Win,
)
from pytest_seatrace.verdict import invariant_violations, threshold_violations


def build_result(
    *,
    name: str,
    config: RaceConfig,
    records: Sequence[Record],
    duration: float,
    clock: tuple[int, int],
    held: Mapping[tuple[int, int], int] | None = None,
    extra_violations: Sequence[Violation] = (),
    interrupted: bool = False,
) -> RaceResult:
    counts = Counter(r.outcome for r in records)
    winners: dict[Hashable, list[Win]] = {}
    for rec in records:
        if rec.outcome is Outcome.WIN:
            winners.setdefault(config.resources[rec.resource], []).append(
                Win(rec.client, rec.round, rec.status, rec.latency_ns, (rec.body or b"")[:BODY_KEEP])
            )
    latency = Latency(
        all=Percentiles.of(r.latency_ns for r in records if r.outcome is not Outcome.UNKNOWN and r.sent_ns),
        winners=Percentiles.of(r.latency_ns for r in records if r.outcome is Outcome.WIN),
        losers=Percentiles.of(r.latency_ns for r in records if r.outcome is Outcome.REJECTION),
    )
    result = RaceResult(
        name=name,
        mode=config.sync,
        resources=config.resources,
        concurrency=config.concurrency,
        expect=config.expect,
        rounds=config.rounds,
        requests=len(records),
        wins=counts[Outcome.WIN],
        rejections=counts[Outcome.REJECTION],
        errors=counts[Outcome.ERROR],
        unknown=counts[Outcome.UNKNOWN],
        error_reasons=Counter(r.reason or "error" for r in records if r.outcome is Outcome.ERROR),
        winners=winners,
        status_counts=Counter(r.status for r in records if r.status),
        latency=latency,
        rps=len(records) / duration if duration > 0 else 0.0,
        duration=duration,
        spread=start_spread(records, config.resources),
        violations=(),
        per_round=(),
        settings=config.describe(),
        history=tuple(records),
        clock=clock,
        interrupted=interrupted,
    )
    violations = [*invariant_violations(records, config, held), *extra_violations]
    violations += threshold_violations(result, config)
    return dataclasses.replace(
        result, violations=tuple(violations), per_round=per_round(records, config.rounds, violations)
    )


def start_spread(records: Sequence[Record], resources: Sequence[Hashable]) -> Spread:
    """First-to-last final write per (round, resource), on the client and, if stamped, the server."""
    client: dict[tuple[int, int], list[int]] = {}
    server: dict[tuple[int, int], list[int]] = {}
    for rec in records:
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
    return Spread(
        median_ns=statistics.median(widths.values()) if widths else float("nan"),
        max_ns=float(max(widths.values())) if widths else float("nan"),
        by_resource=by_resource,
        server_median_ns=statistics.median(server_widths) if server_widths else None,
        server_max_ns=float(max(server_widths)) if server_widths else None,
    )


def per_round(
    records: Sequence[Record], rounds: int, violations: Sequence[Violation]
) -> tuple[RoundSummary, ...]:
    counts = [Counter[Outcome]() for _ in range(rounds)]
    for rec in records:
        counts[rec.round - 1][rec.outcome] += 1
    bad = Counter(v.round for v in violations if v.round is not None)
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
