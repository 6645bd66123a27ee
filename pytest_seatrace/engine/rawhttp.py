"""A raw HTTP/1.1 client connection for last-byte starts: our own socket, llhttp, optional TLS.

The engine owns its sockets because the final bytes of 100 requests must leave from one
loop with plain ``send()`` calls, back to back; asyncio's transports give no such control.
``TCP_NODELAY`` is set, or a held one-byte segment can wait ~40 ms for a delayed ACK. Over TLS
the final byte is pre-encrypted into its own record (``ssl.SSLObject`` over memory BIOs), so
the gate writes ready ciphertext just the same.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import h11
import httptools

from pytest_seatrace.core.records import BODY_KEEP
from pytest_seatrace.engine.limits import (
    FIELD_OVERHEAD,
    HEAD_TOO_LARGE,
    MAX_HEAD_READ,
    MAX_RESPONSE_HEAD,
    STATUS_FIELD,
    head_size,
)

RECV_SIZE = 65536
MAX_TLS_READS = 64
MAX_POLL_READS = 64
MAX_H11_EVENTS = 1 << 16
MAX_REPLAY = 65536
"""Bytes of a response kept for a replay into h11, once its head is complete."""
ANSWERED = "answered before its held bytes were sent"
CLOSED_EARLY = "server closed the connection before the held bytes were sent"


class TransportError(Exception):
    """A connection-level failure with a message meant for the user."""


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


@dataclass(slots=True)
class RawResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes | None
    end_ns: int
    keep_alive: bool


def _numeric_address(origin: Origin) -> list[tuple[socket.AddressFamily, tuple[Any, ...]]] | None:
    """An IP literal needs no resolver (asyncio's runs in a worker thread for every connection)."""
    try:
        ip = ipaddress.ip_address(origin.host)
    except ValueError:
        return None
    if ip.version == 6:
        return [(socket.AF_INET6, (origin.host, origin.port, 0, 0))]
    return [(socket.AF_INET, (origin.host, origin.port))]


def early_answers(conns: Sequence[RawConnection]) -> list[str | None]:
    """``early_answer()`` of every connection, with one ``poll()`` for all of them first: only
    a socket with something to read is looked at, instead of a peek (and its ``EAGAIN``) each."""
    if _poll is None or len(conns) < 2:
        return [conn.early_answer() for conn in conns]
    poller = _poll()
    for conn in conns:
        poller.register(conn.sock.fileno(), select.POLLIN)
    ready = {fd for fd, _ in poller.poll(0)}
    return [conn.early_answer() if conn._plain or conn.sock.fileno() in ready else None for conn in conns]


_poll = getattr(select, "poll", None)


class RawConnection:
    """One client's connection; reused across waves while the server keeps it alive."""

    def __init__(self, sock: socket.socket, origin: Origin, tls: ssl.SSLObject | None = None) -> None:
        self.sock = sock
        self.origin = origin
        self.tls = tls
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.final = b""
        self.closed = False
        self.idle_since = 0
        """When its last response ended (``perf_counter_ns``): a kept connection's idle age counts
        from here, against the server's keep-alive."""
        self._plain = b""
        """Decrypted bytes read ahead (an early answer found over TLS), parsed first."""
        self.reader = ResponseParser(origin.host)
        """This connection's responses, parsed as their bytes come."""
        self.waiter: Callable[[], None] | None = None
        """Told when the socket turns readable while a response is awaited (the wave reader)."""
        self.unregister: Callable[[], None] | None = None
        """Undoes the wave reader's registration of the socket with its loop."""

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    async def open(cls, origin: Origin, ssl_context: ssl.SSLContext | None) -> RawConnection:
        """Connect (and handshake over TLS); the caller bounds this with its timeout."""
        infos = _numeric_address(origin)
        if infos is None:
            try:
                infos = [
                    (family, addr)
                    for family, _, _, _, addr in await anyio.getaddrinfo(
                        origin.host, origin.port, type=socket.SOCK_STREAM
                    )
                ]
            except OSError as exc:
                raise TransportError(f"cannot resolve {origin.host}: {exc}") from None
        last: OSError | None = None
        for family, addr in infos:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                try:
                    sock.connect(addr)
                except BlockingIOError:
                    await anyio.wait_writable(sock)
                    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err)) from None
            except OSError as exc:
                sock.close()
                last = exc
                continue
            except BaseException:
                sock.close()
                raise
            conn = cls(sock, origin)
            if ssl_context is not None:
                try:
                    await conn._handshake(ssl_context)
                except BaseException:
                    conn.close()
                    raise
            return conn
        reason = (
            "connection refused" if isinstance(last, ConnectionRefusedError) else f"cannot connect ({last})"
        )
        raise TransportError(f"{reason} to {origin.url}")

    async def _handshake(self, context: ssl.SSLContext) -> None:
        self.tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=self.origin.host)
        while True:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                await self.send_all(self._outgoing.read())
                if not await self._receive_ciphertext():
                    raise TransportError(
                        f"TLS handshake with {self.origin.url} failed: connection closed"
                    ) from None
            except ssl.SSLError as exc:
                raise TransportError(f"TLS handshake with {self.origin.url} failed: {exc}") from None
            else:
                await self.send_all(self._outgoing.read())
                return

    # -- writing ---------------------------------------------------------------------------

    async def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                sent = self.sock.send(view)
            except BlockingIOError:
                await anyio.wait_writable(self.sock)
                continue
            view = view[sent:]

    def _encrypt(self, data: bytes) -> bytes:
        if self.tls is None:
            return data
        self.tls.write(data)
        return self._outgoing.read()

    def write_prefix(self, request: bytes, held_from: int) -> bytes:
        """Write what fits of ``request`` up to ``held_from`` and hold the rest (encrypted as its
        own record over TLS); return what is left of the prefix to send (nearly always nothing:
        requests are small)."""
        if self.tls is None:
            data, self.final = request[:held_from], request[held_from:]
        else:
            data, self.final = self._encrypt(request[:held_from]), self._encrypt(request[held_from:])
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        return data[sent:]

    async def prepare(self, request: bytes, held_from: int) -> None:
        """Write ``request`` up to ``held_from``, waiting for the socket if it must."""
        rest = self.write_prefix(request, held_from)
        if rest:
            await self.send_all(rest)

    def finish_final(self, sent: int) -> None:
        """The rest of the held bytes after a short send (a full socket buffer), without delay."""
        self.sock.setblocking(True)
        try:
            self.sock.sendall(self.final[sent:])
        finally:
            self.sock.setblocking(False)

    def early_answer(self) -> str | None:
        """What came back before the held bytes went out: ``None`` (nothing, ready to go),
        ``ANSWERED`` (a response is waiting: it is read like any other), or why the
        connection is gone.

        Over TLS, bytes may wait that are no answer (TLS 1.3 session tickets): only decrypted
        application data counts, and it is kept for the response parser.
        """
        if self.tls is not None:
            return self._early_tls_answer(self.tls)
        try:
            data = self.sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return None
        except OSError as exc:
            return f"connection lost before the held bytes were sent: {exc}"
        if not data:
            return CLOSED_EARLY
        return ANSWERED

    def _early_tls_answer(self, tls: ssl.SSLObject) -> str | None:
        if self._plain:
            return ANSWERED
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            data = None
        except OSError as exc:
            return f"connection lost before the held bytes were sent: {exc}"
        if data == b"":
            return CLOSED_EARLY
        if data:
            self._incoming.write(data)
        try:
            plain = tls.read(RECV_SIZE)
        except ssl.SSLWantReadError:
            return None
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return CLOSED_EARLY
        except ssl.SSLError as exc:
            return f"TLS error before the held bytes were sent: {exc}"
        if not plain:
            return CLOSED_EARLY
        self._plain = plain  # the start of the early answer: the parser reads it first
        return ANSWERED

    # -- reading ---------------------------------------------------------------------------

    async def _receive_ciphertext(self) -> bool:
        """Move the next bytes from the socket into the TLS object; False at EOF."""
        while True:
            await anyio.wait_readable(self.sock)
            try:
                data = self.sock.recv(RECV_SIZE)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise TransportError(f"connection lost: {exc}") from None
            if data:
                self._incoming.write(data)
                return True
            self._incoming.write_eof()
            return False

    def pull(self) -> bytes | None:
        """The bytes the socket has now (decrypted over TLS), without waiting: ``None`` when
        there are none yet, ``b""`` at the end of the stream."""
        if self.tls is None:
            try:
                return self.sock.recv(RECV_SIZE)
            except BlockingIOError:
                return None
            except OSError as exc:
                raise TransportError(f"connection lost: {exc}") from None
        if self._plain:
            plain, self._plain = self._plain, b""
            return plain
        for _ in range(MAX_TLS_READS):  # each pass moves socket bytes into TLS, or returns
            try:
                return self.tls.read(RECV_SIZE)
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            except ssl.SSLError as exc:
                raise TransportError(f"TLS error: {exc}") from None
            try:
                data = self.sock.recv(RECV_SIZE)
            except BlockingIOError:
                return None
            except OSError as exc:
                raise TransportError(f"connection lost: {exc}") from None
            if data:
                self._incoming.write(data)
            else:
                self._incoming.write_eof()
        return None  # more to decrypt: the socket stays readable, so the caller comes back

    def buffered(self) -> bool:
        """Bytes already read off the socket wait to be parsed (over TLS): its readiness will
        not say so."""
        tls = self.tls
        return bool(self._plain) or (tls is not None and bool(tls.pending() or self._incoming.pending))

    async def _fill(self) -> bytes:
        """Wait for and read the next bytes from the socket (decrypted if TLS); b"" at EOF."""
        while True:
            data = self.pull()
            if data is not None:
                return data
            await anyio.wait_readable(self.sock)

    def begin_response(self, keep_body: bool, *, method: bytes = b"GET", closes: bool = False) -> None:
        """Expect the response to a request: ``method`` and ``closes`` (it said ``Connection:
        close``) are the request's; ``keep_body``: the whole body (a predicate needs it), else
        its first KiB, enough for the reports."""
        self.reader.begin(keep_body, method, closes)

    def poll_response(self) -> RawResponse | None:
        """Whatever the socket has now, parsed: the response once it is complete, else ``None``."""
        reader, sock = self.reader, self.sock
        for _ in range(MAX_POLL_READS):  # a response bigger than this many reads: come back later
            if self.tls is None:  # pull(), inlined for plain sockets: once per response
                try:
                    data = sock.recv(RECV_SIZE)
                except BlockingIOError:
                    return None
                except OSError as exc:
                    raise TransportError(f"connection lost: {exc}") from None
            else:
                tls_data = self.pull()
                if tls_data is None:
                    return None
                data = tls_data
            response = reader.feed(data)
            if response is not None:
                return response
        return None

    async def read_response(
        self, keep_body: bool, *, method: bytes = b"GET", closes: bool = False
    ) -> RawResponse:
        """Wait for and read one response (see ``begin_response``)."""
        self.begin_response(keep_body, method=method, closes=closes)
        reader = self.reader
        while True:  # ends at the response, or at the end of the stream (feed(b"") never waits)
            response = reader.feed(await self._fill())
            if response is not None:
                return response

    def close(self) -> None:
        if self.unregister is not None:  # before the socket's number is freed for another
            self.unregister()
        self.waiter = None
        if not self.closed:
            self.closed = True
            self.sock.close()
        self.reader.close()


