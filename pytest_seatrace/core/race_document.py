"""A judged race as its document (the shapes of ``core.document``): builtins only, built once.

``race_document`` reads a ``Judged`` race (``RaceResult`` is one) through the members declared
below, so this module needs neither the result nor anything to its right; the history columns,
samples and status rows are written here and nowhere else.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import asdict
from typing import Protocol, cast

from pytest_seatrace.core.config import RaceConfig, expect_doc
from pytest_seatrace.core.document import (
    HistoryDoc,
    RacedDoc,
    RaceDoc,
    ReleaseDoc,
    RoundDoc,
    SampleDoc,
    StatusReasonDoc,
)
from pytest_seatrace.core.figures import NOT_SENT, Figures, RoundSummary
from pytest_seatrace.core.history_document import histories_doc
from pytest_seatrace.core.linearizability import HistoryCheck
from pytest_seatrace.core.records import DatagramRelease, Raced, Record, Stop
from pytest_seatrace.core.redact import redact_text
from pytest_seatrace.core.violations import Violation

STATUS_REASONS_SHOWN = 50
"""Rows of a race document's ``status_reasons``; the rarer reasons of a status fold into one."""
SAMPLE_BODY = 200
"""Bytes of a sample's body shown in reports."""


class Judged(Protocol):
    """What the document says of a race: its figures, its verdict and how it ran."""

    @property
    def name(self) -> str: ...
    @property
    def config(self) -> RaceConfig: ...
    @property
    def figures(self) -> Figures: ...
    @property
    def violations(self) -> tuple[Violation, ...]: ...
    @property
    def passed(self) -> bool: ...
    @property
    def double_bookings(self) -> int: ...
    @property
    def per_round(self) -> tuple[RoundSummary, ...]: ...
    @property
    def notes(self) -> tuple[str, ...]: ...
    @property
    def interrupted(self) -> bool: ...
    @property
    def checked(self) -> bool: ...
    @property
    def not_run(self) -> list[tuple[int, Hashable]]: ...
    @property
    def raced(self) -> Raced | None: ...
    @property
    def clock(self) -> tuple[int, int]: ...
    @property
    def connections_replaced(self) -> int: ...
    @property
    def stopped(self) -> Stop | None: ...
    @property
    def releases(self) -> tuple[DatagramRelease, ...]: ...
    @property
    def history_checks(self) -> tuple[HistoryCheck, ...]: ...
    def violation_rate(self) -> str: ...


def race_document(race: Judged, *, history: bool = False) -> RaceDoc:
    """The race document (builtins only: JSON- and execnet-safe)."""
    config, figures = race.config, race.figures
    names = {r: str(r) for r in config.resources}
    doc: RaceDoc = {
        "name": race.name,
        "mode": config.sync,
        "passed": race.passed,
        "interrupted": race.interrupted,
        "checked": race.checked,
        "resources": [names[r] for r in config.resources],
        "concurrency": config.concurrency,
        "expect": expect_doc(config.expect),
        "rounds": config.rounds,
        "requests": figures.requests,
        "wins": figures.wins,
        "rejections": figures.rejections,
        "errors": figures.errors,
        "unknown": figures.unknown,
        "early": figures.early,
        "double_bookings": race.double_bookings,
        "error_reasons": dict(figures.error_reasons),
        "notes": list(race.notes),
        "status_counts": {str(k): v for k, v in sorted(figures.status_counts.items())},
        "status_reasons": status_reason_rows(figures.status_reasons),
        "latency": figures.latency.to_dict(),
        "rps": figures.rps,
        "duration_s": figures.duration,
        "spread": figures.spread.to_dict(names),
        "winners": {names[r]: [w.to_dict() for w in ws] for r, ws in figures.winners.items()},
        "violations": [v.to_dict() for v in race.violations],
        "violation_rate": race.violation_rate(),
        "not_run": [{"round": rnd, "resource": str(res)} for rnd, res in race.not_run],
        "raced": _raced_doc(race.raced, config),
        "samples": {names[res]: [_sample_doc(rec) for rec in recs] for res, recs in figures.samples.items()},
        "per_round": [_round_doc(r) for r in race.per_round],
        "by_resource": figures.by_resource(),
        "settings": config.describe(),
        "clock": {"time_ns": race.clock[0], "perf_counter_ns": race.clock[1]},
    }
    if len(figures.operations) > 1:
        doc["by_operation"] = figures.by_operation()
    if figures.shard_infos:
        doc["shards"] = list(figures.shards)
    doc["connections_replaced"] = race.connections_replaced
    if race.stopped is not None:
        doc["stopped"] = race.stopped.to_dict()
    if race.releases:
        doc["releases"] = [_release_doc(r, names[config.resources[r.resource]]) for r in race.releases]
    doc["contention"] = figures.contention.to_dict([names[r] for r in config.resources])
    if config.model is not None:
        doc["histories"] = histories_doc(race.history_checks, figures.records, type(config.model).__name__)
    if history:
        doc["history"] = history_columns(figures.records, config.resources)
    return doc


def _release_doc(release: DatagramRelease, resource: str) -> ReleaseDoc:
    """Its figures as they are (``ReleaseDoc`` names each), the resource by its name."""
    return cast(ReleaseDoc, {**asdict(release), "resource": resource})


def _raced_doc(raced: Raced | None, config: RaceConfig) -> RacedDoc | None:
    if raced is None:
        return None
    return {
        "method": raced.method,
        "url": raced.url,
        "base_url": raced.base_url,
        "http_version": raced.http_version,
        "stripped": list(raced.stripped),
        "sync": config.sync,
        "hold": config.hold if config.sync in ("last-byte", "single-datagram") else None,
        "why": raced.why,
    }


def _round_doc(r: RoundSummary) -> RoundDoc:
    return {
        "round": r.round,
        "requests": r.requests,
        "wins": r.wins,
        "rejections": r.rejections,
        "errors": r.errors,
        "unknown": r.unknown,
        "violations": r.violations,
    }


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
        "call_ns": [r.call_ns for r in records],
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
