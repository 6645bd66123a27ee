"""The engine's hot path: llhttp parses what h11 parsed, the same way; requests serialised once.

Responses go through ``HTTP11Connection.read_response`` with scripted reads (each ``_fill`` hands
out the next chunk, then end of file), compared against the loop the engine ran before
httptools: h11 alone, with the same error messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import h11
import httpx
import pytest
import trustme

from pytest_seatrace.core.records import BODY_KEEP
from pytest_seatrace.engine import RaceConfig, RacePlan, TargetOptions, run_race
from pytest_seatrace.engine.http11 import HTTP11Connection
from pytest_seatrace.engine.http11_response import RawResponse
from pytest_seatrace.engine.plan import Attempt, RequestSpec
from pytest_seatrace.engine.reader import read_responses
from pytest_seatrace.engine.requests import RequestBuilder, TrustOnFirstUse, WireBuilder, make_ssl_context
from pytest_seatrace.engine.stream import (
    ANSWERED,
    CLOSED_EARLY,
    NetworkStream,
    Origin,
    TransportError,
    early_answers,
)
from pytest_seatrace.service import start_sample_service
from tests.support import OneWinnerApp, count_h11_connections, httpx_wire_bytes, raw_server, serve_app
from tests.wire import read_request

Outcome = tuple[Any, ...]


class Scripted(HTTP11Connection):
    """A connection whose reads are the given chunks, then end of file."""

    def __init__(self, sock: socket.socket, chunks: list[bytes]) -> None:
        super().__init__(NetworkStream(sock, Origin("http", "127.0.0.1", 80)))
        self.chunks = list(chunks)

    async def _fill(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    left, right = socket.socketpair()
    yield left
    left.close()
    right.close()


def h11_reference(chunks: list[bytes], method: bytes) -> Outcome:
    """What the engine did before httptools: one h11 state machine per connection."""
    conn = h11.Connection(our_role=h11.CLIENT)
    conn.send(h11.Request(method=method, target="/", headers=[("host", "127.0.0.1")]))
    conn.send(h11.EndOfMessage())
    feed = iter(chunks)
    status, headers, body = 0, [], b""
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            return ("error", f"malformed response: {exc}")
        if event is h11.NEED_DATA:
            data = next(feed, b"")
            if not data and status == 0:
                return ("error", "server closed the connection without answering")
            conn.receive_data(data)
        elif isinstance(event, h11.Response):
            status, headers = event.status_code, list(event.headers)
        elif isinstance(event, h11.Data):
            body += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            keep = conn.our_state is h11.DONE and conn.their_state is h11.DONE
            # One change on purpose: bytes after the response (h11 kept them for the next
            # cycle) mean the connection is not reused.
            leftover, _ = conn.trailing_data
            return ("ok", status, headers, body, keep and not leftover)
        elif isinstance(event, h11.ConnectionClosed):
            return ("error", "server closed the connection mid-response")


def engine(sock: socket.socket, chunks: list[bytes], method: bytes, keep_body: bool = True) -> Outcome:
    conn = Scripted(sock, chunks)

    async def read() -> Outcome:
        try:
            r = await conn.read_response(keep_body, method=method)
        except TransportError as exc:
            return ("error", str(exc))
        return ("ok", r.status, r.headers, r.body, r.keep_alive)

    return anyio.run(read)


CL = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-arrival-ns: 123\r\n\r\nhello"
RESPONSES = {
    "content-length": CL,
    "header whitespace": b"HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\nX-A:  v \t\r\nServer: u\r\n\r\n{}",
    "chunked": b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    "chunked trailers": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\nT: 1\r\n\r\n",
    "connection close": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx",
    "http/1.0": b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
    "http/1.0 keep-alive": b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\nx",
    "close-delimited": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
    "close-delimited 1.0": b"HTTP/1.0 200 OK\r\n\r\nbody",
    "gzip then close": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nzz",
    "204": b"HTTP/1.1 204 No Content\r\n\r\n",
    "304 with length": b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    "100 then 200": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
    "103 then 409": b"HTTP/1.1 103 Early\r\nLink: </a>\r\n\r\nHTTP/1.1 409 C\r\nContent-Length: 0\r\n\r\n",
    "empty": b"",
    "truncated head": b"HTTP/1.1 200 OK\r\nContent-Len",
    "truncated body": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    "truncated chunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    "garbage": b"hello there\r\n\r\n",
    "space before colon": b"HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\nx",
    "two lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxy",
    "bad status": b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
    "no reason": b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
}


def chunkings(data: bytes) -> list[list[bytes]]:
    """The stream whole, byte by byte, and cut in two at a few places."""
    cuts = sorted({1, len(data) // 2, len(data) - 1, data.find(b"\r\n\r\n") + 2} - {0, len(data)})
    ways = [[data] if data else [], [data[i : i + 1] for i in range(len(data))]]
    ways += [[data[:cut], data[cut:]] for cut in cuts if 0 < cut < len(data)]
    return ways


@pytest.mark.parametrize("method", [b"POST", b"GET", b"HEAD"])
@pytest.mark.parametrize("name", sorted(RESPONSES))
def test_llhttp_reads_every_response_as_h11_did(sock: socket.socket, name: str, method: bytes) -> None:
    for chunks in chunkings(RESPONSES[name]):
        assert engine(sock, chunks, method) == h11_reference(chunks, method), (name, chunks)


@pytest.mark.parametrize("method", [b"POST", b"HEAD"])
def test_bytes_after_the_response_are_never_reused(sock: socket.socket, method: bytes) -> None:
    """h11 kept them for the next cycle; the engine closes the connection instead."""
    outcome = engine(sock, [CL + b"HTTP/1.1 200 OK\r\n"], method)
    assert outcome[:4] == h11_reference([CL], method)[:4]
    assert outcome[4] is False


def test_a_kept_connection_parses_its_next_responses(sock: socket.socket) -> None:
    second = b"HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\n\r\n{}"
    conn = Scripted(sock, [CL, second[:20], second[20:], CL[:3], CL[3:]])

    async def three() -> list[tuple[int, bytes | None, bool]]:
        out = []
        for _ in range(3):
            r = await conn.read_response(True)
            out.append((r.status, r.body, r.keep_alive))
        return out

    assert anyio.run(three) == [(200, b"hello", True), (409, b"{}", True), (200, b"hello", True)]


def test_without_a_predicate_the_first_kib_is_kept(sock: socket.socket) -> None:
    body = bytes(range(256)) * 20
    head = b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n" % len(body)
    chunks = [head] + [body[i : i + 100] for i in range(0, len(body), 100)]
    outcome = engine(sock, chunks, b"POST", keep_body=False)
    assert outcome[0] == "ok"
    assert body.startswith(outcome[3])
    assert BODY_KEEP <= len(outcome[3]) < len(body)


def test_a_long_body_is_not_kept_for_a_replay(sock: socket.socket) -> None:
    """Past its head and 64 KiB, a response's bytes are not kept; a close there says so."""
    body = b"x" * 300_000
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    chunks = [head] + [body[i : i + 10_000] for i in range(0, len(body), 10_000)]
    whole = engine(sock, chunks, b"GET")
    assert whole[0] == "ok"
    assert whole[3] == body
    assert engine(sock, chunks[:-1], b"GET") == ("error", "server closed the connection mid-response")
    short = engine(sock, chunks, b"GET", keep_body=False)
    assert BODY_KEEP <= len(short[3]) < 65536


