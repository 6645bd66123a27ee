"""A raw HTTP/1.1 client connection for last-byte starts: our own socket, llhttp, optional TLS.

The engine owns its sockets because the final bytes of 100 requests must leave from one
loop with plain ``send()`` calls, back to back; asyncio's transports give no such control.
``TCP_NODELAY`` is set, or a held one-byte segment can wait ~40 ms for a delayed ACK. Over TLS
the final byte is pre-encrypted into its own record (``ssl.SSLObject`` over memory BIOs), so
the gate writes ready ciphertext just the same.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from dataclasses import dataclass

import anyio
import h11
import httptools

from pytest_seatrace.core.records import BODY_KEEP

RECV_SIZE = 65536
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
        self._plain = b""
        """Decrypted bytes read ahead (an early answer found over TLS), parsed first."""
        self._parser: httptools.HttpResponseParser | None = None
        self._state: _Response | None = None
        """The response parser, made at the first response and kept while the connection is."""

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    async def open(cls, origin: Origin, ssl_context: ssl.SSLContext | None) -> RawConnection:
        """Connect (and handshake over TLS); the caller bounds this with its timeout."""
        try:
            infos = await anyio.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise TransportError(f"cannot resolve {origin.host}: {exc}") from None
        last: OSError | None = None
        for family, _, _, _, addr in infos:
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
        data = self._encrypt(request[:held_from])
        self.final = self._encrypt(request[held_from:])
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

    async def _fill(self) -> bytes:
        """Wait for and read the next bytes from the socket (decrypted if TLS); b"" at EOF."""
        if self.tls is None:
            while True:
                await anyio.wait_readable(self.sock)
                try:
                    return self.sock.recv(RECV_SIZE)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise TransportError(f"connection lost: {exc}") from None
        if self._plain:
            plain, self._plain = self._plain, b""
            return plain
        while True:
            try:
                return self.tls.read(RECV_SIZE)
            except ssl.SSLWantReadError:
                if not await self._receive_ciphertext():
                    return b""
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b""
            except ssl.SSLError as exc:
                raise TransportError(f"TLS error: {exc}") from None

    async def read_response(
        self, keep_body: bool, *, method: bytes = b"GET", closes: bool = False
    ) -> RawResponse:
        """Read one response: the whole body when a predicate needs it (``keep_body``), else its
        first KiB, enough for the reports.

        ``httptools`` (llhttp) parses it. What llhttp cannot end on its own, or anything unusual
        (a response to ``HEAD``, a close-delimited body, a 1xx, a parse error, the connection
        closed mid-response), is replayed into h11 from the response's first byte, so those
        cases behave, and fail with the messages, exactly as they always did. ``method`` and
        ``closes`` (the request said ``Connection: close``) are the request's, as h11 needs them.
        """
        if method == b"HEAD":  # llhttp would wait for the body its Content-Length announces
            return await self._read_h11(keep_body, method, closes, b"")
        parser, state = self._parser, self._state
        if parser is None or state is None:
            state = self._state = _Response()
            parser = self._parser = httptools.HttpResponseParser(state)
            state.parser = parser
        state.begin(keep_body)
        raw: list[bytes] = []
        while True:
            data = await self._fill()
            if not data:
                if not raw:
                    raise TransportError("server closed the connection without answering")
                return await self._read_h11(keep_body, method, closes, b"".join(raw), eof=True)
            raw.append(data)
            try:
                parser.feed_data(data)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade):
                if not state.done:
                    state.odd = True
                state.extra = True  # whatever came after the response: the connection is not reused
            if state.odd:
                return await self._read_h11(keep_body, method, closes, b"".join(raw))
            if state.done:
                keep = state.keep_alive and not state.extra and not closes
                return RawResponse(state.status, state.headers, b"".join(state.chunks), state.end_ns, keep)

    async def _read_h11(
        self, keep_body: bool, method: bytes, closes: bool, replay: bytes, eof: bool = False
    ) -> RawResponse:
        """The response parsed by h11, starting from ``replay`` (its bytes read so far) and then
        the socket (``eof``: the socket is at its end already)."""
        self._parser = self._state = None  # a replayed response leaves llhttp mid-message
        conn = h11.Connection(our_role=h11.CLIENT)
        head = [(b"host", self.origin.host.encode("idna"))] + ([(b"connection", b"close")] if closes else [])
        conn.send(h11.Request(method=method, target=b"/", headers=head))
        conn.send(h11.EndOfMessage())
        if replay:
            conn.receive_data(replay)
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        kept = 0
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise TransportError(f"malformed response: {exc}") from None
            if event is h11.NEED_DATA:
                data = b"" if eof else await self._fill()
                if not data and status == 0:
                    raise TransportError("server closed the connection without answering")
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = list(event.headers)
            elif isinstance(event, h11.Data):
                if keep_body or kept < BODY_KEEP:
                    chunks.append(bytes(event.data))
                    kept += len(event.data)
            elif isinstance(event, h11.EndOfMessage):
                end = time.perf_counter_ns()
                leftover, _ = conn.trailing_data
                keep_alive = conn.our_state is h11.DONE and conn.their_state is h11.DONE and not leftover
                return RawResponse(status, headers, b"".join(chunks), end, keep_alive)
            elif isinstance(event, h11.ConnectionClosed):
                raise TransportError("server closed the connection mid-response")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()
        if self._state is not None:
            self._state.parser = None  # the parser holds the state's callbacks: break the cycle
        self._parser = self._state = None


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
        self.headers.append((name, value.rstrip(b" \t")))  # h11 strips trailing whitespace too

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
