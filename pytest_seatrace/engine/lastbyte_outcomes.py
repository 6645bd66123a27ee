"""What closes and answers mean for each last-byte slot's record, and the slot itself.

An answer is classified and its connection kept while the server keeps it alive (``engine.pool``).
A connection the server closed is an error naming the hold point; a kept one it closed (its
keep-alive) is replaced where the server cannot have acted, else *unknown*, never replayed.
"""

from __future__ import annotations

import time

import httpx

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.records import Outcome, Record
from pytest_seatrace.engine.classify import ARRIVAL_HEADER, ResponseRecorder
from pytest_seatrace.engine.http11 import HTTP11Connection
from pytest_seatrace.engine.http11_response import RawResponse
from pytest_seatrace.engine.keepalive import idle_ms
from pytest_seatrace.engine.pool import KeptPool
from pytest_seatrace.engine.requests import WireRequest
from pytest_seatrace.engine.stream import TransportError

_ARRIVAL = ARRIVAL_HEADER.encode()


class Slot:
    """One client of one resource in the current wave."""

    __slots__ = ("begun_ns", "conn", "kept", "late", "prefix_ns", "record", "renewed", "request")

    def __init__(self, record: Record, request: WireRequest) -> None:
        self.record = record
        self.request = request
        self.conn: HTTP11Connection | None = None
        self.prefix_ns = 0
        """When its prefix was written: an early answer's latency counts from here."""
        self.begun_ns = 0
        """When its prefix write began (0: not yet, or its connection was replaced): the call of a
        request the server may act on before the release (``hold="body"``, an early answer)."""
        self.kept = False
        """Its connection carried an earlier request (kept alive): the server may close it idle."""
        self.renewed = False
        """Its kept connection was closed under its prefix and replaced once this wave."""
        self.late = False
        """Its kept connection closed at the gate itself, under an incomplete header block: the
        request goes whole on a fresh connection right after the others (``_send_late``)."""


class SlotOutcomes:
    """Fills each slot's record; the pool keeps the connections answered with keep-alive and
    its ``keepalive`` learns from the kept ones the server closed."""

    def __init__(
        self, config: RaceConfig, classifier: ResponseRecorder, pool: KeptPool[HTTP11Connection]
    ) -> None:
        self.config = config
        self.classifier = classifier
        self.pool = pool
        self.keepalive = pool.keepalive

    def unknown_close(
        self, slot: Slot, conn: HTTP11Connection, found: str, idle: int, *, gated: bool = False
    ) -> None:
        """A kept connection the server closed once it may have had a complete request: at
        ``hold="body"`` under the prefix, or at any hold point after the release, unanswered."""
        rec = slot.record
        rec.outcome, rec.end_ns = Outcome.UNKNOWN, time.perf_counter_ns()
        self.called_at_prefix(slot)
        when = (
            "after the release, before any byte of an answer: the request may have been complete"
            if gated
            else "under the request's prefix; at hold='body' the header block was complete"
        )
        rec.reason = (
            f"{found}: the server closed a kept connection ({idle_ms(idle)}, its keep-alive most "
            f"likely) {when}, so the server may have acted on it: unknown, not replayed"
        )
        conn.close()
        slot.conn = None

    def dropped(self, reason: str) -> str:
        """A held request on a fresh connection the server gave up on: the timeout that drops it
        at this hold point, and what avoids it (never the other hold point's own trouble)."""
        if self.config.hold == "headers":
            return (
                f"{reason} (hold='headers': a server with a header-read timeout, such as nginx's "
                "client_header_timeout or Go's ReadHeaderTimeout, drops a request whose header block "
                "stays incomplete; try hold='body')"
            )
        return (
            f"{reason} (hold='body': a server with a body-read timeout drops a request whose body "
            "stays incomplete; sync='gate' sends whole requests)"
        )

    def called_at_prefix(self, slot: Slot) -> None:
        """A record ended before (or without) the release: at ``hold="body"`` the server may have
        acted once its prefix write began, so that is its call; at ``hold="headers"`` it had no
        complete header block, so a record not released keeps call 0."""
        rec = slot.record
        if self.config.hold == "body" and not rec.call_ns:
            rec.call_ns = slot.begun_ns

    def fail(self, slot: Slot, conn: HTTP11Connection | None, reason: str) -> None:
        self.called_at_prefix(slot)
        slot.record.outcome = Outcome.ERROR
        slot.record.reason = reason
        slot.record.end_ns = time.perf_counter_ns()
        if conn is not None:
            conn.close()

    def closed_at_gate(self, slot: Slot, conn: HTTP11Connection, found: str, *, paced: bool) -> None:
        """A connection closed after its last check, at the gate itself. A kept one under an
        incomplete header block goes late (``LastByteFirer._send_late``), except in a shard, which never sends
        after its start instant; under a complete one it is unknown."""
        slot.conn, slot.record.sent_ns = None, 0
        if not slot.kept:
            self.fail(slot, conn, self.dropped(found))
            return
        idle = slot.prefix_ns - conn.idle_since
        self.keepalive.closed_after(idle)
        if self.config.hold == "body":
            self.unknown_close(slot, conn, found, idle)
        elif not paced and not slot.renewed:
            conn.close()
            slot.kept, slot.renewed, slot.late = False, True, True
            slot.record.sent_ns = 0
            self.keepalive.replaced += 1
        else:
            self.fail(
                slot,
                conn,
                f"{found}: the server closed a kept connection ({idle_ms(idle)}, its keep-alive most "
                "likely) at the start instant; the header block was incomplete, so the server did not "
                "act on it, and a shard never sends after its start instant",
            )

    def finish(self, slot: Slot, conn: HTTP11Connection, outcome: RawResponse | TransportError) -> None:
        """A connection's response (or why there is none) into its record; keep the connection
        for the next wave when the server keeps it alive."""
        rec = slot.record
        if isinstance(outcome, TransportError):
            slot.conn = None
            if slot.kept and not conn.reader.begun:  # closed idle as the request arrived
                idle = slot.prefix_ns - conn.idle_since
                self.keepalive.closed_after(idle)
                self.unknown_close(slot, conn, str(outcome), idle, gated=True)
                return
            self.fail(slot, conn, str(outcome))
            return
        response = outcome
        if not rec.early:  # an early answer was complete by the gate, when it was found
            rec.end_ns = response.end_ns
        arrival = dict(response.headers).get(_ARRIVAL)
        self.classifier.fill(
            rec, response.status, arrival, response.body, lambda: self._as_httpx(slot, response)
        )
        if response.keep_alive and not rec.early:  # after an early answer the server is mid-request
            self.keepalive.heard(response.headers)
            self.pool.keep(conn, response.end_ns)
        else:
            conn.close()

    @staticmethod
    def _as_httpx(slot: Slot, response: RawResponse) -> httpx.Response:
        return httpx.Response(
            response.status,
            headers=response.headers,
            content=response.body or b"",
            request=slot.request.httpx_request(),
        )
