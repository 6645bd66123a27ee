"""Last-byte start: every request written but its final byte, then all final bytes at once.

Per wave: build the requests, open (or reuse) one connection per client, write each request
but its last byte, then for each resource send the held bytes back to back from one loop in a
seeded shuffled order, and read every response concurrently.

Waves take turns at the service: the next wave's requests are built while this wave's
responses come in, but nothing of it is sent (no connection opened, no prefix written) until
this wave is answered in full. That last response is the settle point: a service still
accepting and parsing the next wave while it answers this one spreads this wave's arrivals
and is busy when the next gate opens (measured in ``benchmarks/detection.py``).
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
from pytest_seatrace.engine.classify import ARRIVAL_HEADER, Classifier
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


class Slot:
    """One client of one resource in the current wave."""

    __slots__ = ("conn", "prefix_ns", "record", "request")

    def __init__(self, record: Record, request: WireRequest) -> None:
        self.record = record
        self.request = request
        self.conn: RawConnection | None = None
        self.prefix_ns = 0
        """When its prefix was written: an early answer's latency counts from here."""


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
        classifier: Classifier,
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

    async def fire_waves(self, rnd: int, waves: Sequence[Sequence[int]], sink: list[Record]) -> None:
        """Race every wave of a round, appending each wave's records to ``sink`` as it ends."""
        upcoming = await self._build_wave(rnd, waves[0]) if waves else []
        for number, indices in enumerate(waves):
            slots = await self._prepare_wave(upcoming)
            self.in_flight = [s.record for s in slots]
            if self.starter is not None:
                await self.starter()
            for index in indices:
                self._release(rnd, index, [s for s in slots if s.record.resource == index])
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
        cfg = self.config
        self._weed(self._pool)
        jobs = [job for job in (self._prepare(slot) for slot in slots) if job is not None]
        if jobs:  # connections to open, prefixes to finish: tasks, under the connect deadline
            with anyio.move_on_after(cfg.timeout):
                async with anyio.create_task_group() as tg:
                    for job in jobs:
                        tg.start_soon(job)
        for slot in slots:
            if slot.conn is None and not slot.record.reason:
                origin = slot.request.origin
                self._fail(slot, None, f"connect timeout after {cfg.timeout}s to {origin.url}")
                slot.record.timed_out = True
        return slots

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
        try:
            request = slot.request
            rest = conn.write_prefix(request.data, request.held_from(self.config.hold))
            slot.prefix_ns = time.perf_counter_ns()
        except OSError as exc:
            self._fail(slot, conn, f"connection to {origin.url} failed: {exc}")
            return None
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

    @staticmethod
    def _weed(pool: list[RawConnection]) -> None:
        """Close the kept connections the server spoke on (closed them, most likely) since."""
        if pool:
            kept = []
            for conn, found in zip(pool, early_answers(pool), strict=True):
                if found is None:
                    kept.append(conn)
                else:
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
        """A held request the server gave up on: say which hold point waited, and the other."""
        hold = self.config.hold
        other = "body" if hold == "headers" else "headers"
        return (
            f"{reason} (hold={hold!r}: a server with a header-read timeout may drop a held request; "
            f"try hold={other!r})"
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
                self._fail(slot, conn, self._dropped(found))
                slot.conn = None
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
                self._fail(slot, conn, f"final byte not sent: {outcome}")
                slot.conn = None
            elif outcome < len(conn.final):  # a full socket buffer: finish the rest at once
                conn.finish_final(outcome)

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
            self._fail(slot, conn, str(outcome))
            slot.conn = None
            return
        response = outcome
        if not rec.early:  # an early answer was complete by the gate, when it was found
            rec.end_ns = response.end_ns
        arrival = dict(response.headers).get(_ARRIVAL)
        self.classifier.fill(
            rec, response.status, arrival, response.body, lambda: self._as_httpx(slot, response)
        )
        if response.keep_alive and not rec.early:  # after an early answer the server is mid-request
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
