"""The network stream both protocols speak over: our own socket, optional TLS, held bytes.

The engine owns its sockets because the held bytes of 100 requests must leave from one loop
with plain ``send()`` calls, back to back; asyncio's transports give no such control.
``TCP_NODELAY`` is set, or a held one-byte segment can wait ~40 ms for a delayed ACK. Over TLS
the held bytes are encrypted ahead into their own record (``ssl.SSLObject`` over memory BIOs),
so the release writes ready ciphertext just the same. HTTP/1.1 (``engine.http11``) and HTTP/2
(``engine.http2``) read and write through this one class, as httpcore's protocol connections
speak over its ``_backends`` network stream.
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import ssl
import struct
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel

RECV_SIZE = 65536
MAX_TLS_READS = 64
H2_ALPN = ("h2", "http/1.1")
H1_ALPN = ("http/1.1",)
"""ALPN of the engine's own contexts: a server must never pick h2 and then receive HTTP/1.1."""
ANSWERED = "answered before its held bytes were sent"
CLOSED_EARLY = "server closed the connection before the held bytes were sent"


class TransportError(Exception):
    """A connection-level failure with a message meant for the user."""


class ConnectionLost(TransportError):
    """The socket failed (a reset, a broken pipe); ``cause`` for a protocol's own wording."""

    def __init__(self, cause: OSError) -> None:
        super().__init__(f"connection lost: {cause}")
        self.cause = cause


class TLSFailure(TransportError):
    """The TLS layer refused what came in; ``cause`` for a protocol's own wording."""

    def __init__(self, cause: ssl.SSLError) -> None:
        super().__init__(f"TLS error: {cause}")
        self.cause = cause


@dataclass(frozen=True, slots=True)
class Origin:
    scheme: str
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def _numeric_address(origin: Origin) -> list[tuple[socket.AddressFamily, tuple[Any, ...]]] | None:
    """An IP literal needs no resolver (asyncio's runs in a worker thread for every connection)."""
    try:
        ip = ipaddress.ip_address(origin.host)
    except ValueError:
        return None
    if ip.version == 6:
        return [(socket.AF_INET6, (origin.host, origin.port, 0, 0))]
    return [(socket.AF_INET, (origin.host, origin.port))]