def test_a_request_that_asks_to_close_is_not_kept(sock: socket.socket) -> None:
    conn = Scripted(sock, [CL])
    response = anyio.run(lambda: conn.read_response(False, closes=True))
    assert response.keep_alive is False


def test_early_answers_are_found_with_one_poll() -> None:
    """Quiet, answered and closed connections, told apart as early_answer() tells them."""
    pairs = [socket.socketpair() for _ in range(4)]
    conns = []
    for ours, _ in pairs:
        ours.setblocking(False)
        conns.append(HTTP11Connection(NetworkStream(ours, Origin("http", "127.0.0.1", 80))))
    pairs[1][1].sendall(b"HTTP/1.1 400 Bad Request\r\n")
    pairs[2][1].close()
    try:
        streams = [conn.stream for conn in conns]
        assert early_answers(streams) == [None, ANSWERED, CLOSED_EARLY, None]
        assert early_answers(streams) == [conn.early_answer() for conn in conns]
    finally:
        for conn in conns:
            conn.close()
        for _, theirs in pairs:
            theirs.close()


# -- requests serialised once --------------------------------------------------------------


def _builder(**kwargs: Any) -> WireBuilder:
    spec = RequestSpec("POST", "http://127.0.0.1:9/orders?x=1", **kwargs)
    return WireBuilder(RequestBuilder(spec, None, make_ssl_context(True)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"json": {"fixed": True}},
        {"content": b"abc", "headers": {"Connection": "close"}},
        {"json": lambda a: {"seats": [a.resource], "user": "zoë" * a.client}},
        {"data": lambda a: {"k": str(a.client)}},
    ],
    ids=["constant", "closes", "json", "form"],
)
def test_wire_bytes_are_httpx_bytes(kwargs: dict[str, Any]) -> None:
    wire = _builder(**kwargs)
    client = httpx.Client(trust_env=False)
    for number in (1, 2, 3, 12):
        attempt = Attempt(1, number, 1)
        built = wire.build(attempt)
        args = {k: (v(attempt) if callable(v) else v) for k, v in kwargs.items()}
        expected = httpx_wire_bytes(client.build_request("POST", "http://127.0.0.1:9/orders?x=1", **args))
        assert built.data == expected
        assert built.head_len == expected.index(b"\r\n\r\n") + 4
        assert built.held_from("headers") == built.head_len - 1
        assert built.held_from("body") == len(expected) - 1
        assert built.closes is ("Connection" in kwargs.get("headers", {}))
    client.close()


