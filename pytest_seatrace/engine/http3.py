"""One QUIC connection speaking HTTP/3 for the single-datagram start: every request held one byte
short, then the final bytes of all of them released in as few UDP datagrams as they fit.

Built on aioquic's sans-IO ``QuicConnection`` and ``H3Connection`` (imported only here, only once
an HTTP/3 start runs: the ``[http3]`` extra) over our own non-blocking UDP socket, as
``engine.stream`` owns the TCP ones. Per request, ``queue`` writes the HEADERS frame and all but
the held byte (``hold="headers"``: the HEADERS frame's last byte, and any DATA frame after it;
``"body"``: the DATA frame's last byte; the FIN alone would not hold a request whose bytes are
all in); ``settle`` waits until all of that is acknowledged. ``release`` then hands each
connection its streams' final bytes, builds the datagrams with one ``datagrams_to_send`` call per
connection, and sends them back to back: nothing drives a connection between building and
sending (no timer, no ACK processing), so no retransmission can carry a final byte out early.
After the release, a release packet aioquic declares lost is not retransmitted into a late
start: the connection closes at once and its unanswered requests are unknown.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from pytest_seatrace.core.settings import HoldPoint
from pytest_seatrace.engine.stream import Origin, TransportError

if TYPE_CHECKING:
    from aioquic.h3.connection import H3Connection
    from aioquic.h3.events import DataReceived, HeadersReceived

    from pytest_seatrace.engine.http3_hold import HoldingQuic, ReleaseWatch

NEEDS_EXTRA = "HTTP/3 needs aioquic: pip install 'pytest-seatrace[http3]'"
RECV_SIZE = 65536
MAX_SETTLE_ROUNDS = 8
"""PING rounds ``settle`` tries before it gives up on a connection that keeps sending."""
H3_REQUEST_CANCELLED = 0x10C
ACK_DUE_S = 0.002
"""A timer this close is aioquic's delayed ACK (its loss and idle timers are far later)."""
LOSS_VERDICT_S = 2.0
"""How long a release packet aioquic declared lost may wait for the server's ACK."""
RELEASE_LOST = "its release datagram was lost (not retransmitted: a late start would be no race)"
CLOSED_AFTER_LOSS = "unknown: the connection closed after a release datagram was lost"


class Http3Error(TransportError):
    """An HTTP/3 connection failed, or cannot hold or release what was asked; meant for the user."""


def load_aioquic() -> Any:
    """``engine.http3_hold`` (and so aioquic), or an error naming the extra."""
    try:
        from pytest_seatrace.engine import http3_hold
    except ImportError as exc:
        raise Http3Error(f"{NEEDS_EXTRA} ({exc})") from None
    return http3_hold


@dataclass(frozen=True, slots=True)
class H3Request:
    method: str
    target: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    hold: HoldPoint = "body"
    """``"body"`` on a request without a body holds its HEADERS frame: there is nothing else."""
    authority: str | None = None
    """``:authority``; None: the connection's host and port (an Alt-Svc port is not the origin's)."""


@dataclass
class H3Answer:
    """One stream's response as it comes in."""

    stream_id: int
    status: int | None = None
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    early: bool = False
    """Its response began before the release: kept, and flagged."""
    error: str | None = None
    end_ns: int = 0
    """When its response ended (``perf_counter_ns``); 0 until then."""

    @property
    def done(self) -> bool:
        return self.ended or self.error is not None


@dataclass(frozen=True, slots=True)
class Release:
    """What one release put on the wire: every datagram's size, per connection, and its times."""

    sizes: tuple[tuple[int, ...], ...]
    """Per connection, the UDP payload size of each release datagram."""
    streams: int
    build_ns: int
    """Handing over the final bytes and building every datagram (before the gate)."""
    write_ns: int
    """The back-to-back sends alone: the gate write."""

    @property
    def datagrams(self) -> int:
        return sum(len(sizes) for sizes in self.sizes)

    @property
    def bytes(self) -> int:
        return sum(sum(sizes) for sizes in self.sizes)


def request_headers(origin: Origin, request: H3Request) -> list[tuple[bytes, bytes]]:
    """The request's HTTP/3 fields: pseudo-headers first, names lower-case, a Content-Length."""
    host = f"[{origin.host}]" if ":" in origin.host else origin.host
    headers = [
        (b":method", request.method.encode()),
        (b":scheme", b"https"),
        (b":authority", (request.authority or f"{host}:{origin.port}").encode()),
        (b":path", request.target.encode()),
    ]
    headers += [(name.lower().encode(), value.encode()) for name, value in request.headers]
    if request.body and not any(name == b"content-length" for name, _ in headers):
        headers.append((b"content-length", str(len(request.body)).encode()))
    return headers


