"""engine/http3.py against the sample service over HTTP/3: requests held one byte short on QUIC
streams, their final bytes released in one datagram, and the seat sold once."""

from __future__ import annotations

import json
import re
import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence

import anyio
import pytest

import pytest_seatrace.engine

pytest.importorskip("aioquic")

from pytest_seatrace.core.settings import HoldPoint
from pytest_seatrace.engine.http3 import (
    RELEASE_LOST,
    H3Answer,
    H3Request,
    Http3Connection,
    Http3Error,
    Release,
    load_aioquic,
    release,
)
from pytest_seatrace.engine.stream import Origin
from sample_service import SEAT_TAKEN
from tests.http3_service import Http3Service, http3_service

TIMEOUT = 30.0
MAX_DATAGRAM = 1200  # aioquic's default datagram size: the release uses no larger one


def _order(user: str, hold: HoldPoint = "body") -> H3Request:
    body = json.dumps({"seats": [1], "user": user}).encode()
    return H3Request("POST", "/orders", (("content-type", "application/json"),), body, hold)


async def _open(service: Http3Service) -> Http3Connection:
    origin = Origin("https", "127.0.0.1", service.udp_port)
    return await Http3Connection.open(origin, verify=service.ca_path)


async def _fire(connections: Sequence[Http3Connection]) -> Release:
    """Settle every connection's held requests, release them at once, read every answer."""
    for connection in connections:
        await connection.settle()
    gate = release(connections)
    async with anyio.create_task_group() as tg:
        for connection in connections:
            tg.start_soon(connection.read)
    return gate


def _race(
    service: Http3Service, clients: Sequence[int], hold: HoldPoint = "body"
) -> tuple[Release, list[H3Answer]]:
    """``clients[i]`` orders for seat 1 on connection i, held, settled, released at once, read."""

    async def scenario() -> tuple[Release, list[H3Answer]]:
        with anyio.fail_after(TIMEOUT):
            connections = [await _open(service) for _ in clients]
            try:
                answers: list[H3Answer] = []
                for index, (connection, count) in enumerate(zip(connections, clients, strict=True)):
                    answers += connection.queue([_order(f"c{index}-{n}", hold) for n in range(count)])
                gate = await _fire(connections)
                return gate, answers
            finally:
                for connection in connections:
                    connection.close()

    return anyio.run(scenario)


@pytest.fixture(scope="module")
def safe_process() -> Iterator[Http3Service]:
    with http3_service(seats=1) as service:
        yield service


@pytest.fixture
def safe(safe_process: Http3Service) -> Http3Service:
    safe_process.tcp.reset()
    return safe_process


def _statuses(answers: Sequence[H3Answer]) -> Counter[int | None]:
    assert all(answer.ended and answer.error is None for answer in answers), [
        answer.error for answer in answers if answer.error
    ]
    return Counter(answer.status for answer in answers)


def test_100_streams_released_in_one_datagram_sell_the_seat_once(safe: Http3Service) -> None:
    gate, answers = _race(safe, [100])
    assert gate.streams == 100
    assert gate.datagrams == 1, gate.sizes
    assert gate.bytes <= MAX_DATAGRAM
    assert _statuses(answers) == {201: 1, 409: 99}
    assert not any(answer.early for answer in answers)  # held: nobody answered before the release
    taken = next(answer for answer in answers if answer.status == 409)
    assert json.loads(taken.body) == {"error": SEAT_TAKEN}
    assert len(safe.tcp.holders(1)) == 1


def test_200_streams_over_two_connections_take_one_datagram_each(safe: Http3Service) -> None:
    """hypercorn grants 128 streams a connection: 200 clients need two of them."""
    gate, answers = _race(safe, [100, 100])
    assert [len(sizes) for sizes in gate.sizes] == [1, 1]
    assert all(size <= MAX_DATAGRAM for sizes in gate.sizes for size in sizes)
    assert _statuses(answers) == {201: 1, 409: 199}


