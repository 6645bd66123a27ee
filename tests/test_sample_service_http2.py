"""The sample service under hypercorn: HTTP/2 (h2c, ALPN h2 over TLS) beside HTTP/1.1, served for real.

httpx shows what a client gets; a raw ``h2`` connection shows what httpx hides: the
server's SETTINGS and a burst of streams written in one ``sendall``, as a single-packet
start sends them.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import ssl
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import h2.config
import h2.connection
import h2.events
import h2.settings
import httpx
import pytest

from pytest_seatrace.service import ServiceHandle, start_sample_service
from sample_service import SEAT_TAKEN, SESSION_COOKIE
from tests.test_sample_service import _start_cli, race

REQUEST_TIMEOUT = 10.0
MAX_STREAMS = h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS


def trusting(service: ServiceHandle) -> ssl.SSLContext:
    """A client context that trusts the service's throwaway CA (and nothing else)."""
    context = service.ssl_context()
    assert context is not None, "started without tls=True"
    return context


def h2_client(service: ServiceHandle) -> httpx.AsyncClient:
    """An httpx client offering HTTP/2, trusting the service's CA."""
    return httpx.AsyncClient(
        base_url=service.url,
        verify=trusting(service),
        http2=True,
        trust_env=False,
        timeout=REQUEST_TIMEOUT,
    )


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


@dataclass
class H2Answer:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    ended: bool = False
    reset: bool = False

    def json(self) -> Any:
        return json.loads(self.body)