async def _address(origin: Origin) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    found: list[tuple[Any, ...]]
    try:  # an IP literal needs no resolver thread
        found = list(
            socket.getaddrinfo(origin.host, origin.port, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST)
        )
    except socket.gaierror:
        try:
            found = list(await anyio.getaddrinfo(origin.host, origin.port, type=socket.SOCK_DGRAM))
        except OSError as exc:
            raise Http3Error(f"cannot resolve {origin.host}: {exc}") from None
    family, _, _, _, addr = found[0]
    return family, addr


class Http3Connection:
    """One client QUIC connection with HTTP/3 on it, its requests held one byte short."""

    def __init__(
        self, sock: socket.socket, addr: tuple[Any, ...], origin: Origin, quic: HoldingQuic, h3: H3Connection
    ) -> None:
        self.sock = sock
        self.addr = addr
        self.origin = origin
        self.quic = quic
        self.h3 = h3
        self.watch: ReleaseWatch = quic.watch
        self.answers: dict[int, H3Answer] = {}
        """This wave's streams, by id."""
        self._held: dict[int, tuple[bytes, bool]] = {}
        self._released = False
        self._handshake_done = False
        self._pings = 0
        self._acked_pings: set[int] = set()
        self.closed: str | None = None
        """Why the connection ended (None while open)."""
        self.idle_since = 0
        """When its last wave was answered (``perf_counter_ns``), for ``engine.pool``."""

    # -- opening -----------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, origin: Origin, *, verify: bool | str | Path = True, server_name: str | None = None
    ) -> Http3Connection:
        """Handshake with ``origin``'s UDP port; the caller bounds this with its timeout.
        ``verify``: check the certificate (``True``), not at all (``False``), or against a CA file."""
        hold = load_aioquic()
        from aioquic.h3.connection import H3_ALPN, H3Connection
        from aioquic.quic.configuration import QuicConfiguration

        config = QuicConfiguration(
            is_client=True,
            alpn_protocols=H3_ALPN,
            server_name=server_name or origin.host,
        )
        if verify is False:
            config.verify_mode = ssl.CERT_NONE
        elif verify is not True:
            config.load_verify_locations(cafile=str(verify))
        family, addr = await _address(origin)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(addr)  # an ICMP "port unreachable" then fails our reads at once
            quic: HoldingQuic = hold.HoldingQuic(config)
            quic.connect(addr, now=time.monotonic())
            connection = cls(sock, addr, origin, quic, H3Connection(quic))
            connection._flush()
            await connection.drive(lambda: connection._handshake_done)
        except BaseException:
            sock.close()
            raise
        return connection

    @property
    def remaining_streams(self) -> int:
        """Bidirectional streams the server still lets us open: its ``MAX_STREAMS`` counts stream
        ids over the connection's life, so every wave on a kept connection spends it. A server
        gives ended streams back once it has seen our ACKs of their answers (``settle()`` first
        lets it), and at its own pace: aioquic's batches MAX_STREAMS until what is left to us is
        below what it would grant, so after a wave of 100 of its 128 it grants 57 to 128 more.
        Too few for a wave: the rest goes on another connection."""
        return max(0, self.watch.max_streams_bidi - self.quic.get_next_available_stream_id() // 4)

    # -- holding -----------------------------------------------------------------------------

    def queue(self, requests: Sequence[H3Request]) -> list[H3Answer]:
        """Open a stream per request and send all of it but the held byte; one answer each."""
        if len(requests) > self.remaining_streams:
            raise Http3Error(
                f"{len(requests)} requests need as many streams; {self.origin.url} grants "
                f"{self.remaining_streams} more on this connection"
            )
        self.answers, self._held, self._released = {}, {}, False
        for request in requests:
            stream_id = self.quic.get_next_available_stream_id()
            tail = self._write_held(stream_id, request)
            self._held[stream_id] = tail
            self.answers[stream_id] = H3Answer(stream_id)
        self._flush()
        return list(self.answers.values())

    def _write_held(self, stream_id: int, request: H3Request) -> tuple[bytes, bool]:
        """Write ``request`` through ``H3Connection``, capturing the stream's bytes, and send them
        up to the held byte: the HEADERS frame's last (``hold="headers"``, or no body) or the DATA
        frame's. The bytes from the held one on, and whether the FIN goes with them."""
        headers = request_headers(self.origin, request)
        body = request.body
        self.quic.capture(stream_id)
        self.h3.send_headers(stream_id, headers, end_stream=not body)
        hold_at = len(self.quic.captured.data) - 1
        if body:
            self.h3.send_data(stream_id, body, end_stream=True)
            if request.hold == "body":
                hold_at = len(self.quic.captured.data) - 1
        captured = self.quic.take()
        data = bytes(captured.data)
        problem = self.watch.spend(len(data))
        if problem is not None:
            raise Http3Error(f"{self.origin.url}: stream {stream_id}'s request outgrows {problem}")
        self.quic.send_stream_data(stream_id, data[:hold_at])
        return data[hold_at:], captured.fin

    async def settle(self) -> None:
        """Until everything queued is acknowledged: a PING sent after it is acknowledged, no stream
        data went out after that PING, and nothing is left to send; bounded in rounds. An ACK
        aioquic holds back (up to its 1 ms granularity) goes out first, so the server also learns
        which of its answers arrived and can give their streams back."""
        timer = self.quic.get_timer()
        if timer is not None and timer - time.monotonic() <= ACK_DUE_S:
            await self.drive(lambda: time.monotonic() >= timer, deadline=timer)
        for _ in range(MAX_SETTLE_ROUNDS):
            self._flush()
            self._pings += 1
            uid = self._pings
            self.quic.send_ping(uid)
            self._flush()
            data_packets = self.watch.data_packets
            await self.drive(partial(self._acked_pings.__contains__, uid))
            if self.watch.data_packets == data_packets and not self._flush():
                return
        raise Http3Error(
            f"{self.origin.url}: the held requests were not acknowledged after {MAX_SETTLE_ROUNDS} rounds"
        )

    # -- releasing ---------------------------------------------------------------------------

    def build_release(self) -> list[bytes]:
        """Hand every stream its held byte and build the datagrams: one ``datagrams_to_send``.

        A stream answered in full already gets RESET_STREAM instead: the server is done with it
        (hypercorn, fed a finished stream's DATA, stops serving QUIC altogether)."""
        answered = {stream_id for stream_id in self._held if self.answers[stream_id].ended}
        for stream_id, (tail, fin) in self._held.items():
            if stream_id in answered:
                self.quic.reset_stream(stream_id, H3_REQUEST_CANCELLED)
            else:
                self.quic.send_stream_data(stream_id, tail, end_stream=fin)
        self.watch.start_release()
        try:
            datagrams = [data for data, _ in self.quic.datagrams_to_send(now=time.monotonic())]
        finally:
            self.watch.recording = False
        finals = {f.stream_id for frames in self.watch.released.values() for f in frames if f.fin}
        missing = set(self._held) - answered - finals
        self._released = True
        held, self._held = self._held, {}
        if missing:
            reason = (
                f"{self.origin.url}: the release fit {len(held) - len(missing)} of {len(held)} streams' "
                "final bytes (aioquic's congestion window or pacing held the rest): no late start; "
                'hold="body" sends each body before the release, fewer clients per resource ask less'
            )
            self.abandon(reason)
            raise Http3Error(reason)
        return datagrams

    def abandon(self, reason: str) -> None:
        """Close at once, nothing more sent but the CONNECTION_CLOSE; every open stream fails."""
        if self.closed is None:
            self.quic.close(error_code=H3_REQUEST_CANCELLED, reason_phrase=reason[:100])
            self._flush()
        self._fail(reason)

    # -- reading -----------------------------------------------------------------------------

    async def read(self) -> None:
        """Until every stream of the wave is answered or failed; the caller bounds the time."""
        await self.drive(lambda: all(answer.done for answer in self.answers.values()))

    async def drive(self, done: Callable[[], bool], *, deadline: float | None = None) -> None:
        """Receive, fire timers, handle events and send what aioquic has, until ``done()`` (or the
        connection ends); the caller bounds the time. A ``done`` that turns true at an instant
        (``time.monotonic()``) passes it as ``deadline``: no wait outlasts it (aioquic's next
        timer may be its idle timeout, a minute away, and the server may have nothing to say)."""
        while not done():
            if self.closed is not None:
                if not self._handshake_done:
                    raise Http3Error(f"HTTP/3 handshake with {self.origin.url} failed: {self.closed}")
                return
            timer = self.quic.get_timer()
            now = time.monotonic()
            if timer is not None and timer <= now:
                self.quic.handle_timer(now=now)
            else:
                wake = min((t for t in (timer, deadline) if t is not None), default=None)
                with anyio.move_on_after(None if wake is None else max(0.0, wake - now)):
                    await anyio.wait_readable(self.sock)
                self._receive()
            self._events()
            if self._released and self.watch.suspect() and not await self._release_arrived():
                return
            self._flush()

    async def _release_arrived(self) -> bool:
        """A release packet was declared lost: send nothing (so no final byte goes out late) and
        wait for the server's ACKs. aioquic also says "lost" when a probe timeout fires on a busy
        server that got the packet; its ACK, due with its first answer at the latest, clears that.
        No ACK for it in ``LOSS_VERDICT_S``: the release is lost, the connection closes (False)."""
        deadline = time.monotonic() + LOSS_VERDICT_S
        while self.watch.suspect():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.closed is not None:
                self._lost_release()
                return False
            with anyio.move_on_after(remaining):
                await anyio.wait_readable(self.sock)
            self._receive()
            self._events()
        return True

    def _receive(self) -> None:
        try:
            while True:
                try:
                    data = self.sock.recv(RECV_SIZE)
                except BlockingIOError:
                    return
                except OSError as exc:
                    self._fail(f"nothing answers on UDP port {self.origin.port} ({exc})")
                    return
                self.quic.receive_datagram(data, self.addr, now=time.monotonic())
        finally:
            self.watch.digest()

    def _events(self) -> None:
        from aioquic.h3.events import DataReceived, HeadersReceived
        from aioquic.quic.events import (
            ConnectionTerminated,
            HandshakeCompleted,
            PingAcknowledged,
            StreamReset,
        )

        while (event := self.quic.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                self._handshake_done = True
            elif isinstance(event, PingAcknowledged):
                self._acked_pings.add(event.uid)
            elif isinstance(event, ConnectionTerminated):
                self._fail(f"connection closed: {event.reason_phrase or hex(event.error_code)}")
            elif isinstance(event, StreamReset) and event.stream_id in self.answers:
                self.answers[event.stream_id].error = f"stream reset by the server ({hex(event.error_code)})"
            for h3_event in self.h3.handle_event(event):
                if isinstance(h3_event, (HeadersReceived, DataReceived)):
                    self._answer(h3_event)

    def _answer(self, h3_event: HeadersReceived | DataReceived) -> None:
        from aioquic.h3.events import HeadersReceived

        answer = self.answers.get(h3_event.stream_id)
        if answer is not None:
            if isinstance(h3_event, HeadersReceived):
                status = int(dict(h3_event.headers).get(b":status", b"0"))
                if status >= 200 or answer.status is None:
                    answer.status, answer.headers = status, list(h3_event.headers)
                answer.early = answer.early or not self._released
            else:
                answer.body += h3_event.data
            if h3_event.stream_ended and not answer.ended:
                answer.ended, answer.end_ns = True, time.perf_counter_ns()

    def _lost_release(self) -> None:
        """Close at once: a retransmitted final byte would start its request late."""
        lost = self.watch.suspect()
        late = {f.stream_id for number in lost for f in self.watch.released[number] if f.fin}
        for stream_id in late:
            self.answers[stream_id].error = self.answers[stream_id].error or RELEASE_LOST
        self.abandon(CLOSED_AFTER_LOSS)

    def _fail(self, reason: str) -> None:
        self.closed = self.closed or reason
        for answer in self.answers.values():
            if not answer.done:
                answer.error = reason

    def _flush(self) -> int:
        """Send what aioquic has now; how many datagrams."""
        datagrams = self.quic.datagrams_to_send(now=time.monotonic())
        for data, _ in datagrams:
            try:
                self.sock.send(data)
            except BlockingIOError:
                pass  # a full socket buffer drops a datagram, as the network may: QUIC recovers it
            except OSError as exc:
                self._fail(f"cannot send to UDP port {self.origin.port} ({exc})")
        return len(datagrams)

    def close(self) -> None:
        """Say goodbye (a CONNECTION_CLOSE) and free the socket."""
        if self.sock.fileno() >= 0:
            if self.closed is None:
                self.quic.close()
                self._flush()
            self.sock.close()


def release(connections: Sequence[Http3Connection]) -> Release:
    """Build every connection's release datagrams, then send them all back to back. A release
    that cannot be built goes out on no connection, and every connection of it is abandoned (one
    left open would keep a held stream that no release ends); a send that fails (even a full
    buffer: no retry, which would be late) abandons its connection, whose requests are then
    unknown."""
    started = time.perf_counter_ns()
    built: list[tuple[Http3Connection, list[bytes]]] = []
    for connection in connections:
        try:
            datagrams = connection.build_release()
        except Http3Error as exc:
            for other in connections:  # built or not: none may release now, nor hold on
                if other is not connection:
                    other.abandon(f"another connection's release could not be built ({exc})")
            raise
        built.append((connection, datagrams))
    sends = [
        (connection.sock.send, connection, data) for connection, datagrams in built for data in datagrams
    ]
    ready = time.perf_counter_ns()
    failed: list[tuple[Http3Connection, OSError]] = []
    for send, connection, data in sends:
        try:
            send(data)
        except OSError as exc:
            failed.append((connection, exc))
    written = time.perf_counter_ns()
    for connection, error in failed:
        connection.abandon(f"a release datagram could not be sent ({error}): not retried, it would be late")
    return Release(
        sizes=tuple(tuple(len(data) for data in datagrams) for _, datagrams in built),
        streams=sum(len(connection.answers) for connection in connections),
        build_ns=ready - started,
        write_ns=written - ready,
    )