def test_json_requests_run_h11_once_per_body_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """No h11 state machine per request: one per distinct head (here: two body lengths)."""
    wire = _builder(json=lambda a: {"user": "u" * (a.client % 2)})
    made = count_h11_connections(monkeypatch)
    lengths = {len(wire.build(Attempt(1, client, 1)).data) for client in range(1, 101)}
    assert len(lengths) == 2
    assert len(made) <= 2


# -- the first race: no transport, no CA certificates for http:// ---------------------------

FIRST_RACE = """
import sys
import anyio
from pytest_seatrace.engine import RaceConfig, RacePlan, RequestSpec, TargetOptions, run_race
from pytest_seatrace.engine.requests import TrustOnFirstUse

def refuse(self):
    raise SystemExit("CA certificates loaded for an http:// race")

TrustOnFirstUse.trust = refuse
config = RaceConfig(resources=(1,), concurrency=3, timeout=10.0, expect=range(0, 4))
plan = RacePlan(name="first", config=config, target=TargetOptions(base_url=sys.argv[1]),
                request=RequestSpec("POST", "/seat", json={"a": 1}))
run = anyio.run(run_race, plan)
print(sorted({r.status for r in run.records}))
print(sorted(m for m in ("httpcore", "trio") if m in sys.modules))
"""


def test_a_plain_http_race_builds_no_transport_and_loads_no_certificates() -> None:
    """In a fresh process: httpcore and trio never imported, the CA certificates never loaded."""
    with serve_app(OneWinnerApp()) as url:
        done = subprocess.run(
            [sys.executable, "-c", FIRST_RACE, url], capture_output=True, text=True, timeout=60, check=False
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[200]", "[]"]


def test_the_default_context_verifies_and_loads_its_certificates_at_the_first_handshake() -> None:
    ctx = TrustOnFirstUse()
    assert ctx.verify_mode is ssl.CERT_REQUIRED
    assert ctx.check_hostname
    assert not ctx.__dict__["_trusted"]
    tls = ctx.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="example.org")
    assert ctx.__dict__["_trusted"]
    assert ctx.cert_store_stats()["x509_ca"] > 0
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()