class H2Probe:
    """One raw HTTP/2 connection (prior knowledge, or ALPN h2 over ``context``); every read is bounded."""

    def __init__(self, port: int, context: ssl.SSLContext | None = None) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=REQUEST_TIMEOUT)
        self.sock: socket.socket = raw
        if context is not None:
            tls = context.wrap_socket(raw, server_hostname="127.0.0.1")
            assert tls.selected_alpn_protocol() == "h2"
            self.sock = tls
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.server_settings: dict[int, int] = {}
        self.answers: dict[int, H2Answer] = {}
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def __enter__(self) -> H2Probe:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.sock.close()

    def queue(self, method: str, path: str, body: Any = None, *, end_stream: bool = True) -> int:
        """Queue one request (sent by ``flush``); ``end_stream=False`` holds back its body."""
        stream_id: int = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":path", path), (":scheme", "http"), (":authority", "127.0.0.1")]
        payload = b"" if body is None else json.dumps(body).encode()
        if payload:
            headers += [("content-type", "application/json"), ("content-length", str(len(payload)))]
        self.conn.send_headers(stream_id, headers, end_stream=end_stream and not payload)
        if payload and end_stream:
            self.conn.send_data(stream_id, payload, end_stream=True)
        self.answers[stream_id] = H2Answer()
        return stream_id

    def send_body(self, stream_id: int, body: Any) -> None:
        self.conn.send_data(stream_id, json.dumps(body).encode(), end_stream=True)

    def flush(self) -> None:
        """Everything queued in one write."""
        self.sock.sendall(self.conn.data_to_send())

    def read_until(self, done: Callable[[], bool], timeout: float = REQUEST_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no answer within {timeout}s")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            for event in self.conn.receive_data(data):
                self._handle(event)
            self.flush()  # SETTINGS acks, WINDOW_UPDATEs

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            for code, change in event.changed_settings.items():
                self.server_settings[code] = change.new_value
        elif isinstance(event, h2.events.ResponseReceived):
            answer = self.answers[event.stream_id]
            answer.headers = {_text(name): _text(value) for name, value in event.headers}
            answer.status = int(answer.headers[":status"])
        elif isinstance(event, h2.events.DataReceived):
            self.answers[event.stream_id].body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.answers[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.answers[event.stream_id].reset = True

    def answered(self, *stream_ids: int) -> Callable[[], bool]:
        ids = stream_ids or tuple(self.answers)
        return lambda: all(self.answers[i].ended or self.answers[i].reset for i in ids)

    def settings_received(self) -> bool:
        return MAX_STREAMS in self.server_settings


# -- h2c: HTTP/2 with prior knowledge on a plain port --


@pytest.fixture(scope="module")
def h2c_service() -> Iterator[ServiceHandle]:
    with start_sample_service(server="hypercorn", seats=4) as service:
        yield service


@pytest.fixture
def h2c(h2c_service: ServiceHandle) -> ServiceHandle:
    h2c_service.reset()
    return h2c_service


def test_h2c_prior_knowledge_books_over_http2(h2c: ServiceHandle) -> None:
    assert h2c.server == "hypercorn"
    assert h2c.url.startswith("http://")

    async def scenario() -> None:
        async with httpx.AsyncClient(
            base_url=h2c.url, http1=False, http2=True, trust_env=False, timeout=REQUEST_TIMEOUT
        ) as http:
            response = await http.get("/health")
            assert response.http_version == "HTTP/2"
            assert response.json() == {"ok": True, "strategy": "safe", "seats": 4}
            response = await http.post("/orders", json={"seats": [1], "user": "alice"})
            assert response.http_version == "HTTP/2"
            assert response.status_code == 201, response.text
            assert int(response.headers["x-arrival-ns"]) > 0
            response = await http.post("/orders", json={"seats": [1], "user": "bob"})
            assert (response.status_code, response.json()) == (409, {"error": SEAT_TAKEN})

    anyio.run(scenario)
    # The same port still speaks HTTP/1.1 (http.client).
    assert h2c.holders(1) == ["alice"]


def test_h2_default_stream_limit_fits_150_streams_on_one_connection(h2c: ServiceHandle) -> None:
    with H2Probe(h2c.port) as probe:
        probe.read_until(probe.settings_received)
        assert probe.server_settings[MAX_STREAMS] == 1000
        streams = [probe.queue("GET", "/seats/1") for _ in range(150)]
        probe.flush()
        probe.read_until(probe.answered())
        assert {probe.answers[i].status for i in streams} == {200}
        assert not any(probe.answers[i].reset for i in streams)


def test_h2_max_streams_is_announced_in_server_settings() -> None:
    with start_sample_service(server="hypercorn", seats=1, h2_max_streams=32) as service:
        with H2Probe(service.port) as probe:
            probe.read_until(probe.settings_received)
            assert probe.server_settings[MAX_STREAMS] == 32
        status, _ = service.request("GET", "/health")
        assert status == 200


@pytest.mark.skipif(sys.platform != "linux", reason="needs CLOCK_MONOTONIC shared across processes")
def test_arrival_stamp_waits_for_the_body_on_an_http2_stream(h2c: ServiceHandle) -> None:
    """hypercorn runs the app at HEADERS; the stamp is still taken once END_STREAM is in.

    The order's HEADERS go first, then a whole GET on a second stream: once that one is
    answered, the server has handled the order's HEADERS (frames are read in order).
    """
    with H2Probe(h2c.port) as probe:
        order = probe.queue("POST", "/orders", end_stream=False)
        health = probe.queue("GET", "/health")
        probe.flush()
        probe.read_until(probe.answered(health))
        assert not probe.answers[order].ended
        before_body = time.perf_counter_ns()
        probe.send_body(order, {"seats": [2], "user": "alice"})
        probe.flush()
        probe.read_until(probe.answered(order))
        answer = probe.answers[order]
        assert answer.status == 201, answer.body
        assert int(answer.headers["x-arrival-ns"]) > before_body
        assert int(probe.answers[health].headers["x-arrival-ns"]) < before_body


# -- races over one HTTP/2 connection: every stream in one write --


def _burst(service: ServiceHandle, clients: int) -> Counter[int]:
    """``clients`` orders for seat 1 as streams of one connection, sent in one write."""
    with H2Probe(service.port) as probe:
        probe.read_until(probe.settings_received)
        for client in range(1, clients + 1):
            probe.queue("POST", "/orders", {"seats": [1], "user": f"vu-{client}"})
        probe.flush()
        probe.read_until(probe.answered(), timeout=60)
        answers = list(probe.answers.values())
    assert all(a.ended and not a.reset for a in answers)
    return Counter(a.status for a in answers)


def test_safe_sells_the_seat_once_to_50_streams() -> None:
    with start_sample_service(server="hypercorn", strategy="safe", seats=1) as service:
        assert _burst(service, 50) == {201: 1, 409: 49}
        assert len(service.holders(1)) == 1


def test_unsafe_double_books_under_50_streams() -> None:
    with start_sample_service(server="hypercorn", strategy="unsafe", seats=1, window_ms=50) as service:
        statuses = _burst(service, 50)
        assert set(statuses) <= {201, 409}
        assert statuses[201] >= 2
        assert len(service.holders(1)) == statuses[201]  # every acknowledged booking is recorded


def test_http11_race_under_hypercorn_is_safe_too() -> None:
    """The HTTP/1.1 path of hypercorn: 50 connections, released by one gate."""
    with start_sample_service(server="hypercorn", strategy="safe", seats=1) as service:
        answers = race(service, seats=1, clients=50)
        assert Counter(a.status for a in answers) == {201: 1, 409: 49}


# -- TLS: ALPN picks h2 with hypercorn, HTTP/1.1 with uvicorn --


def test_hypercorn_tls_negotiates_h2_and_keeps_http11() -> None:
    with start_sample_service(server="hypercorn", tls=True, auth=True, seats=2) as service:
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", service.url)
        assert service.ca_path is not None
        context = trusting(service)
        context.set_alpn_protocols(["h2", "http/1.1"])
        with H2Probe(service.port, context) as probe:  # asserts ALPN chose h2
            probe.read_until(probe.settings_received)
            assert probe.server_settings[MAX_STREAMS] == 1000

        async def scenario() -> None:
            async with h2_client(service) as http:
                response = await http.post("/login", json={"user": "alice"})
                assert response.http_version == "HTTP/2"
                assert "secure" in response.headers["set-cookie"].lower()  # served over https
                assert SESSION_COOKIE in http.cookies
                response = await http.post("/orders", json={"seats": [1]})  # the session cookie
                assert response.http_version == "HTTP/2"
                assert response.status_code == 201, response.text

        anyio.run(scenario)
        # http.client offers no ALPN: hypercorn answers it with HTTP/1.1.
        token = service.login("bob")
        assert service.request("POST", "/orders", {"seats": [2]}, token=token)[0] == 201
        assert [service.holders(seat) for seat in (1, 2)] == [["alice"], ["bob"]]
        assert f"listening on {service.url} " in service.log_tail()
    assert service.returncode == 0  # hypercorn stops gracefully on SIGTERM, then exits 0


def test_uvicorn_tls_answers_an_h2_client_with_http11() -> None:
    with start_sample_service(tls=True, seats=1) as service:

        async def scenario() -> None:
            async with h2_client(service) as http:
                response = await http.post("/orders", json={"seats": [1], "user": "alice"})
                assert response.http_version == "HTTP/1.1"
                assert response.status_code == 201, response.text

        anyio.run(scenario)


# -- the command line --


def test_cli_hypercorn_prints_its_banner_serves_h2c_and_stops_on_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "seats.db"
    process, line = _start_cli(
        "--server", "hypercorn", "--port", "0", "--db", str(db), "--seats", "3", "--auth"
    )
    try:
        match = re.fullmatch(
            r"sample_service listening on http://127\.0\.0\.1:(\d+)"
            r" \(strategy=safe, seats=3, server=hypercorn, auth=on, db=(.+)\)\n",
            line,
        )
        assert match, line
        assert match[2] == str(db)
        with httpx.Client(http1=False, http2=True, trust_env=False, timeout=REQUEST_TIMEOUT) as http:
            response = http.get(f"http://127.0.0.1:{match[1]}/health")
            assert response.http_version == "HTTP/2"
            assert response.json() == {"ok": True, "strategy": "safe", "seats": 3}
            # SIGTERM with the HTTP/2 connection still open: a graceful stop all the same.
            process.send_signal(signal.SIGTERM)
            stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert stdout == ""
    assert "Traceback" not in stderr
