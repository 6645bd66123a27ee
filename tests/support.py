"""Loopback servers the tests start themselves: small ASGI apps under uvicorn, raw sockets for faults."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import h11
import httpx
import uvicorn

from tests.wire import read_request

INNER_INI = (
    "[pytest]\naddopts = -p no:benchmark\n"
    "asyncio_default_fixture_loop_scope = function\n"
    # In-process runs see pytest_seatrace imported by the outer session already.
    "filterwarnings =\n    error\n    ignore::pytest.PytestAssertRewriteWarning\n"
)

SEATS_CONFTEST = """
import json
import pytest


class Seats:
    \"\"\"First request per path wins (201), later ones get a 409; ``/reset`` frees every seat.\"\"\"

    def __init__(self):
        self.taken = set()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        if scope["path"] == "/reset":
            self.taken.clear()
            status = 200
        else:
            status = 409 if scope["path"] in self.taken else 201
            self.taken.add(scope["path"])
        body = json.dumps({"ok": status == 201}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def seats(race):
    race.app = Seats()
    return race
"""
"""A conftest for inner pytester runs: the ``seats`` fixture, a race on an in-process ASGI seat
service (no socket)."""


def interrupted_race_test(marker: str) -> str:
    """An inner test file whose race sends itself SIGINT (what Ctrl-C does) at its second reset;
    ``marker`` is the ``@pytest.mark.race`` arguments."""
    return f"""
import os
import signal
import pytest

@pytest.mark.race({marker})
def test_interrupted(race, sample_service):
    calls = []

    def reset():
        calls.append(1)
        sample_service.reset()
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)

    race.post(sample_service.url + "/orders",
              json=lambda a: {{"seats": [a.resource], "user": a.key}}, reset=reset)
"""


Scope = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[dict[str, Any]], Any]


# -- set-ups against the sample service's --auth: log in per client, then book as that user --


def order(a: Any) -> dict[str, Any]:
    """One seat per resource, booked as the client's own user (the one ``login`` made)."""
    return {"seats": [a.resource], "user": f"u{a.client}-{a.resource}"}


async def login(a: Any) -> str:
    """``setup=``: log the client in and return its token (``a.setup`` of the raced request)."""
    response = await a.http.post("/login", json={"user": f"u{a.client}-{a.resource}"})
    response.raise_for_status()
    token: str = response.json()["token"]
    return token


def bearer(a: Any) -> dict[str, str]:
    """``headers=``: the token the client's ``setup=`` returned."""
    return {"Authorization": f"Bearer {a.setup}"}


def httpx_wire_bytes(request: httpx.Request) -> bytes:
    """How httpcore writes ``request``: h11, through a fresh client state machine."""
    conn = h11.Connection(our_role=h11.CLIENT)
    head = h11.Request(method=request.method, target=request.url.raw_path, headers=request.headers.raw)
    body = request.read()
    data = conn.send(head) or b""
    if body:
        data += conn.send(h11.Data(data=body)) or b""
    return data + (conn.send(h11.EndOfMessage()) or b"")


def count_h11_connections(monkeypatch: Any) -> list[int]:
    """Count the h11 state machines made from now on (one list item each): the wire builder
    must run h11 once per distinct request head, never per request."""
    made: list[int] = []
    real = h11.Connection

    def counting(*args: Any, **kwargs: Any) -> h11.Connection:
        made.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(h11, "Connection", counting)
    return made


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    return sock


@contextlib.contextmanager
def serve_app(app: Any, startup_timeout: float = 10.0, tls: tuple[str, str] | None = None) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread on a socket bound here; yield its base URL.

    ``tls`` = (certificate chain PEM path, key PEM path) serves https.
    """
    sock = bound_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        backlog=4096,
        timeout_graceful_shutdown=1,
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"test server not serving on port {port}")
        time.sleep(0.005)
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


async def read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


class FirstWins:
    """An ASGI seat service for inner runs: the first request per path wins (201, ``{}``);
    ``later(body)`` gives every later request's status and JSON answer."""

    def __init__(self, later: Callable[[bytes], tuple[int, Any]]) -> None:
        self.taken: set[str] = set()
        self.later = later

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_body(receive)
        if scope["path"] in self.taken:
            status, said = self.later(body)
        else:
            self.taken.add(scope["path"])
            status, said = 201, {}
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": json.dumps(said).encode()})


