"""A raw HTTP/1.1 client connection for last-byte starts: our own socket, h11, optional TLS.

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
        self.h11 = h11.Connection(our_role=h11.CLIENT)
        self.final = b""
        self.closed = False
        self._plain = b""
        """Decrypted bytes read ahead (an early answer found over TLS), parsed first."""

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

    async def read_response(self, keep_body: bool) -> RawResponse:
        """Parse one response with h11: the whole body when a predicate needs it (``keep_body``),
        else only its first chunk, enough for a winner's first KiB in the reports."""
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise TransportError(f"malformed response: {exc}") from None
            if event is h11.NEED_DATA:
                data = await self._fill()
                if not data and status == 0:
                    raise TransportError("server closed the connection without answering")
                self.h11.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
                headers = list(event.headers)
            elif isinstance(event, h11.Data):
                if keep_body or len(chunks) == 0:
                    chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                end = time.perf_counter_ns()
                keep_alive = self.h11.our_state is h11.DONE and self.h11.their_state is h11.DONE
                if keep_alive:
                    self.h11.start_next_cycle()
                body = b"".join(chunks)
                return RawResponse(status, headers, body, end, keep_alive)
            elif isinstance(event, h11.ConnectionClosed):
                raise TransportError("server closed the connection mid-response")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.sock.close()
