"""Single-packet start over HTTP/2: every stream's request sent but its final DATA frame, then
the final frames of all streams in one ``send()`` per connection.

HTTP/1.1 last-byte needs one ``send()`` per client at the gate (100 packets, each meeting its own
scheduling and network jitter); HTTP/2 multiplexes every client of a resource on one connection,
so the withheld frames (~10 bytes a stream) fit in one write and one TCP segment, and the server
reads them in one ``recv()``. The connection is ``engine.http2``'s, over ``engine.stream``.

Per wave (``engine.waves``) and resource: connections (one, or more when the server's
``MAX_CONCURRENT_STREAMS`` is below the client count: the first connection's SETTINGS say how
many), one stream per client, HEADERS and all but the last body byte, then a PING whose ACK says
the server has read every prefix (TLS 1.3 session tickets arrive before it). The final frames
are then built, the gate checked for early answers, resets and GOAWAYs, and the gate writes go
out back to back. Connections that end a wave healthy are kept (``engine.pool``); a kept one the
server closed or sent a GOAWAY on is replaced. Before the gate, streams the server says it never
processed (above a GOAWAY's last stream id, or refused with REFUSED_STREAM) are written again on
a fresh connection, once; a kept connection that closes under streams the server may have
dispatched at HEADERS leaves them *unknown*, never replayed (``engine.h2_outcomes``).
"""

from __future__ import annotations

import math
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import anyio
import h2.exceptions

from pytest_seatrace.core.records import Outcome, Record
from pytest_seatrace.engine.h2_outcomes import StreamOutcomes
from pytest_seatrace.engine.h2_requests import H2Requests, H2Stream, StreamGroups, group_streams
from pytest_seatrace.engine.http2 import HTTP2Connection, LinkState, NotHTTP2, not_h2_reason
from pytest_seatrace.engine.plan import release_order
from pytest_seatrace.engine.pool import KeptPool
from pytest_seatrace.engine.stream import NetworkStream, Origin, TransportError
from pytest_seatrace.engine.waves import GateWrite, WavePipeline, segments_now, segments_since

RENEW_PASSES = 2
"""Rounds of re-writing the streams a server said it never processed, before the gate; a stream
is written again once at most."""


@dataclass
class _Wave:
    """A wave's streams by resource and origin, and once prepared its connections by resource."""

    groups: StreamGroups
    links: dict[int, list[HTTP2Connection]] = field(default_factory=dict)


@dataclass
class _Opening:
    """How far the connections opened for one group got, for a timeout's message."""

    state: LinkState = LinkState.CONNECTING


class _Opener:
    """Connections for a group's streams: kept ones first, then as many new ones as the server's
    stream limit needs; an origin that will not speak HTTP/2 is asked once."""

    def __init__(self, ssl_context: ssl.SSLContext | None, pool: KeptPool[HTTP2Connection]) -> None:
        self.ssl_context = ssl_context
        self.pool = pool
        self.connections = 0
        """HTTP/2 connections opened so far."""
        self._max_streams: dict[Origin, int] = {}
        self._refused: dict[Origin, str] = {}

    async def links_for(self, origin: Origin, count: int, opening: _Opening) -> list[HTTP2Connection]:
        """Enough connections for ``count`` streams (the limit learned from the first
        connection's SETTINGS)."""
        if origin in self._refused:
            raise NotHTTP2(self._refused[origin])
        out: list[HTTP2Connection] = []
        pool = self.pool
        pool.weed(await pool.probe(origin), origin)  # a GOAWAY or a close while they were idle
        while sum(link.capacity for link in out) < count:
            kept = pool.take(origin)
            if kept is None:
                break
            out.append(kept)
        if not out:
            out.append(await self._open(origin, opening))
        limit = self._max_streams.get(origin, count) or 1
        missing = count - sum(link.capacity for link in out)
        if missing > 0:
            await pool.open_into(
                out, math.ceil(missing / min(limit, count)), partial(self._open, origin, opening)
            )
        if sum(link.capacity for link in out) < count:
            raise TransportError(
                f"the server at {origin.url} allows {limit} concurrent streams per connection: "
                f"{count} streams did not fit on {len(out)} connections"
            )
        return out

    async def _open(self, origin: Origin, opening: _Opening) -> HTTP2Connection:
        """Connect, check ALPN (or h2c), and wait for the server's SETTINGS."""
        context = self.ssl_context if origin.scheme == "https" else None
        if origin.scheme == "https" and context is None:
            raise TransportError(f"https origin {origin.url} needs an SSL context")
        link = self.pool.opened(HTTP2Connection(await NetworkStream.open(origin, context)))
        self.connections += 1
        try:
            opening.state = LinkState.SETTINGS
            await link.handshake()
        except NotHTTP2 as exc:
            link.close()
            self._refused[origin] = not_h2_reason(origin, str(exc))
            raise NotHTTP2(self._refused[origin]) from None
        except BaseException:
            link.close()
            raise
        self._max_streams[origin] = link.capacity
        if link.capacity < 1:
            link.close()
            raise TransportError(f"the server at {origin.url} allows no concurrent HTTP/2 streams")
        return link


