"""Single-packet start over HTTP/2: every stream's request sent but its final DATA frame, then
the final frames of all streams in one ``send()`` per connection.

HTTP/1.1 last-byte needs one ``send()`` per client at the gate (100 packets, each meeting its own
scheduling and network jitter); HTTP/2 multiplexes every client of a resource on one connection,
so the withheld frames (~10 bytes a stream) fit in one write and one TCP segment, and the server
reads them in one ``recv()``. Framing, HPACK and flow control are the ``h2`` library's (sans-IO);
the socket and the TLS layer (``ssl.SSLObject`` over memory BIOs) are ``RawConnection``'s, so the
gate write over TLS is ready ciphertext, just as in last-byte mode.

Per wave and resource: connections (one, or more when the server's ``MAX_CONCURRENT_STREAMS``
is below the client count: the first connection's SETTINGS say how many), one stream per
client, HEADERS and all but the last body byte, then a PING whose ACK says the server has read
every prefix (TLS 1.3 session tickets arrive before it). The final frames are then built, the
gate checked for early answers, resets and GOAWAYs, and the gate writes go out back to back.
Connections that end a wave healthy are kept for later waves and rounds; a kept one the server
closed or sent a GOAWAY on is replaced (``engine.keepalive``). Before the gate, streams the
server says it never processed (above a GOAWAY's last stream id, or refused with
REFUSED_STREAM) are written again on a fresh connection, once; a kept connection that closes
under streams the server may have dispatched at HEADERS leaves them *unknown*, never replayed.
Waves take turns at the server: wave ``i + 1`` is built while the answers of wave ``i`` come in,
and written once they are all in (a server still parsing the next wave while it races this one
spreads it).
"""

from __future__ import annotations

import math
import socket
import ssl
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
import httpx

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.records import Outcome, Record
from pytest_seatrace.engine.classify import ARRIVAL_HEADER, ResponseRecorder
from pytest_seatrace.engine.keepalive import KeepAlive, idle_ms
from pytest_seatrace.engine.limits import HEAD_TOO_LARGE, MAX_RESPONSE_HEAD
from pytest_seatrace.engine.plan import Attempt, Roster, Variation, keep_outcome, release_order
from pytest_seatrace.engine.rawhttp import Origin, RawConnection, TransportError
from pytest_seatrace.engine.requests import RequestBuilder, encode_json, origin_of

