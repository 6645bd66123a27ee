"""Last-byte start: every request written but its final byte, then all final bytes at once.

Per wave: build the requests, open (or reuse) one connection per client, write each request
but its last byte, then for each resource send the held bytes back to back from one loop in a
seeded shuffled order, and read every response concurrently.

Waves take turns at the service: the next wave's requests are built while this wave's
responses come in, but nothing of it is sent (no connection opened, no prefix written) until
this wave is answered in full. That last response is the settle point: a service still
accepting and parsing the next wave while it answers this one spreads this wave's arrivals
and is busy when the next gate opens (measured in ``benchmarks/detection.py``).

Kept connections the server closed are replaced, never reported as its failures
(``engine.keepalive``): before a prefix is written (a close seen, or an idle age past the
server's learned keep-alive), and between the prefixes and the release at ``hold="headers"``,
where no server has a complete header block and so none can have acted. At ``hold="body"`` a
close under a written prefix may follow a side effect: that request is *unknown*, not replayed.
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import httpx

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.records import Outcome, Record
from pytest_seatrace.engine.classify import ARRIVAL_HEADER, ResponseRecorder
from pytest_seatrace.engine.keepalive import KeepAlive, idle_ms
from pytest_seatrace.engine.plan import Roster, keep_outcome, release_order
from pytest_seatrace.engine.rawhttp import (
    ANSWERED,
    Origin,
    RawConnection,
    RawResponse,
    TransportError,
    early_answers,
)
from pytest_seatrace.engine.reader import read_responses
from pytest_seatrace.engine.requests import RequestBuilder, WireBuilder, WireRequest

_ARRIVAL = ARRIVAL_HEADER.encode()
RENEW_PASSES = 3
"""Checks of a resource's connections between its prefixes and its release; each replaces the
kept ones the server closed under their prefix. Bounded: a slot is renewed once, and a fresh
connection the server closes too is an error with its reason, never a loop."""


class Slot:
    """One client of one resource in the current wave."""

    __slots__ = ("conn", "kept", "late", "prefix_ns", "record", "renewed", "request")

    def __init__(self, record: Record, request: WireRequest) -> None:
        self.record = record
        self.request = request
        self.conn: RawConnection | None = None
        self.prefix_ns = 0
        """When its prefix was written: an early answer's latency counts from here."""
        self.kept = False
        """Its connection carried an earlier request (kept alive): the server may close it idle."""
        self.renewed = False
        """Its kept connection was closed under its prefix and replaced once this wave."""
        self.late = False
        """Its kept connection closed at the gate itself, under an incomplete header block: the
        request goes whole on a fresh connection right after the others (``_send_late``)."""