class ResponseParser:
    """One connection's responses, fed as their bytes come: ``feed`` returns each when complete.

    ``httptools`` (llhttp) parses them. What llhttp cannot end on its own, or anything unusual
    (a response to ``HEAD``: llhttp would wait for the body its Content-Length announces; a
    close-delimited body; a 1xx; a parse error; the stream ending mid-response), is replayed
    into h11 from the response's first byte, so those cases behave, and fail with the messages,
    exactly as they did when h11 parsed everything.
    """

    __slots__ = (
        "_closes",
        "_h11",
        "_host",
        "_keep_body",
        "_kept",
        "_method",
        "_raw",
        "_replayed",
        "_state",
        "_truncated",
    )

    def __init__(self, host: str) -> None:
        self._host = host.encode("idna")
        self._state = _Response()
        """llhttp's callbacks; its parser is made at the first response and kept."""
        self._h11: h11.Connection | None = None
        """Set while a response is replayed into h11."""
        self._replayed = _Replayed()
        self._raw: list[bytes] = []
        """The bytes of the response so far, kept for a replay into h11 (``MAX_REPLAY`` once its
        head is in: a body is never kept whole unless a predicate needs it)."""
        self._kept, self._truncated = 0, False
        self._keep_body, self._method, self._closes = False, b"GET", False

    def begin(self, keep_body: bool, method: bytes, closes: bool) -> None:
        self._keep_body, self._method, self._closes = keep_body, method, closes
        self._raw = []
        self._kept, self._truncated = 0, False
        self._h11 = None
        if method == b"HEAD":
            self._start_h11(b"")
            return
        state = self._state
        if state.parser is None:
            state.parser = httptools.HttpResponseParser(state)
        state.begin(keep_body)

    @property
    def begun(self) -> bool:
        """Whether any byte of the expected response has arrived."""
        return bool(self._raw or self._kept or self._truncated or self._state.status or self._replayed.status)

    def feed(self, data: bytes) -> RawResponse | None:
        """The response, once ``data`` (``b""``: the end of the stream) completes it."""
        if self._h11 is not None:
            return self._feed_h11(self._h11, data)
        state = self._state
        parser = state.parser
        if parser is None:
            raise RuntimeError("ResponseParser.begin() first")
        if not data:
            if not self._raw:
                raise TransportError("server closed the connection without answering")
            if self._truncated:
                raise TransportError("server closed the connection mid-response")
            conn = self._start_h11(b"".join(self._raw))
            return self._h11_events(conn) or self._feed_h11(conn, b"")
        if self._kept < MAX_REPLAY or not state.status:
            self._raw.append(data)
            self._kept += len(data)
        else:  # a long body: no replay will need it (a replay starts at the head)
            self._truncated = True
        try:
            parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not state.done:
                if self._truncated:  # deep in a long body: no replay, llhttp's own words
                    raise TransportError(f"malformed response: {exc}") from None
                state.odd = True
            state.extra = True  # whatever came after the response: the connection is not reused
        if state.head_size > MAX_RESPONSE_HEAD or (not state.status and self._kept > MAX_HEAD_READ):
            raise TransportError(HEAD_TOO_LARGE)
        if state.odd:
            return self._h11_events(self._start_h11(b"".join(self._raw)))
        if not state.done:
            return None
        keep = state.keep_alive and not state.extra and not self._closes
        return RawResponse(state.status, state.headers, b"".join(state.chunks), state.end_ns, keep)

    def _start_h11(self, replay: bytes) -> h11.Connection:
        self._state.parser = None  # llhttp is left mid-message: a fresh parser for the next one
        conn = self._h11 = h11.Connection(our_role=h11.CLIENT, max_incomplete_event_size=MAX_HEAD_READ)
        head = [(b"host", self._host)] + ([(b"connection", b"close")] if self._closes else [])
        conn.send(h11.Request(method=self._method, target=b"/", headers=head))
        conn.send(h11.EndOfMessage())
        self._replayed = _Replayed()
        self._raw = []
        if replay:
            conn.receive_data(replay)
        return conn

    def _feed_h11(self, conn: h11.Connection, data: bytes) -> RawResponse | None:
        if not data and self._replayed.status == 0:
            raise TransportError("server closed the connection without answering")
        conn.receive_data(data)
        return self._h11_events(conn)

    def _h11_events(self, conn: h11.Connection) -> RawResponse | None:
        seen = self._replayed
        for _ in range(MAX_H11_EVENTS):  # each event consumes bytes received; NEED_DATA returns
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                if exc.error_status_hint == 431:  # h11's "Receive buffer too long": a head without end
                    raise TransportError(HEAD_TOO_LARGE) from None
                raise TransportError(f"malformed response: {exc}") from None
            if event is h11.NEED_DATA:
                return None
            if isinstance(event, h11.Response):
                seen.status, seen.headers = event.status_code, list(event.headers)
                if head_size(seen.headers) > MAX_RESPONSE_HEAD:
                    raise TransportError(HEAD_TOO_LARGE)
            elif isinstance(event, h11.Data):
                if self._keep_body or seen.kept < BODY_KEEP:
                    seen.chunks.append(bytes(event.data))
                    seen.kept += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                end = time.perf_counter_ns()
                leftover, _ = conn.trailing_data
                keep_alive = conn.our_state is h11.DONE and conn.their_state is h11.DONE and not leftover
                return RawResponse(seen.status, seen.headers, b"".join(seen.chunks), end, keep_alive)
            elif isinstance(event, h11.ConnectionClosed):
                raise TransportError("server closed the connection mid-response")
        raise TransportError("malformed response: too many events")

    def close(self) -> None:
        self._state.parser = None  # the parser holds the state's callbacks: break the cycle
        self._h11 = None


