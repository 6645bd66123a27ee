"""Single-packet starts over HTTP/2, driven through ``SinglePacketFirer`` on real loopback servers.

The hypercorn sample service (h2c and ALPN h2 over TLS) shows the race itself: winners, the one
``send()`` per connection at the gate, the stream limit. Small ``h2`` servers in a thread play
the faults a real server rarely shows on demand: GOAWAY and RST_STREAM mid-race, early answers,
silence, a tiny flow-control window.
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest

from pytest_seatrace import RaceResult
from pytest_seatrace.core.records import Outcome, RaceRun, Record
from pytest_seatrace.engine.classify import Classifier
from pytest_seatrace.engine.firers import ssl_context_for
from pytest_seatrace.engine.http2 import negotiate_h2
from pytest_seatrace.engine.limits import MAX_RESPONSE_HEAD, STATUS_FIELD
from pytest_seatrace.engine.plan import Attempt, RequestSpec
from pytest_seatrace.engine.requests import RequestBuilder, make_ssl_context
from pytest_seatrace.engine.single_packet import SinglePacketFirer
from pytest_seatrace.engine.stream import Origin, data_segments_out
from pytest_seatrace.marker import resolve
from pytest_seatrace.options import Settings
from pytest_seatrace.service import ServiceHandle
from tests.support import hung_server, raw_server

RACE_LIMIT_S = 60.0
TRANSPORTS = pytest.mark.parametrize("tls", [False, True], ids=["h2c", "tls"])


def order(a: Attempt) -> dict[str, object]:
    return {"seats": [a.resource], "user": f"vu-{a.client}"}


def h2_context(service: ServiceHandle) -> ssl.SSLContext | None:
    """What the runner passes for single-packet: the service's CA, offering h2 then http/1.1."""
    return None if service.ca_path is None else ssl_context_for("single-packet", service.ca_path)


@dataclass
class Fired:
    result: RaceResult
    firer: SinglePacketFirer
    records: list[Record]


def fire(
    spec: RequestSpec,
    context: ssl.SSLContext | None = None,
    *,
    waves: int = 1,
    count_segments: bool = False,
    **marker: Any,
) -> Fired:
    """One race of ``waves`` single-resource waves, judged as the runner would judge it."""
    marker.setdefault("timeout", 10.0)
    marker.setdefault("resources", range(1, waves + 1))
    if isinstance(marker.get("expect"), int):  # as the marker's checks hand it on
        marker["expect"] = range(marker["expect"], marker["expect"] + 1)
    config = resolve({}, marker, Settings(), flexible=False)

    async def main() -> Fired:
        builder = RequestBuilder(spec, None, make_ssl_context(True))
        firer = SinglePacketFirer(config, builder, context, Classifier(config))
        firer.count_segments = count_segments
        sink: list[Record] = []
        try:
            with anyio.fail_after(RACE_LIMIT_S):
                started = time.perf_counter()
                await firer.fire_waves(1, [range(i, i + 1) for i in range(len(config.resources))], sink)
                duration = time.perf_counter() - started
        finally:
            await firer.aclose()
            await builder.aclose()
        result = RaceResult.from_run("single-packet", config, RaceRun(records=tuple(sink), duration=duration))
        return Fired(result, firer, sink)

    return anyio.run(main)


# -- the sample service under hypercorn ------------------------------------------------------


@TRANSPORTS
def test_safe_service_sixteen_winners_of_1600(module_service, tls):
    service = module_service(server="hypercorn", tls=tls)
    fired = fire(RequestSpec("POST", service.url + "/orders", json=order), h2_context(service), waves=16)
    result = fired.result
    assert (result.requests, result.wins, result.rejections, result.errors) == (1600, 16, 1584, 0)
    assert result.status_counts == {201: 16, 409: 1584}
    assert result.passed
    assert result.early == 0
    assert all(rec.sent_ns and rec.end_ns >= rec.sent_ns and rec.server_ns for rec in fired.records)
    for seat in (1, 8, 16):
        assert service.holders(seat) == [f"vu-{result.winners[seat][0].client}"]
    # One connection (waves take turns: the next is written once this one is answered), kept
    # across the 16 waves; each gate one send() of every stream's last frame.
    assert fired.firer.connections == 1
    assert [(g.connections, g.streams, g.sends) for g in fired.firer.gate_writes] == [(1, 100, 1)] * 16
    assert all(g.bytes <= 100 * 10 + (64 if tls else 0) for g in fired.firer.gate_writes)


