"""What a race found: its records and config in; the figures, the verdict and the document out.

``RaceResult`` assembles the parts, each computed once on first use: ``core.figures`` adds up
the records, ``core.judge`` decides, ``core.race_document`` writes it down. It keeps the
names users and reports read (``result.wins``, ``result.latency``, ``result.violations``);
``violations`` is empty exactly when the race passed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.contention import Contention
from pytest_seatrace.core.document import OperationDoc, RaceDoc, ResourceDoc, ShardDoc
from pytest_seatrace.core.figures import Figures, RoundSummary, Win
from pytest_seatrace.core.judge import double_bookings, judge
from pytest_seatrace.core.linearizability import HistoryCheck, check_histories, overall
from pytest_seatrace.core.notes import classification_notes
from pytest_seatrace.core.race_document import STATUS_REASONS_SHOWN, history_columns, race_document
from pytest_seatrace.core.records import (
    DatagramRelease,
    Outcome,
    Problem,
    Raced,
    RaceRun,
    Record,
    ShardInfo,
    Stop,
)
from pytest_seatrace.core.stats import Latency, Spread
from pytest_seatrace.core.violations import Violation
from pytest_seatrace.history.checker import Verdict

__all__ = ["STATUS_REASONS_SHOWN", "RaceResult", "RoundSummary", "Win", "history_columns"]


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
    problems: tuple[Problem, ...] = field(default=(), repr=False)
    """What went wrong while running (a hung wave, a failed hook, a ``verify=`` that returned
    no count), as the engine reported it; ``violations`` words each."""
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
    releases: tuple[DatagramRelease, ...] = field(default=(), repr=False)
    """Each release of a single-datagram race (its datagrams, bytes, build and write times)."""

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
            releases=run.releases,
        )

    @cached_property
    def figures(self) -> Figures:
        """What the records add up to (``core.figures``): every count and timing below."""
        config = self.config
        return Figures(
            self.history, config.resources, config.concurrency, config.rounds, self.duration, self.shard_infos
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

    # -- figures ---------------------------------------------------------------------------

    @property
    def requests(self) -> int:
        return self.figures.requests

    @property
    def wins(self) -> int:
        return self.figures.wins

    @property
    def rejections(self) -> int:
        return self.figures.rejections

    @property
    def errors(self) -> int:
        return self.figures.errors

    @property
    def unknown(self) -> int:
        return self.figures.unknown

    @property
    def early(self) -> int:
        return self.figures.early

    @property
    def error_reasons(self) -> Counter[str]:
        return self.figures.error_reasons

    @property
    def status_counts(self) -> Counter[int]:
        return self.figures.status_counts

    @property
    def status_reasons(self) -> Counter[tuple[int, str]]:
        return self.figures.status_reasons

    @property
    def winners(self) -> dict[Hashable, list[Win]]:
        return self.figures.winners

    @property
    def samples(self) -> dict[Hashable, list[Record]]:
        return self.figures.samples

    @property
    def latency(self) -> Latency:
        return self.figures.latency

    @property
    def rps(self) -> float:
        return self.figures.rps

    @property
    def spread(self) -> Spread:
        return self.figures.spread

    @property
    def shards(self) -> tuple[ShardDoc, ...]:
        return self.figures.shards

    @property
    def contention(self) -> Contention:
        return self.figures.contention

    @property
    def clock_error_ns(self) -> int:
        return self.figures.clock_error_ns

    @property
    def operations(self) -> tuple[str, ...]:
        return self.figures.operations

    @property
    def mixed(self) -> bool:
        """More than one operation under one start: reports break statuses down per operation."""
        return len(self.operations) > 1

    def by_resource(self) -> list[ResourceDoc]:
        return self.figures.by_resource()

    def by_operation(self) -> list[OperationDoc]:
        return self.figures.by_operation()

    @property
    def not_run(self) -> list[tuple[int, Hashable]]:
        """(round, resource) pairs never raced: the race stopped on a hung service."""
        return [(rnd, self.resources[index]) for rnd, index in self.never_fired]

    @cached_property
    def notes(self) -> tuple[str, ...]:
        """Advice on the classification (rejections of several kinds, or all "not allowed to
        try"), suggesting ``reject=``; never part of the verdict."""
        return classification_notes(self.history, self.config)

    # -- verdict ---------------------------------------------------------------------------

    @cached_property
    def history_checks(self) -> tuple[HistoryCheck, ...]:
        """With ``model=``: each partition of each round (its resource, by default) as checked,
        its operations and the model's verdict, in round order; empty without a model. Checked
        once, on first use (``core.linearizability``)."""
        return check_histories(self.history, self.config, self.shard_infos)

    @property
    def verdicts(self) -> dict[tuple[int, Hashable], Verdict]:
        """The model's verdict per (round, resource) (the model's partition key); empty without
        a model."""
        return {(c.round, c.resource): c.verdict for c in self.history_checks}

    @property
    def linearizable(self) -> bool | None:
        """Over every partition: False when one is not linearizable, else None when the time
        budget left one unknown, else True; None without a model (nothing was checked)."""
        if self.config.model is None:
            return None
        return overall(self.history_checks)

    @cached_property
    def violations(self) -> tuple[Violation, ...]:
        return judge(self.history, self.config, self.figures, self.held, self.problems, self.history_checks)

    @property
    def passed(self) -> bool:
        return not self.violations

    @property
    def double_bookings(self) -> int:
        """Wins (or final-state holders) beyond what ``expect`` allows, per resource and round."""
        return double_bookings(self.violations)

    @cached_property
    def per_round(self) -> tuple[RoundSummary, ...]:
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
            for i, c in enumerate(self.figures.round_outcomes)
        )

    def violation_rate(self) -> str:
        """E.g. ``"too-many in 3 of 20 rounds"``; empty for a single round."""
        if self.rounds <= 1:
            return ""
        bad = sum(1 for r in self.per_round if r.violations)
        kinds = sorted({v.kind.value for v in self.violations if v.round is not None})
        what = ", ".join(kinds) if kinds else "violations"
        return f"{what} in {bad} of {self.rounds} rounds"

    def to_dict(self, *, history: bool = False) -> RaceDoc:
        """The race document (builtins only: JSON- and execnet-safe; ``core.race_document``)."""
        return race_document(self, history=history)
