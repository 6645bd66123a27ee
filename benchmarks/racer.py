"""A minimal tight-loop racer: the baseline the engine's start is held against.

What a careful engineer writes by hand in plain asyncio, one seat at a time: open a fresh
connection per client, write every request but its held bytes, wait until every prefix is
written, then send the held bytes of all clients from one loop and read every response.
The bytes are the engine's own (``wire_request`` of the same ``httpx.Request``) split at the
same hold point, so the only difference left is how the two start and pace the waves.
Responses are parsed with httptools (llhttp), like the engine's; no request is retried.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import httptools
import httpx

from benchmarks.seed import seed_order
from pytest_seatrace.engine.instrument import HoldPoint, WireRequest, wire_request

ARRIVAL = b"x-arrival-ns"


@dataclass
class SeatRace:
    """One seat raced by the tight loop."""

    statuses: Counter[int] = field(default_factory=Counter)
    sent_ns: list[int] = field(default_factory=list)
    """When each held send returned (``perf_counter_ns``, this process)."""
    arrivals: list[int] = field(default_factory=list)
    """The service's ``X-Arrival-Ns`` stamps."""
    errors: int = 0

    @property
    def client_spread_ns(self) -> int | None:
        return self.sent_ns[-1] - self.sent_ns[0] if len(self.sent_ns) > 1 else None

    @property
    def server_spread_ns(self) -> int | None:
        return max(self.arrivals) - min(self.arrivals) if len(self.arrivals) > 1 else None


class _Response(asyncio.Protocol):
    """One connection's one response, parsed with httptools; ``done`` resolves at its end."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.done: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.arrival: int | None = None
        self._name = b""
        self._parser = httptools.HttpResponseParser(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._end(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(exc or ConnectionError("closed before the response ended"))

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == ARRIVAL:
            self.arrival = int(value)

    def on_message_complete(self) -> None:
        self._end(None)

    @property
    def status(self) -> int:
        return int(self._parser.get_status_code())

    def _end(self, exc: Exception | None) -> None:
        if not self.done.done():
            if exc is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(exc)


async def race_seat(port: int, requests: Sequence[WireRequest], hold: HoldPoint, timeout: float) -> SeatRace:
    """Race one seat: fresh connections, prefixes written, held bytes in one loop, responses read."""
    loop = asyncio.get_running_loop()
    seat = SeatRace()
    connects = (loop.create_connection(lambda: _Response(loop), "127.0.0.1", port) for _ in requests)
    opened = await asyncio.wait_for(asyncio.gather(*connects), timeout)
    protocols = [protocol for _, protocol in opened]
    try:
        cuts = [request.held_from(hold) for request in requests]
        for protocol, request, cut in zip(protocols, requests, cuts, strict=True):
            assert protocol.transport is not None
            protocol.transport.write(request.data[:cut])
        # every prefix written: a transport writes at once into an empty buffer, and a few
        # hundred bytes always fit on loopback; anything left over would skew the start
        if any(p.transport is None or p.transport.get_write_buffer_size() for p in protocols):
            raise RuntimeError("a prefix did not fit in its socket buffer")
        clock = time.perf_counter_ns
        transports = [p.transport for p in protocols if p.transport is not None]
        writes = [(t.write, r.data[cut:]) for t, r, cut in zip(transports, requests, cuts, strict=True)]
        for write, held in writes:  # an empty transport buffer: each write is one send() at once
            write(held)
            seat.sent_ns.append(clock())
        outcomes = await asyncio.wait_for(
            asyncio.gather(*(p.done for p in protocols), return_exceptions=True), timeout
        )
        for protocol, outcome in zip(protocols, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                seat.errors += 1
                continue
            seat.statuses[protocol.status] += 1
            if protocol.arrival is not None:
                seat.arrivals.append(protocol.arrival)
    finally:
        for protocol in protocols:
            if not protocol.done.done():
                protocol.done.cancel()
        for transport, _ in opened:
            transport.close()
    return seat


def seat_requests(base_url: str, seat: int, clients: int) -> list[WireRequest]:
    """The engine's wire bytes of the seed's ``POST /orders`` for ``seat``, one per client."""
    with httpx.Client(base_url=base_url) as client:
        return [
            wire_request(client.build_request("POST", "/orders", json=seed_order(seat, c)))
            for c in range(1, clients + 1)
        ]


def race_seats(
    base_url: str, port: int, seats: int, clients: int, hold: HoldPoint, timeout: float
) -> list[SeatRace]:
    """The seed race by the tight loop: seats ``1..seats``, one at a time."""

    async def main() -> list[SeatRace]:
        return [
            await race_seat(port, seat_requests(base_url, seat, clients), hold, timeout)
            for seat in range(1, seats + 1)
        ]

    return asyncio.run(main())
