"""Kept connections the server closed are replaced, never reported as its failures (issue: verdict
truth on real deployments): a keep-alive that expires as a later wave's request arrives."""

from __future__ import annotations

import contextlib
import json
import socket
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import h2.connection
import h2.events
import pytest

from examples.recipes.flask_app import holder
from examples.recipes.servers import Server, serve
from pytest_seatrace.core.records import Outcome, Record
from pytest_seatrace.engine.classify import Classifier
from pytest_seatrace.engine.keepalive import PROBE_NS, PROBE_S, KeepAlive
from pytest_seatrace.engine.lastbyte import LastByteFirer
from pytest_seatrace.engine.lastbyte_outcomes import Slot
from pytest_seatrace.engine.plan import Attempt, RequestSpec
from pytest_seatrace.engine.requests import RequestBuilder, make_ssl_context
from pytest_seatrace.marker import resolve
from pytest_seatrace.options import Settings
from tests.gunicorn_seats import gunicorn_seats
from tests.support import closing_after_answer_server, raw_server
from tests.test_single_packet import Seen, ended, fire, h2_server, respond
from tests.wire import read_request


@contextlib.contextmanager
def keepalive_seats(close: str, keep_alive_ms: float) -> Iterator[Server]:
    command = [
        sys.executable, "-m", "tests.keepalive_server",
        "--fd", "{fd}", "--close", close, "--keep-alive-ms", f"{keep_alive_ms:g}",
    ]  # fmt: skip
    with serve(command) as server:
        yield server


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - a loopback test server
        return json.loads(response.read())


def book(race: Any, server: Server, **kwargs: Any) -> Any:
    return race.post(
        lambda a: f"{server.url}/book/{a.resource}",
        json=lambda a: {"user": f"u{a.client}"},
        resources=3,
        concurrency=50,
        parallel=1,
        **kwargs,
    )


