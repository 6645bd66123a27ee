"""An HTTP/2 connection over the engine's network stream, for single-packet starts.

Framing, HPACK and flow control are the ``h2`` library's (sans-IO); the socket and the TLS
layer are ``engine.stream``'s, so the release over TLS is ready ciphertext, as in last-byte
mode. Where the connection stands is one ``LinkState``, moved only along ``_MOVES`` (as h2's
own ``ConnectionState`` and its transition table): a timeout says where it was.
"""

from __future__ import annotations

import enum
import ssl
import time
from collections.abc import Callable, Sequence

import anyio
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack

from pytest_seatrace.engine.h2_requests import H2Stream
from pytest_seatrace.engine.limits import HEAD_TOO_LARGE, MAX_RESPONSE_HEAD
from pytest_seatrace.engine.stream import ConnectionLost, NetworkStream, Origin, TLSFailure, TransportError

RECEIVE_WINDOW = 2**24
"""Our stream and connection receive windows: responses never wait for a WINDOW_UPDATE."""
_PING = b"seatrace"
_STREAM_IDS = 2**31 - 1
_SETTINGS = h2.settings.SettingCodes
_CONFIG = h2.config.H2Configuration(
    client_side=True,
    header_encoding=None,
    # Our fields are normalised once per request head (``h2_fields``), and h2's checks of every
    # field in and out cost about a third of the client's time per request.
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
    validate_inbound_headers=False,
    normalize_inbound_headers=False,
)

Handle = Callable[["HTTP2Connection", list[h2.events.Event]], None]
"""Feeds a connection's events into its streams' records (the start's outcomes)."""


class NotHTTP2(TransportError):
    """The server will not speak HTTP/2 (why, in a few words)."""


def not_h2_reason(origin: Origin, why: str) -> str:
    """The error of every request when the server cannot be raced with HTTP/2."""
    return f"the server at {origin.url} does not speak HTTP/2 ({why}); use sync='last-byte'"


async def negotiate_h2(
    origin: Origin,
    ssl_context: ssl.SSLContext | None,
    timeout: float,  # noqa: ASYNC109 - the runner's interface: one bound for connect and handshake
) -> bool:
    """Whether ``origin`` picks ``h2`` by TLS ALPN (for ``sync="auto"``): one connection, closed.

    Cleartext origins are never probed (h2c is used only when asked for); an origin that cannot
    be reached answers False, so last-byte then reports the failure in its own words.
    """
    if origin.scheme != "https" or ssl_context is None:
        return False
    with anyio.move_on_after(timeout):
        try:
            stream = await NetworkStream.open(origin, ssl_context)
        except (TransportError, OSError):
            return False
        try:
            return stream.alpn == "h2"
        finally:
            stream.close()
    return False


def error_name(error_code: object) -> str:
    try:
        return h2.errors.ErrorCodes(error_code).name  # type: ignore[arg-type]
    except ValueError:
        return f"error code {error_code}"


class LinkState(enum.Enum):
    """Where a connection stands; ``doing`` says it in a timeout's words."""

    CONNECTING = enum.auto()
    SETTINGS = enum.auto()
    OPEN = enum.auto()
    """Its SETTINGS exchanged, no stream written yet."""
    PREFIXES = enum.auto()
    WINDOW = enum.auto()
    PING = enum.auto()
    ACKED = enum.auto()
    """The PING ACK came: the server has read every prefix."""
    HOLDING = enum.auto()
    """The gate bytes are built: nothing else may be written before them (TLS record order)."""
    RELEASED = enum.auto()
    """Its gate write has left (so until the next wave's prefixes)."""
    CLOSED = enum.auto()

    @property
    def doing(self) -> str:
        return _DOING[self]


_DOING = {
    LinkState.CONNECTING: "connecting",
    LinkState.SETTINGS: "waiting for the server's HTTP/2 SETTINGS",
    LinkState.OPEN: "waiting for the server's HTTP/2 SETTINGS",
    LinkState.PREFIXES: "writing request prefixes",
    LinkState.WINDOW: "waiting for the server's flow-control window",
    LinkState.PING: "waiting for the PING ACK behind the request prefixes",
    LinkState.ACKED: "waiting for the PING ACK behind the request prefixes",
    LinkState.HOLDING: "waiting for the gate",
    LinkState.RELEASED: "waiting for the gate",
    LinkState.CLOSED: "closed",
}
"""The words a timeout uses; the first wave's words stay until the next step begins."""

