"""Mixed operations under one start: ``race.request`` with a ``method=`` callable, in every mode.

The sample service's second operation on a seat is ``DELETE /seats/{id}`` (take it off sale):
of all the bookings and withdrawals of a seat exactly one may succeed, so one ``expect=1``
counts the wins of both, told apart by a per-operation ``success=``. The callables raced here
are the user example's (``examples/test_mixed_operations.py``), so what it shows is what is tested.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from examples.test_mixed_operations import body as order
from examples.test_mixed_operations import claims, method, url, won
from pytest_seatrace import RaceUsageError, RaceViolation, ServiceHandle
from pytest_seatrace.core.operations import AMBIGUOUS, OperationNamer, settle
from pytest_seatrace.engine.plan import Attempt, RequestSpec
from pytest_seatrace.engine.requests import RequestBuilder, WireBuilder, make_ssl_context
from tests.support import INNER_INI, count_h11_connections, httpx_wire_bytes, read_body, serve_app

MODES = pytest.mark.parametrize(
    "mode",
    [{"sync": "gate"}, {"sync": "last-byte", "hold": "headers"}, {"sync": "last-byte", "hold": "body"}],
    ids=["gate", "last-byte-headers", "last-byte-body"],
)
BOOK, WITHDRAW = "POST /orders", "DELETE /seats/{resource}"


def by_operation(result: Any) -> dict[str, dict[str, Any]]:
    return {op["operation"]: op for op in result.by_operation()}


# -- naming operations ---------------------------------------------------------------------


def test_operations_write_the_attempts_values_where_they_are_whole_segments() -> None:
    namer = OperationNamer(templated=True)
    a = Attempt("A1", 7, 2)
    assert namer.name("POST", "/seats/A1/book?x=A1", a) == "POST /seats/{resource}/book"
    assert namer.name("GET", "/u/7/seat/A1/k/r2-A1-7", a) == "GET /u/{client}/seat/{resource}/k/{key}"
    assert namer.name("GET", "/seats/A12/x7", a) == "GET /seats/A12/x7"  # not whole segments
    assert namer.name("GET", "/seats/A%31", a) == "GET /seats/{resource}"  # percent-encoded
    assert namer.name("PUT", "/u/3/seat/3", Attempt(3, 3, 1)) == f"PUT /u/{AMBIGUOUS}/seat/{AMBIGUOUS}"
    # A constant URL is named as it is, even where a segment equals a resource id.
    assert (
        OperationNamer(templated=False).name("POST", "/api/2/orders", Attempt(2, 1, 1))
        == "POST /api/2/orders"
    )


def test_an_ambiguous_segment_settles_on_the_operation_it_matches() -> None:
    clear = "PUT /u/{client}/seat/{resource}"
    ambiguous = f"PUT /u/{AMBIGUOUS}/seat/{AMBIGUOUS}"
    assert settle([clear, ambiguous, "DELETE /x"]) == {
        clear: clear,
        ambiguous: clear,
        "DELETE /x": "DELETE /x",
    }
    assert settle([f"GET /s/{AMBIGUOUS}"]) == {f"GET /s/{AMBIGUOUS}": "GET /s/{resource}"}


def test_a_single_operation_race_with_clients_in_its_path_is_not_mixed(race: Any) -> None:
    """Seat 2 of client 2 reads the same as every other: one operation, no breakdown."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    with serve_app(app) as base:
        result = race.put(
            lambda a: f"{base}/users/{a.client}/seats/{a.resource}", resources=3, concurrency=3, expect=3
        )
    assert result.operations == ("PUT /users/{client}/seats/{resource}",)
    assert not result.mixed
    assert "by_operation" not in result.to_dict()


# -- wire bytes: one h11 head per distinct method, still httpx's bytes ---------------------


METHODS = ("PUT", "PATCH", "DELETE")


