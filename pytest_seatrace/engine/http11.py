"""An HTTP/1.1 connection for last-byte starts, over the engine's network stream.

A request is written up to its hold point (the prefix) and the rest held for the release
(``engine.stream`` encrypts it ahead over TLS); responses are parsed as their bytes come
(``engine.http11_response``). What came back before the release is an early answer.
"""

from __future__ import annotations

import socket
import ssl

from pytest_seatrace.engine.http11_response import RawResponse, ResponseParser
from pytest_seatrace.engine.stream import NetworkStream, Origin

MAX_POLL_READS = 64


class HTTP11Connection:
    """One client's connection; reused across waves while the server keeps it alive."""

    def __init__(self, stream: NetworkStream) -> None:
        self.stream = stream
        self.origin = stream.origin
        self.idle_since = 0
        """When its last response ended (``perf_counter_ns``): a kept connection's idle age counts
        from here, against the server's keep-alive."""
        self.reader = ResponseParser(stream.origin.host)
        """This connection's responses, parsed as their bytes come."""

    @classmethod
    async def open(cls, origin: Origin, ssl_context: ssl.SSLContext | None) -> HTTP11Connection:
        """Connect (and handshake over TLS); the caller bounds this with its timeout."""
        return cls(await NetworkStream.open(origin, ssl_context))

    @property
    def sock(self) -> socket.socket:
        """The socket, for the release loop's bound ``send``."""
        return self.stream.sock

    @property
    def final(self) -> bytes:
        """The held bytes: what the release sends."""
        return self.stream.held

    @property
    def closed(self) -> bool:
        return self.stream.closed

    # -- writing ---------------------------------------------------------------------------

    def write_prefix(self, request: bytes, held_from: int) -> bytes:
        """Write what fits of ``request`` up to ``held_from`` and hold the rest (encrypted as its
        own record over TLS); return what is left of the prefix to send (nearly always nothing:
        requests are small)."""
        stream = self.stream
        data = stream.encrypt(request[:held_from])
        stream.hold(request[held_from:])
        return stream.send_now(data)

    async def prepare(self, request: bytes, held_from: int) -> None:
        """Write ``request`` up to ``held_from``, waiting for the socket if it must."""
        rest = self.write_prefix(request, held_from)
        if rest:
            await self.stream.send_all(rest)

    async def send_all(self, data: bytes) -> None:
        await self.stream.send_all(data)

    def finish_final(self, sent: int) -> None:
        """The rest of the held bytes after a short send (a full socket buffer), without delay."""
        self.stream.finish_held(sent)

    def early_answer(self) -> str | None:
        """What came back before the held bytes went out (``NetworkStream.early_answer``)."""
        return self.stream.early_answer()

    # -- reading ---------------------------------------------------------------------------

    def buffered(self) -> bool:
        return self.stream.buffered()

    async def _fill(self) -> bytes:
        """Wait for and read the next bytes from the socket (decrypted if TLS); b"" at EOF."""
        return await self.stream.fill()

    def begin_response(self, keep_body: bool, *, method: bytes = b"GET", closes: bool = False) -> None:
        """Expect the response to a request: ``method`` and ``closes`` (it said ``Connection:
        close``) are the request's; ``keep_body``: the whole body (a predicate needs it), else
        its first KiB, enough for the reports."""
        self.reader.begin(keep_body, method, closes)

    def poll_response(self) -> RawResponse | None:
        """Whatever the socket has now, parsed: the response once it is complete, else ``None``."""
        reader, pull = self.reader, self.stream.pull
        for _ in range(MAX_POLL_READS):  # a response bigger than this many reads: come back later
            data = pull()
            if data is None:
                return None
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
        self.stream.close()
        self.reader.close()