_S = LinkState
_MOVES: dict[LinkState, frozenset[LinkState]] = {
    _S.CONNECTING: frozenset({_S.SETTINGS}),
    _S.SETTINGS: frozenset({_S.OPEN}),
    _S.OPEN: frozenset({_S.PREFIXES}),
    _S.PREFIXES: frozenset({_S.WINDOW, _S.PING}),
    _S.WINDOW: frozenset({_S.PING}),
    _S.PING: frozenset({_S.ACKED}),
    _S.ACKED: frozenset({_S.HOLDING}),
    _S.HOLDING: frozenset({_S.RELEASED}),
    _S.RELEASED: frozenset({_S.PREFIXES}),
    _S.CLOSED: frozenset(),
}
"""Every state may also close; nothing leaves ``CLOSED``."""


class _Client(h2.connection.H2Connection):
    """h2's client connection, keeping the events of a batch that ends in a protocol error.

    ``receive_data`` raises on the first bad frame and drops the events of the good frames before
    it, such as the GOAWAY that explains why the next frame is refused.
    """

    received: list[h2.events.Event]

    def _receive_frame(self, frame: object) -> list[h2.events.Event]:
        events = super()._receive_frame(frame)  # type: ignore[arg-type]
        self.received.extend(events)
        return events


class HTTP2Connection:
    """One HTTP/2 connection: the network stream, h2's state, its streams, where it stands."""

    def __init__(self, stream: NetworkStream) -> None:
        self.stream = stream
        self.origin = stream.origin
        self.h2 = _Client(_CONFIG)
        self.h2.received = []
        self.streams: dict[int, H2Stream] = {}
        self.state = LinkState.CONNECTING
        self.broken: str | None = None
        """Why the connection is unusable (GOAWAY, protocol error, closed), once it is."""
        self.first_bytes = b""
        self.idle_since = 0
        """When its last wave's last stream was answered (``perf_counter_ns``; 0: never kept)."""

    def fail(self, reason: str) -> None:
        """The connection is unusable, for ``reason`` (the first one given stays)."""
        self.broken = self.broken or reason

    def move(self, to: LinkState) -> None:
        if to is not LinkState.CLOSED and to not in _MOVES[self.state]:
            raise RuntimeError(f"HTTP/2 connection to {self.origin.url}: {self.state.name} -> {to.name}")
        self.state = to

    @property
    def kept(self) -> bool:
        """It carried an earlier wave's streams: the server may close it idle (its keep-alive)."""
        return self.idle_since > 0

    @property
    def eof(self) -> bool:
        """No more bytes will come from the server."""
        return self.stream.ended

    @property
    def capacity(self) -> int:
        """Streams the server lets us open now."""
        return max(0, self.h2.remote_settings.max_concurrent_streams - self.h2.open_outbound_streams)

    @property
    def pending(self) -> list[H2Stream]:
        return [s for s in self.streams.values() if not s.done]

    # -- opening -----------------------------------------------------------------------------

    async def handshake(self) -> None:
        """Check ALPN (or h2c), send our SETTINGS and wait for the server's; ``NotHTTP2`` when it
        will not speak HTTP/2."""
        if self.stream.tls is not None and self.stream.alpn != "h2":
            chosen = self.stream.alpn
            raise NotHTTP2(f"ALPN chose {chosen}" if chosen else "ALPN chose no protocol, so HTTP/1.1")
        self.move(LinkState.SETTINGS)
        self.h2.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                _SETTINGS.ENABLE_PUSH: 0,
                _SETTINGS.INITIAL_WINDOW_SIZE: RECEIVE_WINDOW,
                _SETTINGS.MAX_HEADER_LIST_SIZE: MAX_RESPONSE_HEAD,
            },
        )
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(RECEIVE_WINDOW - 65535)
        await self.flush()
        while not any(isinstance(e, h2.events.RemoteSettingsChanged) for e in await self.receive()):
            if not (self.eof or self.broken):
                continue
            if self.stream.tls is None:  # h2c prior knowledge: whatever ends it here is a refusal
                raise NotHTTP2(self._preface_refusal())
            raise TransportError(self.broken or self.closed_reason("before its SETTINGS"))
        await self.flush()  # the SETTINGS ACK
        self.move(LinkState.OPEN)

    def _preface_refusal(self) -> str:
        if self.first_bytes.startswith(b"HTTP/"):
            version = self.first_bytes.split(b" ", 1)[0].decode("ascii", "replace")
            return f"it answered the HTTP/2 preface with {version}"
        if self.broken and not self.eof:
            return f"its answer to the HTTP/2 preface is no HTTP/2: {self.broken}"
        return "it closed the connection at the HTTP/2 preface"

    # -- before the gate ---------------------------------------------------------------------

    async def write_prefixes(self, streams: Sequence[H2Stream], handle: Handle) -> None:
        """Every stream's HEADERS and all of its body but the last byte, in frames the server
        allows, keeping one byte of stream and of connection window per stream for the gate.

        A bodyless stream sends nothing now: its whole HEADERS frame (with END_STREAM) is held for
        the gate, on a stream id reserved above the others (``hold``), so the server never gets a
        DATA frame on it. hypercorn (0.18.0, ``protocol/h2.py`` line 258) looks up the stream of
        every DATA frame unguarded: an empty final DATA frame on a stream it has already answered
        and closed (it runs the app at a complete header block, so a ``GET`` answers at once) raises
        ``KeyError`` and ends the connection's task, and every other stream on it goes unanswered.

        Each written stream's call (design §7) is stamped before its HEADERS go: a server may run
        the app on a complete header block (hypercorn does), before the gate."""
        self.move(LinkState.PREFIXES)
        conn = self.h2
        begun = time.perf_counter_ns()
        written = [s for s in streams if not s.whole_at_gate]
        for stream in written:
            stream.record.call_ns = begun
            stream.sid = conn.get_next_available_stream_id()
            conn.send_headers(stream.sid, stream.headers, end_stream=False)
            self.streams[stream.sid] = stream
        sid = conn.get_next_available_stream_id()
        for stream in streams:
            if stream.whole_at_gate:  # its id reserved here; ``hold`` opens them in increasing order
                stream.sid, sid = sid, sid + 2
                self.streams[stream.sid] = stream
        await self.flush()
        now = time.perf_counter_ns()
        for stream in written:
            stream.prefix_ns = now
        reserve = len(written)
        for stream in written:
            held = len(stream.body) - 1
            sent = 0
            while sent < held and not stream.done:
                room = min(
                    conn.local_flow_control_window(stream.sid) - 1,
                    conn.outbound_flow_control_window - reserve,
                    conn.max_outbound_frame_size,
                    held - sent,
                )
                if room > 0:
                    conn.send_data(stream.sid, stream.body[sent : sent + room])
                    sent += room
                    continue
                if self.state is LinkState.PREFIXES:
                    self.move(LinkState.WINDOW)
                await self.flush()
                handle(self, await self.receive())
                if self.broken or self.eof:
                    raise TransportError(self.broken or self.closed_reason("before the gate"))
        await self.flush()

    async def ping(self, handle: Handle) -> bool:
        """A PING behind the prefixes; True once its ACK says the server read them all (and what
        came right behind it is handled), False if the connection broke first."""
        self.move(LinkState.PING)
        self.h2.ping(_PING)
        await self.flush()
        while self.state is LinkState.PING:
            handle(self, await self.receive())
            if self.broken or self.eof:
                return False
        handle(self, self.pull())  # anything right behind the ACK
        await self.flush()  # acknowledgements now, so that none lands in the gate write
        return True

    def hold(self, order: Sequence[H2Stream]) -> None:
        """The final frame of every stream in ``order`` (the order the server reads them in), as
        one buffer (one TLS record) held for the gate: a body's last byte with END_STREAM, or a
        bodyless stream's whole HEADERS with END_STREAM (``write_prefixes`` says why), opened in
        ``order`` on the ids reserved for them (HTTP/2 opens stream ids in increasing order)."""
        conn = self.h2
        whole = [s for s in order if s.whole_at_gate]
        for sid, stream in zip(sorted(s.sid for s in whole), whole, strict=True):
            del self.streams[stream.sid]
            stream.sid = sid
        self.streams.update((s.sid, s) for s in whole)
        for stream in order:
            try:
                if stream.done:  # answered before the gate: ended as complete, with no DATA frame
                    conn.reset_stream(stream.sid, h2.errors.ErrorCodes.NO_ERROR)
                elif stream.whole_at_gate:
                    conn.send_headers(stream.sid, stream.headers, end_stream=True)
                else:
                    conn.send_data(stream.sid, stream.body[-1:], end_stream=True)
            except h2.exceptions.StreamClosedError:
                continue
        self.stream.hold(conn.data_to_send())
        self.move(LinkState.HOLDING)

    # -- reading and writing -----------------------------------------------------------------

    async def flush(self) -> None:
        """Write what h2 has queued (never while the gate bytes wait: they must go first)."""
        if self.state is LinkState.HOLDING or self.eof:
            return
        data = self.h2.data_to_send()
        if data:
            try:
                await self.stream.send_all(self.stream.encrypt(data))
            except OSError as exc:
                raise TransportError(self.lost(exc)) from None

    def lost(self, exc: OSError) -> str:
        """A reset or broken pipe: the server closed the connection, said as such."""
        when = "after" if self.state is LinkState.RELEASED else "before"
        return (
            f"the server at {self.origin.url} closed the HTTP/2 connection {when} the gate "
            f"({exc.strerror or exc})"
        )

    def closed_reason(self, when: str) -> str:
        return f"the server at {self.origin.url} closed the HTTP/2 connection {when}"

    def pull(self) -> list[h2.events.Event]:
        """Everything readable now, fed to h2: its events (a protocol error or a lost connection
        sets ``broken``, an end of stream ``eof``; callers look at both after the events)."""
        plain = self._read_now()
        if not plain:
            return []
        if not self.first_bytes:
            self.first_bytes = plain[:16]
        self.h2.received = []
        try:
            self.h2.receive_data(plain)
        except h2.exceptions.DenialOfServiceError as exc:  # hpack's header list limit, or abuse
            if not isinstance(exc.__cause__, hpack.OversizedHeaderListError):
                self.broken = self.broken or f"HTTP/2 protocol error from {self.origin.url}: {exc}"
            else:  # hpack's state is lost with the block: the connection goes, as h2 says it must
                self.broken = self.broken or f"{HEAD_TOO_LARGE} from {self.origin.url}"
        except h2.exceptions.ProtocolError as exc:
            self.broken = self.broken or f"HTTP/2 protocol error from {self.origin.url}: {exc}"
        events = self.h2.received
        if self.state is LinkState.PING and any(
            isinstance(e, h2.events.PingAckReceived) and e.ping_data == _PING for e in events
        ):
            self.move(LinkState.ACKED)
        return events

    async def receive(self) -> list[h2.events.Event]:
        """Wait for the next bytes from the server and feed them to h2."""
        while True:
            if self.eof or self.broken is not None:
                return []
            await self.stream.wait_readable()
            events = self.pull()
            if events:
                return events

    def _read_now(self) -> bytes:
        """Everything the stream has now, decrypted; a failure ends it with its reason."""
        chunks: list[bytes] = []
        while not self.eof:
            try:
                data = self.stream.pull()
            except ConnectionLost as exc:
                self.broken = self.broken or self.lost(exc.cause)
                break
            except TLSFailure as exc:
                self.broken = self.broken or f"TLS error from {self.origin.url}: {exc.cause}"
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)

    def reusable(self, streams_per_wave: int) -> bool:
        """Kept for the next wave only when every stream ended in a response and ids remain."""
        clean = all(s.status for s in self.streams.values())
        room = self.h2.highest_outbound_stream_id + 2 * (streams_per_wave + 1) < _STREAM_IDS
        return clean and room and not self.stream.closed

    def close(self) -> None:
        self.move(LinkState.CLOSED)
        self.stream.close()