RECV_SIZE = 65536
RECEIVE_WINDOW = 2**24
"""Our stream and connection receive windows: responses never wait for a WINDOW_UPDATE."""
_ARRIVAL = ARRIVAL_HEADER.encode()
_STATUS = b":status"
_HOP_BY_HOP = frozenset(
    {b"host", b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
"""Headers HTTP/2 forbids (RFC 9113 §8.2.2); ``host`` becomes ``:authority``."""
_PING = b"seatrace"
RENEW_PASSES = 2
"""Rounds of re-writing the streams a server said it never processed, before the gate; a stream
is written again once at most."""
_STREAM_IDS = 2**31 - 1
_SETTINGS = h2.settings.SettingCodes
_CONFIG = h2.config.H2Configuration(
    client_side=True,
    header_encoding=None,
    # Our fields are normalised once per request head (``_h2_headers``), and h2's checks of every
    # field in and out cost about a third of the client's time per request.
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
    validate_inbound_headers=False,
    normalize_inbound_headers=False,
)


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
            conn = await RawConnection.open(origin, ssl_context)
        except (TransportError, OSError):
            return False
        try:
            return conn.tls is not None and conn.tls.selected_alpn_protocol() == "h2"
        finally:
            conn.close()
    return False


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


@dataclass(frozen=True, slots=True)
class GateWrite:
    """What one resource's gate cost on the wire: for tests and benchmarks, never for judging."""

    round: int
    resource: int
    connections: int
    streams: int
    bytes: int
    sends: int
    """``send()`` calls made at the gate: one per connection unless a socket buffer was full."""
    ns: int
    """From just before the first gate ``send()`` to the return of the last."""
    segments: int | None = None
    """TCP segments with data those sends made (``count_segments`` on Linux), else None."""


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


class _Stream:
    """One client's request: its record, its frames, its response as it comes in."""

    __slots__ = (
        "body",
        "chunks",
        "done",
        "gated",
        "headers",
        "origin",
        "prefix_ns",
        "record",
        "renewed",
        "request",
        "requests",
        "resolved",
        "response_headers",
        "sid",
        "status",
        "unprocessed",
    )

    def __init__(
        self,
        record: Record,
        origin: Origin,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        requests: _Requests,
        request: httpx.Request | None = None,
        resolved: dict[str, Any] | None = None,
    ) -> None:
        self.record = record
        self.origin = origin
        self.requests = requests
        self.request = request
        self.resolved = resolved
        """The attempt's arguments, each callable called once: its ``httpx.Request``, when a
        predicate asks for one, is built from them."""
        self.headers = headers
        self.body = body
        self.sid = 0
        self.status = 0
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.prefix_ns = 0
        """When its prefix was written: an early answer's latency counts from here."""
        self.gated = False
        """Its final frame has left: anything the server says from now on is no early answer."""
        self.done = False
        self.unprocessed = False
        """Ended before the gate by a server that says it never processed it (GOAWAY, refused)."""
        self.renewed = False
        """Written again once on a fresh connection: a second failure is final."""

    def renew(self) -> None:
        """Back to unsent, to be written again on another connection."""
        rec = self.record
        rec.outcome, rec.reason, rec.end_ns, rec.timed_out, rec.early = Outcome.ERROR, None, 0, False, False
        self.sid = self.status = self.prefix_ns = 0
        self.response_headers, self.chunks = [], []
        self.gated = self.done = self.unprocessed = False
        self.renewed = True

    def httpx_request(self) -> httpx.Request:
        """Its own ``httpx.Request`` (for a predicate's ``response.request``), built at most once."""
        if self.request is None:
            self.request = self.requests.builder.build_from(self.resolved or {})
        return self.request


class _Head:
    """One method's request head as HTTP/2 fields, converted once, and per body length."""

    __slots__ = ("by_length", "fields", "length_at", "operation", "origin", "request")

    def __init__(self, request: httpx.Request, operation: str) -> None:
        self.request = request
        self.fields = _h2_headers(request)
        self.origin = origin_of(request)
        self.operation = operation
        self.length_at = -1
        self.by_length: dict[int, list[tuple[bytes, bytes]]] = {}

    def adopt(self, value: Any) -> None:
        """Reuse this head for later bodies if our JSON is httpx's and its length is framed once."""
        body = self.request.read()
        try:
            same = encode_json(value) == body
        except (TypeError, ValueError):
            return
        lengths = [i for i, (name, _) in enumerate(self.fields) if name == b"content-length"]
        if same and len(lengths) == 1:
            self.length_at = lengths[0]
            self.by_length[len(body)] = self.fields

    def for_length(self, length: int) -> list[tuple[bytes, bytes]]:
        fields = self.by_length.get(length)
        if fields is None:
            fields = list(self.fields)
            fields[self.length_at] = (b"content-length", str(length).encode())
            self.by_length[length] = fields
        return fields


class _Requests:
    """Each attempt's request as HTTP/2 fields and a body, converted once where they repeat.

    A constant request is converted once (once per method when a ``method=`` callable mixes
    operations). When only a ``json=`` body varies and our encoding of the first body matches
    httpx's byte for byte (as last-byte's ``WireBuilder`` checks), later attempts reuse the first
    head with their own ``content-length`` and build no ``httpx.Request`` unless a predicate
    asks for it.
    """

    def __init__(self, builder: RequestBuilder) -> None:
        self.builder = builder
        spec = builder.spec
        self._json = spec.variation is Variation.JSON
        self._varies = spec.method_varies
        self._heads: dict[str, _Head] = {}

    def stream(self, record: Record, attempt: Attempt) -> _Stream:
        builder, spec = self.builder, self.builder.spec
        method = spec.method_of(attempt) if self._varies else str(spec.method)
        head = self._heads.get(method)
        if head is not None and head.length_at >= 0:
            args = spec.resolve(attempt, method)  # the json= callable, called once
            try:
                body = encode_json(args.get("json"))
            except (TypeError, ValueError):
                body = None  # httpx says what is wrong with it, below
            if body is not None:
                record.operation = head.operation
                return _Stream(record, head.origin, head.for_length(len(body)), body, self, resolved=args)
            request = builder.build_from(args)
        elif self._json:
            args = spec.resolve(attempt, method)
            request = builder.build_from(args)
        else:
            args = {}
            request = builder.build(attempt, method)
        if head is None or request is not head.request:  # a constant request is converted once
            target = request.url.raw_path.decode("ascii")
            head = self._heads[method] = _Head(request, builder.operation(method, target, attempt))
            if self._json:
                head.adopt(args.get("json"))
        record.operation = head.operation
        return _Stream(record, head.origin, head.fields, request.read(), self, request)


class _Link:
    """One HTTP/2 connection: the engine's socket (TLS over memory BIOs), h2's state, its streams."""

    def __init__(self, raw: RawConnection) -> None:
        self.raw = raw
        self.origin = raw.origin
        self.sock = raw.sock
        self.tls = raw.tls
        self.h2 = _Client(_CONFIG)
        self.h2.received = []
        self.streams: dict[int, _Stream] = {}
        self.gate = b""
        self.holding = False
        """The gate bytes are built: nothing else may be written before them (TLS record order)."""
        self.stage = "connecting"
        self.eof = False
        self.broken: str | None = None
        """Why the connection is unusable (GOAWAY, protocol error, closed), once it is."""
        self.first_bytes = b""
        self.pinged = False
        self.gated = False
        """Its gate write has left (for messages: before or after the gate)."""
        self.kept = False
        """It carried an earlier wave's streams: the server may close it idle (its keep-alive)."""
        self.idle_since = 0
        """When its last wave's last stream was answered (``perf_counter_ns``)."""

    @property
    def capacity(self) -> int:
        """Streams the server lets us open now."""
        return max(0, self.h2.remote_settings.max_concurrent_streams - self.h2.open_outbound_streams)

    @property
    def pending(self) -> list[_Stream]:
        return [s for s in self.streams.values() if not s.done]

    def start(self) -> None:
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

    def encrypt(self, plain: bytes) -> bytes:
        if self.tls is None or not plain:
            return plain
        self.tls.write(plain)
        return self.raw._outgoing.read()

    async def flush(self) -> None:
        """Write what h2 has queued (never while the gate bytes wait: they must go first)."""
        if self.holding or self.eof:
            return
        data = self.h2.data_to_send()
        if data:
            try:
                await self.raw.send_all(self.encrypt(data))
            except OSError as exc:
                raise TransportError(self.lost(exc)) from None

    def lost(self, exc: OSError) -> str:
        """A reset or broken pipe: the server closed the connection, said as such."""
        when = "after" if self.gated else "before"
        return (
            f"the server at {self.origin.url} closed the HTTP/2 connection {when} the gate "
            f"({exc.strerror or exc})"
        )

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
        return self.h2.received

    async def receive(self) -> list[h2.events.Event]:
        """Wait for the next bytes from the server and feed them to h2."""
        while True:
            if self.eof or self.broken is not None:
                return []
            await anyio.wait_readable(self.sock)
            events = self.pull()
            if events:
                return events

    def _read_now(self) -> bytes:
        chunks: list[bytes] = []
        while not self.eof:
            try:
                data = self.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                self.eof = True
                self.broken = self.broken or self.lost(exc)
                break
            if not data:
                self.eof = True
                if self.tls is not None:
                    self.raw._incoming.write_eof()
                break
            if self.tls is None:
                chunks.append(data)
            else:
                self.raw._incoming.write(data)
        if self.tls is not None:
            chunks.extend(self._decrypt(self.tls))
        return b"".join(chunks)

    def _decrypt(self, tls: ssl.SSLObject) -> list[bytes]:
        out: list[bytes] = []
        while True:
            try:
                plain = tls.read(RECV_SIZE)
            except ssl.SSLWantReadError:
                return out
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self.eof = True
                return out
            except ssl.SSLError as exc:
                self.eof = True
                self.broken = self.broken or f"TLS error from {self.origin.url}: {exc}"
                return out
            if not plain:
                self.eof = True
                return out
            out.append(plain)

    def close(self) -> None:
        self.raw.close()


_Groups = dict[tuple[int, Origin], list["_Stream"]]
"""A wave's streams by (resource index, origin): each group gets its own connections."""


class _Refused(Exception):
    """The origin will not speak HTTP/2: every request to it is an error saying so."""


def _h2_headers(request: httpx.Request) -> list[tuple[bytes, bytes]]:
    """The request head as HTTP/2 fields: pseudo-headers first, hop-by-hop fields left out."""
    raw = request.headers.raw
    authority = next((v for k, v in raw if k.lower() == b"host"), None) or request.url.netloc
    fields = [
        (b":method", request.method.encode()),
        (b":scheme", request.url.raw_scheme),
        (b":authority", authority),
        (b":path", request.url.raw_path),
    ]
    for name, value in raw:
        lower = name.lower()
        if lower in _HOP_BY_HOP or (lower == b"te" and value.lower() != b"trailers"):
            continue
        fields.append((lower, value))
    return fields


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


def _code(error_code: object) -> str:
    try:
        return h2.errors.ErrorCodes(error_code).name  # type: ignore[arg-type]
    except ValueError:
        return f"error code {error_code}"


class SinglePacketFirer:
    """Fires waves in single-packet mode over HTTP/2 (TLS ALPN ``h2``, or h2c prior knowledge)."""

    def __init__(
        self,
        config: RaceConfig,
        builder: RequestBuilder,
        ssl_context: ssl.SSLContext | None,
        classifier: ResponseRecorder,
        roster: Roster | None = None,
    ) -> None:
        self.config = config
        self.builder = builder
        self.ssl_context = ssl_context
        self.classifier = classifier
        self.roster = roster or Roster(config)
        """Who races, and what their ``setup=`` returned (as in last-byte mode); a shard: its
        share of every resource's clients."""
        self.starter: Callable[[], Awaitable[None]] | None = None
        """Awaited once per wave right before the gate writes (a shard waits for the
        coordinator's start instant there); ``None``: release at once."""
        self.released: Callable[[], None] | None = None
        """Called right after each wave's held bytes are out (a shard gives up its CPU there,
        so that another shard of the same host releases on time)."""
        self.ungated: list[str] = []
        """Always empty: every request here waits at the gate."""
        self.in_flight: list[Record] = []
        """The wave being raced, until its records are in the sink (Ctrl-C keeps those sent)."""
        self.gate_writes: list[GateWrite] = []
        """One entry per resource and wave: what its gate cost (tests and benchmarks read it)."""
        self.count_segments = False
        """Read each connection's TCP segment counter around the gate (Linux; tests, benchmarks)."""
        self.connections = 0
        """HTTP/2 connections opened so far (kept ones are reused across waves and rounds)."""
        self._idle: dict[Origin, list[_Link]] = {}
        self._opened: list[_Link] = []
        self.keepalive = KeepAlive()
        """The server's keep-alive as learned, and how many kept connections were replaced."""
        self._max_streams: dict[Origin, int] = {}
        self._refused: dict[Origin, str] = {}
        self._requests = _Requests(builder)

    @property
    def replaced(self) -> int:
        """Kept connections the server closed (or was about to) that fresh ones replaced."""
        return self.keepalive.replaced

    # -- the round ---------------------------------------------------------------------------

    async def fire_waves(self, rnd: int, waves: Sequence[Sequence[int]], sink: list[Record]) -> None:
        """Race every wave of a round, appending each wave's records to ``sink`` as it ends.

        Waves take turns at the server, as in last-byte mode: wave ``i + 1`` is built while the
        responses of wave ``i`` come in, and connected and written (all but its final frames)
        once wave ``i`` is answered in full, on the connections it kept alive.
        """
        if not waves:
            return
        groups = await self._build(rnd, waves[0])
        for number, indices in enumerate(waves):
            links = await self._prepare_wave(rnd, groups)
            self.in_flight = [s.record for streams in groups.values() for s in streams]
            await self._renew(rnd, links)
            if self.starter is not None:
                await self.starter()
            self._release(rnd, indices, links)
            if self.released is not None:
                self.released()
            upcoming: list[_Groups] = []
            failures: list[Exception] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._collect, links)
                if number + 1 < len(waves):
                    tg.start_soon(keep_outcome, upcoming, failures, self._build, rnd, waves[number + 1])
            sink.extend(s.record for streams in groups.values() for s in streams)
            self.in_flight = []
            if failures:  # e.g. a request callable that raised: after this wave's figures are kept
                raise failures[0]
            if upcoming:
                groups = upcoming[0]

    async def _build(self, rnd: int, indices: Sequence[int]) -> _Groups:
        """Every request of the wave, grouped by resource and origin (one set of connections each)."""
        groups: _Groups = {}
        roster = self.roster
        for index in indices:
            for client in roster.clients(index):  # not those whose set-up failed
                if client % 25 == 0:  # let the previous wave's responses be read on time
                    await anyio.lowlevel.checkpoint()
                record = Record(resource=index, client=client, round=rnd)
                stream = self._requests.stream(record, roster.attempt(index, client, rnd))
                groups.setdefault((index, stream.origin), []).append(stream)
        return groups

    # -- before the gate ---------------------------------------------------------------------

    async def _prepare_wave(
        self, rnd: int, groups: _Groups, links: dict[int, list[_Link]] | None = None
    ) -> dict[int, list[_Link]]:
        """Connections, prefixes and the gate bytes of every group, within one ``timeout``
        (added to ``links``, a wave's connections by resource index, when given)."""
        links = {} if links is None else links
        with anyio.move_on_after(self.config.timeout):
            async with anyio.create_task_group() as tg:
                for (index, origin), streams in groups.items():
                    tg.start_soon(
                        self._prepare_group, rnd, index, origin, streams, links.setdefault(index, [])
                    )
        for group in links.values():
            for link in group:
                if not link.holding and link.broken is None:  # cut off by the deadline
                    self._fail_link(link, self._late(link), timed_out=True)
        return links

    async def _renew(self, rnd: int, links: dict[int, list[_Link]]) -> None:
        """Between the prefixes and the gate: look at every connection once more (a close or a
        GOAWAY that came after its PING ACK), then write the streams the server said it never
        processed again, on fresh connections, once (``RENEW_PASSES``)."""
        for _ in range(RENEW_PASSES):
            again: _Groups = {}
            for index, group in links.items():
                for link in group:
                    if link.holding:
                        self._handle(link, link.pull())
                        if link.broken or link.eof:
                            self._lost_before_gate(link, link.broken or self._closed(link, "before the gate"))
                    for stream in [s for s in link.streams.values() if s.unprocessed and not s.renewed]:
                        del link.streams[stream.sid]  # it is written again, on another connection
                        again.setdefault((index, link.origin), []).append(stream)
            if not again:
                return
            for streams in again.values():
                for stream in streams:
                    stream.renew()
            await self._prepare_wave(rnd, again, links)

    def _lost_before_gate(self, link: _Link, reason: str) -> None:
        """A connection closed (or ended by GOAWAY) before its gate write. Streams the server
        said it never processed are left to ``_renew``; on a kept connection the others may have
        been dispatched at HEADERS (hypercorn runs the app there): unknown, not replayed."""
        if link.kept:
            idle = self._idle_at_prefix(link)
            self.keepalive.closed_after(idle)
            self.keepalive.replaced += 1
            for stream in link.pending:
                self._maybe_started(link, stream, reason)
        self._fail_link(link, reason)

    @staticmethod
    def _idle_at_prefix(link: _Link) -> int:
        """How long a kept connection had been idle when this wave's prefixes went on it."""
        written = [s.prefix_ns for s in link.streams.values() if s.prefix_ns]
        return (min(written) if written else time.perf_counter_ns()) - link.idle_since

    def _maybe_started(self, link: _Link, stream: _Stream, reason: str) -> None:
        """A stream on a kept connection that ended before the gate once the server may have
        dispatched it at HEADERS: unknown with the cause, never written again."""
        rec = stream.record
        rec.outcome, rec.end_ns = Outcome.UNKNOWN, time.perf_counter_ns()
        rec.reason = (
            f"{reason}: the server closed a kept connection ({idle_ms(self._idle_at_prefix(link))}, its "
            "keep-alive most likely) after this request's HEADERS, so it may have started it: unknown, "
            "not replayed"
        )
        stream.done = True

    def _late(self, link: _Link) -> str:
        return f"timed out after {self.config.timeout}s {link.stage} ({link.origin.url})"

    async def _prepare_group(
        self, rnd: int, index: int, origin: Origin, streams: list[_Stream], out: list[_Link]
    ) -> None:
        """One resource's streams on as few connections as the server's stream limit allows,
        spread evenly over them."""
        stage = ["connecting"]
        try:
            links = await self._links_for(origin, len(streams), stage)
        except (_Refused, TransportError) as exc:
            for stream in streams:
                self._fail(stream, str(exc))
            return
        except anyio.get_cancelled_exc_class():  # the wave's deadline, before any stream had a connection
            for stream in streams:
                self._fail(stream, f"timed out after {self.config.timeout}s {stage[0]} ({origin.url})")
                stream.record.timed_out = True
            raise
        share = math.ceil(len(streams) / len(links))
        assigned: list[tuple[_Link, list[_Stream]]] = []
        start = 0
        for link in links:
            take = min(share, link.capacity, len(streams) - start)
            if take:
                assigned.append((link, streams[start : start + take]))
                out.append(link)
            else:
                self._idle.setdefault(origin, []).append(link)
            start += take
        async with anyio.create_task_group() as tg:
            for link, mine in assigned:
                tg.start_soon(self._prepare_link, link, mine, rnd, index)

    async def _links_for(self, origin: Origin, count: int, stage: list[str]) -> list[_Link]:
        """Enough connections for ``count`` streams: kept ones first, then new ones, as many as the
        server's stream limit needs (learned from the first connection's SETTINGS)."""
        if origin in self._refused:
            raise _Refused(self._refused[origin])
        out: list[_Link] = []
        idle = self._idle.get(origin, [])
        keepalive = self.keepalive
        wait = keepalive.probe_wait([link.idle_since for link in idle], time.perf_counter_ns())
        if wait:  # once a race, before the first reuse: does the server keep them at all?
            await anyio.sleep(wait)
        probed = int(wait * 1e9)  # a close found now teaches the idle time the probe began at
        while idle and sum(link.capacity for link in out) < count:
            link = idle.pop()
            self._handle(link, link.pull())  # a GOAWAY or a close while it was idle
            age = time.perf_counter_ns() - link.idle_since
            if link.broken is None and not link.eof and not keepalive.stale(age):
                out.append(link)
                continue
            if link.broken is not None or link.eof:
                keepalive.closed_after(age - probed)
            keepalive.replaced += 1
            link.close()
        if not out:
            out.append(await self._open(origin, stage))
        limit = self._max_streams.get(origin, count) or 1
        missing = count - sum(link.capacity for link in out)
        if missing > 0:
            fresh: list[_Link] = []
            failures: list[Exception] = []
            async with anyio.create_task_group() as tg:
                for _ in range(math.ceil(missing / min(limit, count))):
                    tg.start_soon(self._open_into, origin, fresh, failures, stage)
            out.extend(fresh)
            if failures:
                for link in out:
                    self._idle.setdefault(origin, []).append(link)
                raise failures[0]
        if sum(link.capacity for link in out) < count:
            raise TransportError(
                f"the server at {origin.url} allows {limit} concurrent streams per connection: "
                f"{count} streams did not fit on {len(out)} connections"
            )
        return out

    async def _open_into(
        self, origin: Origin, out: list[_Link], failures: list[Exception], stage: list[str]
    ) -> None:
        """``_open`` in a task group, its failure kept for the group's streams (no exception group)."""
        try:
            out.append(await self._open(origin, stage))
        except (_Refused, TransportError) as exc:
            failures.append(exc)

    async def _open(self, origin: Origin, stage: list[str]) -> _Link:
        """Connect, check ALPN (or h2c), and wait for the server's SETTINGS; ``stage`` says how far
        it got, for a timeout's message."""
        context = self.ssl_context if origin.scheme == "https" else None
        if origin.scheme == "https" and context is None:
            raise TransportError(f"https origin {origin.url} needs an SSL context")
        raw = await RawConnection.open(origin, context)
        link = _Link(raw)
        self._opened.append(link)
        self.connections += 1
        try:
            if raw.tls is not None:
                chosen = raw.tls.selected_alpn_protocol()
                if chosen != "h2":
                    why = f"ALPN chose {chosen}" if chosen else "ALPN chose no protocol, so HTTP/1.1"
                    raise self._refuse(origin, why)
            link.stage = stage[0] = "waiting for the server's HTTP/2 SETTINGS"
            link.start()
            await link.flush()
            while not any(isinstance(e, h2.events.RemoteSettingsChanged) for e in await link.receive()):
                if not (link.eof or link.broken):
                    continue
                if raw.tls is None:  # h2c prior knowledge: whatever ends it here is a refusal
                    raise self._refuse(origin, self._preface_refusal(link))
                raise TransportError(link.broken or self._closed(link, "before its SETTINGS"))
            await link.flush()  # the SETTINGS ACK
        except BaseException:
            link.close()
            raise
        self._max_streams[origin] = link.capacity
        if link.capacity < 1:
            link.close()
            raise TransportError(f"the server at {origin.url} allows no concurrent HTTP/2 streams")
        return link

    def _refuse(self, origin: Origin, why: str) -> _Refused:
        self._refused[origin] = not_h2_reason(origin, why)
        return _Refused(self._refused[origin])

    @staticmethod
    def _preface_refusal(link: _Link) -> str:
        if link.first_bytes.startswith(b"HTTP/"):
            version = link.first_bytes.split(b" ", 1)[0].decode("ascii", "replace")
            return f"it answered the HTTP/2 preface with {version}"
        if link.broken and not link.eof:
            return f"its answer to the HTTP/2 preface is no HTTP/2: {link.broken}"
        return "it closed the connection at the HTTP/2 preface"

    async def _prepare_link(self, link: _Link, streams: list[_Stream], rnd: int, index: int) -> None:
        """Write the prefixes, wait for the PING ACK behind them, build the final frames."""
        try:
            link.stage, link.gated = "writing request prefixes", False
            for stream in streams:
                stream.sid = link.h2.get_next_available_stream_id()
                link.h2.send_headers(stream.sid, stream.headers, end_stream=False)
                link.streams[stream.sid] = stream
            await link.flush()
            now = time.perf_counter_ns()
            for stream in streams:
                stream.prefix_ns = now
            await self._write_bodies(link, streams)
            link.stage = "waiting for the PING ACK behind the request prefixes"
            link.pinged = False
            link.h2.ping(_PING)
            await link.flush()
            while not link.pinged:
                self._handle(link, await link.receive())
                if link.broken or link.eof:
                    self._lost_before_gate(link, link.broken or self._closed(link, "before the gate"))
                    return
            self._handle(link, link.pull())  # anything right behind the ACK
            await link.flush()  # acknowledgements now, so that none lands in the gate write
            self._build_gate(link, rnd, index)
        except (TransportError, OSError) as exc:
            self._lost_before_gate(link, str(exc))
        except h2.exceptions.H2Error as exc:
            self._fail_link(link, f"HTTP/2 error on {link.origin.url} before the gate: {exc!r}")

    async def _write_bodies(self, link: _Link, streams: list[_Stream]) -> None:
        """Every body but its last byte, in frames the server allows, keeping one byte of stream
        and of connection window per stream for the gate."""
        conn = link.h2
        reserve = sum(1 for s in streams if s.body)
        for stream in streams:
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
                link.stage = "waiting for the server's flow-control window"
                await link.flush()
                self._handle(link, await link.receive())
                if link.broken or link.eof:
                    raise TransportError(link.broken or self._closed(link, "before the gate"))
        await link.flush()

    def _build_gate(self, link: _Link, rnd: int, index: int) -> None:
        """The final frame of every live stream, in a seeded order (the server reads them in it),
        as one buffer (one TLS record) per connection."""
        conn = link.h2
        order = list(link.streams.values())
        release_order(self.config.seed, rnd, index, order)
        for stream in order:
            if stream.done and stream.record.outcome is Outcome.ERROR:
                continue  # reset by the server: nothing left to send on it
            try:
                if stream.body:
                    conn.send_data(stream.sid, stream.body[-1:], end_stream=True)
                else:
                    conn.end_stream(stream.sid)
            except h2.exceptions.StreamClosedError:
                continue
        link.gate = link.encrypt(conn.data_to_send())
        link.holding = True
        link.stage = "waiting for the gate"

    # -- the gate ----------------------------------------------------------------------------

    def _release(self, rnd: int, indices: Sequence[int], links: dict[int, list[_Link]]) -> None:
        """Check every connection, then each resource's gate writes back to back, one ``send()``
        per connection, in a seeded order; every stream of a connection is stamped at its return."""
        for index in indices:
            for link in links.get(index, []):
                if link.holding:
                    self._handle(link, link.pull())
                    if link.broken or link.eof:
                        self._lost_before_gate(link, link.broken or self._closed(link, "before the gate"))
        for index in indices:
            ready = [link for link in links.get(index, []) if link.holding and link.broken is None]
            if not ready:
                continue
            release_order(self.config.seed, rnd, index, ready)
            before = [data_segments_out(link.sock) for link in ready] if self.count_segments else []
            shots = [(link.sock.send, link.gate) for link in ready]
            results: list[int | OSError] = []
            stamps: list[int] = []
            clock = time.perf_counter_ns
            start = clock()
            for send, gate in shots:  # the hot loop: a bound send and a clock read per connection
                try:
                    results.append(send(gate))
                except OSError as exc:
                    results.append(exc)
                stamps.append(clock())
            sends = len(shots)
            segments = None
            if self.count_segments:
                after = [data_segments_out(link.sock) for link in ready]
                counted = [
                    (a, b) for a, b in zip(before, after, strict=True) if a is not None and b is not None
                ]
                if len(counted) == len(ready):
                    segments = sum(b - a for a, b in counted)
            for link, outcome, stamp in zip(ready, results, stamps, strict=True):
                link.holding, link.gated = False, True
                if isinstance(outcome, OSError):
                    self._fail_link(link, f"final frames not sent to {link.origin.url}: {outcome}")
                    continue
                if outcome < len(link.gate):
                    sends += 1
                    try:
                        self._finish_gate(link, outcome)
                    except OSError as exc:
                        self._fail_link(link, f"final frames not sent to {link.origin.url}: {exc}")
                        continue
                for stream in link.streams.values():
                    stream.gated = True
                    if not stream.done:  # an early answer already counts from its prefix
                        stream.record.sent_ns = stream.prefix_ns if stream.record.early else stamp
            self.gate_writes.append(
                GateWrite(
                    rnd,
                    index,
                    len(ready),
                    sum(len(link.streams) for link in ready),
                    sum(len(link.gate) for link in ready),
                    sends,
                    stamps[-1] - start,
                    segments,
                )
            )

    @staticmethod
    def _finish_gate(link: _Link, sent: int) -> None:
        """The rest of a gate write after a short send (a full socket buffer), without delay."""
        link.sock.setblocking(True)
        try:
            link.sock.sendall(link.gate[sent:])
        finally:
            link.sock.setblocking(False)

    # -- after the gate ----------------------------------------------------------------------

    async def _collect(self, links: dict[int, list[_Link]]) -> None:
        """Read every response, with one deadline: ``timeout`` after the wave's gate."""
        live = [link for group in links.values() for link in group if link.pending and link.broken is None]
        with anyio.move_on_after(self.config.timeout):
            async with anyio.create_task_group() as tg:
                for link in live:
                    tg.start_soon(self._read_link, link)
        for group in links.values():
            for link in group:
                timed_out = False
                for stream in link.pending:
                    rec = stream.record
                    self._fail(stream, f"no response within {self.config.timeout}s after the final write")
                    rec.outcome, rec.timed_out = Outcome.UNKNOWN, True
                    timed_out = True
                if timed_out or link.broken or link.eof or not self._reusable(link):
                    link.close()
                else:
                    link.streams.clear()
                    link.kept, link.idle_since = True, time.perf_counter_ns()
                    self._idle.setdefault(link.origin, []).append(link)

    def _reusable(self, link: _Link) -> bool:
        """Kept for the next wave only when every stream ended in a response and ids remain."""
        clean = all(s.status for s in link.streams.values())
        room = link.h2.highest_outbound_stream_id + 2 * (self.config.concurrency + 1) < _STREAM_IDS
        return clean and room and not link.raw.closed

    async def _read_link(self, link: _Link) -> None:
        try:
            await link.flush()  # what was queued while the gate bytes waited (acks)
            while link.pending:
                self._handle(link, await link.receive())
                if link.broken or link.eof:
                    self._lost_after_gate(link, link.broken or self._closed(link, "before answering"))
                    return
                await link.flush()
        except TransportError as exc:
            self._lost_after_gate(link, str(exc))

    def _lost_after_gate(self, link: _Link, reason: str) -> None:
        """A connection lost after its gate write: on a kept one the server closed (its
        keep-alive), the streams it never began to answer may have started: unknown."""
        if link.kept:
            self.keepalive.closed_after(self._idle_at_prefix(link))
            for stream in link.pending:
                if not stream.status:
                    self._maybe_started(link, stream, reason)
        self._fail_link(link, reason)

    # -- events and outcomes -----------------------------------------------------------------

    def _handle(self, link: _Link, events: list[h2.events.Event]) -> None:
        """Feed h2's events into the streams' responses and records."""
        streams = link.streams
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                stream = streams.get(event.stream_id)
                if stream is not None and (self.classifier.needs_response or not stream.chunks):
                    stream.chunks.append(event.data)
                link.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.ResponseReceived):
                stream = streams.get(event.stream_id)
                if stream is not None:
                    self._headers(stream, event.headers)
            elif isinstance(event, h2.events.StreamEnded):
                stream = streams.get(event.stream_id)
                if stream is not None and not stream.done:
                    self._complete(stream)
            elif isinstance(event, h2.events.StreamReset):
                stream = streams.get(event.stream_id)
                if stream is not None and not stream.done:
                    self._fail(stream, self._reset_reason(link, stream, event.error_code))
                    refused = _code(event.error_code) == "REFUSED_STREAM"
                    stream.unprocessed = refused and not stream.gated
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._goaway(link, event)
            elif isinstance(event, h2.events.PingAckReceived):
                link.pinged = link.pinged or event.ping_data == _PING

    def _headers(self, stream: _Stream, headers: Iterable[tuple[bytes | str, bytes | str]]) -> None:
        fields = [(_raw(k), _raw(v)) for k, v in headers]
        status = next((v for k, v in fields if k == _STATUS), b"")
        stream.status = int(status) if status.isdigit() else 0
        stream.response_headers = [(k, v) for k, v in fields if not k.startswith(b":")]
        if not stream.gated:  # the server answered before its final frame left
            stream.record.early = True

    def _complete(self, stream: _Stream) -> None:
        rec = stream.record
        rec.end_ns = time.perf_counter_ns()
        stream.done = True
        if not stream.status:
            rec.outcome, rec.reason = Outcome.ERROR, "the server ended the stream without a response"
            return
        if rec.early:
            rec.sent_ns = stream.prefix_ns
        arrival = next((v for k, v in stream.response_headers if k == _ARRIVAL), None)
        body = b"".join(stream.chunks)
        self.classifier.fill(rec, stream.status, arrival, body, lambda: self._as_httpx(stream, body))

    @staticmethod
    def _as_httpx(stream: _Stream, body: bytes) -> httpx.Response:
        return httpx.Response(
            stream.status,
            headers=stream.response_headers,
            content=body,
            request=stream.httpx_request(),
            extensions={"http_version": b"HTTP/2"},
        )

    @staticmethod
    def _reset_reason(link: _Link, stream: _Stream, error_code: object) -> str:
        when = "after" if stream.gated else "before"
        name = _code(error_code)
        if name == "REFUSED_STREAM":
            return (
                f"the server at {link.origin.url} refused stream {stream.sid} (REFUSED_STREAM) {when} "
                "the gate: the request was not processed"
            )
        return f"the server at {link.origin.url} reset stream {stream.sid} ({name}) {when} the gate"

    def _goaway(self, link: _Link, event: h2.events.ConnectionTerminated) -> None:
        """A GOAWAY: streams above its last stream id were never processed; the ones below it
        cannot be read on any more (h2 closes the connection), so their outcome is lost too."""
        last = event.last_stream_id or 0
        name = _code(event.error_code)
        extra = ""
        if event.additional_data:
            extra = ": " + bytes(event.additional_data)[:200].decode("utf-8", "replace")
        for stream in link.pending:
            when = "after" if stream.gated else "before"
            if stream.sid > last:
                stream.unprocessed = not stream.gated
                reason = f"refused by GOAWAY ({name}, last stream {last}) {when} the gate: not processed"
            else:
                reason = (
                    f"the connection ended by GOAWAY ({name}) {when} the gate, "
                    f"before stream {stream.sid} was answered"
                )
                if link.kept and not stream.gated:
                    self._maybe_started(link, stream, f"the server at {link.origin.url}: {reason}{extra}")
                    continue
            self._fail(stream, f"the server at {link.origin.url}: {reason}{extra}")
        link.broken = link.broken or f"the server at {link.origin.url} sent GOAWAY ({name})"

    @staticmethod
    def _closed(link: _Link, when: str) -> str:
        return f"the server at {link.origin.url} closed the HTTP/2 connection {when}"

    def _fail_link(self, link: _Link, reason: str, *, timed_out: bool = False) -> None:
        for stream in link.pending:
            self._fail(stream, reason)
            stream.record.timed_out = timed_out
        link.broken = link.broken or reason
        link.holding = False
        link.close()

    @staticmethod
    def _fail(stream: _Stream, reason: str) -> None:
        rec = stream.record
        rec.outcome, rec.reason = Outcome.ERROR, reason
        rec.end_ns = time.perf_counter_ns()
        stream.done = True

    async def aclose(self) -> None:
        for link in self._opened:
            link.close()
        self._opened.clear()
        self._idle.clear()


__all__ = ["GateWrite", "SinglePacketFirer", "data_segments_out", "negotiate_h2", "not_h2_reason"]