@TRANSPORTS
def test_unsafe_service_is_caught(module_service, tls):
    service = module_service(server="hypercorn", tls=tls, strategy="unsafe", window_ms=1)
    fired = fire(RequestSpec("POST", service.url + "/orders", json=order), h2_context(service), waves=4)
    result = fired.result
    assert result.errors == 0
    assert result.wins > 4
    assert {v.kind for v in result.violations} == {"too-many"}
    assert any(len(w) > 1 for w in result.winners.values())


@TRANSPORTS
def test_gate_is_one_send_and_one_tcp_segment_per_connection(module_service, tls):
    """The gate of 100 streams: one ``send()`` (counted by the engine at its own write calls) and,
    where Linux says so, one TCP segment with data (``tcpi_data_segs_out`` before and after)."""
    service = module_service(server="hypercorn", tls=tls)
    spec = RequestSpec("POST", service.url + "/orders", json=order)
    fired = fire(spec, h2_context(service), waves=2, count_segments=True)
    assert fired.result.wins == 2
    for gate in fired.firer.gate_writes:
        assert (gate.connections, gate.streams, gate.sends) == (1, 100, 1)
    probe = socket.socket()
    try:
        measurable = data_segments_out(probe) is not None
    finally:
        probe.close()
    if not measurable:
        pytest.skip(f"no TCP_INFO segment counter on {sys.platform}: one send() checked, segments not")
    assert [gate.segments for gate in fired.firer.gate_writes] == [1, 1]


def test_stream_limit_below_the_clients_opens_more_connections(module_service):
    """32 streams per connection, 100 clients: the server's SETTINGS decide on 4 connections,
    25 streams each, their gate writes back to back."""
    service = module_service(server="hypercorn", tls=True, h2_max_streams=32)
    spec = RequestSpec("POST", service.url + "/orders", json=order)
    fired = fire(spec, h2_context(service), waves=3)
    assert (fired.result.wins, fired.result.rejections, fired.result.errors) == (3, 297, 0)
    assert [(g.connections, g.streams, g.sends) for g in fired.firer.gate_writes] == [(4, 100, 4)] * 3
    assert fired.firer.connections == 4  # one set of 4, kept by every wave in turn


def test_http11_only_server_is_a_clear_error(module_service):
    """uvicorn over TLS offers no h2 by ALPN: an explicit single-packet never falls back."""
    service = module_service(server="uvicorn", tls=True)
    fired = fire(RequestSpec("POST", service.url + "/orders", json=order), h2_context(service), waves=2)
    result = fired.result
    assert result.errors == 200
    (reason,) = result.error_reasons
    assert reason.startswith(f"the server at {service.url} does not speak HTTP/2 (ALPN chose ")
    assert reason.endswith("use sync='last-byte'")
    assert fired.firer.connections == 1  # asked once, not once per wave


def test_h2c_to_an_http11_server_is_a_clear_error(module_service):
    service = module_service(server="uvicorn")
    result = fire(RequestSpec("POST", service.url + "/orders", json=order), concurrency=5).result
    assert result.error_reasons == {
        f"the server at {service.url} does not speak HTTP/2 (it answered the HTTP/2 preface with "
        "HTTP/1.1); use sync='last-byte'": 5
    }


