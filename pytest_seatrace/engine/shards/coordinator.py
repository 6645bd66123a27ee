"""The coordinator: a firer like the others (``run_race`` drives its rounds, resets, verify and
interruptions), whose waves run on its shards.

1. the plan travels as plain data (``fields.RequestTables``): the request's constant fields once,
   its varying fields evaluated here per client, wave by wave (a wave's travel with the previous
   wave's start); every shard holds a share of every resource's clients;
2. per wave each shard connects and writes its prefixes and reports ready (in last-byte mode it
   reports as soon as the last wave is answered, with the instant it expects to have written
   them: a herald); the start instant is half a millisecond after the last ready report on our
   wall clock, or the latest such expected instant, sent to each shard on its own clock
   (``clock.ClockMap``) by the thread that heard that report; each shard sleeps, spins the last
   ~0.2 ms, and releases;
3. each shard sends back its records (status, arrival stamp, body start, stamps on its own
   ``perf_counter_ns``); they are mapped onto our clock and classified here, a shard's as they
   arrive, while the next wave races.

A shard that cannot start, dies, or misses a start makes its clients' records errors that name
its gateway spec (``link.ShardLink``); the other shards' records are kept.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field, replace
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.records import DatagramRelease, Outcome, Record, ShardInfo
from pytest_seatrace.engine.classify import Classifier
from pytest_seatrace.engine.plan import RacePlan, Roster
from pytest_seatrace.engine.requests import RequestBuilder
from pytest_seatrace.engine.shards.clock import perf_at
from pytest_seatrace.engine.shards.fields import RequestTables, Tables
from pytest_seatrace.engine.shards.gateways import Gateways
from pytest_seatrace.engine.shards.link import ShardLink, gather
from pytest_seatrace.engine.shards.messages import End, Plan, Ready, Records, Round, Start
from pytest_seatrace.engine.shards.travel import (
    PYTHON_VERSION,
    RaceSettings,
    h3_for_shard,
    pack,
    releases_of,
    tls_for_shard,
    unpack,
)
from pytest_seatrace.engine.stream import Origin
from pytest_seatrace.engine.waves import ReleaseAtOnce, WaveHooks

_T = TypeVar("_T")
START_MARGIN_NS = 500_000
"""The start instant is at least this much (plus four best round trips) after the last ready
report; a heralded wave starts when its slowest shard expects to have written its prefixes,
if that is later. (2 ms was the first figure: with heralds the wait overlaps with the writing,
and each wave's turn-around on 2 cores went from ~6 ms to ~3.5 ms, one process's ~3 ms.)"""
RELEASE_NS = 4_000_000
"""After the start instant the coordinator leaves the cores to the releasing shards this long
before its own work (classifying the last wave, the next tables): on 2 cores, that work done
at once kept a shard off the CPU at its start instant and made it ~2 ms late."""
GRACE_S = 1.0
"""Beyond the race's timeout, for messages to cross the channel."""

Share = dict[int, list[int]]
"""One shard's clients of every resource index."""
WaveTables = list[Tables | None]
"""One wave's tables for each shard (``None`` for a shard that dropped out)."""