def test_an_unknown_ca_is_refused_by_the_default_context(race: Any, tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    cert.private_key_pem.write_to_path(str(key))
    chain.write_bytes(b"".join(blob.bytes() for blob in cert.cert_chain_pems))
    with serve_app(OneWinnerApp(), tls=(str(chain), str(key))) as url:
        result = race.post(url + "/x", concurrency=2, tls_verify=True, check=False)
    assert result.errors == 2
    assert "certificate verify failed" in next(iter(result.error_reasons))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"json": {"a": 1}, "params": {"q": "1"}, "headers": {"X-A": "b"}, "cookies": {"c": "d"}},
        {"content": b"raw", "headers": [("X-Twice", "1"), ("X-Twice", "2")]},
        {"data": {"k": "v"}},
    ],
    ids=["merged", "content", "form"],
)
@pytest.mark.parametrize("base_url", [None, "http://127.0.0.1:9/api/"])
def test_requests_are_built_as_an_async_client_builds_them(
    kwargs: dict[str, Any], base_url: str | None
) -> None:
    url = "orders?x=1" if base_url else "http://127.0.0.1:9/orders?x=1"
    builder = RequestBuilder(RequestSpec("POST", url, **kwargs), base_url, None)
    ours = builder.build(Attempt(1, 1, 1))
    client = httpx.AsyncClient(base_url=base_url or "", trust_env=False)
    theirs = client.build_request("POST", url, **kwargs)
    assert (ours.method, ours.url, ours.headers.raw) == (theirs.method, theirs.url, theirs.headers.raw)
    assert ours.extensions == theirs.extensions
    assert ours.read() == theirs.read()
    anyio.run(client.aclose)


# -- one reader per wave -------------------------------------------------------------------


def _keep_alive_handler(accepted: list[int]) -> Callable[[socket.socket], None]:
    """Answers every GET on a connection with a 200, keeping it open; counts connections."""

    def handle(conn: socket.socket) -> None:
        accepted.append(1)
        buffered = bytearray()
        with contextlib.suppress(OSError):
            for _ in range(1000):  # requests on this connection
                if read_request(conn, buffered, timeout=10) is None:
                    return
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-arrival-ns: 7\r\n\r\nok")

    return handle


def _plan(url: str, **config: Any) -> RacePlan:
    settings: dict[str, Any] = {"resources": (1,), "concurrency": 4, "timeout": 10.0, "expect": range(0, 5)}
    return RacePlan(
        name="waves",
        config=RaceConfig(**{**settings, **config}),
        target=TargetOptions(base_url=url),
        request=RequestSpec("GET", "/x"),
        reset=lambda: None,
    )


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_waves_reuse_their_connections_on_either_backend(backend: str) -> None:
    accepted: list[int] = []
    with raw_server(_keep_alive_handler(accepted)) as url:
        run = anyio.run(run_race, _plan(url, resources=tuple(range(6)), rounds=2), backend=backend)
    assert len(run.records) == 48
    assert {(r.status, r.server_ns) for r in run.records} == {(200, 7)}
    assert len(accepted) == 4  # one set of 4 connections, kept for 12 waves taking turns


def test_under_asyncio_no_connection_waits_on_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop's reader callbacks read every response: no wait_readable, no task per response."""

    async def refused(obj: object) -> None:
        raise AssertionError("wait_readable called on the asyncio path")

    monkeypatch.setattr(anyio, "wait_readable", refused)
    accepted: list[int] = []
    with raw_server(_keep_alive_handler(accepted)) as url:
        run = anyio.run(run_race, _plan(url, resources=(1, 2, 3), concurrency=20, expect=range(0, 21)))
    assert [r.status for r in run.records] == [200] * 60


