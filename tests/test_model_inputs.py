"""What a race's model takes from each raced request and response (``model=``, design §7): every
operation checked before anything is sent, an update's input from its request as built, a winning
read's output from its response, in every start; ``race.run`` attempts named from their requests;
shards take theirs on the coordinator."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from pytest_seatrace import Attempt, Outcome, RaceUsageError, RaceViolation
from pytest_seatrace.core.bindings import Bindings
from pytest_seatrace.core.operations import AMBIGUOUS, readings
from pytest_seatrace.engine.plan import RequestSpec
from pytest_seatrace.engine.requests import RequestBuilder, WireBuilder, make_ssl_context
from pytest_seatrace.models import RacedRequest, Seats, Stock
from tests.support import read_body, serve_app

BOOK, CANCEL, READ = "POST /orders", "POST /seats/{resource}/cancel", "GET /seats/{resource}"
MODES = pytest.mark.parametrize(
    "mode",
    [
        {"sync": "gate"},
        {"sync": "last-byte", "hold": "headers"},
        {"sync": "last-byte", "hold": "body"},
        {"sync": "single-packet"},
    ],
    ids=["gate", "last-byte-headers", "last-byte-body", "single-packet"],
)
"""Every start; single-packet races the sample service under hypercorn (h2c)."""
HTTP11_MODES = pytest.mark.parametrize(
    "mode",
    [{"sync": "gate"}, {"sync": "last-byte", "hold": "headers"}, {"sync": "last-byte", "hold": "body"}],
    ids=["gate", "last-byte-headers", "last-byte-body"],
)


def user(req: RacedRequest) -> Any:
    return req.json["user"]


def holders(response: httpx.Response) -> Any:
    return response.json()["holders"]


SEATS = Seats(book=(BOOK, user), cancel=(CANCEL, user), read=(READ, holders))


def service_for(module_service: Any, mode: dict[str, str], **options: Any) -> Any:
    server = "hypercorn" if mode["sync"] == "single-packet" else "uvicorn"
    return module_service(server=server, **options)


# A mixed race: client 1, 4, 7... cancel user u2's booking, 2, 5, 8... book as u<client>, the rest read.


def method(a: Attempt) -> str:
    return ("GET", "POST", "POST")[a.client % 3]


def url(a: Attempt) -> str:
    return ("/seats/{}", "/seats/{}/cancel", "/orders")[a.client % 3].format(a.resource)


def body(a: Attempt) -> dict[str, Any] | None:
    if a.client % 3 == 1:
        return {"user": "u2"}
    if a.client % 3 == 2:
        return {"seats": [a.resource], "user": f"u{a.client}"}
    return None


def kind(client: int) -> str:
    return ("read", "cancel", "book")[client % 3]


# -- in every start -------------------------------------------------------------------------


@HTTP11_MODES
def test_a_mixed_race_takes_each_update_input_and_each_winning_read_output(race, module_service, mode):
    service = module_service(seats=2)
    race.base_url = service.url
    result = race.request(
        method, url, json=body, resources=2, concurrency=9,
        model=SEATS, check=False, **mode,
    )  # fmt: skip
    assert result.mode == mode["sync"]
    assert {r.operation for r in result.history} == {BOOK, CANCEL, READ}  # client 1 of seat 1 settled too
    bookers = {f"u{c}" for c in range(1, 10) if kind(c) == "book"}
    reads = 0
    for rec in result.history:
        assert rec.status, rec.reason
        if kind(rec.client) == "book":
            assert (rec.operation, rec.input, rec.output) == (BOOK, f"u{rec.client}", None)
        elif kind(rec.client) == "cancel":
            assert (rec.operation, rec.input, rec.output) == (CANCEL, "u2", None)
        else:
            assert (rec.operation, rec.input) == (READ, None)
            assert rec.outcome is Outcome.WIN  # a read of a known seat is a 200
            assert rec.output in {()} | {(b,) for b in bookers}  # holders, frozen into a tuple
            reads += 1
    assert reads == 6
    for seat in (1, 2):  # what the service holds now is what a read can show
        assert len(service.holders(seat)) <= 1


def test_single_packet_takes_update_inputs_and_read_outputs(race, module_service):
    """Bookings against cancellations, then reads, so each race's outputs are known (reads among
    writes under one single-packet start: tests/test_reads_among_writes.py)."""
    service = module_service(server="hypercorn", seats=2)
    race.base_url = service.url

    def cancels(a: Attempt) -> bool:
        return a.client % 3 == 1

    updates = race.request(
        "POST", lambda a: f"/seats/{a.resource}/cancel" if cancels(a) else "/orders",
        json=lambda a: {"user": "u2"} if cancels(a) else {"seats": [a.resource], "user": f"u{a.client}"},
        resources=2, concurrency=6, model=SEATS, sync="single-packet", check=False,
    )  # fmt: skip
    assert updates.mode == "single-packet"
    for rec in updates.history:
        assert rec.status, rec.reason
        expected = (CANCEL, "u2") if rec.client % 3 == 1 else (BOOK, f"u{rec.client}")
        assert (rec.operation, rec.input, rec.output) == (*expected, None)
    reads = race.get(
        lambda a: f"/seats/{a.resource}", resources=2, concurrency=4, model=SEATS, sync="single-packet",
        check=False,
    )  # fmt: skip
    assert len(reads.history) == 8
    for rec in reads.history:
        assert (rec.status, rec.operation, rec.input) == (200, READ, None)
        assert rec.output == tuple(service.holders(rec.resource + 1))


@MODES
def test_a_json_only_race_takes_each_input_on_the_fast_path(race, module_service, mode):
    """The body alone varies: last-byte and single-packet reuse one head, and still each request's
    input is its own."""
    service = service_for(module_service, mode, seats=1)
    model = Stock(10, take=(BOOK, lambda req: len(req.json["user"]) + req.client))
    result = race.post(
        service.url + "/orders", json=lambda a: {"seats": [1], "user": "u" * a.client},
        concurrency=6, model=model, check=False, **mode,
    )  # fmt: skip
    assert sorted((r.client, r.input) for r in result.history) == [(c, 2 * c) for c in range(1, 7)]
    assert result.wins == 1


@MODES
def test_a_constant_request_gives_each_attempt_its_own_input(race, module_service, mode):
    service = service_for(module_service, mode, seats=2)

    def seen(req: RacedRequest) -> Any:
        return (req.method, req.url, req.json, req.resource, req.client, req.round, req.setup)

    result = race.post(
        service.url + "/orders?x=1", json={"seats": [1], "user": "ann"}, resources=2, concurrency=3,
        model=Seats(book=(BOOK, seen)), expect=range(0, 2), check=False, **mode,
    )  # fmt: skip
    target = service.url + "/orders?x=1"
    order = (("seats", (1,)), ("user", "ann"))  # the json= value, frozen
    assert sorted(r.input for r in result.history) == [
        ("POST", target, order, seat, client, 1, None) for seat in (1, 2) for client in (1, 2, 3)
    ]


# -- before the race -------------------------------------------------------------------------


@contextmanager
def counting_service() -> Iterator[tuple[str, list[str]]]:
    """A loopback app that answers 201 to everything and lists every request it saw."""
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)
        seen.append(f"{scope['method']} {scope['path']}")
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    with serve_app(app) as base:
        yield base, seen


@HTTP11_MODES
def test_an_operation_no_function_covers_is_refused_before_anything_is_sent(race, mode):
    with counting_service() as (base, seen):
        with pytest.raises(RaceUsageError) as info:
            race.post(
                base + "/orders", json={"user": "ann"}, concurrency=5,
                model=Seats(cancel=CANCEL, read=(READ, holders)), **mode,
            )  # fmt: skip
        assert seen == []
    message = str(info.value)
    assert message.startswith("race.post in tests/test_model_inputs.py::test_an_operation_no_function_covers")
    assert "model Seats has no function for 'POST /orders'" in message
    assert "cancel='POST /seats/{resource}/cancel', read='GET /seats/{resource}'" in message


def test_a_fixed_operation_no_function_covers_is_refused_before_the_set_ups(race):
    with counting_service() as (base, seen):

        async def setup(a: Attempt) -> None:
            assert a.http is not None
            await a.http.post(f"{base}/login")

        with pytest.raises(RaceUsageError, match="model Seats has no function for 'POST /orders'"):
            race.post(base + "/orders", concurrency=3, setup=setup, model=Seats(cancel=CANCEL))
        assert seen == []


def test_a_later_wave_no_function_covers_stops_the_race_before_its_release(race):
    """Wave 2 of 2 turns to an operation the model does not cover: wave 1 raced, wave 2 never went out."""
    with counting_service() as (base, seen):
        with pytest.raises(RaceViolation) as info:
            race.post(
                lambda a: f"{base}/{'orders' if a.resource == 1 else 'other'}", resources=2, parallel=1,
                concurrency=3, model=Seats(book=BOOK), sync="last-byte",
            )  # fmt: skip
        assert seen == ["POST /orders"] * 3
    assert "model Seats has no function for 'POST /other'" in str(info.value)
    assert info.value.result.stopped is not None


@pytest.mark.parametrize(
    ("extract", "said"),
    [
        (lambda req: req.json["quantity"], "raised KeyError: 'quantity'"),
        (lambda req: bytearray(b"x"), "raised TypeError: unhashable type: 'bytearray'"),
    ],
    ids=["raises", "unhashable"],
)
@HTTP11_MODES
def test_an_input_function_that_fails_is_refused_before_anything_is_sent(race, mode, extract, said):
    with counting_service() as (base, seen):
        with pytest.raises(RaceUsageError) as info:
            race.post(
                lambda a: f"{base}/buy/{a.resource}", json=lambda a: {"n": a.client}, concurrency=4,
                model=Stock(10, take=("POST /buy/{resource}", extract)), **mode,
            )  # fmt: skip
        assert seen == []
    message = str(info.value)
    assert message.startswith("race.post in tests/test_model_inputs.py::test_an_input_function_that_fails")
    assert "model Stock, function 'take' (POST /buy/{resource}): its input function " + said in message
    assert "(attempt r1-1-" in message


# -- outputs -----------------------------------------------------------------------------------


@MODES
def test_a_read_function_that_raises_makes_the_winning_read_fatal(race, module_service, mode):
    service = service_for(module_service, mode, seats=1)
    model = Seats(read=(READ, lambda r: r.json()["nobody"]))
    result = race.get(
        lambda a: f"{service.url}/seats/{a.resource}", concurrency=3, model=model, check=False, **mode
    )
    assert len(result.history) == 3
    for rec in result.history:
        assert (rec.status, rec.outcome, rec.fatal, rec.output) == (200, Outcome.ERROR, True, None)
        assert rec.reason == "model read raised KeyError: 'nobody'"


def test_a_failed_read_observes_nothing(race, module_service):
    service = module_service(seats=1)
    result = race.get(
        service.url + "/seats/99", concurrency=2, model=Seats(read=("GET /seats/99", holders)), check=False
    )
    assert [(r.status, r.outcome, r.output, r.fatal) for r in result.history] == [
        (404, Outcome.REJECTION, None, False)
    ] * 2


# -- without a model ---------------------------------------------------------------------------


@MODES
def test_without_bindings_inputs_and_outputs_stay_none(race, module_service, mode):
    """No model, and a model bound to nothing (every request its main function): nothing taken."""
    service = service_for(module_service, mode, seats=1)
    for model in ({}, {"model": Seats()}):
        service.reset()
        result = race.post(
            service.url + "/orders", json=lambda a: {"seats": [1], "user": f"u{a.client}"}, concurrency=4,
            **model, **mode,
        )  # fmt: skip
        assert result.wins == 1
        assert {(r.operation, r.input, r.output) for r in result.history} == {(BOOK, None, None)}


def test_a_model_bound_to_nothing_costs_the_engine_nothing() -> None:
    spec = RequestSpec("POST", "http://127.0.0.1:9/orders", json=lambda a: {"user": a.client})
    idle = Bindings(Seats())
    assert not idle.active
    builder = RequestBuilder(spec, None, make_ssl_context(True), idle)
    assert builder.bindings is None
    assert not builder.takes_inputs
    assert WireBuilder(builder).build(Attempt(1, 1, 1)).input is None


# -- race.run ---------------------------------------------------------------------------------


def test_race_run_names_each_attempts_operation_and_takes_its_input(race, module_service):
    service = module_service(seats=2)

    async def attempt(a: Attempt) -> httpx.Response:
        assert a.http is not None
        if a.client % 2:
            await a.gate()
            return await a.http.get(f"{service.url}/seats/{a.resource}")
        payload = {"seats": [a.resource], "user": f"u{a.client}"}
        await a.gate()
        return await a.http.post(f"{service.url}/orders", json=payload)

    result = race.run(attempt, resources=2, concurrency=4, model=SEATS, check=False)
    for rec in result.history:
        if rec.client % 2:
            assert (rec.operation, rec.input, rec.outcome) == (READ, None, Outcome.WIN)
            assert rec.output in {(), ("u2",), ("u4",)}
        else:
            assert (rec.operation, rec.input, rec.output) == (BOOK, f"u{rec.client}", None)
    plain = race.run(attempt, resources=1, concurrency=2, check=False)
    assert {(r.operation, r.input, r.output) for r in plain.history} == {("", None, None)}


def test_race_run_names_an_attempt_whose_request_got_no_answer(race, module_service):
    """Named as its request goes out: a request refused after the gate is still its operation."""
    service = module_service(seats=1)
    race.base_url = service.url  # the connection opened before the gate; the request goes elsewhere

    async def attempt(a: Attempt) -> httpx.Response:
        assert a.http is not None
        await a.gate()
        return await a.http.post("http://127.0.0.1:9/orders", json={"user": f"u{a.client}"})

    result = race.run(attempt, concurrency=2, model=SEATS, allow_errors=True, check=False)
    assert sorted((r.operation, r.input, r.status, r.outcome) for r in result.history) == [
        (BOOK, "u1", 0, Outcome.ERROR),
        (BOOK, "u2", 0, Outcome.ERROR),
    ]


def test_race_run_to_an_operation_no_function_covers_is_not_sent(race):
    with counting_service() as (base, seen):

        async def attempt(a: Attempt) -> httpx.Response:
            assert a.http is not None
            await a.gate()
            return await a.http.get(f"{base}/health")

        result = race.run(attempt, concurrency=2, model=SEATS, check=False)
        assert seen == []
    assert {(r.operation, r.fatal, r.status) for r in result.history} == {("GET /health", True, 0)}
    assert all("model Seats has no function for 'GET /health'" in r.reason for r in result.history)
    assert {r.call_ns for r in result.history} == {0}  # not sent: no operation of the history


def test_an_attempt_that_raises_after_its_gate_fails_the_race_without_a_history_place(race):
    with counting_service() as (_base, seen):

        async def attempt(a: Attempt) -> httpx.Response:
            await a.gate()
            raise RuntimeError("the attempt's own bug")

        result = race.run(attempt, concurrency=2, model=SEATS, check=False)
    assert seen == []
    assert all(r.fatal and r.operation == "" for r in result.history)
    kinds = {v.kind for v in result.violations}  # judged, not a crash of the judge
    assert "predicate" in kinds
    assert "not-linearizable" not in kinds
    assert result.linearizable is True  # nothing of it could be placed: an empty history


# -- shards ----------------------------------------------------------------------------------


def test_shards_take_inputs_and_outputs_on_the_coordinator(race, module_service):
    service = module_service(seats=2)
    race.base_url = service.url
    result = race.request(
        method, url, json=body, resources=2, concurrency=6,
        model=SEATS, shards=2, check=False,
    )  # fmt: skip
    assert {r.shard for r in result.history} == {1, 2}
    for rec in result.history:
        if kind(rec.client) == "book":
            assert (rec.operation, rec.input) == (BOOK, f"u{rec.client}")
        elif kind(rec.client) == "cancel":
            assert (rec.operation, rec.input) == (CANCEL, "u2")
        else:
            assert (rec.operation, rec.outcome) == (READ, Outcome.WIN)
            assert rec.output in {(), ("u2",), ("u5",)}


def test_shards_refuse_an_uncovered_operation_before_anything_is_sent(race):
    with counting_service() as (base, seen):
        with pytest.raises(RaceUsageError, match="model Seats has no function for 'POST /orders'"):
            race.post(base + "/orders", concurrency=2, model=Seats(cancel=CANCEL), shards=2)
        assert seen == []


# -- units --------------------------------------------------------------------------------------


def test_an_ambiguous_operation_is_covered_by_any_of_its_readings() -> None:
    ambiguous = f"POST /seats/{AMBIGUOUS}/cancel"
    assert readings(ambiguous) == [CANCEL, "POST /seats/{client}/cancel"]
    assert readings(BOOK) == [BOOK]
    bindings = Bindings(SEATS)
    function = bindings.covering(ambiguous)
    assert function is not None
    assert function.name == "cancel"
    assert bindings.covering("DELETE /seats/{resource}") is None