class ClosesKeptOnNextRequest:
    """A raw server: the first connection answers one request, then closes as the next one's
    first bytes arrive (its keep-alive expired); every later connection answers normally. The
    test waits for that close (``closed``) before it goes on: a step-by-step race, no sleeps."""

    def __init__(self) -> None:
        self.closed = threading.Event()
        self.connections = 0
        self.answered = 0

    def __call__(self, conn: socket.socket) -> None:
        self.connections += 1
        first = self.connections == 1
        with contextlib.suppress(OSError):
            buffer = bytearray()
            while True:
                if read_request(conn, buffer) is None:
                    return
                self.answered += 1
                conn.sendall(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok")
                if first:
                    conn.recv(8)  # the next request's prefix, then the keep-alive close
                    conn.close()
                    self.closed.set()
                    return


def two_waves(url: str, hold: str, server: ClosesKeptOnNextRequest) -> tuple[Record, LastByteFirer]:
    """Wave one answered on a connection kept alive; wave two reuses it, writes its prefix, and
    the server closes it; then the firer's check before the release, the release, the answer."""

    async def scenario() -> tuple[Record, LastByteFirer]:
        config = resolve({}, {"concurrency": 1, "timeout": 5.0, "hold": hold}, Settings(), flexible=False)
        spec = RequestSpec("POST", url + "/book/1", json={"user": "u" * 100})
        builder = RequestBuilder(spec, None, make_ssl_context(True))
        firer = LastByteFirer(config, builder, make_ssl_context(True), Classifier(config))
        try:
            first = Slot(Record(resource=0, client=1, round=1), firer.wire.build(Attempt(1, 1, 1)))
            await firer._connect_and_prepare(first, first.request.origin)
            firer._release(1, 0, [first])
            assert first.conn is not None
            await firer._read([(first, first.conn)])
            assert first.record.outcome is Outcome.WIN
            assert len(firer.pool) == 1
            second = Slot(Record(resource=0, client=1, round=2), firer.wire.build(Attempt(1, 1, 2)))
            await firer._prepare_wave([second])
            assert second.kept
            assert await anyio.to_thread.run_sync(server.closed.wait, 5)
            await firer._renew([second])
            firer._release(2, 0, [second])
            if second.conn is not None:
                await firer._read([(second, second.conn)])
            return second.record, firer
        finally:
            await builder.aclose()
            await firer.aclose()

    return anyio.run(scenario)


def test_a_kept_connection_closed_under_a_held_header_block_is_replaced_and_raced() -> None:
    """At hold="headers" the server never had a complete header block, so it cannot have acted:
    the connection is replaced, the prefix written again, and the request races as usual."""
    server = ClosesKeptOnNextRequest()
    with raw_server(server) as url:
        record, firer = two_waves(url, "headers", server)
    assert record.outcome is Outcome.WIN
    assert record.reason is None
    assert server.connections == 2  # the fresh connection that replaced the closed one
    assert server.answered == 2
    assert firer.replaced == 1
    assert firer.keepalive.limit_ns is not None


def test_a_kept_connection_closed_under_a_complete_header_block_is_unknown_not_replayed() -> None:
    """At hold="body" the server had the whole header block and may have acted on it: unknown,
    with the cause named, and never sent again."""
    server = ClosesKeptOnNextRequest()
    with raw_server(server) as url:
        record, firer = two_waves(url, "body", server)
    assert record.outcome is Outcome.UNKNOWN
    assert "keep-alive" in (record.reason or "")
    assert "not replayed" in (record.reason or "")
    assert server.connections == 1  # nothing opened to send it again
    assert server.answered == 1
    assert firer.replaced == 0


def test_kept_connections_the_server_closes_are_replaced_or_unknown_never_errors(race: Any) -> None:
    """A server closes every kept connection as the next wave's first bytes arrive (a lazy
    keep-alive of 0, in its own process): seen before the release at hold="headers", each is
    replaced and re-prefixed; seen only after it, the request is unknown with the cause; never
    an error, never twice booked, and the server's every idle close is accounted for."""
    with keepalive_seats("lazy", 0) as server:
        result = book(race, server, sync="last-byte", hold="headers", check=False)
        closes = get_json(f"{server.url}/stats")["idle_closes"]
        holders = [get_json(f"{server.url}/seats/{seat}")["holders"] for seat in (1, 2, 3)]
    assert result.errors == 0
    assert holders[0] == holders[2] == 1  # the first wave and a wave on fresh connections
    assert holders[1] <= 1
    assert closes >= 50  # the second wave's kept connections, at least
    assert result.connections_replaced + result.unknown >= closes
    unknown = [r for r in result.history if r.outcome is Outcome.UNKNOWN]
    assert all("keep-alive" in (r.reason or "") and "not replayed" in (r.reason or "") for r in unknown)
    assert result.to_dict()["connections_replaced"] == result.connections_replaced


def test_hold_body_makes_every_request_on_a_closed_kept_connection_unknown(race: Any) -> None:
    """At hold="body" the same server leaves the second wave's 50 requests unknown, named, never
    sent twice: verify= finds the seat free, so that wave did not race (too-few, not an error);
    the third wave, on fresh connections, races as usual."""
    with keepalive_seats("lazy", 0) as server:
        result = book(
            race,
            server,
            sync="last-byte",
            hold="body",
            check=False,
            verify=lambda seat: get_json(f"{server.url}/seats/{seat}")["holders"],
        )
    assert result.errors == 0, result.error_reasons
    unknown = [r for r in result.history if r.outcome is Outcome.UNKNOWN]
    assert len(unknown) == 50
    assert {r.resource for r in unknown} == {1}
    assert all("keep-alive" in (r.reason or "") and "not replayed" in (r.reason or "") for r in unknown)
    assert [(v.kind, v.resource) for v in result.violations] == [("too-few", 2)]
    assert "50 closed unanswered by the server" in result.violations[0].detail
    assert result.wins == 2


@pytest.mark.parametrize(
    ("header", "limit_ns"),
    [
        (b"timeout=5, max=100", 5_000_000_000),
        (b"max=100; timeout=2.5", 2_500_000_000),
        (b"max=100", None),
    ],
)
def test_keep_alive_header_teaches_the_limit(header: bytes, limit_ns: int | None) -> None:
    keepalive = KeepAlive()
    keepalive.heard([(b"content-type", b"text/plain"), (b"keep-alive", header)])
    assert keepalive.limit_ns == limit_ns


def test_the_probe_waits_once_until_the_longest_idle_connection_is_probe_old() -> None:
    keepalive = KeepAlive()
    now = 10 * PROBE_NS
    assert keepalive.probe_wait([now - PROBE_NS // 5, now - PROBE_NS // 2], now) == pytest.approx(PROBE_S / 2)
    assert keepalive.probe_wait([now], now) == 0.0  # once a race
    known = KeepAlive()
    known.heard([(b"keep-alive", b"timeout=5")])
    assert known.probe_wait([now], now) == 0.0  # the server said
    assert KeepAlive().probe_wait([now - 2 * PROBE_NS], now) == 0.0  # idle long enough already


def test_a_keep_alive_shorter_than_the_probe_makes_every_connection_stale() -> None:
    keepalive = KeepAlive()
    keepalive.closed_after(PROBE_NS // 10)
    assert keepalive.stale(0)


def test_the_shortest_idle_close_is_the_limit_and_older_connections_are_stale() -> None:
    keepalive = KeepAlive()
    assert not keepalive.stale(10**12)  # nothing known: every kept connection is reused
    keepalive.closed_after(2_100_000_000)
    keepalive.closed_after(2_400_000_000)
    assert keepalive.limit_ns == 2_100_000_000
    assert keepalive.stale(1_600_000_000)
    assert not keepalive.stale(1_500_000_000)


# -- single-packet (HTTP/2) --------------------------------------------------------------------


class IdleCloseOnNextWave:
    """An h2c seat server (first stream per seat wins) whose first connection, as the second
    wave's HEADERS arrive on it, closes: with a GOAWAY naming the first wave's last stream (its
    keep-alive expired: the new streams were never processed), or silently."""

    def __init__(self, goaway: bool) -> None:
        self.goaway = goaway
        self.taken: set[int] = set()
        self.connections: list[h2.connection.H2Connection] = []
        self.last_answered: dict[int, int] = {}
        self.bodies: dict[tuple[int, int], bytes] = {}
        self.gone: set[int] = set()
        """Connections that sent their GOAWAY: a graceful close (a reset could drop the GOAWAY)."""

    def __call__(self, conn: h2.connection.H2Connection, events: list[h2.events.Event], seen: Seen) -> bool:
        if not any(c is conn for c in self.connections):
            self.connections.append(conn)
        number = next(i for i, c in enumerate(self.connections) if c is conn)
        fresh = [e.stream_id for e in events if isinstance(e, h2.events.RequestReceived)]
        if number in self.gone:
            return True  # after its GOAWAY: read on until the client closes, so nothing resets it
        if number == 0 and fresh and number in self.last_answered:
            if not self.goaway:
                return False
            conn.close_connection(last_stream_id=self.last_answered[number])
            self.gone.add(number)
            return True
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                key = (number, event.stream_id)
                self.bodies[key] = self.bodies.get(key, b"") + event.data
        for sid in ended(events):
            seat = json.loads(self.bodies[number, sid])["seat"]
            respond(conn, sid, 409 if seat in self.taken else 201)
            self.taken.add(seat)
            self.last_answered[number] = sid
        return True


def seat_order(a: Attempt) -> dict[str, Any]:
    return {"seat": a.resource}


def test_streams_a_goaway_says_were_never_processed_are_written_again_on_a_fresh_connection() -> None:
    server = IdleCloseOnNextWave(goaway=True)
    with h2_server(server) as (url, _):
        fired = fire(RequestSpec("POST", url + "/book", json=seat_order), waves=2, concurrency=5)
    result = fired.result
    assert result.passed
    assert (result.wins, result.rejections, result.errors, result.unknown) == (2, 8, 0, 0)
    assert len(server.connections) == 2
    assert fired.firer.replaced == 1


def test_a_kept_connection_closed_under_dispatched_streams_leaves_them_unknown() -> None:
    """No GOAWAY: the server may have started the streams at HEADERS, so they are unknown, with
    the cause, and never written again."""
    server = IdleCloseOnNextWave(goaway=False)
    with h2_server(server) as (url, _):
        fired = fire(RequestSpec("POST", url + "/book", json=seat_order), waves=2, concurrency=5)
    result = fired.result
    reasons = [(r.resource, r.outcome, r.reason) for r in result.history]
    assert (result.wins, result.errors, result.unknown) == (1, 0, 5), reasons
    assert {r.resource for r in result.history if r.outcome is Outcome.UNKNOWN} == {1}
    assert all("keep-alive" in (r.reason or "") for r in result.history if r.outcome is Outcome.UNKNOWN)
    assert len(server.connections) == 1
    assert fired.firer.keepalive.limit_ns is not None  # learned, whether seen before the gate or after


# -- real servers: gunicorn's threaded workers, hypercorn and uvicorn with short keep-alives -----


GTHREAD = pytest.mark.parametrize(
    ("hold", "delay_ms"), [("headers", 150), ("headers", 400), ("body", 400)], ids=str
)


@GTHREAD
def test_gunicorn_gthread_with_slow_requests_gives_a_true_verdict(
    race: Any, tmp_path: Path, hold: str, delay_ms: int
) -> None:
    """The pretix deployment's shape: gunicorn gthread (3 workers x 8 threads, its 2 s
    keep-alive), a correct SQLite service, slow requests, so that later waves reuse connections
    idle past the keep-alive. At hold="headers" every such close is replaced and the race passes;
    at hold="body" a close under a prefix is unknown, settled by verify=, never an error."""
    with gunicorn_seats(tmp_path, delay_ms=delay_ms) as server:
        result = race.post(
            lambda a: f"{server.url}/book/{a.resource}",
            json=lambda a: {"user": f"u{a.client}"},
            resources=3,
            concurrency=100,
            sync="last-byte",
            hold=hold,
            verify=lambda seat: int(holder(tmp_path / "seats.db", str(seat)) is not None),
        )
    assert result.passed
    assert (result.errors, result.wins) == (0, 3)
    unknown = [r for r in result.history if r.outcome is Outcome.UNKNOWN]
    assert all("keep-alive" in (r.reason or "") for r in unknown)


@pytest.mark.parametrize(("server", "sync"), [("hypercorn", "single-packet"), ("uvicorn", "last-byte")])
def test_a_short_server_keep_alive_never_fails_a_correct_service(
    race: Any, sample_service_factory: Any, server: str, sync: str
) -> None:
    """hypercorn and uvicorn closing connections idle for 20 ms: more connections per resource
    than one (hypercorn: 25 streams each) finish at different times and idle between waves."""
    streams = 25 if server == "hypercorn" else None
    service = sample_service_factory(server=server, keep_alive_s=0.02, h2_max_streams=streams)
    result = race.post(
        service.url + "/orders",
        json=lambda a: {"seats": [a.resource], "user": f"u{a.client}"},
        resources=4,
        concurrency=100,
        sync=sync,
        verify=lambda seat: len(get_json(f"{service.url}/seats/{seat}")["holders"]),
    )
    assert result.passed
    assert result.errors == 0


# -- a server that keeps each connection for one request, without saying so --------------------


@pytest.mark.parametrize("delay_s", [0.005, 0.03], ids=["5ms", "30ms"])
@pytest.mark.parametrize("hold", ["headers", "body"])
def test_a_server_that_closes_after_each_answer_passes_in_last_byte(
    race: Any, hold: str, delay_s: float
) -> None:
    """It answers with keep-alive and closes a few ms later: before the first reuse the engine
    leaves the kept connections idle long enough to see that, and opens fresh ones from then on."""
    with closing_after_answer_server(delay_s) as url:
        result = race.post(
            lambda a: f"{url}/book/{a.resource}",
            json={"user": "u"},
            resources=3,
            concurrency=20,
            parallel=1,
            sync="last-byte",
            hold=hold,
        )
    assert result.passed
    assert (result.errors, result.unknown, result.wins) == (0, 0, 3)


class AnswersThenCloses:
    """An h2c seat server (first stream per seat wins) that closes each connection once every
    stream on it is answered: one wave per connection, without a GOAWAY."""

    def __init__(self) -> None:
        self.taken: set[int] = set()
        self.bodies: dict[tuple[int, int], bytes] = {}
        self.connections: list[h2.connection.H2Connection] = []

    def __call__(self, conn: h2.connection.H2Connection, events: list[h2.events.Event], seen: Seen) -> bool:
        if not any(c is conn for c in self.connections):
            self.connections.append(conn)
        number = next(i for i, c in enumerate(self.connections) if c is conn)
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                key = (number, event.stream_id)
                self.bodies[key] = self.bodies.get(key, b"") + event.data
        answered = False
        for sid in ended(events):
            seat = json.loads(self.bodies[number, sid])["seat"]
            respond(conn, sid, 409 if seat in self.taken else 201)
            self.taken.add(seat)
            answered = True
        return not (answered and conn.open_inbound_streams == 0)


def test_a_server_that_closes_after_each_answer_passes_in_single_packet() -> None:
    server = AnswersThenCloses()
    with h2_server(server) as (url, _):
        fired = fire(RequestSpec("POST", url + "/book", json=seat_order), waves=3, concurrency=10)
    result = fired.result
    assert result.passed
    assert (result.errors, result.unknown, result.wins) == (0, 0, 3)
    assert len(server.connections) == 3