def test_under_trio_one_wait_readable_on_a_selector_reads_every_response(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No connection waits on its own: the reader waits on the engine's epoll/kqueue descriptor,
    and one wake-up reads every response that came in, split or whole."""
    pairs = [socket.socketpair() for _ in range(5)]
    conns = [HTTP11Connection(NetworkStream(left, Origin("http", "127.0.0.1", 80))) for left, _ in pairs]
    for left, _ in pairs:
        left.setblocking(False)
    waited: list[object] = []
    real = anyio.wait_readable

    async def scenario() -> list[tuple[int, int]]:
        waiting = anyio.Event()

        async def recording(obj: Any) -> None:
            waited.append(obj)
            waiting.set()
            await real(obj)

        monkeypatch.setattr(anyio, "wait_readable", recording)
        done: list[tuple[int, int]] = []

        def finish(key: int, c: HTTP11Connection, outcome: RawResponse | TransportError) -> None:
            assert isinstance(outcome, RawResponse)
            done.append((key, outcome.status))

        for conn in conns:
            conn.begin_response(False)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read_responses, list(enumerate(conns)), finish)
                await waiting.wait()  # the reader waits: nothing has been answered yet
                for _, right in pairs:
                    right.sendall(CL[:20])
                for _, right in pairs:
                    right.sendall(CL[20:])
        return done

    try:
        done = anyio.run(scenario, backend="trio")
    finally:
        for conn in conns:
            conn.close()
        for _, right in pairs:
            right.close()
    assert sorted(done) == [(key, 200) for key in range(5)]
    assert waited
    assert all(isinstance(obj, int) for obj in waited)  # the selector's own descriptor, no socket


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_tls_races_read_every_response_on_either_backend(backend: str) -> None:
    """TLS records read but not parsed yet keep a quiet socket in the reader's turn (trio's
    selector path, asyncio's loop callbacks): the safe service's seats each get one winner."""
    with start_sample_service(seats=3, tls=True) as service:
        config = RaceConfig(resources=(1, 2, 3), concurrency=10, timeout=10.0, sync="last-byte")
        plan = RacePlan(
            name="tls",
            config=config,
            target=TargetOptions(base_url=service.url, tls_verify=str(service.ca_path)),
            request=RequestSpec(
                "POST", "/orders", json=lambda a: {"seats": [a.resource], "user": f"u{a.client}"}
            ),
        )
        run = anyio.run(run_race, plan, backend=backend)
    statuses = sorted(r.status for r in run.records)
    assert statuses == [201] * 3 + [409] * 27, sorted({r.reason for r in run.records if r.reason})


def test_a_registered_socket_that_speaks_between_responses_is_let_go() -> None:
    """Bytes on an idle kept connection are left where early_answer looks; close unregisters."""
    left, right = socket.socketpair()
    left.setblocking(False)
    conn = HTTP11Connection(NetworkStream(left, Origin("http", "127.0.0.1", 80)))
    right.sendall(CL)

    async def scenario() -> tuple[list[int], str | None, bool]:
        loop = asyncio.get_running_loop()
        statuses: list[int] = []

        def finish(key: int, c: HTTP11Connection, outcome: RawResponse | TransportError) -> None:
            assert isinstance(outcome, RawResponse)
            statuses.append(outcome.status)

        conn.begin_response(False)
        # Nothing read yet: poll first, so the reader really registers the socket.
        with anyio.fail_after(5):
            await read_responses([(1, conn)], finish)
            conn.begin_response(False)
            right.sendall(CL[:10])
            loop.call_soon(right.sendall, CL[10:])  # runs once the reader waits on the loop
            await read_responses([(2, conn)], finish)
        assert conn.stream.unregister is not None
        let_go = anyio.Event()
        unregister = conn.stream.unregister

        def unregister_and_tell() -> None:
            unregister()
            let_go.set()

        conn.stream.unregister = unregister_and_tell
        right.sendall(b"HTTP/1.1 400 Bad")  # no response awaited now
        with anyio.fail_after(5):
            await let_go.wait()
        found = conn.early_answer()
        fd = left.fileno()
        conn.close()
        return statuses, found, loop.remove_reader(fd)

    statuses, found, still_registered = anyio.run(scenario)
    assert statuses[0] == 200
    assert found == ANSWERED
    assert still_registered is False
    right.close()