def test_negotiate_h2(module_service):
    hyper = module_service(server="hypercorn", tls=True)
    uvi = module_service(server="uvicorn", tls=True)
    plain = module_service(server="hypercorn")

    async def main() -> list[bool]:
        answers = []
        for service in (hyper, uvi, plain):
            origin = Origin("https" if service.tls else "http", "127.0.0.1", service.port)
            answers.append(await negotiate_h2(origin, h2_context(service), 5.0))
        unreachable = Origin("https", "127.0.0.1", 1)
        answers.append(await negotiate_h2(unreachable, h2_context(hyper), 5.0))
        return answers

    assert anyio.run(main) == [True, False, False, False]


# -- small h2 servers for faults ---------------------------------------------------------------


@dataclass
class Seen:
    """What a scripted server saw, for assertions about the wire."""

    headers_end_stream: list[bool] = field(default_factory=list)
    final_frames: list[int] = field(default_factory=list)
    """Length of each stream's DATA frame carrying END_STREAM."""
    bodies: dict[int, bytes] = field(default_factory=dict)
    data_frames: list[int] = field(default_factory=list)
    pings: int = 0
    headers_after_ping: list[bool] = field(default_factory=list)
    """Per request, whether its HEADERS came after the client's PING, so in the gate write."""
    final_after_answer: list[int] = field(default_factory=list)
    """Streams whose final DATA frame came after the server had answered them in full."""
    resets: list[tuple[int, int]] = field(default_factory=list)
    """(stream id, error code) of each RST_STREAM the client sent."""
    answered: set[int] = field(default_factory=set)
    done: threading.Event = field(default_factory=threading.Event)


Script = Callable[[h2.connection.H2Connection, list[h2.events.Event], Seen], bool]
"""Reacts to one batch of events; returns False to close the connection."""


@contextlib.contextmanager
def h2_server(script: Script, *, window: int | None = None) -> Iterator[tuple[str, Seen]]:
    """An h2c server in a thread (one thread per connection) that ``script`` drives."""
    seen = Seen()

    def handle(sock: socket.socket) -> None:
        sock.settimeout(10)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False, header_encoding=None))
        if window is not None:
            conn.local_settings = h2.settings.Settings(
                client=False, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
            )
        conn.initiate_connection()
        with contextlib.suppress(OSError):
            sock.sendall(conn.data_to_send())
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                if conn.state_machine.state is h2.connection.ConnectionState.CLOSED:
                    continue  # after a GOAWAY the script kept it open for: drain until the client goes
                events = conn.receive_data(data)
                for event in events:
                    note(event, seen)
                keep = script(conn, events, seen)
                sock.sendall(conn.data_to_send())
                if not keep:
                    break
        seen.done.set()
        sock.close()

    with raw_server(handle) as url:
        yield url, seen


def note(event: h2.events.Event, seen: Seen) -> None:
    if isinstance(event, h2.events.RequestReceived):
        seen.headers_end_stream.append(event.stream_ended is not None)
        seen.headers_after_ping.append(seen.pings > 0)
    elif isinstance(event, h2.events.PingReceived):
        seen.pings += 1
    elif isinstance(event, h2.events.StreamReset):
        seen.resets.append((event.stream_id, event.error_code))
    elif isinstance(event, h2.events.DataReceived):
        if event.stream_id in seen.answered and event.stream_ended is not None:
            seen.final_after_answer.append(event.stream_id)
        seen.data_frames.append(len(event.data))
        seen.bodies[event.stream_id] = seen.bodies.get(event.stream_id, b"") + event.data
        if event.stream_ended is not None:
            seen.final_frames.append(len(event.data))


def respond(
    conn: h2.connection.H2Connection, stream_id: int, status: int, body: bytes = b"", seen: Seen | None = None
) -> None:
    conn.send_headers(
        stream_id, [(b":status", str(status).encode()), (b"content-length", str(len(body)).encode())]
    )
    conn.send_data(stream_id, body, end_stream=True)
    if seen is not None:
        seen.answered.add(stream_id)