class SinglePacketFirer(WavePipeline[_Wave]):
    """Fires waves in single-packet mode over HTTP/2 (TLS ALPN ``h2``, or h2c prior knowledge)."""

    def equip(self) -> None:
        self.gate_writes: list[GateWrite] = []
        """One entry per resource and wave: what its gate cost (tests and benchmarks read it)."""
        self.count_segments = False
        """Read each connection's TCP segment counter around the gate (Linux; tests, benchmarks)."""
        self.pool: KeptPool[HTTP2Connection] = KeptPool(self._spoke, self.keepalive)
        """Kept connections by origin, and every connection opened."""
        self.outcomes = StreamOutcomes(self.classifier, self.keepalive)
        self._opener = _Opener(self.ssl_context, self.pool)
        self._requests = H2Requests(self.builder)

    @property
    def connections(self) -> int:
        """HTTP/2 connections opened so far (kept ones are reused across waves and rounds)."""
        return self._opener.connections

    # -- the wave pipeline's steps ---------------------------------------------------------

    async def build(self, rnd: int, indices: Sequence[int]) -> _Wave:
        """Every request of the wave, grouped by resource and origin (one set of connections each)."""
        return _Wave(await group_streams(self._requests, self.roster, rnd, indices))

    def records(self, wave: _Wave) -> list[Record]:
        return [s.record for streams in wave.groups.values() for s in streams]

    async def prepare(self, rnd: int, wave: _Wave) -> None:
        await self._prepare(rnd, wave.groups, wave.links)

    async def ready(self, rnd: int, wave: _Wave) -> None:
        """Look at every connection once more (a close or a GOAWAY that came after its PING ACK),
        then write the streams the server said it never processed again, on fresh connections,
        once (``RENEW_PASSES``)."""
        for _ in range(RENEW_PASSES):
            again: StreamGroups = {}
            for index, group in wave.links.items():
                for link in group:
                    if link.state is LinkState.HOLDING:
                        self._check(link)
                    for stream in [s for s in link.streams.values() if s.unprocessed and not s.renewed]:
                        del link.streams[stream.sid]  # it is written again, on another connection
                        again.setdefault((index, link.origin), []).append(stream)
            if not again:
                return
            for streams in again.values():
                for stream in streams:
                    stream.renew()
            await self._prepare(rnd, again, wave.links)

    async def release(self, rnd: int, indices: Sequence[int], wave: _Wave) -> None:
        """Check every connection, then each resource's gate writes back to back, one ``send()``
        per connection, in a seeded order; every stream of a connection is stamped at its return."""
        for index in indices:
            for link in wave.links.get(index, []):
                if link.state is LinkState.HOLDING:
                    self._check(link)
        for index in indices:
            ready = [
                link
                for link in wave.links.get(index, [])
                if link.state is LinkState.HOLDING and link.broken is None
            ]
            if ready:
                release_order(self.config.seed, rnd, index, ready)
                self.gate_writes.append(self._gate(rnd, index, ready))

    async def collect(self, wave: _Wave) -> None:
        """Read every response, with one deadline: ``timeout`` after the wave's gate."""
        links = [link for group in wave.links.values() for link in group]
        with anyio.move_on_after(self.config.timeout):
            async with anyio.create_task_group() as tg:
                for link in links:
                    if link.pending and link.broken is None:
                        tg.start_soon(self._read_link, link)
        for link in links:
            timed_out = False
            for stream in link.pending:
                rec = stream.record
                self.outcomes.fail(stream, f"no response within {self.config.timeout}s after the final write")
                rec.outcome, rec.timed_out = Outcome.UNKNOWN, True
                timed_out = True
            if timed_out or link.broken or link.eof or not link.reusable(self.config.concurrency):
                link.close()
            else:
                link.streams.clear()
                self.pool.keep(link, time.perf_counter_ns())

    # -- before the gate ---------------------------------------------------------------------

    async def _prepare(self, rnd: int, groups: StreamGroups, links: dict[int, list[HTTP2Connection]]) -> None:
        """Connections, prefixes and the gate bytes of every group, within one ``timeout``, added
        to ``links`` (a wave's connections by resource index)."""
        with anyio.move_on_after(self.config.timeout):
            async with anyio.create_task_group() as tg:
                for (index, origin), streams in groups.items():
                    tg.start_soon(
                        self._prepare_group, rnd, index, origin, streams, links.setdefault(index, [])
                    )
        for group in links.values():
            for link in group:
                if link.state is not LinkState.HOLDING and link.broken is None:  # cut off by the deadline
                    late = f"timed out after {self.config.timeout}s {link.state.doing} ({link.origin.url})"
                    self.outcomes.fail_link(link, late, timed_out=True)

    async def _prepare_group(
        self, rnd: int, index: int, origin: Origin, streams: list[H2Stream], out: list[HTTP2Connection]
    ) -> None:
        """One resource's streams on as few connections as the server's stream limit allows,
        spread evenly over them."""
        opening = _Opening()
        try:
            links = await self._opener.links_for(origin, len(streams), opening)
        except TransportError as exc:
            for stream in streams:
                self.outcomes.fail(stream, str(exc))
            return
        except anyio.get_cancelled_exc_class():  # the wave's deadline, before any stream had a connection
            for stream in streams:
                late = f"timed out after {self.config.timeout}s {opening.state.doing} ({origin.url})"
                self.outcomes.fail(stream, late)
                stream.record.timed_out = True
            raise
        share = math.ceil(len(streams) / len(links))
        assigned: list[tuple[HTTP2Connection, list[H2Stream]]] = []
        start = 0
        for link in links:
            take = min(share, link.capacity, len(streams) - start)
            if take:
                assigned.append((link, streams[start : start + take]))
                out.append(link)
            else:
                self.pool.give_back(link)
            start += take
        async with anyio.create_task_group() as tg:
            for link, mine in assigned:
                tg.start_soon(self._prepare_link, link, mine, rnd, index)

    async def _prepare_link(
        self, link: HTTP2Connection, streams: list[H2Stream], rnd: int, index: int
    ) -> None:
        """Write the prefixes, wait for the PING ACK behind them, hold the final frames, in the
        seeded order the server is to read them in (streams it reset have nothing left to send)."""
        outcomes = self.outcomes
        try:
            await link.write_prefixes(streams, outcomes.handle)
            if not await link.ping(outcomes.handle):
                outcomes.lost_before_gate(link, link.broken or link.closed_reason("before the gate"))
                return
            order = list(link.streams.values())
            release_order(self.config.seed, rnd, index, order)
            link.hold([s for s in order if not (s.done and s.record.outcome is Outcome.ERROR)])
        except (TransportError, OSError) as exc:
            outcomes.lost_before_gate(link, str(exc))
        except h2.exceptions.H2Error as exc:
            outcomes.fail_link(link, f"HTTP/2 error on {link.origin.url} before the gate: {exc!r}")

    def _check(self, link: HTTP2Connection) -> None:
        """What came in on a held connection; one closed or ended by GOAWAY is lost."""
        self.outcomes.handle(link, link.pull())
        if link.broken or link.eof:
            self.outcomes.lost_before_gate(link, link.broken or link.closed_reason("before the gate"))

    # -- the gate ----------------------------------------------------------------------------

    def _gate(self, rnd: int, index: int, ready: list[HTTP2Connection]) -> GateWrite:
        """One resource's gate writes: the hot loop, a bound send and a clock read per connection."""
        before = segments_now([link.stream.sock for link in ready]) if self.count_segments else []
        shots = [(link.stream.sock.send, link.stream.held) for link in ready]
        results: list[int | OSError] = []
        stamps: list[int] = []
        clock = time.perf_counter_ns
        start = clock()
        for send, gate in shots:
            try:
                results.append(send(gate))
            except OSError as exc:
                results.append(exc)
            stamps.append(clock())
        sends = len(shots)
        segments = (
            segments_since(before, [link.stream.sock for link in ready]) if self.count_segments else None
        )
        for link, outcome, begun, stamp in zip(ready, results, [start, *stamps], stamps, strict=False):
            link.move(LinkState.RELEASED)
            if isinstance(outcome, OSError):
                self.outcomes.fail_link(link, f"final frames not sent to {link.origin.url}: {outcome}")
                continue
            if outcome < len(link.stream.held):
                sends += 1
                try:
                    link.stream.finish_held(outcome)
                except OSError as exc:
                    self.outcomes.fail_link(link, f"final frames not sent to {link.origin.url}: {exc}")
                    continue
            for stream in link.streams.values():
                stream.gated = True
                if stream.done:
                    continue
                if stream.whole_at_gate:  # its whole HEADERS went in this write: its call begins here
                    stream.record.call_ns = begun
                # an early answer already counts from its prefix
                stream.record.sent_ns = stream.prefix_ns if stream.record.early else stamp
        held = sum(len(link.stream.held) for link in ready)
        streams = sum(len(link.streams) for link in ready)
        return GateWrite(rnd, index, len(ready), streams, held, sends, stamps[-1] - start, segments)

    # -- after the gate ----------------------------------------------------------------------

    async def _read_link(self, link: HTTP2Connection) -> None:
        outcomes = self.outcomes
        try:
            await link.flush()  # what was queued while the gate bytes waited (acks)
            while link.pending:
                outcomes.handle(link, await link.receive())
                if link.broken or link.eof:
                    outcomes.lost_after_gate(link, link.broken or link.closed_reason("before answering"))
                    return
                await link.flush()
        except TransportError as exc:
            outcomes.lost_after_gate(link, str(exc))

    def _spoke(self, links: Sequence[HTTP2Connection]) -> list[bool]:
        """Which kept connections the server spoke on while idle (a GOAWAY, a close)."""
        spoke = []
        for link in links:
            self.outcomes.handle(link, link.pull())
            spoke.append(link.broken is not None or link.eof)
        return spoke

    async def aclose(self) -> None:
        self.pool.close()


__all__ = ["GateWrite", "SinglePacketFirer"]