@pytest.mark.parametrize(
    ("kwargs", "heads"),
    [({}, 3), ({"json": lambda a: {"user": "zoë" * (a.client % 2)}}, 6), ({"json": {"fixed": 1}}, 3)],
    ids=["bodyless", "json", "constant"],
)
def test_mixed_wire_bytes_are_httpx_bytes(
    kwargs: dict[str, Any], heads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Byte for byte what httpx sends, per attempt, with h11 run once per distinct head (method ×
    body length), never per request; each request's ``httpx_request()`` is its own."""
    target = "http://127.0.0.1:9/seat?x=1"
    spec = RequestSpec(lambda a: METHODS[a.client % 3].lower(), target, **kwargs)
    wire = WireBuilder(RequestBuilder(spec, None, make_ssl_context(True)))
    attempts = [Attempt(1, number, 1) for number in range(1, 13)]
    made = count_h11_connections(monkeypatch)
    built = [wire.build(attempt) for attempt in attempts]
    monkeypatch.undo()  # httpx's own bytes below go through h11 uncounted
    assert len(made) == heads
    client = httpx.Client(trust_env=False)
    for attempt, request in zip(attempts, built, strict=True):
        meth = METHODS[attempt.client % 3]
        args = {k: (v(attempt) if callable(v) else v) for k, v in kwargs.items()}
        expected = httpx_wire_bytes(client.build_request(meth, target, **args))
        assert request.data == expected
        assert request.method == meth.encode()
        assert request.operation == f"{meth} /seat"
        assert httpx_wire_bytes(request.httpx_request()) == expected
    client.close()


# -- bad method values ---------------------------------------------------------------------


def test_a_method_callable_returning_no_method_names_the_argument_and_the_test(race, sample_service):
    race.base_url = sample_service.url
    with pytest.raises(RaceUsageError) as info:
        race.request(lambda a: 42 if a.client == 2 else "POST", "/orders", json=order, concurrency=3)
    text = str(info.value)
    assert "method= callable, for attempt r1-1-2" in text
    assert "test_a_method_callable_returning_no_method_names_the_argument_and_the_test" in text
    assert "expected an HTTP method string such as 'POST' or 'DELETE', got 42" in text


@pytest.mark.parametrize("bad", [42, "GET /x", ""])
def test_a_constant_method_that_is_no_method_is_refused(race, bad):
    with pytest.raises(RaceUsageError, match=r"race.request\(method=.*expected an HTTP method string"):
        race.request(bad, "http://127.0.0.1:9/orders")


# -- on the sample service, in every start mode ----------------------------------------------


@MODES
def test_book_against_withdraw_passes_on_safe(race, module_service, mode):
    service = module_service(seats=4)
    race.base_url = service.url
    result = race.request(
        method, url, json=order, resources=4, concurrency=20, success=won, verify=claims(service), **mode
    )
    assert result.passed
    assert result.mode == mode["sync"]
    assert result.wins == 4
    ops = by_operation(result)
    assert list(ops) == [BOOK, WITHDRAW] or list(ops) == [WITHDRAW, BOOK]
    assert ops[BOOK]["requests"] == ops[WITHDRAW]["requests"] == 40
    # The predicate told the operations apart: every win is a 201 of a booking or a 200 of a
    # withdrawal, and every other answer a 409.
    assert set(ops[BOOK]["status_counts"]) <= {"201", "409"}
    assert set(ops[WITHDRAW]["status_counts"]) <= {"200", "409"}
    assert ops[BOOK]["wins"] == ops[BOOK]["status_counts"].get("201", 0)
    assert ops[WITHDRAW]["wins"] == ops[WITHDRAW]["status_counts"].get("200", 0)
    assert ops[BOOK]["wins"] + ops[WITHDRAW]["wins"] == 4
    assert {r.operation for r in result.history} == {BOOK, WITHDRAW}


@MODES
def test_book_against_withdraw_is_caught_on_unsafe(race, module_service, mode):
    service = module_service(seats=4, strategy="unsafe", window_ms=20)
    race.base_url = service.url
    with pytest.raises(RaceViolation) as info:
        race.request(
            method, url, json=order, resources=4, concurrency=20, success=won, verify=claims(service), **mode
        )
    result = info.value.result
    assert result.errors == 0
    assert result.wins > 4
    kinds = {v.kind for v in result.violations}
    assert "too-many" in kinds
    assert "double" in kinds  # the end state: a seat both booked and off sale (or booked twice)


def test_single_packet_mixes_operations_over_h2c(race, module_service):
    service = module_service(server="hypercorn", seats=4)
    race.base_url = service.url
    result = race.request(
        method, url, json=order, resources=4, concurrency=20, success=won, verify=claims(service),
        sync="single-packet",
    )  # fmt: skip
    assert result.mode == "single-packet"
    assert result.passed
    assert result.wins == 4
    assert result.early == 0  # the DELETE handler waits for END_STREAM
    ops = by_operation(result)
    assert ops[BOOK]["requests"] == ops[WITHDRAW]["requests"] == 40
    assert ops[BOOK]["wins"] + ops[WITHDRAW]["wins"] == 4


def test_single_packet_mixed_is_caught_on_unsafe(race, module_service):
    service = module_service(server="hypercorn", seats=4, strategy="unsafe", window_ms=5)
    race.base_url = service.url
    with pytest.raises(RaceViolation) as info:
        race.request(method, url, json=order, resources=4, concurrency=20, success=won, sync="single-packet")
    assert info.value.result.wins > 4


def test_race_app_mixes_operations_in_process(race, tmp_path):
    from sample_service import SeatStore, create_app

    store = SeatStore.open(tmp_path / "seats.db", seats=2)
    try:
        race.app = create_app(store)
        result = race.request(method, url, json=order, resources=2, concurrency=10, success=won)
    finally:
        store.close()
    assert result.mode == "gate"
    assert result.wins == 2
    assert set(by_operation(result)) == {BOOK, WITHDRAW}


# -- a predicate's response carries its own request (method, URL, headers, body) -------------


async def echo(scope: Any, receive: Any, send: Any) -> None:
    """Answers every request with what it received: method, path, and the JSON body."""
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    answer = json.dumps({"method": scope["method"], "path": scope["path"], "body": body.decode()}).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": answer})


@MODES
def test_each_predicate_sees_its_own_request(race, mode):
    """The URL is constant and only the JSON varies (the engine's fast path reuses a head per
    method): each response still carries its own method, headers and body."""
    seen: list[str] = []

    def mine(response: httpx.Response) -> bool:
        got = response.json()
        request = response.request
        ok = (
            got["method"] == request.method
            and json.loads(got["body"]) == json.loads(request.content)
            and int(request.headers["content-length"]) == len(request.content)
            and request.url.path == got["path"]
        )
        seen.append(request.method)
        return bool(ok and json.loads(request.content)["client"] == 1)

    with serve_app(echo) as base:
        result = race.request(
            lambda a: "PUT" if a.client % 2 else "PATCH",
            base + "/thing",
            json=lambda a: {"client": a.client, "pad": "x" * a.client},
            concurrency=6,
            success=mine,
            **mode,
        )
    assert (result.wins, result.rejections, result.errors) == (1, 5, 0)
    assert Counter(seen) == {"PUT": 3, "PATCH": 3}
    assert set(result.operations) == {"PUT /thing", "PATCH /thing"}


# -- reports: a breakdown per operation, nothing new for one operation ----------------------

MIXED_RACE = """
import pytest

def won(response):
    return response.status_code == (201 if response.request.method == "POST" else 200)

@pytest.mark.race(resources=2, concurrency=10)
def test_book_or_withdraw(race):
    race.request(
        lambda a: "POST" if a.client % 2 else "DELETE",
        lambda a: "/orders" if a.client % 2 else f"/seats/{a.resource}",
        json=lambda a: {"seats": [a.resource], "user": f"u{a.client}"} if a.client % 2 else None,
        success=won,
    )

@pytest.mark.race(resources=2, concurrency=10)
def test_plain_booking(race):
    race.post("/orders", json=lambda a: {"seats": [a.resource], "user": f"u{a.client}"})
"""


def run_mixed_race(pytester: pytest.Pytester, service: ServiceHandle, keyword: str) -> pytest.RunResult:
    """Run the MIXED_RACE test selected by ``keyword`` against ``service``, with JSON and HTML reports."""
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_mixed=MIXED_RACE)
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--race-base-url", service.url,
        "--race-json", "r.json", "--race-html", "r.html", "-k", keyword,
    )  # fmt: skip