def answering_at_headers(status: int, body: bytes) -> Script:
    """A server script that answers every stream as its HEADERS arrive, before any gate."""

    def script(conn: h2.connection.H2Connection, events: list[h2.events.Event], seen: Seen) -> bool:
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                respond(conn, event.stream_id, status, body, seen)
        return True

    return script


def gets_among_posts(url: str) -> RequestSpec:
    """Odd clients read their seat (no body), even ones post an order (a JSON body)."""
    return RequestSpec(
        lambda a: "GET" if a.client % 2 else "POST",
        lambda a: f"{url}/seats/{a.resource}" if a.client % 2 else f"{url}/orders",
        json=lambda a: None if a.client % 2 else order(a),
    )


def ended(events: list[h2.events.Event]) -> list[int]:
    return [e.stream_id for e in events if isinstance(e, h2.events.StreamEnded)]


def test_goaway_mid_race_is_a_clear_error_per_stream():
    """After the gate the server answers three streams, then GOAWAY with the fifth as the last it
    processed: the rest are errors saying whether they were refused or lost in flight."""

    def script(conn: h2.connection.H2Connection, events: list[h2.events.Event], seen: Seen) -> bool:
        done = sorted(ended(events))
        if len(done) < 10:
            return True
        for sid in done[:3]:
            respond(conn, sid, 201 if sid == done[0] else 409)
        conn.close_connection(error_code=h2.errors.ErrorCodes.NO_ERROR, last_stream_id=done[4])
        return False

    with h2_server(script) as (url, _):
        result = fire(
            RequestSpec("POST", url + "/book", json=order), concurrency=10, allow_errors=True
        ).result
    assert (result.wins, result.rejections, result.errors) == (1, 2, 7)
    reasons = result.error_reasons
    lost = [r for r in reasons if "the connection ended by GOAWAY (NO_ERROR) after the gate" in r]
    refused = [r for r in reasons if "refused by GOAWAY (NO_ERROR, last stream 9) after the gate" in r]
    assert sum(reasons[r] for r in lost) == 2
    assert sum(reasons[r] for r in refused) == 5
    assert all(r.startswith(f"the server at {url}: ") for r in reasons)