def test_hold_headers_sends_the_body_with_the_release_and_still_sells_once(safe: Http3Service) -> None:
    """The tail of HEADERS held: each stream's DATA frame rides in the release too (more datagrams)."""
    gate, answers = _race(safe, [100], hold="headers")
    body_frames = 100 * len(_order("c0-00", "headers").body)
    assert gate.bytes > body_frames  # the bodies went out with the release, not before
    assert gate.datagrams >= -(-gate.bytes // MAX_DATAGRAM) > 1
    assert all(size <= MAX_DATAGRAM for sizes in gate.sizes for size in sizes)
    assert _statuses(answers) == {201: 1, 409: 99}
    assert not any(answer.early for answer in answers)


def test_unsafe_service_sells_the_seat_to_more_than_one_stream() -> None:
    with http3_service(strategy="unsafe", seats=1, window_ms=50) as service:
        gate, answers = _race(service, [50])
        statuses = _statuses(answers)
        assert gate.datagrams == 1
        assert set(statuses) <= {201, 409}
        assert statuses[201] > 1
        assert len(service.tcp.holders(1)) == statuses[201]


def test_stream_credit_counts_stream_ids_over_the_connection_life(safe: Http3Service) -> None:
    async def scenario() -> tuple[int, int, str]:
        with anyio.fail_after(TIMEOUT):
            connection = await _open(safe)
            try:
                first = connection.remaining_streams
                connection.queue([_order(f"u{n}") for n in range(100)])
                after = connection.remaining_streams
                with pytest.raises(Http3Error) as too_many:
                    connection.queue([_order(f"v{n}") for n in range(after + 1)])
                return first, after, str(too_many.value)
            finally:
                connection.close()

    first, after, message = anyio.run(scenario)
    assert first == 128  # aioquic's (hypercorn's) initial MAX_STREAMS
    assert after == first - 100
    assert f"grants {after} more on this connection" in message


def test_a_udp_port_without_a_server_fails_the_handshake(safe: Http3Service) -> None:
    async def scenario() -> None:
        with anyio.fail_after(TIMEOUT):
            # The service's TCP port: nothing listens on its UDP twin, so ICMP refuses at once.
            await Http3Connection.open(Origin("https", "127.0.0.1", safe.tcp.port), verify=safe.ca_path)

    refused = r"HTTP/3 handshake with https://127\.0\.0\.1:\d+ failed: nothing answers on UDP port"
    with pytest.raises(Http3Error, match=refused):
        anyio.run(scenario)


def test_without_aioquic_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pytest_seatrace.engine.http3_hold", None)
    monkeypatch.delattr(pytest_seatrace.engine, "http3_hold", raising=False)
    with pytest.raises(Http3Error, match=r"pip install 'pytest-seatrace\[http3\]'"):
        load_aioquic()


def test_an_answer_before_the_release_is_kept_and_flagged(safe: Http3Service) -> None:
    """hypercorn runs the app once HEADERS are in; ``GET /seats`` never reads its body, so with the
    body's last byte held it answers early. ``GET /health`` with its HEADERS held cannot."""

    async def scenario() -> list[H3Answer]:
        with anyio.fail_after(TIMEOUT):
            connection = await _open(safe)
            try:
                answers = connection.queue(
                    [H3Request("GET", "/seats", body=b"{}", hold="body"), H3Request("GET", "/health")]
                )
                await connection.settle()
                await connection.drive(lambda: answers[0].done)
                release([connection])
                await connection.read()
                return answers
            finally:
                connection.close()

    early, held = anyio.run(scenario)
    assert (early.status, early.early) == (200, True)
    assert (held.status, held.early) == (200, False), held
    assert json.loads(held.body)["ok"] is True


class DroppingRelay:
    """A UDP relay between one client and a server that swallows the client's next datagram
    once told to: a release datagram lost on the way."""

    def __init__(self, server: tuple[str, int]) -> None:
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.connect(server)
        for sock in (self.front, self.back):
            sock.setblocking(False)
        self.client: tuple[str, int] | None = None
        self.drop_next = False
        self.dropped = 0

    @property
    def port(self) -> int:
        port: int = self.front.getsockname()[1]
        return port

    def drop_the_next(self) -> None:
        """Swallow the client's next datagram: what it sent before (the settle's last ACK, queued
        here because the relay shares the client's event loop) is forwarded first, so the one
        swallowed is the next one the client sends."""
        while True:
            try:
                data, self.client = self.front.recvfrom(65536)
            except BlockingIOError:
                break
            self.back.send(data)
        self.drop_next = True

    async def forward_from_client(self) -> None:
        while True:
            await anyio.wait_readable(self.front)
            data, self.client = self.front.recvfrom(65536)
            if self.drop_next:
                self.drop_next, self.dropped = False, self.dropped + 1
            else:
                self.back.send(data)

    async def forward_from_server(self) -> None:
        while True:
            await anyio.wait_readable(self.back)
            data = self.back.recv(65536)
            if self.client is not None:
                self.front.sendto(data, self.client)

    def close(self) -> None:
        self.front.close()
        self.back.close()


def test_a_lost_release_datagram_is_not_retransmitted_into_a_late_start(safe: Http3Service) -> None:
    relay = DroppingRelay(safe.udp_address)

    async def scenario() -> list[H3Answer]:
        with anyio.fail_after(TIMEOUT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(relay.forward_from_client)
                tg.start_soon(relay.forward_from_server)
                origin = Origin("https", "127.0.0.1", relay.port)
                connection = await Http3Connection.open(origin, verify=safe.ca_path)
                try:
                    answers = connection.queue([_order(f"u{n}") for n in range(20)])
                    await connection.settle()
                    relay.drop_the_next()  # the next datagram from the client: the release
                    gate = release([connection])
                    assert gate.datagrams == 1
                    await connection.read()
                    assert connection.closed is not None
                finally:
                    connection.close()
                tg.cancel_scope.cancel()
            return answers

    try:
        answers = anyio.run(scenario)
    finally:
        relay.close()
    assert relay.dropped == 1
    assert {answer.error for answer in answers} == {RELEASE_LOST}
    assert not any(answer.status for answer in answers)
    assert safe.tcp.holders(1) == []  # no final byte ever reached the server: nobody booked


def test_flow_control_credit_keeps_a_byte_per_stream_in_reserve() -> None:
    hold = load_aioquic()
    watch = hold.ReleaseWatch(is_client=True, odcid=b"\x00" * 8)
    watch.max_stream_data, watch.max_data = 50, 100
    assert watch.spend(49) is None  # 49 bytes and the reserved one: the stream's 50
    assert watch.spend(50) == "the server's stream flow-control credit (50 bytes)"
    watch.credit_used = 0
    assert watch.spend(40) is None
    assert watch.spend(40) is None  # 82 of 100: 18 bytes would make 101 with the reserved one
    assert watch.spend(18) == "the server's connection flow-control credit (100 bytes)"


@pytest.mark.parametrize("too_large_first", [False, True])
def test_a_release_larger_than_aioquic_sends_at_once_fails_before_anything_goes_out(
    safe: Http3Service, too_large_first: bool
) -> None:
    """``hold="headers"`` puts every body in the release: 40 of ~1 KB outgrow one burst of
    aioquic's pacer (16 datagrams), so that release is refused whole, the other connection's
    (which would fit) goes out neither, whether it was built before or would have been after,
    and both are closed (one left open would hold a stream no release ends); nobody books."""
    small = [_order(f"small-{n}") for n in range(5)]
    large = [_order(f"{n:02d}" + "x" * 1000, hold="headers") for n in range(40)]

    async def scenario() -> tuple[str, list[H3Answer]]:
        with anyio.fail_after(TIMEOUT):
            fits, too_large = await _open(safe), await _open(safe)
            try:
                answers = fits.queue(small)
                too_large.queue(large)
                for connection in (fits, too_large):
                    await connection.settle()
                with pytest.raises(Http3Error) as refused:
                    release([too_large, fits] if too_large_first else [fits, too_large])
                assert fits.closed is not None
                assert too_large.closed is not None
                return str(refused.value), answers
            finally:
                fits.close()
                too_large.close()

    message, answers = anyio.run(scenario)
    assert re.search(r"the release fit \d+ of 40 streams' final bytes .*: no late start", message), message
    (error,) = {answer.error for answer in answers}
    assert error is not None
    assert error.startswith("another connection's release could not be built")
    assert safe.tcp.holders(1) == []


def test_a_kept_connection_races_again_on_the_stream_credit_it_got_back(safe: Http3Service) -> None:
    """128 stream ids a connection: after a wave of 100 the server (aioquic's batching) grants
    more only once fewer are left than it would grant. The next wave of 100 takes what the kept
    connection has and puts the rest on a fresh one: one release, one winner."""

    async def scenario() -> tuple[int, Release, Counter[int | None]]:
        with anyio.fail_after(TIMEOUT):
            kept = await _open(safe)
            connections = [kept]
            try:
                kept.queue([_order(f"first-{n}") for n in range(100)])
                await kept.settle()
                release([kept])
                await kept.read()
                await anyio.to_thread.run_sync(safe.tcp.reset)
                await kept.settle()
                credit = min(kept.remaining_streams, 100)
                answers = kept.queue([_order(f"kept-{n}") for n in range(credit)])
                if credit < 100:
                    connections.append(await _open(safe))
                    answers += connections[1].queue([_order(f"new-{n}") for n in range(100 - credit)])
                gate = await _fire(connections)
                return credit, gate, _statuses(answers)
            finally:
                for connection in connections:
                    connection.close()

    credit, gate, statuses = anyio.run(scenario)
    assert credit > 28  # the server gave streams back: 28 were left of the first 128
    assert [len(sizes) for sizes in gate.sizes] == [1] * len(gate.sizes)
    assert gate.streams == 100
    assert statuses == {201: 1, 409: 99}


def test_settle_waits_for_a_due_ack_no_longer_than_its_instant(
    safe: Http3Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``settle`` first lets an ACK that aioquic holds back (due within 2 ms) go out. If that
    timer is gone once the socket is read (another ACK went out first), aioquic's next one may
    be its idle timeout a minute away, and a quiet server sends nothing: the wait must still end
    at the instant it was for, not there. Here the timer is due in 1 ms, then a minute away."""

    async def scenario() -> None:
        with anyio.fail_after(TIMEOUT):
            connection = await _open(safe)
            await connection.settle()  # the handshake's last words said: the server falls quiet
        try:
            due = time.monotonic() + 0.001
            timers = iter([due])
            monkeypatch.setattr(connection.quic, "get_timer", lambda: next(timers, time.monotonic() + 60))
            with anyio.fail_after(TIMEOUT / 3):  # far below the minute a wait on that timer takes
                await connection.settle()
            assert time.monotonic() >= due
        finally:
            connection.close()

    anyio.run(scenario)


def test_the_release_congestion_control_never_lets_its_window_below_four_bursts() -> None:
    """A loss before the release (a datagram the server's queue dropped) halves aioquic's New
    Reno window, down to two datagrams on persistent congestion, and its pacer then lets only a
    quarter of the window out at once: a release of several datagrams would be cut short."""
    from aioquic.quic.packet import QuicPacketType
    from aioquic.quic.packet_builder import QuicSentPacket
    from aioquic.tls import Epoch

    from pytest_seatrace.engine.http3_hold import RELEASE_BURST, ReleaseReno

    control = ReleaseReno(max_datagram_size=MAX_DATAGRAM)
    floor = 4 * RELEASE_BURST * MAX_DATAGRAM
    assert control.congestion_window == floor  # above aioquic's initial 10 datagrams
    lost = QuicSentPacket(Epoch.ONE_RTT, True, True, False, 7, QuicPacketType.ONE_RTT, 1.0, MAX_DATAGRAM)
    control.on_packet_sent(packet=lost)
    control.on_packets_lost(now=2.0, packets=[lost])
    assert control.congestion_window == floor
    assert control.bytes_in_flight == 0
    control.on_persistent_congestion()
    assert control.congestion_window == floor