class _Replayed:
    """What h11 has parsed so far of a replayed response."""

    __slots__ = ("chunks", "headers", "kept", "status")

    def __init__(self) -> None:
        self.status = self.kept = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []


class _Response:
    """httptools' callbacks for one connection: the response being read.

    A response is complete at ``on_message_complete``. Anything llhttp cannot finish the way h11
    would is flagged ``odd`` (the caller replays it into h11): a 1xx, and a body that only the
    connection's close can end (no Content-Length, no chunked coding; not a 204 or 304).
    """

    __slots__ = (
        "chunks",
        "done",
        "end_ns",
        "extra",
        "framed",
        "head_size",
        "headers",
        "keep_alive",
        "keep_body",
        "kept",
        "odd",
        "parser",
        "status",
    )

    def __init__(self) -> None:
        self.parser: httptools.HttpResponseParser | None = None
        self.begin(False)

    def begin(self, keep_body: bool) -> None:
        self.keep_body = keep_body
        self.status = self.end_ns = self.kept = 0
        self.head_size = STATUS_FIELD
        """The head's fields so far, as ``MAX_RESPONSE_HEAD`` counts them."""
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.done = self.extra = self.odd = self.framed = self.keep_alive = False

    def on_message_begin(self) -> None:
        if self.done:
            self.extra = True  # a second message: nothing the engine asked for

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.done or self.status:  # a chunked body's trailers: h11 leaves them out too
            return
        name = name.lower()
        if name == b"content-length":
            self.framed = True
        elif name == b"transfer-encoding":  # chunked when it is the last coding, else close-delimited
            self.framed = value.rstrip(b" \t").lower().endswith(b"chunked")
        value = value.rstrip(b" \t")  # h11 strips trailing whitespace too
        self.head_size += FIELD_OVERHEAD + len(name) + len(value)
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.done or self.parser is None:
            return
        self.status = status = self.parser.get_status_code()
        if status < 200 or not (self.framed or status in (204, 304)):
            self.odd = True

    def on_body(self, body: bytes) -> None:
        if not self.done and (self.keep_body or self.kept < BODY_KEEP):
            self.chunks.append(body)
            self.kept += len(body)

    def on_message_complete(self) -> None:
        if self.done or self.parser is None:
            self.extra = True
            return
        self.end_ns = time.perf_counter_ns()
        self.done = True
        parser = self.parser
        # h11's rule: HTTP/1.1 or later, and no "close" in Connection (llhttp checks that one).
        self.keep_alive = parser.should_keep_alive() and parser.get_http_version() >= "1.1"