@dataclass(eq=False, repr=False)
class ShardedFirer:
    """Fires a race's waves on its shards; the records come back mapped and classified."""

    plan: RacePlan
    config: RaceConfig
    builder: InitVar[RequestBuilder]
    classifier: Classifier
    roster: Roster
    pool: Gateways
    h3_at: dict[Origin, Origin] = field(default_factory=dict)
    """Where HTTP/3 answers for an origin off its URL's port (``auto``'s ``Alt-Svc`` find)."""
    ungated: list[str] = field(default_factory=list, init=False)
    """Always empty: request races only."""
    hooks: WaveHooks = field(default_factory=ReleaseAtOnce, init=False)
    """Never paced: the shards' own firers wait for the start instants this one names."""
    datagram_releases: list[DatagramRelease] = field(default_factory=list, init=False)
    """Every shard's single-datagram releases, as their records arrive."""
    _fired: list[tuple[int, Sequence[int], int, list[tuple[int, Share]]]] = field(
        default_factory=list, init=False
    )
    """Waves started whose records are not in the sink yet: round, resource indices, start
    instant, and each shard that raced them with its share."""
    _started: bool = field(default=False, init=False)
    _interrupted: bool = field(default=False, init=False)

    def __post_init__(self, builder: RequestBuilder) -> None:
        seen: dict[str, int] = {}
        self._links: list[ShardLink] = []
        for number, spec in enumerate(self.config.tx, 1):
            self._links.append(ShardLink(number, spec, seen.get(spec, 0)))
            seen[spec] = seen.get(spec, 0) + 1
        self._tls = tls_for_shard(self.plan.target.tls_verify)
        self.requests = RequestTables(builder, self.roster)

    @property
    def shards(self) -> tuple[ShardInfo, ...]:
        return tuple(link.info() for link in self._links)

    @property
    def replaced(self) -> int:
        """Kept connections the shards replaced (the server had closed them)."""
        return sum(link.replaced for link in self._links)

    # -- starting ------------------------------------------------------------------------------

    def _plan_for(self, link: ShardLink) -> Plan:
        requests = self.requests
        return Plan(
            number=link.number,
            shards=len(self._links),
            race=RaceSettings.of(self.config),
            keep_body=self.classifier.needs_response,
            base_url=self.plan.target.base_url,
            tls=self._tls,
            method=requests.method,
            constants=requests.constants,
            varying=requests.varying,
            python_version=PYTHON_VERSION,
            h3_at=h3_for_shard(self.h3_at),
        )

    async def _start(self, meanwhile: Callable[[], _T]) -> _T:
        """Open every shard (in threads: they wait on their channels) and, meanwhile, run
        ``meanwhile`` here; its result."""
        done: list[_T] = []
        failed: list[Exception] = []

        async def then() -> None:
            try:
                done.append(meanwhile())
            except Exception as exc:  # a request callable: raised as itself, not in a group
                failed.append(exc)

        wait = self.config.timeout + GRACE_S
        async with anyio.create_task_group() as tg:
            for link in self._links:
                opening = functools.partial(link.open, self.pool, self._plan_for(link), wait)
                tg.start_soon(functools.partial(anyio.to_thread.run_sync, opening, abandon_on_cancel=True))
            tg.start_soon(then)  # after the threads are asked for (asyncio runs tasks in order)
        if failed:
            raise failed[0]
        return done[0]

    # -- racing --------------------------------------------------------------------------------

    async def fire_waves(self, rnd: int, waves: Sequence[Sequence[int]], sink: list[Record]) -> None:
        try:
            await self._fire_waves(rnd, waves, sink)
        except (KeyboardInterrupt, anyio.get_cancelled_exc_class()):
            self._interrupted = True
            raise

    def _wave_tables(self, rnd: int, shares: Sequence[Share], indices: Sequence[int]) -> WaveTables:
        return [
            self.requests.tables(rnd, share, indices) if link.live else None
            for link, share in zip(self._links, shares, strict=True)
        ]

    async def _fire_waves(self, rnd: int, waves: Sequence[Sequence[int]], sink: list[Record]) -> None:
        """Per wave: every shard ready, one start instant, its records. A wave's varying fields
        travel with the previous wave's start, and the coordinator's own work (the next tables,
        classifying the last wave) runs while the shards' requests are being answered, never
        while they wait to release."""
        self.requests.new_round()
        shares = shares_of(self.roster, waves, len(self._links))
        head = functools.partial(self._wave_tables, rnd, shares, waves[0] if waves else ())
        if not self._started:  # the first wave's fields are evaluated while the shards start
            self._started = True
            tables = [await self._start(head)]
        else:
            tables = [head()]
        for link, share in zip(self._links, shares, strict=True):
            self.requests.check_first(rnd, share)
            if link.live:
                first = pack(tables[0][link.number - 1], link.packed)
                link.send(Round(rnd, [list(w) for w in waves], pack(share, link.packed), first))
        failed: list[Exception] = []
        """A later wave's fields that raised (a request callable): the waves evaluated before it
        race, then the race stops, as in one process."""
        if len(waves) > 1:
            self._ahead(tables, failed, rnd, shares, waves[1])
        timeout = self.config.timeout + GRACE_S
        pending: Sequence[int] | None = None
        """The wave whose records are due: a last-byte shard sends them once the next wave's
        prefixes are written."""
        for number, indices in enumerate(waves):
            if number >= len(tables):  # its fields raised: nothing of it goes out
                break
            racing = [link for link in self._links if link.live]
            upcoming = tables[number + 1] if number + 1 < len(tables) else None
            after = {
                link.number: None if upcoming is None else pack(upcoming[link.number - 1], link.packed)
                for link in racing
            }
            starts: list[int] = []
            release = functools.partial(self._release, racing, after, starts)
            late = f"did not report ready within {timeout:g}s: it missed the start"
            await gather(racing, Ready, timeout, late, last=release)
            start = starts[0] if starts else time.time_ns()
            if starts:
                raced = [(link.number, shares[link.number - 1]) for link in racing if link.live]
                self._fired.append((rnd, indices, start, raced))
            await anyio.sleep(max(0, start + RELEASE_NS - time.time_ns()) / 1e9)
            if pending is not None:  # the last wave's records, classified while this one races
                sink.extend(await self._records(rnd, pending, shares, timeout))
                self._landed(pending)
            if number + 2 < len(waves) and not failed:
                self._ahead(tables, failed, rnd, shares, waves[number + 2])
            pending = indices
        if pending is not None:
            sink.extend(await self._records(rnd, pending, shares, timeout))
            self._landed(pending)
        if failed:
            raise failed[0]

    def _landed(self, indices: Sequence[int]) -> None:
        """A started wave's records are in the sink: no longer in flight."""
        self._fired = [wave for wave in self._fired if wave[1] is not indices]

    @property
    def in_flight(self) -> list[Record]:
        """The clients of the waves started whose records have not come back (read at Ctrl-C):
        their requests went out at the start instant (on our clock); the runner marks them
        unknown."""
        return [
            Record(
                resource=index,
                client=client,
                round=rnd,
                sent_ns=perf_at(start),
                shard=number,
                operation=self.requests.operation(rnd, index, client),
            )
            for rnd, indices, start, raced in self._fired
            for number, share in raced
            for index in indices
            for client in share.get(index, ())
        ]

    def _ahead(
        self,
        tables: list[WaveTables],
        failed: list[Exception],
        rnd: int,
        shares: Sequence[Share],
        indices: Sequence[int],
    ) -> None:
        """A later wave's fields into ``tables``; a callable that raises goes to ``failed``, to be
        raised once the waves before it are in (their requests went out)."""
        try:
            tables.append(self._wave_tables(rnd, shares, indices))
        except Exception as exc:
            failed.append(exc)

    def _release(
        self,
        racing: Sequence[ShardLink],
        after: dict[int, Any],
        starts: list[int],
        reports: dict[int, Ready],
    ) -> None:
        """Send the start instant (and each shard's next fields) to every ready shard, from the
        thread that heard the last ready report: a little after it, or when the slowest
        heralded shard expects to be ready."""
        ready = [link for link in racing if link.live]
        margin = START_MARGIN_NS + 8 * max((link.clock.error_ns for link in ready), default=0)
        expected = max(
            (link.clock.from_there(reports[link.number].eta_ns) for link in ready if link.number in reports),
            default=0,
        )
        start = max(time.time_ns() + margin, expected)
        for link in ready:
            link.send(Start(link.clock.there(start), after[link.number]))
        starts.append(start)

    async def _records(
        self, rnd: int, indices: Sequence[int], shares: Sequence[Share], wait: float
    ) -> list[Record]:
        """A wave's records from every shard, on our clock and classified as each shard's arrive
        (one shard's requests are often all answered well before another's); a shard that sent
        none gives errors naming it."""
        merged: dict[int, list[Record]] = {}

        def merge(link: ShardLink, message: Records) -> None:
            link.late_ns = max(link.late_ns, message.late_ns)
            link.replaced = max(link.replaced, message.replaced)
            self.datagram_releases.extend(
                replace(r, shard=link.number) for r in releases_of(message.releases)
            )
            merged[link.number] = self._merge(link, unpack(message.rows))

        live = [link for link in self._links if link.live]
        late = f"sent no records within {wait:g}s of the start (hung or cut off)"
        await gather(live, Records, wait, late, then=merge)
        records: list[Record] = []
        for link, share in zip(self._links, shares, strict=True):
            got = merged.get(link.number)
            records.extend(got if got is not None else lost(link, rnd, indices, share))
        return records

    def _merge(self, link: ShardLink, rows: Sequence[Sequence[Any]]) -> list[Record]:
        """A shard's records on our clock, classified here."""
        clock, requests = link.clock, self.requests
        out = []
        for row in rows:
            index, client, rnd, call, sent, end, status, outcome, reason, server, early, timed_out = row[:12]
            answered, body, headers = row[12:]
            rec = Record(
                resource=index,
                client=client,
                round=rnd,
                call_ns=clock.here(call),
                sent_ns=clock.here(sent),
                end_ns=clock.here(end),
                status=status,
                outcome=Outcome(outcome),
                reason=reason,
                server_ns=server,
                early=early,
                timed_out=timed_out,
                shard=link.number,
                operation=requests.operation(rnd, index, client),
                input=requests.input(rnd, index, client),
            )
            if answered:
                response = functools.partial(requests.response, rnd, index, client, status, headers, body)
                self.classifier.decide(rec, body, response)  # the shard recorded status and stamp
            out.append(rec)
        return out

    async def aclose(self) -> None:
        for link in self._links:
            if link.channel is not None:
                with contextlib.suppress(Exception):
                    if link.live:
                        link.channel.send(End().encode())
                    link.channel.close()
        if self._interrupted:  # Ctrl-C: no gateway outlives the race
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.pool.close)


def shares_of(roster: Roster, waves: Sequence[Sequence[int]], count: int) -> list[Share]:
    """Each of ``count`` shards' clients of every resource: client ``c`` goes to shard
    ``(c - 1) % count``, so every seat is contended from every shard."""
    shares: list[Share] = [{} for _ in range(count)]
    for indices in waves:
        for index in indices:
            for client in roster.clients(index):
                shares[(client - 1) % count].setdefault(index, []).append(client)
    return shares


def lost(link: ShardLink, rnd: int, indices: Sequence[int], share: Share) -> list[Record]:
    """The clients of a shard that dropped out: errors naming it (violations of kind ``error``
    unless ``allow_errors=True``, like any transport failure)."""
    now = time.perf_counter_ns()
    return [
        Record(
            resource=index,
            client=client,
            round=rnd,
            end_ns=now,
            outcome=Outcome.ERROR,
            reason=link.failure,
            shard=link.number,
        )
        for index in indices
        for client in share.get(index, [])
    ]
