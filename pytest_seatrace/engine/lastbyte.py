"""Last-byte start: every request written but its final byte, then all final bytes at once.

Per wave (``engine.waves``): build the requests, open (or reuse, ``engine.pool``) one HTTP/1.1
connection per client, write each request but its held bytes, then for each resource send the
held bytes back to back from one loop in a seeded shuffled order, and read every response with
one reader (``engine.reader``).

Kept connections the server closed are replaced, never reported as its failures
(``engine.keepalive``): before a prefix is written (a close seen, or an idle age past the
server's learned keep-alive), and between the prefixes and the release at ``hold="headers"``,
where no server has a complete header block and so none can have acted. At ``hold="body"`` a
close under a written prefix may follow a side effect: that request is *unknown*, not replayed.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import anyio
import anyio.lowlevel

from pytest_seatrace.core.records import Outcome, Record
from pytest_seatrace.engine.classify import ARRIVAL_HEADER
from pytest_seatrace.engine.http11 import HTTP11Connection
from pytest_seatrace.engine.lastbyte_outcomes import Slot, SlotOutcomes
from pytest_seatrace.engine.plan import release_order
from pytest_seatrace.engine.pool import KeptPool
from pytest_seatrace.engine.reader import read_responses
from pytest_seatrace.engine.requests import WireBuilder
from pytest_seatrace.engine.stream import ANSWERED, Origin, TransportError, early_answers
from pytest_seatrace.engine.waves import GateWrite, WavePipeline, segments_now, segments_since

_ARRIVAL = ARRIVAL_HEADER.encode()
RENEW_PASSES = 3
"""Checks of a resource's connections between its prefixes and its release; each replaces the
kept ones the server closed under their prefix. Bounded: a slot is renewed once, and a fresh
connection the server closes too is an error with its reason, never a loop."""


class LastByteFirer(WavePipeline[list[Slot]]):
    """Fires waves in last-byte mode, keeping connections between waves."""

    heralds = True

    def equip(self) -> None:
        self.wire = WireBuilder(self.builder)
        self.pool: KeptPool[HTTP11Connection] = KeptPool(_spoke, self.keepalive)
        """Kept-alive connections, for the next wave, and every connection opened."""
        self.outcomes = SlotOutcomes(self.config, self.classifier, self.pool)
        self._probed_ns = 0
        """How long the probe just left the kept connections idle (the next weed learns from it)."""
        self.gate_writes: list[GateWrite] = []
        """What each resource's release cost on the wire (tests and benchmarks, never judging)."""
        self.count_segments = False
        """Count each release's TCP segments with data (Linux) in its ``GateWrite``."""

    # -- the wave pipeline's steps ---------------------------------------------------------

    async def build(self, rnd: int, indices: Sequence[int]) -> list[Slot]:
        """The wave's requests, one slot per racing client: client-side work only, nothing sent."""
        slots = []
        for index in indices:
            for client in self.roster.clients(index):
                fixed = self.wire.fixed  # a constant request needs no attempt built for it
                request = fixed or self.wire.build(self.roster.attempt(index, client, rnd))
                record = Record(
                    resource=index, client=client, round=rnd, operation=request.operation, input=request.input
                )
                slots.append(Slot(record, request))
            await anyio.lowlevel.checkpoint()  # let the previous wave's responses be read on time
        return slots

    def records(self, wave: list[Slot]) -> list[Record]:
        return [slot.record for slot in wave]

    async def prepare(self, rnd: int, wave: list[Slot]) -> None:
        await self._prepare_wave(wave)

    async def ready(self, rnd: int, wave: list[Slot]) -> None:
        if self.hooks.paced:  # a shard: every replacement before its start instant
            await self._renew(wave)

    async def release(self, rnd: int, indices: Sequence[int], wave: list[Slot]) -> None:
        for index in indices:
            mine = [s for s in wave if s.record.resource == index]
            if not self.hooks.paced:
                await self._renew(mine)
            self._release(rnd, index, mine)
            late = [slot for slot in mine if slot.late]
            if late:
                await self._send_late(late)

    async def collect(self, wave: list[Slot]) -> None:
        await self._collect_wave(wave)

    async def settle(self) -> None:
        await self._probe()

    # -- before the release ----------------------------------------------------------------

    async def _prepare_wave(self, slots: list[Slot]) -> list[Slot]:
        """Connect (or reuse) and write all but the final bytes of every slot."""
        await self._probe()
        self.pool.weed(self._probed_ns)
        self._probed_ns = 0
        await self._run_jobs(slots, [job for job in (self._prepare(slot) for slot in slots) if job])
        return slots

    async def _probe(self) -> None:
        """Once a race, before kept connections are first reused (``KeptPool.probe``)."""
        probed = await self.pool.probe()
        if probed:
            self._probed_ns = probed

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
                self.outcomes.fail(slot, None, f"connect timeout after {cfg.timeout}s to {origin.url}")
                slot.record.timed_out = True

    async def _renew(self, slots: Sequence[Slot]) -> None:
        """Between the prefixes and the release: replace the kept connections the server closed
        under their prefix (``hold="headers"``: the header block is incomplete, so the server
        cannot have acted), and, once a close is seen, the other kept ones idle as long; at
        ``hold="body"`` such a request is unknown. Bounded by ``RENEW_PASSES``."""
        for _ in range(RENEW_PASSES):
            live = [(slot, slot.conn) for slot in slots if slot.conn is not None]
            found = early_answers([conn.stream for _, conn in live])
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
        self, slot: Slot, conn: HTTP11Connection, found: str
    ) -> Callable[[], Coroutine[Any, Any, None]] | None:
        """A connection found closed after its prefix was written: replaced (a kept one at
        ``hold="headers"``, once), unknown (a kept one at ``hold="body"``), else an error."""
        if not slot.kept:
            self.outcomes.fail(slot, conn, self.outcomes.dropped(found))
            slot.conn = None
            return None
        idle = slot.prefix_ns - conn.idle_since
        self.keepalive.closed_after(idle)
        if self.config.hold == "headers":
            return self._replace(slot, conn)
        self.outcomes.unknown_close(slot, conn, found, idle)
        return None

    def _replace(self, slot: Slot, conn: HTTP11Connection) -> Callable[[], Coroutine[Any, Any, None]]:
        """Close a kept connection under an incomplete request and open a fresh one for it."""
        conn.close()
        slot.conn, slot.kept, slot.renewed = None, False, True
        slot.begun_ns = slot.record.call_ns = 0  # its call restarts with the fresh connection's prefix
        self.keepalive.replaced += 1
        return functools.partial(self._connect_and_prepare, slot, slot.request.origin)

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
        conn = self.pool.take(origin)
        if conn is None:
            return functools.partial(self._connect_and_prepare, slot, origin)
        slot.kept = True
        try:
            request = slot.request
            slot.begun_ns = time.perf_counter_ns()
            rest = conn.write_prefix(request.data, request.held_from(self.config.hold))
            slot.prefix_ns = time.perf_counter_ns()
        except OSError:  # closed by the server before the prefix: it saw nothing of this request
            self.keepalive.closed_after(time.perf_counter_ns() - conn.idle_since)
            return self._replace(slot, conn)
        if rest:
            return functools.partial(self._finish_prefix, slot, conn, rest)
        slot.conn = conn
        return None

    async def _finish_prefix(self, slot: Slot, conn: HTTP11Connection, rest: bytes) -> None:
        try:
            await conn.send_all(rest)
        except OSError as exc:
            self.outcomes.fail(slot, conn, f"connection to {conn.origin.url} failed: {exc}")
        else:
            slot.conn = conn

    async def _connect_and_prepare(self, slot: Slot, origin: Origin) -> None:
        conn = None
        try:
            context = self.ssl_context if origin.scheme == "https" else None
            conn = self.pool.opened(await HTTP11Connection.open(origin, context))
            request = slot.request
            slot.begun_ns = time.perf_counter_ns()
            await conn.prepare(request.data, request.held_from(self.config.hold))
            slot.prefix_ns = time.perf_counter_ns()
        except TransportError as exc:
            self.outcomes.fail(slot, conn, str(exc))
        except OSError as exc:
            self.outcomes.fail(slot, conn, f"connection to {origin.url} failed: {exc}")
        else:
            slot.conn = conn
        finally:
            if slot.conn is None and conn is not None and not slot.record.reason:
                conn.close()  # cancelled by the connect deadline

    def _release(self, rnd: int, index: int, slots: list[Slot]) -> None:
        """The gate: check every connection, then the held bytes back to back, stamping each and
        its call (design §7): at ``hold="headers"`` the stamp before its send (the previous send's,
        or ``start``), at ``hold="body"`` its prefix write's start (the header block went then).

        A connection answered already (the server acted before the hold point) is read like
        any other, marked early; one the server closed is an error that names the hold point.
        """
        ready: list[tuple[Slot, HTTP11Connection]] = []
        live = [(slot, slot.conn) for slot in slots if slot.conn is not None]
        for (slot, conn), found in zip(live, early_answers([conn.stream for _, conn in live]), strict=True):
            if found is None:
                ready.append((slot, conn))
            elif found is ANSWERED:
                rec = slot.record
                rec.early, rec.sent_ns, rec.end_ns = True, slot.prefix_ns, time.perf_counter_ns()
                rec.call_ns = slot.begun_ns
            else:
                self.outcomes.closed_at_gate(slot, conn, found, paced=self.hooks.paced)
        release_order(self.config.seed, rnd, index, ready)
        before = segments_now([conn.sock for _, conn in ready]) if self.count_segments else []
        clock = time.perf_counter_ns
        start = clock()
        # The hot loop: a bound send and a clock read per client, nothing else.
        shots = [(conn.sock.send, conn.final, slot.record) for slot, conn in ready]
        results: list[int | OSError] = []
        for send, final, record in shots:
            try:
                results.append(send(final))
            except OSError as exc:
                results.append(exc)
            record.sent_ns = clock()
        sends = len(shots)
        headers = self.config.hold == "headers"
        previous = start  # a stamp before each send: the one after the send before it
        for (slot, conn), outcome in zip(ready, results, strict=True):
            rec = slot.record
            rec.call_ns, previous = (previous if headers else slot.begun_ns), rec.sent_ns
            if isinstance(outcome, OSError):
                if headers:  # no byte of the release left: the header block stayed incomplete
                    rec.call_ns = 0
                if slot.kept:
                    self.outcomes.closed_at_gate(
                        slot, conn, f"final byte not sent: {outcome}", paced=self.hooks.paced
                    )
                else:
                    self.outcomes.fail(slot, conn, f"final byte not sent: {outcome}")
                    slot.conn = None
            elif outcome < len(conn.final):  # a full socket buffer: finish the rest at once
                conn.finish_final(outcome)
                sends += 1
        if ready:
            self._note_gate(rnd, index, ready, start, before, sends)

    def _note_gate(
        self,
        rnd: int,
        index: int,
        ready: list[tuple[Slot, HTTP11Connection]],
        start: int,
        before: list[int | None],
        sends: int,
    ) -> None:
        """The release's ``GateWrite``: from the drawn order to the last final write's stamp."""
        socks = [conn.sock for _, conn in ready]
        segments = segments_since(before, socks) if self.count_segments else None
        last = max(slot.record.sent_ns for slot, _ in ready)
        held = sum(len(conn.final) for _, conn in ready)
        self.gate_writes.append(
            GateWrite(rnd, index, len(ready), len(ready), held, sends, last - start, segments)
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
            slot.record.call_ns = time.perf_counter_ns()
            try:
                sent = conn.sock.send(conn.final)
            except OSError as exc:
                slot.record.call_ns = 0
                self.outcomes.fail(slot, conn, f"final byte not sent: {exc}")
                slot.conn = None
                continue
            slot.record.sent_ns = time.perf_counter_ns()
            if sent < len(conn.final):
                conn.finish_final(sent)

    async def _read(self, live: Sequence[tuple[Slot, HTTP11Connection]]) -> None:
        keep_body = self.classifier.needs_response
        for slot, conn in live:
            conn.begin_response(keep_body, method=slot.request.method, closes=slot.request.closes)
        await read_responses(live, self.outcomes.finish)

    async def aclose(self) -> None:
        self.pool.close()


def _spoke(conns: Sequence[HTTP11Connection]) -> list[bool]:
    """Which kept connections the server spoke on while idle (closed them, most likely)."""
    return [found is not None for found in early_answers([conn.stream for conn in conns])]
