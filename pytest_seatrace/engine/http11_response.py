"""HTTP/1.1 responses parsed as their bytes come: llhttp (``httptools``) on the hot path, h11
for everything llhttp cannot end the way h11 would.

``HTTP11Connection`` feeds it whatever its stream pulled; ``feed`` returns each response when
complete.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

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
from pytest_seatrace.engine.stream import TransportError

MAX_H11_EVENTS = 1 << 16
MAX_REPLAY = 65536
"""Bytes of a response kept for a replay into h11, once its head is complete."""


@dataclass(slots=True)
class RawResponse:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes | None
    end_ns: int
    keep_alive: bool


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