def test_reset_and_refused_streams_are_clear_errors():
    def script(conn: h2.connection.H2Connection, events: list[h2.events.Event], seen: Seen) -> bool:
        for sid in ended(events):
            kind = (sid // 2) % 3
            if kind == 0:
                conn.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
            elif kind == 1:
                conn.reset_stream(sid, h2.errors.ErrorCodes.INTERNAL_ERROR)
            else:
                respond(conn, sid, 409)
        return True

    with h2_server(script) as (url, _):
        result = fire(RequestSpec("POST", url + "/book", json=order), concurrency=9, expect=0).result
    assert (result.rejections, result.errors) == (3, 6)
    reasons = list(result.error_reasons)
    assert (
        sum(
            "refused stream" in r and "(REFUSED_STREAM) after the gate: the request was not processed" in r
            for r in reasons
        )
        == 3
    )
    assert sum("reset stream" in r and "(INTERNAL_ERROR) after the gate" in r for r in reasons) == 3


def test_early_answer_is_kept_classified_and_marked():
    """A server that answers at HEADERS (before the PING the client sends behind its prefixes):
    every answer is early, classified by its real status, out of the start spread."""
    with h2_server(answering_at_headers(409, b'{"error":"taken"}')) as (url, _):
        fired = fire(RequestSpec("POST", url + "/book", json=order), concurrency=5, expect=0, reject=[409])
    result = fired.result
    assert result.early == 5
    assert (result.rejections, result.errors) == (5, 0)
    assert all(rec.early and rec.sent_ns and rec.end_ns >= rec.sent_ns for rec in fired.records)
    assert all(0 < rec.call_ns <= rec.sent_ns for rec in fired.records)  # called at its HEADERS write
    assert {v.kind for v in result.violations} == {"not-raced"}


def test_bodyless_request_sends_its_whole_headers_at_the_gate():
    """No DATA frame on a bodyless stream: its HEADERS, with END_STREAM, are the gate write's
    (hypercorn ends a connection on a DATA frame for a stream it already answered)."""

    def script(conn: h2.connection.H2Connection, events: list[h2.events.Event], seen: Seen) -> bool:
        for sid in ended(events):
            respond(conn, sid, 200, b"ok")
        return True

    with h2_server(script) as (url, seen):
        fired = fire(RequestSpec("GET", url + "/seats/1"), concurrency=4)
    assert fired.result.status_counts == {200: 4}
    assert seen.headers_end_stream == [True] * 4
    assert seen.headers_after_ping == [True] * 4
    assert seen.data_frames == []
    assert fired.result.early == 0
    assert all(0 < rec.call_ns <= rec.sent_ns for rec in fired.records)  # called at the gate write


def test_bodyless_streams_among_bodies_open_in_order_at_the_gate():
    """GETs among POSTs: the POSTs' HEADERS and bodies before the gate, the GETs' whole HEADERS
    in it, on stream ids above the POSTs' (a lower id would be a protocol error), every one
    answered."""

    def script(conn: h2.connection.H2Connection, events: list[h2.events.Event], seen: Seen) -> bool:
        for sid in ended(events):
            respond(conn, sid, 200, b"{}")
        return True

    with h2_server(script) as (url, seen):
        spec = gets_among_posts(url)
        fired = fire(spec, concurrency=8, expect=8)
    assert fired.result.status_counts == {200: 8}
    assert seen.headers_after_ping == [False] * 4 + [True] * 4
    assert seen.headers_end_stream == [False] * 4 + [True] * 4
    gets = [rec for rec in fired.records if rec.operation.startswith("GET")]
    posts = [rec for rec in fired.records if rec.operation.startswith("POST")]
    assert sorted(rec.client for rec in gets) == [1, 3, 5, 7]
    # a POST's call begins at its prefix, a GET's at the gate write (after the PING round trip)
    assert max(rec.call_ns for rec in posts) < min(rec.call_ns for rec in gets)
    assert all(rec.call_ns <= rec.sent_ns for rec in gets)


def test_an_early_answer_gets_no_final_frame_but_a_reset():
    """Streams answered before the gate end with RST_STREAM(NO_ERROR), never with a DATA frame the
    server would get on a stream it has closed; the held ones beside them are answered."""

    def script(conn: h2.connection.H2Connection, events: list[h2.events.Event], seen: Seen) -> bool:
        for event in events:
            if isinstance(event, h2.events.RequestReceived) and b"/early" in dict(event.headers)[b":path"]:
                respond(conn, event.stream_id, 404, b"{}", seen)
        for sid in ended(events):
            if sid not in seen.answered:
                respond(conn, sid, 200, b"{}", seen)
        return True

    with h2_server(script) as (url, seen):
        spec = RequestSpec("POST", lambda a: f"{url}/early" if a.client % 2 else f"{url}/orders", json=order)
        fired = fire(spec, concurrency=6, expect=6, success=lambda r: True)
    result = fired.result
    assert result.status_counts == {200: 3, 404: 3}
    assert result.early == 3
    assert seen.final_after_answer == []
    assert sorted(code for _, code in seen.resets) == [h2.errors.ErrorCodes.NO_ERROR] * 3


def test_flow_control_and_frame_size_are_respected():
    """A 16-byte stream window and 40 KB bodies: the client waits for WINDOW_UPDATEs, keeps one
    byte of window per stream for the gate, and never sends a frame over the window or 16 KiB."""

    def script(conn: h2.connection.H2Connection, events: list[h2.events.Event], seen: Seen) -> bool:
        for event in events:
            if isinstance(event, h2.events.DataReceived) and event.flow_controlled_length:
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        for sid in ended(events):
            respond(conn, sid, 200, json.dumps({"length": len(seen.bodies.get(sid, b""))}).encode())
        return True

    body = bytes(range(256)) * 160  # 40,960 bytes
    with h2_server(script, window=16) as (url, seen):
        fired = fire(
            RequestSpec("PUT", url + "/blob", content=body),
            concurrency=3,
            success=lambda r: r.status_code == 200 and r.json()["length"] == len(body),
            expect=3,
        )
    assert (fired.result.wins, fired.result.errors) == (3, 0)
    assert seen.final_frames == [1, 1, 1]
    assert max(seen.data_frames) <= 16
    assert all(b == body for b in seen.bodies.values())
    assert fired.firer.gate_writes[0].bytes == 3 * 10


def test_silent_server_times_out_as_unknown():
    def script(conn: h2.connection.H2Connection, events: list[h2.events.Event], seen: Seen) -> bool:
        return True

    with h2_server(script) as (url, _):
        result = fire(RequestSpec("POST", url + "/book", json=order), concurrency=3, timeout=0.5).result
    assert result.unknown == 3
    assert all(rec.timed_out and rec.outcome is Outcome.UNKNOWN for rec in result.history)
    assert {rec.reason for rec in result.history} == {"no response within 0.5s after the final write"}


def test_server_closing_before_the_gate_is_a_clear_error():
    def script(conn: h2.connection.H2Connection, events: list[h2.events.Event], seen: Seen) -> bool:
        if any(isinstance(e, h2.events.RequestReceived) for e in events):
            conn.data_to_send()  # not even the PING ACK: gone before the client could reach its gate
            return False
        return True

    with h2_server(script) as (url, _):
        result = fire(RequestSpec("POST", url + "/book", json=order), concurrency=3, timeout=5.0).result
    assert result.errors == 3
    (reason,) = result.error_reasons
    assert reason.startswith(f"the server at {url} closed the HTTP/2 connection before the gate")


def test_bodyless_streams_of_a_connection_lost_before_the_gate_are_written_again():
    """The server closes the first connection at the POSTs' HEADERS: the POSTs may have started
    (errors), the GETs had sent nothing yet, so they go again on a fresh connection."""
    closed: list[bool] = []

    def script(conn: h2.connection.H2Connection, events: list[h2.events.Event], seen: Seen) -> bool:
        if not closed and any(isinstance(e, h2.events.RequestReceived) for e in events):
            closed.append(True)
            conn.data_to_send()
            return False
        for sid in ended(events):
            respond(conn, sid, 200, b"{}")
        return True

    with h2_server(script) as (url, _):
        spec = gets_among_posts(url)
        fired = fire(spec, concurrency=4, expect=2, allow_errors=True, timeout=5.0)
    by_client = {rec.client: rec for rec in fired.records}
    assert [by_client[c].status for c in (1, 3)] == [200, 200]
    assert [by_client[c].outcome for c in (2, 4)] == [Outcome.ERROR, Outcome.ERROR]
    assert all("closed the HTTP/2 connection before the gate" in (by_client[c].reason or "") for c in (2, 4))
    assert fired.firer.connections == 2


def test_server_that_never_sends_settings_times_out_with_the_stage():
    with hung_server() as url:
        result = fire(RequestSpec("POST", url + "/book", json=order), concurrency=3, timeout=0.5).result
    assert result.errors == 3
    assert all(rec.timed_out for rec in result.history)
    assert result.error_reasons == {
        f"timed out after 0.5s waiting for the server's HTTP/2 SETTINGS ({url})": 3
    }


def test_parallel_resources_share_a_wave(module_service):
    """Two seats per wave: one connection each, both gates in the same release."""
    service = module_service(server="hypercorn", tls=True)
    spec = RequestSpec("POST", service.url + "/orders", json=order)
    config = resolve(
        {}, {"resources": range(1, 5), "concurrency": 50, "parallel": 2}, Settings(), flexible=False
    )

    async def main() -> tuple[list[Record], SinglePacketFirer]:
        builder = RequestBuilder(spec, None, make_ssl_context(True))
        firer = SinglePacketFirer(config, builder, h2_context(service), Classifier(config))
        sink: list[Record] = []
        try:
            with anyio.fail_after(RACE_LIMIT_S):
                for rnd in (1, 2):
                    await firer.fire_waves(rnd, [range(0, 2), range(2, 4)], sink)
                    if rnd == 1:
                        await anyio.to_thread.run_sync(service.reset)
        finally:
            await firer.aclose()
            await builder.aclose()
        return sink, firer

    records, firer = anyio.run(main)
    result = RaceResult.from_run("parallel", config, RaceRun(records=tuple(records), duration=1.0))
    assert (result.requests, result.wins, result.errors) == (400, 8, 0)
    assert firer.connections == 2  # one per resource of a wave, kept by the next wave and round
    assert [(g.round, g.resource, g.connections) for g in firer.gate_writes] == [
        (1, 0, 1), (1, 1, 1), (1, 2, 1), (1, 3, 1), (2, 0, 1), (2, 1, 1), (2, 2, 1), (2, 3, 1)
    ]  # fmt: skip


def test_predicates_get_each_streams_own_request():
    """Only the body varies (the engine reuses the first head): a predicate still sees the
    ``httpx.Request`` of its own stream, built once, with that stream's body."""

    def script(conn: h2.connection.H2Connection, events: list[h2.events.Event], seen: Seen) -> bool:
        for sid in ended(events):
            respond(conn, sid, 200, b"{}")
        return True

    def mine(response: Any) -> bool:
        sent = json.loads(response.request.content)
        return bool(sent["user"] == "vu-3" and response.extensions["http_version"] == b"HTTP/2")

    with h2_server(script) as (url, seen):
        fired = fire(RequestSpec("POST", url + "/book", json=order), concurrency=5, success=mine)
    assert (fired.result.wins, fired.result.rejections, fired.result.errors) == (1, 4, 0)
    assert fired.result.winners[1][0].client == 3
    assert sorted(json.loads(b)["user"] for b in seen.bodies.values()) == [f"vu-{c}" for c in range(1, 6)]


@pytest.mark.parametrize(("over", "fits"), [(0, True), (1, False)], ids=["at-the-limit", "one-byte-over"])
def test_response_header_limit_is_the_one_of_http11_starts(over: int, fits: bool) -> None:
    """The same header list as ``tests/test_bad_input.py`` sends over HTTP/1.1: at 64 KiB as
    HTTP/2 counts it the response is read, one byte more is the same named error."""
    body = b'{"ok": true}'
    length = b"%d" % len(body)
    padding = MAX_RESPONSE_HEAD - STATUS_FIELD - (32 + len(b"content-length") + len(length)) - (32 + 5)

    def script(conn: h2.connection.H2Connection, events: list[h2.events.Event], seen: Seen) -> bool:
        if not isinstance(conn.encoder.encode, functools.partial):
            # Literal, not Huffman-coded: hpack's pure-Python Huffman coder takes ~0.8 s per 64 KiB.
            conn.encoder.encode = functools.partial(conn.encoder.encode, huffman=False)  # type: ignore[method-assign]
        for sid in ended(events):
            head = [(b":status", b"201"), (b"content-length", length), (b"x-big", b"x" * (padding + over))]
            conn.send_headers(sid, head)
            conn.send_data(sid, body, end_stream=True)
        return True

    with h2_server(script) as (url, _):
        result = fire(RequestSpec("GET", url + "/x"), concurrency=3, expect=range(0, 4)).result
    if fits:
        assert (result.wins, result.errors) == (3, 0), result.error_reasons
    else:
        assert result.errors == 3
        assert all("response header block larger than 64 KiB" in r for r in result.error_reasons), (
            result.error_reasons
        )