async def _addresses(origin: Origin) -> list[tuple[socket.AddressFamily, tuple[Any, ...]]]:
    infos = _numeric_address(origin)
    if infos is not None:
        return infos
    try:
        found = await anyio.getaddrinfo(origin.host, origin.port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise TransportError(f"cannot resolve {origin.host}: {exc}") from None
    return [(family, addr) for family, _, _, _, addr in found]


def early_answers(streams: Sequence[NetworkStream]) -> list[str | None]:
    """``early_answer()`` of every stream, with one ``poll()`` for all of them first: only
    a socket with something to read is looked at, instead of a peek (and its ``EAGAIN``) each."""
    if _poll is None or len(streams) < 2:
        return [stream.early_answer() for stream in streams]
    poller = _poll()
    for stream in streams:
        poller.register(stream.sock.fileno(), select.POLLIN)
    ready = {fd for fd, _ in poller.poll(0)}
    return [
        stream.early_answer() if stream.read_ahead or stream.sock.fileno() in ready else None
        for stream in streams
    ]


_poll = getattr(select, "poll", None)


def data_segments_out(sock: socket.socket) -> int | None:
    """Linux ``tcpi_data_segs_out`` (segments that carried data, pure ACKs left out), else None.

    Its offset in ``struct tcp_info`` (linux/tcp.h) is 156 since Linux 4.6.
    """
    if not sys.platform.startswith("linux") or not hasattr(socket, "TCP_INFO"):
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return None
    if len(info) < 160:
        return None
    value: int = struct.unpack_from("=I", info, 156)[0]
    return value


class NetworkStream:
    """One connection's socket and TLS state: what goes out, what comes in, what is held."""

    def __init__(self, sock: socket.socket, origin: Origin) -> None:
        self.sock = sock
        self.origin = origin
        self.tls: ssl.SSLObject | None = None
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self.held = b""
        """The bytes held for the release, encrypted already over TLS (``hold``)."""
        self.closed = False
        self.ended = False
        """No more bytes will come: ``pull`` returned ``b""`` or failed."""
        self._plain = b""
        """Decrypted bytes read ahead (an early answer found over TLS), handed out first."""
        self.waiter: Callable[[], None] | None = None
        """Told when the socket turns readable while a response is awaited (the wave reader)."""
        self.unregister: Callable[[], None] | None = None
        """Undoes the wave reader's registration of the socket with its loop."""

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    async def open(cls, origin: Origin, ssl_context: ssl.SSLContext | None) -> NetworkStream:
        """Connect (and handshake over TLS); the caller bounds this with its timeout."""
        last: OSError | None = None
        for family, addr in await _addresses(origin):
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
            stream = cls(sock, origin)
            if ssl_context is not None:
                try:
                    await stream._handshake(ssl_context)
                except BaseException:
                    stream.close()
                    raise
            return stream
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

    async def _receive_ciphertext(self) -> bool:
        """Move the next bytes from the socket into the TLS object; False at EOF."""
        while True:
            await anyio.wait_readable(self.sock)
            try:
                data = self.sock.recv(RECV_SIZE)
            except BlockingIOError:
                continue
            except OSError as exc:
                raise ConnectionLost(exc) from None
            if data:
                self._incoming.write(data)
                return True
            self._incoming.write_eof()
            return False

    @property
    def alpn(self) -> str | None:
        """The protocol TLS ALPN chose (``None`` in cleartext or when none was)."""
        return None if self.tls is None else self.tls.selected_alpn_protocol()

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

    def encrypt(self, data: bytes) -> bytes:
        """``data`` as it goes on the wire: one TLS record of it, or itself in cleartext."""
        if self.tls is None or not data:
            return data
        self.tls.write(data)
        return self._outgoing.read()

    def send_now(self, data: bytes) -> bytes:
        """Send what the socket takes now; return the rest (nearly always nothing)."""
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        return data[sent:]

    def hold(self, data: bytes) -> None:
        """Keep ``data`` for the release, encrypted now (after every record sent before it)."""
        self.held = self.encrypt(data)

    def finish_held(self, sent: int) -> None:
        """The rest of the held bytes after a short send (a full socket buffer), without delay."""
        self.sock.setblocking(True)
        try:
            self.sock.sendall(self.held[sent:])
        finally:
            self.sock.setblocking(False)

    # -- reading ---------------------------------------------------------------------------

    @property
    def read_ahead(self) -> bool:
        """Decrypted bytes were read ahead (an early answer over TLS): they come out first."""
        return bool(self._plain)

    def early_answer(self) -> str | None:
        """What came back before the held bytes went out: ``None`` (nothing, ready to go),
        ``ANSWERED`` (an answer is waiting: it is read like any other), or why the connection is
        gone.

        Over TLS, bytes may wait that are no answer (TLS 1.3 session tickets): only decrypted
        application data counts, and it is kept for the next ``pull``.
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
        self._plain = plain  # the start of the early answer: the next pull hands it out
        return ANSWERED

    def pull(self) -> bytes | None:
        """The bytes the socket has now (decrypted over TLS), without waiting: ``None`` when
        there are none yet, ``b""`` at the end of the stream (``ended`` is then set)."""
        tls = self.tls
        if tls is None:  # the hot path of every plain read: no call beyond recv
            try:
                data = self.sock.recv(RECV_SIZE)
            except BlockingIOError:
                return None
            except OSError as exc:
                self.ended = True
                raise ConnectionLost(exc) from None
            if not data:
                self.ended = True
            return data
        if self._plain:
            plain, self._plain = self._plain, b""
            return plain
        for _ in range(MAX_TLS_READS):  # each pass moves socket bytes into TLS, or returns
            try:
                plain = tls.read(RECV_SIZE)
            except ssl.SSLWantReadError:
                pass
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self.ended = True
                return b""
            except ssl.SSLError as exc:
                self.ended = True
                raise TLSFailure(exc) from None
            else:
                self.ended = not plain
                return plain
            cipher = self._recv()
            if cipher is None:
                return None
            if cipher:
                self._incoming.write(cipher)
            else:  # the end of the ciphertext: the next read says whether TLS ended cleanly
                self._incoming.write_eof()
        return None  # more to decrypt: the socket stays readable, so the caller comes back

    def _recv(self) -> bytes | None:
        """The socket's bytes now: ``None`` when there are none yet, ``b""`` at its end."""
        try:
            data = self.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            self.ended = True
            raise ConnectionLost(exc) from None
        return data

    def buffered(self) -> bool:
        """Bytes already read off the socket wait to be handed out (over TLS): its readiness
        will not say so."""
        tls = self.tls
        return bool(self._plain) or (tls is not None and bool(tls.pending() or self._incoming.pending))

    async def wait_readable(self) -> None:
        """Until ``pull`` may have something: at once when bytes wait in the TLS layer."""
        if self.buffered():
            await anyio.lowlevel.checkpoint()
        else:
            await anyio.wait_readable(self.sock)

    async def fill(self) -> bytes:
        """Wait for and read the next bytes (decrypted if TLS); ``b""`` at the end."""
        while True:
            data = self.pull()
            if data is not None:
                return data
            await anyio.wait_readable(self.sock)

    def close(self) -> None:
        if self.unregister is not None:  # before the socket's number is freed for another
            self.unregister()
        self.waiter = None
        if not self.closed:
            self.closed = True
            self.sock.close()