def app_conftest(fixture: str, app: str, setup: str = "") -> str:
    """An inner conftest whose fixture ``fixture`` is the ``race`` fixture racing the ASGI app
    ``app`` (an expression that may use ``FirstWins`` and what ``setup`` defines)."""
    return (
        f"import pytest\n\nfrom tests.support import FirstWins\n{setup}\n\n"
        f"@pytest.fixture\ndef {fixture}(race):\n    race.app = {app}\n    return race\n"
    )


async def respond(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class OneWinnerApp:
    """Answers 200 to everyone; the body says who won: ``{"ok": true}`` once per resource path.

    A service that judges by body, not status: only a ``success=`` predicate can see the winner.
    ``status_for_losers`` and ``fail_every`` make it answer otherwise to exercise classification.
    """

    def __init__(self, *, loser_status: int = 200, fail_every: int = 0, delay: float = 0.0) -> None:
        self.taken: set[str] = set()
        self.count = 0
        self.loser_status = loser_status
        self.fail_every = fail_every
        self.delay = delay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)
        path = scope["path"]
        if path == "/reset":
            self.taken.clear()
            await respond(send, 200, {"ok": True})
            return
        self.count += 1
        if self.delay:
            await anyio.sleep(self.delay)
        if self.fail_every and self.count % self.fail_every == 0:
            await respond(send, 500, {"error": "boom"})
            return
        if path in self.taken:
            await respond(send, self.loser_status, {"ok": False})
            return
        self.taken.add(path)
        await respond(send, 200, {"ok": True})


@contextlib.contextmanager
def raw_server(handle: Callable[[socket.socket], None], clients: int = 1000) -> Iterator[str]:
    """A socket server that runs ``handle(conn)`` per connection in a thread (for faults)."""
    sock = bound_socket()
    port = sock.getsockname()[1]
    stop = threading.Event()
    conns: list[socket.socket] = []

    def loop() -> None:
        sock.settimeout(0.05)
        while not stop.is_set() and len(conns) < clients:
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conns.append(conn)
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for conn in conns:
            conn.close()
        sock.close()


@contextlib.contextmanager
def hung_server() -> Iterator[str]:
    """Accepts every connection, reads what comes, never answers."""

    def handle(conn: socket.socket) -> None:
        conn.settimeout(10)
        with contextlib.suppress(OSError):
            while conn.recv(65536):
                pass

    with raw_server(handle) as url:
        yield url


def read_request_head(conn: socket.socket, timeout: float = 5.0) -> bytes:
    """Read until the end of the request head (or timeout); what a server sees before answering."""
    data = b""
    with contextlib.suppress(OSError):  # closed under us (the server stopping): what came so far
        conn.settimeout(timeout)
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    return data


@contextlib.contextmanager
def closing_after_answer_server(delay_s: float = 0.005, *, head_body: bytes = b"") -> Iterator[str]:
    """A correct seat service whose server keeps each connection for one request only, without
    saying so: it answers with ``Connection: keep-alive`` and closes ``delay_s`` after answering.

    The first request per path wins (201), later ones get 409; ``POST /reset`` frees every seat.
    ``head_body``: written after the head of a response to ``HEAD`` (a misbehaving server)."""
    taken: set[bytes] = set()
    lock = threading.Lock()

    def handle(conn: socket.socket) -> None:
        line = None
        with contextlib.suppress(OSError):
            line = read_request(conn, bytearray(), timeout=5)
        if line is None:
            conn.close()
            return
        method, path = line.split(b" ")[:2]
        with lock:
            if path == b"/reset":
                taken.clear()
                status = b"200 OK"
            elif method == b"HEAD" or path in taken:
                status = b"409 Conflict" if method != b"HEAD" else b"200 OK"
            else:
                taken.add(path)
                status = b"201 Created"
        payload = json.dumps({"won": status.startswith(b"201")}).encode()
        reply = (
            b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
            b"content-length: " + str(len(payload)).encode() + b"\r\nconnection: keep-alive\r\n\r\n"
        )
        reply += head_body if method == b"HEAD" else payload
        with contextlib.suppress(OSError):
            conn.sendall(reply)
            time.sleep(delay_s)  # the server's own keep-alive policy, not synchronisation
        conn.close()

    with raw_server(handle) as url:
        yield url