class LastByteFirer:
    """Fires waves in last-byte mode, keeping connections between waves.

    Wave ``i + 1`` is built while the responses of wave ``i`` come in (the client's work hides
    behind the server's), then connected and written once wave ``i`` is answered in full,
    reusing its kept-alive connections.
    """

    def __init__(
        self,
        config: RaceConfig,
        builder: RequestBuilder,
        ssl_context: ssl.SSLContext,
        classifier: ResponseRecorder,
        roster: Roster | None = None,
    ) -> None:
        self.config = config
        self.builder = builder
        self.ssl_context = ssl_context
        self.classifier = classifier
        self.wire = WireBuilder(builder)
        self._pool: list[RawConnection] = []
        """Kept-alive connections, for the next wave."""
        self._opened: list[RawConnection] = []
        """Every connection ever opened, so a cancelled race still closes them all."""
        self.keepalive = KeepAlive()
        """The server's keep-alive as learned, and how many kept connections were replaced."""
        self._probed_ns = 0
        """How long the probe just left the kept connections idle (the next weed learns from it)."""
        self.ungated: list[str] = []
        """Always empty: every request here waits at the gate."""
        self.in_flight: list[Record] = []
        """The wave being raced, until its records are in the sink (Ctrl-C keeps those sent)."""
        self.roster = roster or Roster(config)
        """Who races, and what their ``setup=`` returned."""
        self.starter: Callable[[], Awaitable[None]] | None = None
        """Awaited once per wave right before the held bytes go out (a shard waits for the
        coordinator's start instant there); ``None``: release at once."""
        self.released: Callable[[], None] | None = None
        """Called right after each wave's held bytes are out (a shard gives up its CPU there,
        so that another shard of the same host releases on time)."""
        self.herald: Callable[[int], None] | None = None
        """Told, as soon as a wave is answered, how many prefixes of the next wave are about to
        be written on its kept connections (a shard tells the coordinator when it expects to be
        ready, before it hands over the records)."""

    @property
    def replaced(self) -> int:
        """Kept connections the server closed (or was about to) that fresh ones replaced."""
        return self.keepalive.replaced

    async def fire_waves(self, rnd: int, waves: Sequence[Sequence[int]], sink: list[Record]) -> None:
        """Race every wave of a round, appending each wave's records to ``sink`` as it ends."""
        upcoming = await self._build_wave(rnd, waves[0]) if waves else []
        for number, indices in enumerate(waves):
            slots = await self._prepare_wave(upcoming)
            self.in_flight = [s.record for s in slots]
            if self.starter is not None:  # a shard: every replacement before its start instant
                await self._renew(slots)
                await self.starter()
            for index in indices:
                mine = [s for s in slots if s.record.resource == index]
                if self.starter is None:
                    await self._renew(mine)
                self._release(rnd, index, mine)
                late = [slot for slot in mine if slot.late]
                if late:
                    await self._send_late(late)
            if self.released is not None:
                self.released()
            built: list[list[Slot]] = []
            failures: list[Exception] = []
            if number + 1 < len(waves):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(keep_outcome, built, failures, self._build_wave, rnd, waves[number + 1])
                    await self._collect_wave(slots)
            else:
                await self._collect_wave(slots)
            upcoming = built[0] if built else []
            if built:
                await self._probe()  # before a herald: a shard's promised instant includes it
            if self.herald is not None and built and not failures:
                self.herald(len(upcoming))
            sink.extend([s.record for s in slots])
            self.in_flight = []
            if failures:  # e.g. a request callable that raised: after this wave's figures are kept
                raise failures[0]

    async def _build_wave(self, rnd: int, indices: Sequence[int]) -> list[Slot]:
        """The wave's requests, one slot per racing client: client-side work only, nothing sent."""
        slots = []
        for index in indices:
            for client in self.roster.clients(index):
                fixed = self.wire.fixed  # a constant request needs no attempt built for it
                request = fixed or self.wire.build(self.roster.attempt(index, client, rnd))
                record = Record(resource=index, client=client, round=rnd, operation=request.operation)
                slots.append(Slot(record, request))
            await anyio.lowlevel.checkpoint()  # let the previous wave's responses be read on time
        return slots

    async def _prepare_wave(self, slots: list[Slot]) -> list[Slot]:
        """Connect (or reuse) and write all but the final bytes of every slot."""
        await self._probe()
        self._weed(self._pool, self._probed_ns)
        self._probed_ns = 0
        await self._run_jobs(slots, [job for job in (self._prepare(slot) for slot in slots) if job])
        return slots

    async def _probe(self) -> None:
        """Once a race, before kept connections are first reused: leave them idle ``PROBE_S``,
        so that a server that closes each one soon after answering shows it now."""
        wait = self.keepalive.probe_wait([conn.idle_since for conn in self._pool], time.perf_counter_ns())
        if wait:
            await anyio.sleep(wait)
            self._probed_ns = int(wait * 1e9)

    async def _run_jobs(
        self, slots: Sequence[Slot], jobs: Sequence[Callable[[], Coroutine[Any, Any, None]]]
    ) -> None:
        """Connections to open, prefixes to finish: tasks, under the connect deadline; a slot left
        without a connection by it is an error that says so."""
        cfg = self.config
        if jobs:
            with anyio.move_on_after(cfg.timeout):
                async with anyio.create_task_group() as tg:
                    for job in jobs:
                        tg.start_soon(job)
        for slot in slots:
            if slot.conn is None and not slot.record.reason:
                origin = slot.request.origin
                self._fail(slot, None, f"connect timeout after {cfg.timeout}s to {origin.url}")
                slot.record.timed_out = True

    async def _renew(self, slots: Sequence[Slot]) -> None:
        """Between the prefixes and the release: replace the kept connections the server closed
        under their prefix (``hold="headers"``: the header block is incomplete, so the server
        cannot have acted), and, once a close is seen, the other kept ones idle as long; at
        ``hold="body"`` such a request is unknown. Bounded by ``RENEW_PASSES``."""
        for _ in range(RENEW_PASSES):
            live = [(slot, slot.conn) for slot in slots if slot.conn is not None]
            found = early_answers([conn for _, conn in live])
            closed = [
                (slot, conn, why)
                for (slot, conn), why in zip(live, found, strict=True)
                if why is not None and why is not ANSWERED
            ]
            if not closed:
                return
            jobs = [job for job in (self._closed_under_prefix(*one) for one in closed) if job]
            if self.config.hold == "headers":  # the limit just learned: the others as idle go too
                now = time.perf_counter_ns()
                for slot, conn in live:
                    if slot.conn is conn and slot.kept and self.keepalive.stale(now - conn.idle_since):
                        jobs.append(self._replace(slot, conn))
            await self._run_jobs(slots, jobs)

    def _closed_under_prefix(
        self, slot: Slot, conn: RawConnection, found: str
    ) -> Callable[[], Coroutine[Any, Any, None]] | None:
        """A connection found closed after its prefix was written: replaced (a kept one at
        ``hold="headers"``, once), unknown (a kept one at ``hold="body"``), else an error."""
        if not slot.kept:
            self._fail(slot, conn, self._dropped(found))
            slot.conn = None
            return None
        idle = slot.prefix_ns - conn.idle_since
        self.keepalive.closed_after(idle)
        if self.config.hold == "headers":
            return self._replace(slot, conn)
        self._unknown_close(slot, conn, found, idle)
        return None

    def _replace(self, slot: Slot, conn: RawConnection) -> Callable[[], Coroutine[Any, Any, None]]:
        """Close a kept connection under an incomplete request and open a fresh one for it."""
        conn.close()
        slot.conn, slot.kept, slot.renewed = None, False, True
        self.keepalive.replaced += 1
        return functools.partial(self._connect_and_prepare, slot, slot.request.origin)

    def _unknown_close(
        self, slot: Slot, conn: RawConnection, found: str, idle: int, *, gated: bool = False
    ) -> None:
        """A kept connection the server closed once it may have had a complete request: at
        ``hold="body"`` under the prefix, or at any hold point after the release, unanswered."""
        rec = slot.record
        rec.outcome, rec.end_ns = Outcome.UNKNOWN, time.perf_counter_ns()
        when = (
            "after the release, before any byte of an answer: the request may have been complete"
            if gated
            else "under the request's prefix; at hold='body' the header block was complete"
        )
        rec.reason = (
            f"{found}: the server closed a kept connection ({idle_ms(idle)}, its keep-alive most "
            f"likely) {when}, so the server may have acted on it: unknown, not replayed"
        )
        conn.close()
        slot.conn = None

    async def _collect_wave(self, slots: Sequence[Slot]) -> None:
        """Read every response, with one deadline: ``timeout`` after the wave's last final write."""
        live = [(s, s.conn) for s in slots if s.conn is not None]
        with anyio.move_on_after(self.config.timeout):
            await self._read(live)
        for slot, conn in live:
            if not slot.record.end_ns:
                rec = slot.record
                rec.outcome, rec.timed_out = Outcome.UNKNOWN, True
                rec.reason = f"no response within {self.config.timeout}s after the final write"
                rec.end_ns = time.perf_counter_ns()
                conn.close()

    def _prepare(self, slot: Slot) -> Callable[[], Coroutine[Any, Any, None]] | None:
        """Reuse a kept connection and write its prefix now; what needs waiting for (opening a
        connection, the rest of a prefix that did not fit) is returned, to run in a task."""
        origin = slot.request.origin
        conn = self._reuse(origin, self._pool)
        if conn is None:
            return functools.partial(self._connect_and_prepare, slot, origin)
        slot.kept = True
        try:
            request = slot.request
            rest = conn.write_prefix(request.data, request.held_from(self.config.hold))
            slot.prefix_ns = time.perf_counter_ns()
        except OSError:  # closed by the server before the prefix: it saw nothing of this request
            self.keepalive.closed_after(time.perf_counter_ns() - conn.idle_since)
            return self._replace(slot, conn)
        if rest:
            return functools.partial(self._finish_prefix, slot, conn, rest)
        slot.conn = conn
        return None

    async def _finish_prefix(self, slot: Slot, conn: RawConnection, rest: bytes) -> None:
        try:
            await conn.send_all(rest)
        except OSError as exc:
            self._fail(slot, conn, f"connection to {conn.origin.url} failed: {exc}")
        else:
            slot.conn = conn

    async def _connect_and_prepare(self, slot: Slot, origin: Origin) -> None:
        conn = None
        try:
            conn = await RawConnection.open(origin, self.ssl_context if origin.scheme == "https" else None)
            self._opened.append(conn)
            request = slot.request
            await conn.prepare(request.data, request.held_from(self.config.hold))
            slot.prefix_ns = time.perf_counter_ns()
        except TransportError as exc:
            self._fail(slot, conn, str(exc))
        except OSError as exc:
            self._fail(slot, conn, f"connection to {origin.url} failed: {exc}")
        else:
            slot.conn = conn
        finally:
            if slot.conn is None and conn is not None and not slot.record.reason:
                conn.close()  # cancelled by the connect deadline

    def _weed(self, pool: list[RawConnection], probed_ns: int = 0) -> None:
        """Drop the kept connections the server spoke on (closed them, most likely) since, and
        those idle too near its keep-alive to outlive a prefix: fresh ones replace them. After a
        probe of ``probed_ns``, a close teaches the idle time it began at (the connection was
        open then, as far as anyone looked), not the time it was found at."""
        if pool:
            kept = []
            now = time.perf_counter_ns()
            keepalive = self.keepalive
            for conn, found in zip(pool, early_answers(pool), strict=True):
                idle = now - conn.idle_since
                if found is None and not keepalive.stale(idle):
                    kept.append(conn)
                    continue
                if found is not None:
                    keepalive.closed_after(idle - probed_ns)
                keepalive.replaced += 1
                conn.close()
            pool[:] = kept

    def _reuse(self, origin: Origin, pool: list[RawConnection]) -> RawConnection | None:
        """A kept connection to ``origin`` (the pool was weeded just before)."""
        while pool:
            conn = pool.pop()
            if conn.origin is origin or conn.origin == origin:
                return conn
            conn.close()
        return None

    def _dropped(self, reason: str) -> str:
        """A held request on a fresh connection the server gave up on: the timeout that drops it
        at this hold point, and what avoids it (never the other hold point's own trouble)."""
        if self.config.hold == "headers":
            return (
                f"{reason} (hold='headers': a server with a header-read timeout, such as nginx's "
                "client_header_timeout or Go's ReadHeaderTimeout, drops a request whose header block "
                "stays incomplete; try hold='body')"
            )
        return (
            f"{reason} (hold='body': a server with a body-read timeout drops a request whose body "
            "stays incomplete; sync='gate' sends whole requests)"
        )

    def _fail(self, slot: Slot, conn: RawConnection | None, reason: str) -> None:
        slot.record.outcome = Outcome.ERROR
        slot.record.reason = reason
        slot.record.end_ns = time.perf_counter_ns()
        if conn is not None:
            conn.close()

    def _release(self, rnd: int, index: int, slots: list[Slot]) -> None:
        """The gate: check every connection, then the held bytes back to back, stamping each.

        A connection answered already (the server acted before the hold point) is read like
        any other, marked early; one the server closed is an error that names the hold point.
        """
        ready: list[tuple[Slot, RawConnection]] = []
        live = [(slot, slot.conn) for slot in slots if slot.conn is not None]
        for (slot, conn), found in zip(live, early_answers([conn for _, conn in live]), strict=True):
            if found is None:
                ready.append((slot, conn))
            elif found is ANSWERED:
                rec = slot.record
                rec.early, rec.sent_ns, rec.end_ns = True, slot.prefix_ns, time.perf_counter_ns()
            else:
                self._closed_at_gate(slot, conn, found)
        release_order(self.config.seed, rnd, index, ready)
        # The hot loop: a bound send and a clock read per client, nothing else.
        shots = [(conn.sock.send, conn.final, slot.record) for slot, conn in ready]
        results: list[int | OSError] = []
        clock = time.perf_counter_ns
        for send, final, record in shots:
            try:
                results.append(send(final))
            except OSError as exc:
                results.append(exc)
            record.sent_ns = clock()
        for (slot, conn), outcome in zip(ready, results, strict=True):
            if isinstance(outcome, OSError):
                if slot.kept:
                    self._closed_at_gate(slot, conn, f"final byte not sent: {outcome}")
                else:
                    self._fail(slot, conn, f"final byte not sent: {outcome}")
                    slot.conn = None
            elif outcome < len(conn.final):  # a full socket buffer: finish the rest at once
                conn.finish_final(outcome)

    def _closed_at_gate(self, slot: Slot, conn: RawConnection, found: str) -> None:
        """A connection closed after its last check, at the gate itself. A kept one under an
        incomplete header block goes late (``_send_late``), except in a shard, which never sends
        after its start instant; under a complete one it is unknown."""
        slot.conn, slot.record.sent_ns = None, 0
        if not slot.kept:
            self._fail(slot, conn, self._dropped(found))
            return
        idle = slot.prefix_ns - conn.idle_since
        self.keepalive.closed_after(idle)
        if self.config.hold == "body":
            self._unknown_close(slot, conn, found, idle)
        elif self.starter is None and not slot.renewed:
            conn.close()
            slot.kept, slot.renewed, slot.late = False, True, True
            slot.record.sent_ns = 0
            self.keepalive.replaced += 1
        else:
            self._fail(
                slot,
                conn,
                f"{found}: the server closed a kept connection ({idle_ms(idle)}, its keep-alive most "
                "likely) at the start instant; the header block was incomplete, so the server did not "
                "act on it, and a shard never sends after its start instant",
            )

    async def _send_late(self, slots: Sequence[Slot]) -> None:
        """Requests whose kept connection closed at the gate under an incomplete header block
        (the server never had them): each goes whole on a fresh connection right after the
        others, once; its start counts in the resource's spread, as late as it was."""
        await self._run_jobs(
            slots, [functools.partial(self._connect_and_prepare, s, s.request.origin) for s in slots]
        )
        for slot in slots:
            slot.late = False
            conn = slot.conn
            if conn is None:
                continue
            try:
                sent = conn.sock.send(conn.final)
            except OSError as exc:
                self._fail(slot, conn, f"final byte not sent: {exc}")
                slot.conn = None
                continue
            slot.record.sent_ns = time.perf_counter_ns()
            if sent < len(conn.final):
                conn.finish_final(sent)

    async def _read(self, live: Sequence[tuple[Slot, RawConnection]]) -> None:
        keep_body = self.classifier.needs_response
        for slot, conn in live:
            conn.begin_response(keep_body, method=slot.request.method, closes=slot.request.closes)
        await read_responses(live, self._finish)

    def _finish(self, slot: Slot, conn: RawConnection, outcome: RawResponse | TransportError) -> None:
        """A connection's response (or why there is none) into its record; keep the connection
        for the next wave when the server keeps it alive."""
        rec = slot.record
        if isinstance(outcome, TransportError):
            slot.conn = None
            if slot.kept and not conn.reader.begun:  # closed idle as the request arrived
                idle = slot.prefix_ns - conn.idle_since
                self.keepalive.closed_after(idle)
                self._unknown_close(slot, conn, str(outcome), idle, gated=True)
                return
            self._fail(slot, conn, str(outcome))
            return
        response = outcome
        if not rec.early:  # an early answer was complete by the gate, when it was found
            rec.end_ns = response.end_ns
        arrival = dict(response.headers).get(_ARRIVAL)
        self.classifier.fill(
            rec, response.status, arrival, response.body, lambda: self._as_httpx(slot, response)
        )
        if response.keep_alive and not rec.early:  # after an early answer the server is mid-request
            conn.idle_since = response.end_ns
            self.keepalive.heard(response.headers)
            self._pool.append(conn)
        else:
            conn.close()

    @staticmethod
    def _as_httpx(slot: Slot, response: RawResponse) -> httpx.Response:
        return httpx.Response(
            response.status,
            headers=response.headers,
            content=response.body or b"",
            request=slot.request.httpx_request(),
        )

    async def aclose(self) -> None:
        for conn in self._opened:
            conn.close()
        self._opened.clear()
        self._pool.clear()