def test_reports_break_a_mixed_race_down_per_operation(
    pytester: pytest.Pytester, module_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_reports import validate

    monkeypatch.setenv("COLUMNS", "120")
    result = run_mixed_race(pytester, module_service(seats=2), "withdraw")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(
        [
            "operations of test_mixed.py::test_book_or_withdraw:",
            "operation*requests*wins*rejections*errors*unknown*statuses",
            "POST /orders*10*",
            "DELETE /seats/{resource}*10*",
        ]
    )
    document = json.loads(Path(pytester.path, "r.json").read_text(encoding="utf-8"))
    validate(document)
    race = document["races"][0]
    ops = {op["operation"]: op for op in race["by_operation"]}
    assert set(ops) == {BOOK, WITHDRAW}
    assert ops[BOOK]["wins"] + ops[WITHDRAW]["wins"] == 2
    assert Counter(race["history"]["operation"]) == {BOOK: 10, WITHDRAW: 10}
    assert race["raced"]["method"] in ("POST, DELETE", "DELETE, POST")
    html = Path(pytester.path, "r.html").read_text(encoding="utf-8")
    assert "Per operation" in html
    assert "DELETE /seats/{resource}" in html


def test_one_operation_reports_stay_as_they_were(pytester: pytest.Pytester, module_service: Any) -> None:
    result = run_mixed_race(pytester, module_service(seats=2), "plain")
    result.assert_outcomes(passed=1)
    assert "operations of" not in result.stdout.str()
    race = json.loads(Path(pytester.path, "r.json").read_text(encoding="utf-8"))["races"][0]
    assert "by_operation" not in race
    assert "operation" not in race["history"]
    assert "Per operation" not in Path(pytester.path, "r.html").read_text(encoding="utf-8")


# -- the sample service's second operation on a seat ------------------------------------------


@pytest.mark.parametrize("strategy", ["safe", "unsafe"])
def test_withdraw_takes_a_free_seat_off_sale(module_service: Any, strategy: str) -> None:
    service = module_service(seats=3, strategy=strategy, window_ms=0)
    with httpx.Client(base_url=service.url, trust_env=False, timeout=10) as http:
        assert http.delete("/seats/1").json() == {"seat": "1", "withdrawn": True}
        assert http.get("/seats/1").json() == {"id": "1", "holders": [], "orders": [], "withdrawn": True}
        assert http.delete("/seats/1").status_code == 409  # withdrawn already
        assert http.post("/orders", json={"seats": [1], "user": "alice"}).status_code == 409
        assert http.post("/orders", json={"seats": [2], "user": "bob"}).status_code == 201
        assert http.delete("/seats/2").status_code == 409  # booked
        assert http.get("/seats/2").json()["holders"] == ["bob"]
        assert http.delete("/seats/99").status_code == 404
        assert http.post("/reset").status_code == 200
        assert http.get("/seats/1").json() == {"id": "1", "holders": [], "orders": []}
        assert http.post("/orders", json={"seats": [1], "user": "carol"}).status_code == 201


def test_withdraw_needs_a_token_under_auth(module_service: Any) -> None:
    service = module_service(seats=1, auth=True)
    with httpx.Client(base_url=service.url, trust_env=False, timeout=10) as http:
        assert http.delete("/seats/1").status_code == 401
        token = service.login("admin")
        assert http.delete("/seats/1", headers={"Authorization": f"Bearer {token}"}).status_code == 200


@pytest.mark.parametrize("strategy", ["safe", "unsafe"])
def test_cancel_frees_a_seat_its_holder_booked(module_service: Any, strategy: str) -> None:
    service = module_service(seats=2, strategy=strategy, window_ms=0)
    with httpx.Client(base_url=service.url, trust_env=False, timeout=10) as http:
        assert http.post("/orders", json={"seats": [1], "user": "alice"}).status_code == 201
        refused = http.post("/seats/1/cancel", json={"user": "bob"})  # not bob's to cancel
        assert refused.status_code == 409
        assert refused.json() == {"error": "seat '1' is not held by that user"}
        assert http.get("/seats/1").json()["holders"] == ["alice"]
        assert http.post("/seats/1/cancel", json={"user": "alice"}).json() == {
            "seat": "1",
            "cancelled": "alice",
        }
        assert http.get("/seats/1").json() == {"id": "1", "holders": [], "orders": []}
        assert http.post("/seats/1/cancel", json={"user": "alice"}).status_code == 409  # cancelled already
        assert http.post("/orders", json={"seats": [1], "user": "bob"}).status_code == 201  # free again
        assert http.post("/seats/99/cancel", json={"user": "bob"}).status_code == 404
        assert http.post("/seats/1/cancel", json={"name": "bob"}).status_code == 422
        assert http.post("/seats/1/cancel", content=b"{").status_code == 422


def test_cancel_under_auth_is_the_tokens_own(module_service: Any) -> None:
    service = module_service(seats=1, auth=True)
    token = service.login("alice")
    alice = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=service.url, trust_env=False, timeout=10) as http:
        assert http.post("/orders", json={"seats": [1]}, headers=alice).status_code == 201
        assert http.post("/seats/1/cancel", json={"user": "alice"}).status_code == 401
        assert http.post("/seats/1/cancel", json={"user": "bob"}, headers=alice).status_code == 403
        assert http.post("/seats/1/cancel", json={"user": "alice"}, headers=alice).status_code == 200


