"""Each record's call instant (``Record.call_ns``, design §7): the earliest moment the server
could act on the request, stamped before the write that made it possible, in every start.

The sample service stamps each request's arrival (``X-Arrival-Ns``, ``perf_counter_ns``:
CLOCK_MONOTONIC, shared with the test process on one host), so "the server could not act before
the call" is observed, not assumed: ``call_ns <= server_ns``. Where the call is the release or
the prefix write is told apart by the gate writes the firers keep themselves.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Sequence

import anyio
import anyio.to_thread
import pytest

from pytest_seatrace import Attempt, Outcome, RaceResult, Record
from pytest_seatrace.core.config import HoldPoint, RaceConfig
from pytest_seatrace.engine.classify import Classifier
from pytest_seatrace.engine.instrument import Observed, fire_observed
from pytest_seatrace.engine.lastbyte import LastByteFirer
from pytest_seatrace.engine.lastbyte_outcomes import Slot
from pytest_seatrace.engine.plan import RequestSpec
from pytest_seatrace.engine.requests import RequestBuilder, make_ssl_context
from pytest_seatrace.service import ServiceHandle
from tests.support import Receive, Scope, Send, raw_server

LIMIT_S = 60.0
"""Most any one race here may take: a hung race fails, never waits."""


def order(a: Attempt) -> dict[str, object]:
    return {"seats": [a.resource], "user": f"vu-{a.client}"}


def assert_called_in_order(records: Sequence[Record], widen_ns: int = 0) -> None:
    """Every request answered was called; ``0 < call <= sent <= end``, and the server stamped
    its arrival no earlier than the call (``widen_ns``: a shard's clock error)."""
    assert records
    for rec in records:
        assert rec.status, rec.reason
        assert 0 < rec.call_ns <= rec.end_ns
        assert rec.call_ns <= rec.sent_ns <= rec.end_ns
        assert rec.server_ns, "the sample service stamps every answer"
        assert rec.call_ns - widen_ns <= rec.server_ns


def observe(service: ServiceHandle, *, hold: HoldPoint = "headers", single_packet: bool = False) -> Observed:
    """Two seats of 10 clients each, one wave per seat, every gate write observed."""
    config = RaceConfig(
        resources=(1, 2), concurrency=10, timeout=10.0, sync="last-byte", hold=hold, hold_given=True
    )

    async def main() -> Observed:
        with anyio.fail_after(LIMIT_S):
            return await fire_observed(
                config,
                RequestSpec("POST", service.url + "/orders", json=order),
                service.url,
                waves=[[0], [1]],
                ssl_context=None,
                single_packet=single_packet,
            )

    return anyio.run(main)


def by_wave(observed: Observed) -> list[tuple[list[Record], int]]:
    """Each seat's records, with the instant its release began (its last final write's stamp
    less the gate write's time, ``GateWrite.ns``)."""
    waves = []
    for index, gate in enumerate(observed.gates):
        records = [rec for rec in observed.run.records if rec.resource == index]
        waves.append((records, max(rec.sent_ns for rec in records) - gate.ns))
    return waves


# -- every start: the call before the server acts ----------------------------------------------


@pytest.mark.parametrize(("sync", "hold"), [("gate", None), ("last-byte", "headers"), ("last-byte", "body")])
def test_every_request_is_called_before_the_server_acts(race, sample_service, sync, hold):
    args = {"sync": sync} if hold is None else {"sync": sync, "hold": hold}
    result = race.post(sample_service.url + "/orders", json=order, resources=2, concurrency=10, **args)
    assert (result.requests, result.wins, result.errors) == (20, 2, 0)
    assert_called_in_order(result.history)


def test_a_run_attempt_is_called_when_its_gate_opens(race, sample_service):
    """``race.run``: the call is the gate opening, once every attempt of the wave (one seat's)
    has done its untimed set-up."""
    race.base_url = sample_service.url
    set_up: dict[object, list[int]] = {}

    async def attempt(a):
        await a.http.get("/health")
        set_up.setdefault(a.resource, []).append(time.perf_counter_ns())
        await a.gate()
        return await a.http.post("/orders", json={"seats": [a.resource], "user": a.key})

    result = race.run(attempt, resources=2, concurrency=5)
    assert result.wins == 2
    assert_called_in_order(result.history)
    for seat, stamps in set_up.items():
        calls = [rec.call_ns for rec in result.history if result.resources[rec.resource] == seat]
        assert len(calls) == len(stamps) == 5
        assert min(calls) > max(stamps)


class ArrivalApp:
    """An in-process ASGI app stamping each request's arrival as the sample service does
    (``X-Arrival-Ns``): 201 for the first booking of a path, 409 after."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        arrival = time.perf_counter_ns()
        path = scope["path"]
        won = path not in self.taken
        self.taken.add(path)
        await respond_stamped(send, 201 if won else 409, arrival)


async def respond_stamped(send: Send, status: int, arrival: int) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"x-arrival-ns", str(arrival).encode())],
        }
    )
    await send({"type": "http.response.body", "body": b"{}"})


def test_an_app_in_process_is_called_when_the_gate_opens(race):
    race.app = ArrivalApp()
    result = race.post(lambda a: f"/seat/{a.resource}", resources=2, concurrency=10)
    assert (result.wins, result.rejections, result.mode) == (2, 18, "gate")
    assert_called_in_order(result.history)


# -- where the call is: the release, or the prefix write -------------------------------------


def test_at_hold_headers_the_calls_are_the_release_itself(module_service):
    """The server has no complete header block before the release: each call is the stamp taken
    just before its final write (the one after the previous write, or the release's start), so a
    seat's calls are its release start and every final-write stamp but the last."""
    observed = observe(module_service(), hold="headers")
    assert_called_in_order(observed.run.records)
    for records, start in by_wave(observed):
        sent = sorted(rec.sent_ns for rec in records)
        assert sorted(rec.call_ns for rec in records) == sorted([start, *sent[:-1]])


def test_at_hold_body_the_calls_are_the_prefix_writes_before_the_release(module_service):
    """The header block went with the prefix: the server could dispatch it then, so every call
    is before the seat's release began."""
    observed = observe(module_service(), hold="body")
    assert_called_in_order(observed.run.records)
    for records, start in by_wave(observed):
        assert max(rec.call_ns for rec in records) < start


def test_single_packet_calls_are_the_headers_writes_before_the_gate(module_service):
    """hypercorn may run the app at HEADERS: the call is the start of the HEADERS write."""
    observed = observe(module_service(server="hypercorn"), single_packet=True)
    assert_called_in_order(observed.run.records)
    for records, start in by_wave(observed):
        assert max(rec.call_ns for rec in records) < start


# -- nothing the server could act on: no call ------------------------------------------------


@pytest.mark.parametrize("sync", ["last-byte", "gate"])
def test_a_refused_connection_has_no_call(race, sync):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = race.post(f"http://127.0.0.1:{port}/orders", concurrency=3, timeout=2, sync=sync, check=False)
    assert result.errors == 3
    assert [rec.call_ns for rec in result.history] == [0, 0, 0]


@pytest.mark.parametrize(("hold", "called"), [("headers", False), ("body", True)])
def test_a_connection_closed_before_the_release_is_called_only_once_it_carried_a_header_block(
    hold: HoldPoint, called: bool
) -> None:
    """Driven step by step: the server closes the connection under the prefix, before the
    release. At ``hold="headers"`` it never had the header block (no call: no operation); at
    ``hold="body"`` it had, and may have acted: the call is the prefix write's start."""
    closed = threading.Event()

    def handle(conn: socket.socket) -> None:
        conn.settimeout(5)
        with contextlib.suppress(OSError):
            conn.recv(10)
        conn.close()
        closed.set()

    async def scenario(url: str) -> Record:
        config = RaceConfig(resources=(1,), concurrency=1, timeout=5.0, hold=hold, hold_given=True)
        builder = RequestBuilder(
            RequestSpec("POST", url + "/x", json={"a": "b"}), None, make_ssl_context(True)
        )
        firer = LastByteFirer(config, builder, make_ssl_context(True), Classifier(config))
        slot = Slot(Record(resource=0, client=1, round=1), firer.wire.build(Attempt(1, 1, 1)))
        try:
            with anyio.fail_after(LIMIT_S):
                await firer._connect_and_prepare(slot, slot.request.origin)
                assert await anyio.to_thread.run_sync(closed.wait, 5)
                firer._release(1, 0, [slot])
        finally:
            await builder.aclose()
            await firer.aclose()
        return slot.record

    with raw_server(handle) as url:
        record = anyio.run(scenario, url)
    assert record.outcome is Outcome.ERROR
    assert not record.sent_ns
    if called:
        assert 0 < record.call_ns <= record.end_ns
    else:
        assert record.call_ns == 0


# -- shards: the call on the shard's clock, mapped onto ours ---------------------------------


@pytest.mark.parametrize("sync", ["gate", "last-byte"])
def test_a_shard_stamps_the_call_and_it_is_mapped_as_its_other_instants(race, sample_service, sync):
    result: RaceResult = race.post(
        sample_service.url + "/orders", json=order, resources=2, concurrency=4, shards=2, sync=sync
    )
    assert (result.requests, result.wins, result.errors) == (8, 2, 0)
    assert {rec.shard for rec in result.history} == {1, 2}
    assert_called_in_order(result.history, widen_ns=result.clock_error_ns)
