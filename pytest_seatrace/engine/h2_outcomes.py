"""What HTTP/2 events and lost connections mean for each stream's record, in single-packet starts.

A response, a reset (refused: never processed), a GOAWAY (above its last stream id: never
processed; below it: lost), a connection lost before or after the gate. On a kept connection the
server closed (its keep-alive), streams it may have dispatched at HEADERS are *unknown*, never
replayed (``engine.keepalive``).
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import h2.events
import httpx

from pytest_seatrace.core.records import Outcome
from pytest_seatrace.engine.classify import ARRIVAL_HEADER, ResponseRecorder
from pytest_seatrace.engine.h2_requests import H2Stream
from pytest_seatrace.engine.http2 import HTTP2Connection, error_name
from pytest_seatrace.engine.keepalive import KeepAlive, idle_ms

_ARRIVAL = ARRIVAL_HEADER.encode()
_STATUS = b":status"


def _raw(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


class StreamOutcomes:
    """Fills each stream's record from its connection's events; ``keepalive`` learns from the
    kept connections the server closed."""

    def __init__(self, classifier: ResponseRecorder, keepalive: KeepAlive) -> None:
        self.classifier = classifier
        self.keepalive = keepalive

    def handle(self, link: HTTP2Connection, events: list[h2.events.Event]) -> None:
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
                    self.fail(stream, self._reset_reason(link, stream, event.error_code))
                    refused = error_name(event.error_code) == "REFUSED_STREAM"
                    stream.unprocessed = refused and not stream.gated
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._goaway(link, event)

    def _headers(self, stream: H2Stream, headers: Iterable[tuple[bytes | str, bytes | str]]) -> None:
        fields = [(_raw(k), _raw(v)) for k, v in headers]
        status = next((v for k, v in fields if k == _STATUS), b"")
        stream.status = int(status) if status.isdigit() else 0
        stream.response_headers = [(k, v) for k, v in fields if not k.startswith(b":")]
        if not stream.gated:  # the server answered before its final frame left
            stream.record.early = True

    def _complete(self, stream: H2Stream) -> None:
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
    def _as_httpx(stream: H2Stream, body: bytes) -> httpx.Response:
        return httpx.Response(
            stream.status,
            headers=stream.response_headers,
            content=body,
            request=stream.httpx_request(),
            extensions={"http_version": b"HTTP/2"},
        )

    @staticmethod
    def _reset_reason(link: HTTP2Connection, stream: H2Stream, error_code: object) -> str:
        when = "after" if stream.gated else "before"
        name = error_name(error_code)
        if name == "REFUSED_STREAM":
            return (
                f"the server at {link.origin.url} refused stream {stream.sid} (REFUSED_STREAM) {when} "
                "the gate: the request was not processed"
            )
        return f"the server at {link.origin.url} reset stream {stream.sid} ({name}) {when} the gate"

    def _goaway(self, link: HTTP2Connection, event: h2.events.ConnectionTerminated) -> None:
        """A GOAWAY: streams above its last stream id were never processed; the ones below it
        cannot be read on any more (h2 closes the connection), so their outcome is lost too."""
        last = event.last_stream_id or 0
        name = error_name(event.error_code)
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
            self.fail(stream, f"the server at {link.origin.url}: {reason}{extra}")
        link.fail(f"the server at {link.origin.url} sent GOAWAY ({name})")

    def fail_link(self, link: HTTP2Connection, reason: str, *, timed_out: bool = False) -> None:
        for stream in link.pending:
            self.fail(stream, reason)
            stream.record.timed_out = timed_out
        link.fail(reason)
        link.close()

    @staticmethod
    def fail(stream: H2Stream, reason: str) -> None:
        rec = stream.record
        rec.outcome, rec.reason = Outcome.ERROR, reason
        rec.end_ns = time.perf_counter_ns()
        stream.done = True

    def lost_before_gate(self, link: HTTP2Connection, reason: str) -> None:
        """A connection closed (or ended by GOAWAY) before its gate write. Streams the server
        said it never processed are left to ``_renew``; on a kept connection the others may have
        been dispatched at HEADERS (hypercorn runs the app there): unknown, not replayed. A bodyless
        stream sent nothing yet (its HEADERS wait for the gate): never processed, written again."""
        unsent = [s for s in link.pending if s.whole_at_gate]
        if link.kept:
            idle = self.idle_at_prefix(link)
            self.keepalive.closed_after(idle)
            self.keepalive.replaced += 1
            for stream in link.pending:
                if not stream.whole_at_gate:
                    self._maybe_started(link, stream, reason)
        self.fail_link(link, reason)
        for stream in unsent:
            stream.unprocessed = True

    @staticmethod
    def idle_at_prefix(link: HTTP2Connection) -> int:
        """How long a kept connection had been idle when this wave's prefixes went on it."""
        written = [s.prefix_ns for s in link.streams.values() if s.prefix_ns]
        return (min(written) if written else time.perf_counter_ns()) - link.idle_since

    def _maybe_started(self, link: HTTP2Connection, stream: H2Stream, reason: str) -> None:
        """A stream on a kept connection that ended before the gate once the server may have
        dispatched it at HEADERS: unknown with the cause, never written again."""
        rec = stream.record
        rec.outcome, rec.end_ns = Outcome.UNKNOWN, time.perf_counter_ns()
        rec.reason = (
            f"{reason}: the server closed a kept connection ({idle_ms(self.idle_at_prefix(link))}, its "
            "keep-alive most likely) after this request's HEADERS, so it may have started it: unknown, "
            "not replayed"
        )
        stream.done = True

    def lost_after_gate(self, link: HTTP2Connection, reason: str) -> None:
        """A connection lost after its gate write: on a kept one the server closed (its
        keep-alive), the streams it never began to answer may have started: unknown."""
        if link.kept:
            self.keepalive.closed_after(self.idle_at_prefix(link))
            for stream in link.pending:
                if not stream.status:
                    self._maybe_started(link, stream, reason)
        self.fail_link(link, reason)