def cancel_once(a: Any) -> dict[str, str]:
    return {"user": f"holder-{a.resource}"}


@pytest.mark.parametrize(("strategy", "window_ms"), [("safe", 0), ("unsafe", 20)])
def test_one_booking_is_cancelled_once(race, module_service, strategy, window_ms):
    """Every client cancels the same holder's booking at once: exactly one may succeed. The
    unsafe strategy's check-then-act lets several through, and the race says so."""
    service = module_service(seats=2, strategy=strategy, window_ms=window_ms)
    with httpx.Client(base_url=service.url, trust_env=False, timeout=10) as http:
        for seat in (1, 2):
            assert http.post("/orders", json={"seats": [seat], "user": f"holder-{seat}"}).status_code == 201
    race.base_url = service.url
    result = race.post(
        lambda a: f"/seats/{a.resource}/cancel", json=cancel_once, resources=2, concurrency=10, check=False
    )
    assert result.errors == 0
    assert result.status_counts.get(200, 0) == result.wins
    assert [service.holders(seat) for seat in (1, 2)] == [[], []]
    if strategy == "safe":
        assert result.passed, result.violations
        assert result.wins == 2
    else:
        assert not result.passed
        assert result.wins > 2
        assert "too-many" in {v.kind for v in result.violations}


@pytest.mark.parametrize("strategy", ["safe", "unsafe"])
def test_mixed_operations_shard_like_one_process(race, module_service, strategy):
    """Two popen shards: each shard's clients book or withdraw per the method callable the test
    process evaluated; the operations, the per-operation predicate and verify= are the same."""
    service = module_service(seats=3, strategy=strategy, window_ms=20)
    race.base_url = service.url
    result = race.request(
        method, url, json=order, resources=3, concurrency=10, success=won, verify=claims(service),
        shards=2, check=False,
    )  # fmt: skip
    assert {r.shard for r in result.history} == {1, 2}
    assert {r.operation for r in result.history} == {BOOK, WITHDRAW}
    ops = by_operation(result)
    assert ops[BOOK]["requests"] == ops[WITHDRAW]["requests"] == 15
    assert set(ops[BOOK]["status_counts"]) <= {"201", "409"}
    assert set(ops[WITHDRAW]["status_counts"]) <= {"200", "409"}
    if strategy == "safe":
        assert result.passed, result.violations
        assert result.wins == 3
    else:
        assert not result.passed
        assert "too-many" in {v.kind for v in result.violations}
