"""The sample service over HTTP/3: hypercorn's QUIC listener, reached by aioquic's own client pattern.

The client is aioquic's sans-IO pair (``QuicConnection`` under ``H3Connection``) over a plain
UDP socket, as aioquic's ``http3_client`` example drives it, every wait bounded by a deadline.
"""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("aioquic")

from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import HandshakeCompleted

from pytest_seatrace.engine.http3 import H3Answer
from sample_service import SEAT_TAKEN
from tests.http3_service import Http3Service, http3_service, tls_files
from tests.test_sample_service import _run, _start_cli

TIMEOUT = 10.0


class H3Client:
    """One HTTP/3 connection over a blocking UDP socket; every read is bounded by ``TIMEOUT``."""

    def __init__(self, address: tuple[str, int], ca_path: Path) -> None:
        config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name="127.0.0.1")
        config.load_verify_locations(cafile=str(ca_path))
        self.address = address
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.quic = QuicConnection(configuration=config)
        self.h3 = H3Connection(self.quic)
        self.answers: dict[int, H3Answer] = {}
        self.handshake_done = False
        self.quic.connect(self.address, now=time.monotonic())
        self.flush()
        self.run_until(lambda: self.handshake_done)

    def close(self) -> None:
        self.quic.close()
        self.flush()
        self.sock.close()

    def flush(self) -> None:
        for data, address in self.quic.datagrams_to_send(now=time.monotonic()):
            self.sock.sendto(data, address)

    def request(self, method: str, path: str, body: Any = None) -> int:
        stream_id = self.quic.get_next_available_stream_id()
        payload = b"" if body is None else json.dumps(body).encode()
        headers = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", f"127.0.0.1:{self.address[1]}".encode()),
            (b":path", path.encode()),
        ]
        if payload:
            headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
        self.h3.send_headers(stream_id, headers, end_stream=not payload)
        if payload:
            self.h3.send_data(stream_id, payload, end_stream=True)
        self.answers[stream_id] = H3Answer(stream_id)
        self.flush()
        return stream_id

    def run_until(self, done: Any) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not done():
            now = time.monotonic()
            if now >= deadline:
                raise TimeoutError(f"no answer within {TIMEOUT}s")
            timer = self.quic.get_timer()
            wait = deadline - now if timer is None else min(deadline, max(timer, now)) - now
            self.sock.settimeout(max(wait, 0.001))
            try:
                data, address = self.sock.recvfrom(65536)
            except TimeoutError:
                self.quic.handle_timer(now=time.monotonic())
            else:
                self.quic.receive_datagram(data, address, now=time.monotonic())
            self._events()
            self.flush()

    def _events(self) -> None:
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                self.handshake_done = True
            for h3_event in self.h3.handle_event(event):
                if isinstance(h3_event, HeadersReceived) and h3_event.stream_id in self.answers:
                    answer = self.answers[h3_event.stream_id]
                    answer.headers = list(h3_event.headers)
                    answer.status = int(dict(answer.headers)[b":status"])
                    answer.ended = h3_event.stream_ended
                elif isinstance(h3_event, DataReceived) and h3_event.stream_id in self.answers:
                    answer = self.answers[h3_event.stream_id]
                    answer.body += h3_event.data
                    answer.ended = h3_event.stream_ended

    def fetch(self, method: str, path: str, body: Any = None) -> H3Answer:
        stream_id = self.request(method, path, body)
        self.run_until(lambda: self.answers[stream_id].ended)
        return self.answers[stream_id]


@pytest.fixture
def h3() -> Iterator[Http3Service]:
    with http3_service(seats=4) as service:
        yield service


def test_books_a_seat_over_http3_then_the_seat_is_taken(h3: Http3Service) -> None:
    client = H3Client(h3.udp_address, h3.ca_path)
    try:
        health = client.fetch("GET", "/health")
        assert (health.status, json.loads(health.body)) == (200, {"ok": True, "strategy": "safe", "seats": 4})
        first = client.fetch("POST", "/orders", {"seats": [1], "user": "alice"})
        assert first.status == 201, first.body
        assert int(dict(first.headers)[b"x-arrival-ns"]) > 0
        second = client.fetch("POST", "/orders", {"seats": [1], "user": "bob"})
        assert (second.status, json.loads(second.body)) == (409, {"error": SEAT_TAKEN})
    finally:
        client.close()
    # The same service over HTTPS (TCP) sees the HTTP/3 booking.
    assert h3.tcp.holders(1) == ["alice"]


def test_https_answers_name_the_http3_port_in_alt_svc(h3: Http3Service) -> None:
    """hypercorn advertises its QUIC socket: how an ``auto`` start finds HTTP/3 on an origin."""
    context = ssl.create_default_context(cafile=str(h3.ca_path))
    conn = http.client.HTTPSConnection("127.0.0.1", h3.tcp.port, timeout=TIMEOUT, context=context)
    try:
        conn.request("HEAD", "/health")
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    assert f'h3=":{h3.udp_port}"' in (response.getheader("alt-svc") or "")


def test_unsafe_strategy_over_http3() -> None:
    """The unsafe window is the service's, whatever the protocol: two orders in flight both win."""
    with http3_service(strategy="unsafe", seats=1, window_ms=200) as service:
        client = H3Client(service.udp_address, service.ca_path)
        try:
            streams = [client.request("POST", "/orders", {"seats": [1], "user": u}) for u in ("alice", "bob")]
            client.run_until(lambda: all(client.answers[s].ended for s in streams))
            assert [client.answers[s].status for s in streams] == [201, 201]
        finally:
            client.close()
        assert sorted(service.tcp.holders(1)) == ["alice", "bob"]


def test_cli_http3_needs_hypercorn_and_a_certificate() -> None:
    result = _run("--http3", "--port", "0")
    assert result.returncode == 2
    assert re.search(r"--http3 needs --server hypercorn and --certfile/--keyfile", result.stderr)
    assert "Traceback" not in result.stderr


def test_cli_http3_serves_quic_on_the_tcp_port_number(tmp_path: Path) -> None:
    ca, cert, key = tls_files(tmp_path)
    args = ["--server", "hypercorn", "--http3", "--port", "0", "--seats", "2", "--db", str(tmp_path / "s.db")]
    process, line = _start_cli(*args, "--certfile", str(cert), "--keyfile", str(key))
    try:
        match = re.fullmatch(
            r"sample_service listening on https://127\.0\.0\.1:(\d+)"
            r" \(strategy=safe, seats=2, server=hypercorn, http3=udp:(\d+), db=.+\)\n",
            line,
        )
        assert match, line
        assert match[1] == match[2]
        client = H3Client(("127.0.0.1", int(match[2])), ca)
        try:
            answer = client.fetch("POST", "/orders", {"seats": [2], "user": "alice"})
            assert answer.status == 201, answer.body
        finally:
            client.close()
        process.send_signal(signal.SIGTERM)  # hypercorn stops gracefully: QUIC listener and all
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()  # a no-op once it exited
        remaining_stdout, stderr = process.communicate(timeout=30)
    assert remaining_stdout == ""  # the banner was read before
    assert "Traceback" not in stderr, stderr
