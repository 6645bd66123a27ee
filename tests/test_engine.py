"""The engine through the ``race`` fixture: classification, invariants, both start modes."""

from __future__ import annotations

import contextlib
import socket
import sys
import threading

import anyio
import anyio.to_thread
import httpx
import pytest

from pytest_seatrace import Outcome, RaceUsageError, RaceViolation, Record
from pytest_seatrace.engine.classify import Classifier
from pytest_seatrace.engine.lastbyte import LastByteFirer
from pytest_seatrace.engine.lastbyte_outcomes import Slot
from pytest_seatrace.engine.plan import Attempt, RequestSpec
from pytest_seatrace.engine.requests import RequestBuilder, make_ssl_context
from pytest_seatrace.marker import resolve
from pytest_seatrace.options import Settings
from tests.support import OneWinnerApp, raw_server, read_request_head, serve_app


def order(a: Attempt) -> dict[str, object]:
    return {"seats": [a.resource], "user": f"vu-{a.client}"}


MODES = pytest.mark.parametrize("mode", ["last-byte", "gate"])


@MODES
@pytest.mark.race(resources=4, concurrency=25)
def test_safe_service_one_winner_per_seat(race, sample_service, mode):
    result = race.post(sample_service.url + "/orders", json=order, sync=mode)
    assert (result.requests, result.wins, result.rejections, result.errors) == (100, 4, 96, 0)
    assert result.status_counts == {201: 4, 409: 96}
    assert result.mode == mode
    assert set(result.winners) == {1, 2, 3, 4}
    assert all(
        len(w) == 1 and w[0].status == 201 and b"order_id" in w[0].body for w in result.winners.values()
    )
    for seat in (1, 2, 3, 4):
        assert sample_service.holders(seat) == [f"vu-{result.winners[seat][0].client}"]


@MODES
@pytest.mark.race(resources=4, concurrency=40)
def test_unsafe_service_is_caught(race, module_service, mode):
    service = module_service(strategy="unsafe", window_ms=50)
    with pytest.raises(RaceViolation) as info:
        race.post(service.url + "/orders", json=order, sync=mode)
    result = info.value.result
    assert result.wins > 4
    assert {v.kind for v in result.violations} == {"too-many"}
    assert "too-many" in str(info.value)
    assert "client" in str(info.value)


@MODES
def test_body_classified_service_needs_a_predicate(race, mode):
    with serve_app(OneWinnerApp()) as url:
        result = race.post(
            lambda a: f"{url}/book/{a.resource}",
            resources=3,
            concurrency=10,
            success=lambda r: r.status_code == 200 and r.json()["ok"],
            sync=mode,
        )
        assert (result.wins, result.rejections, result.errors) == (3, 27, 0)
        # Judged by status alone, every 200 is a win: the invariant breaks.
        plain = race.post(lambda a: f"{url}/other/{a.resource}", resources=2, concurrency=5, check=False)
        assert plain.wins == 10
        assert {v.kind for v in plain.violations} == {"too-many"}


@pytest.mark.parametrize(
    ("expect", "passes"),
    [(1, True), (range(0, 2), True), (3, False), (range(2, 4), False), (range(1, 3), True)],
)
def test_expect_int_and_range(race, sample_service, expect, passes):
    result = race.post(
        sample_service.url + "/orders", json=order, resources=2, concurrency=10, expect=expect, check=False
    )
    assert result.passed is passes
    if not passes:
        assert {v.kind for v in result.violations} == {"too-few"}


def test_stock_of_k_with_expect(race):
    class Stock(OneWinnerApp):
        async def __call__(self, scope, receive, send):
            from tests.support import read_body, respond

            if scope["type"] != "http":
                return
            await read_body(receive)
            self.count += 1
            await respond(send, 201 if self.count <= 3 else 409, {})

    with serve_app(Stock()) as url:
        result = race.post(url + "/buy", concurrency=20, expect=3)
    assert (result.wins, result.rejections) == (3, 17)


def test_server_errors_fail_unless_allowed(race):
    with serve_app(OneWinnerApp(fail_every=4, loser_status=409)) as url:
        result = race.post(lambda a: f"{url}/seat/{a.resource}", resources=2, concurrency=8, check=False)
        assert result.errors == 4
        assert result.error_reasons == {"500 boom": 4}  # the body said {"error": "boom"}
        assert "error" in {v.kind for v in result.violations}
        tolerant = race.post(
            lambda a: f"{url}/again/{a.resource}", resources=2, concurrency=8, allow_errors=True
        )
        assert tolerant.errors == 4
        assert tolerant.passed


def test_timeout_is_unknown_and_indeterminate(race):
    with serve_app(OneWinnerApp(delay=2.0)) as url:
        result = race.post(url + "/slow", concurrency=3, timeout=0.3, check=False)
    assert result.unknown == 3
    assert result.wins == 0
    assert [v.kind for v in result.violations] == ["indeterminate"]
    assert "0..3" in result.violations[0].found


def test_predicate_that_raises_fails_even_with_allow_errors(race):
    def broken(response):
        raise KeyError("ok")

    with serve_app(OneWinnerApp()) as url:
        result = race.post(url + "/x", concurrency=4, success=broken, allow_errors=True, check=False)
    assert result.errors == 4
    assert "predicate" in {v.kind for v in result.violations}
    assert "KeyError" in next(iter(result.error_reasons))


def test_wrong_url_never_passes_even_when_zero_winners_allowed(race, sample_service):
    result = race.post(sample_service.url + "/nope", concurrency=5, expect=range(0, 2), check=False)
    assert [v.kind for v in result.violations] == ["no-winner-possible"]
    assert "404" in result.violations[0].detail


def test_connection_refused_fails_fast_with_the_url(race):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/orders"
    result = race.post(url, concurrency=3, timeout=2, check=False)
    assert result.errors == 3
    reason = next(iter(result.error_reasons))
    assert "connection refused" in reason
    assert f"127.0.0.1:{port}" in reason


def test_relative_url_without_base_url_names_the_option(race):
    with pytest.raises(RaceUsageError, match="--race-base-url"):
        race.post("/orders", concurrency=2)


def test_url_without_scheme_is_refused(race):
    with pytest.raises(RaceUsageError, match="scheme"):
        race.post("localhost:8000/orders", concurrency=2)


def test_base_url_resolves_relative_urls(race, sample_service):
    race.base_url = sample_service.url
    result = race.post("/orders", json=order, resources=2, concurrency=5)
    assert result.wins == 2


def test_unknown_call_argument_is_named(race):
    with pytest.raises(RaceUsageError, match="'concurency'"):
        race.post("http://127.0.0.1:1/x", concurency=2)


def test_bad_call_override_is_named(race):
    with pytest.raises(RaceUsageError, match=r"concurrency=0: expected an integer >= 1"):
        race.post("http://127.0.0.1:1/x", concurrency=0)


def test_attempt_keys_are_unique_and_arguments_vary(race):
    seen = []

    def body(a):
        seen.append((a.resource, a.client, a.round, a.key))
        return {"k": a.key}

    with serve_app(OneWinnerApp(loser_status=409)) as url:
        race.post(lambda a: f"{url}/r/{a.resource}", json=body, resources=["A1", "B2"], concurrency=3)
    assert sorted(seen) == sorted((r, c, 1, f"r1-{r}-{c}") for r in ("A1", "B2") for c in (1, 2, 3))


def test_run_with_setup_before_the_gate(race, sample_service):
    race.base_url = sample_service.url
    before_gate = []

    async def attempt(a):
        health = await a.http.get("/health")  # untimed set-up
        before_gate.append(health.status_code)
        await a.gate()
        return await a.http.post("/orders", json={"seats": [a.resource], "user": a.key})

    result = race.run(attempt, resources=3, concurrency=10)
    assert result.mode == "gate"
    assert before_gate == [200] * 30
    assert result.wins == 3


def test_run_refuses_last_byte(race):
    async def attempt(a):
        raise AssertionError("never runs")

    with pytest.raises(RaceUsageError, match="sync='last-byte'"):
        race.run(attempt, sync="last-byte")


def test_run_attempt_returning_junk_is_a_fatal_error(race, sample_service):
    race.base_url = sample_service.url

    async def attempt(a):
        await a.gate()
        return "not a response"

    result = race.run(attempt, concurrency=2, allow_errors=True, check=False)
    assert result.errors == 2
    assert "expected httpx.Response" in next(iter(result.error_reasons))
    assert not result.passed


def test_asgi_app_in_process(race):
    app = OneWinnerApp(loser_status=409)
    race.app = app
    result = race.post("/seat/1", concurrency=20)
    assert (result.wins, result.rejections, result.mode) == (1, 19, "gate")
    assert app.count == 20


def test_verify_settles_and_reconciles(race, module_service):
    service = module_service(strategy="unsafe", window_ms=50)
    result = race.post(
        service.url + "/orders",
        json=order,
        resources=2,
        concurrency=10,
        verify=lambda seat: len(service.holders(seat)),
        check=False,
    )
    kinds = {v.kind for v in result.violations}
    assert {"too-many", "double"} <= kinds
    assert "lost" not in kinds


def test_rounds_reset_between_and_report_the_rate(race, sample_service):
    result = race.post(sample_service.url + "/orders", json=order, resources=2, concurrency=5, rounds=3)
    assert result.requests == 30
    assert result.wins == 6
    assert [r.wins for r in result.per_round] == [2, 2, 2]


def test_last_byte_and_gate_classify_alike(race, sample_service):
    results = {}
    for mode in ("last-byte", "gate"):
        sample_service.reset()
        r = race.post(sample_service.url + "/orders", json=order, resources=3, concurrency=20, sync=mode)
        results[mode] = (r.requests, r.wins, r.rejections, r.errors, r.unknown, dict(r.status_counts))
    assert results["last-byte"] == results["gate"]


def test_last_byte_request_is_byte_identical_to_httpx(race):
    """What the engine writes (all but the final byte, then that byte) is what httpx sends."""
    captured: list[bytes] = []
    lock = threading.Lock()

    def handle(conn: socket.socket) -> None:
        head = read_request_head(conn)
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = head.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in head else b""
        with contextlib.suppress(OSError):
            while len(body) < length:
                body += conn.recv(4096)
        with lock:
            captured.append(head.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" + body)
        reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: application/json\r\n\r\n{}"
        with contextlib.suppress(OSError):
            conn.sendall(reply)

    def payload(client: int) -> dict[str, object]:
        return {"seats": ["A1"], "user": "zoë" * client, "n": 1.5}  # bodies of three lengths

    with raw_server(handle) as url:
        race.post(url + "/orders?x=1", json={"fixed": True}, headers={"X-Test": "1"}, concurrency=1)
        httpx.post(url + "/orders?x=1", json={"fixed": True}, headers={"X-Test": "1"}, trust_env=False)
        varying = {"json": lambda a: payload(a.client), "headers": {"X-Test": "1"}}
        race.post(url + "/orders?x=1", **varying, concurrency=3, expect=3)
        for client in (1, 2, 3):
            httpx.post(url + "/orders?x=1", json=payload(client), headers={"X-Test": "1"}, trust_env=False)
    assert len(captured) == 8
    assert captured[0] == captured[1]
    assert captured[0].startswith(b"POST /orders?x=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert sorted(captured[2:5]) == sorted(captured[5:8])
    assert len({len(c) for c in captured[5:8]}) == 3


def test_server_closing_before_the_final_byte_is_an_error(race):
    def handle(conn: socket.socket) -> None:
        read_request_head(conn, timeout=0.2)
        conn.close()

    with raw_server(handle) as url:
        result = race.get(url + "/x", concurrency=3, timeout=5, check=False)
    assert result.errors == 3
    assert result.unknown == 0
    reasons = " ".join(result.error_reasons)
    assert "closed the connection" in reasons


def test_server_answering_before_the_final_byte_is_kept_and_marked_early():
    """Driven step by step: the server's early answer is in before the gate opens (no sleeps).

    It is never thrown away: classified by its real status (a 400 here: a rejection), marked
    early, its held bytes never sent, its connection not kept."""
    answered = threading.Event()

    def handle(conn: socket.socket) -> None:
        conn.settimeout(5)
        with contextlib.suppress(OSError):
            conn.recv(10)  # a few bytes of the request: answer without waiting for the rest
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            answered.set()
            conn.recv(4096)

    async def scenario(url: str) -> list[Record]:
        config = resolve({}, {"concurrency": 1, "timeout": 5.0}, Settings(), flexible=False)
        builder = RequestBuilder(
            RequestSpec("POST", url + "/x", json={"a": "b" * 200}), None, make_ssl_context(True)
        )
        firer = LastByteFirer(config, builder, make_ssl_context(True), Classifier(config))
        slot = Slot(Record(resource=0, client=1, round=1), firer.wire.build(Attempt(1, 1, 1)))
        await firer._connect_and_prepare(slot, slot.request.origin)
        assert await anyio.to_thread.run_sync(answered.wait, 5)
        firer._release(1, 0, [slot])
        assert slot.conn is not None
        await firer._read([(slot, slot.conn)])
        kept = list(firer.pool)
        await builder.aclose()
        await firer.aclose()
        assert kept == []
        return [slot.record]

    with raw_server(handle) as url:
        (record,) = anyio.run(scenario, url)
    assert record.early
    assert record.status == 400
    assert record.outcome is Outcome.REJECTION
    assert record.sent_ns
    assert record.end_ns >= record.sent_ns
    assert 0 < record.call_ns <= record.sent_ns  # called when its prefix write began (design §7)


def test_records_are_complete(race, sample_service):
    result = race.post(sample_service.url + "/orders", json=order, resources=2, concurrency=10)
    assert len(result.history) == 20
    for rec in result.history:
        assert rec.sent_ns > 0
        assert rec.end_ns >= rec.sent_ns
        assert rec.server_ns > 0
        assert rec.outcome in (Outcome.WIN, Outcome.REJECTION)
    assert result.spread.median_ns > 0
    assert result.spread.server_median_ns is not None
    assert result.latency.all.count == 20
    assert result.latency.winners.count == 2
    assert result.latency.losers.count == 18
    assert (
        result.latency.all.min <= result.latency.all.med <= result.latency.all.p95 <= result.latency.all.max
    )


def test_asgi_app_lifespan_runs_and_exceptions_become_500(race):
    events: list[str] = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                events.append(message["type"])
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["path"] == "/boom":
            raise RuntimeError("the app crashed")
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    race.app = app
    result = race.post("/boom", concurrency=3, check=False)
    assert result.status_counts == {500: 3}
    assert result.error_reasons == {"HTTP 500": 3}
    assert events == ["lifespan.startup", "lifespan.shutdown"]
    assert race.post("/ok", concurrency=1).wins == 1


def test_asgi_app_rounds_reset_in_process(race):
    app = OneWinnerApp(loser_status=409)
    race.app = app
    result = race.post("/seat/1", concurrency=4, rounds=3)
    assert [r.wins for r in result.per_round] == [1, 1, 1]
    assert not result.interrupted


def test_failed_reset_stops_the_race_not_an_interruption(race, sample_service):
    def reset():
        raise RuntimeError("cannot reset")

    stopped = "reset= raised after round 1: RuntimeError: cannot reset"
    with pytest.raises(RaceViolation, match=stopped) as info:
        race.post(sample_service.url + "/orders", json=order, concurrency=2, rounds=2, reset=reset)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert not info.value.result.interrupted


def test_verify_settles_an_indeterminate_race_either_way(race):
    """Two requests time out, none was acknowledged: the final state decides."""
    with serve_app(OneWinnerApp(delay=2.0)) as url:
        settled = race.post(url + "/slow", concurrency=2, timeout=0.3, verify=lambda seat: 1, check=False)
        too_few = race.post(url + "/slower", concurrency=2, timeout=0.3, verify=lambda seat: 0, check=False)
    assert settled.unknown == 2
    assert settled.passed
    assert [v.kind for v in too_few.violations] == ["too-few"]
    assert too_few.violations[0].found == "0"


def test_iterator_status_rules_are_not_used_up(race):
    with serve_app(OneWinnerApp(loser_status=409)) as url:
        result = race.post(url + "/seat/1", concurrency=4, success=iter([200]), reject=iter([409]))
    assert (result.wins, result.rejections) == (1, 3)


def test_parallel_is_capped_at_the_number_of_resources(race, sample_service):
    result = race.post(sample_service.url + "/orders", json=order, resources=2, concurrency=3, parallel=500)
    assert result.settings["parallel"] == 2


def test_a_raising_request_callable_is_named(race, sample_service):
    def body(a):
        if a.client == 2:
            raise KeyError("no such seat")
        return order(a)

    with pytest.raises(
        RaceUsageError, match=r"json= callable raised KeyError: 'no such seat' \(attempt r1-1-2\)"
    ):
        race.post(sample_service.url + "/orders", json=body, concurrency=3)


def test_asgi_errors_are_not_exception_groups(race):
    race.app = OneWinnerApp()
    with pytest.raises(RaceUsageError, match="json= callable raised ZeroDivisionError"):
        race.post("/x", json=lambda a: 1 / 0, concurrency=2)


def test_attempt_without_gate_is_untimed_not_zero(race, sample_service):
    """It was not raced: recorded untimed, then the call says so, naming a.gate() and a key."""
    race.base_url = sample_service.url

    async def attempt(a):
        return await a.http.post("/orders", json=order(a))

    with pytest.raises(
        RaceUsageError, match=r"attempt for r1-1-\d and 2 more returned without awaiting a\.gate\(\)"
    ) as info:
        race.run(attempt, concurrency=3)
    result = info.value.result
    assert result is not None
    assert result.requests == 3
    assert all(rec.sent_ns == 0 for rec in result.history)


def test_async_verify_and_reset_callables(race, sample_service):
    seen: list[str] = []

    async def verify(seat):
        seen.append(f"verify {seat}")
        return len(sample_service.holders(seat))

    async def reset():
        seen.append("reset")
        sample_service.reset()

    result = race.post(
        sample_service.url + "/orders", json=order, concurrency=3, rounds=2, verify=verify, reset=reset
    )
    assert result.passed
    assert seen == ["verify 1", "reset", "verify 1"]


def test_last_byte_keeps_what_each_seats_release_cost(module_service):
    """``gate_writes``, as single-packet keeps them: one per seat and wave, from the drawn
    release order to the last final write, with its bytes, sends and (on Linux) TCP segments."""
    service = module_service()

    async def main() -> tuple[list[Record], LastByteFirer]:
        config = resolve(
            {}, {"resources": range(1, 3), "concurrency": 20, "timeout": 10.0}, Settings(), flexible=False
        )
        builder = RequestBuilder(
            RequestSpec("POST", service.url + "/orders", json=order), None, make_ssl_context(True)
        )
        firer = LastByteFirer(config, builder, make_ssl_context(True), Classifier(config))
        firer.count_segments = True
        sink: list[Record] = []
        try:
            await firer.fire_waves(1, [[0], [1]], sink)
        finally:
            await firer.aclose()
            await builder.aclose()
        return sink, firer

    records, firer = anyio.run(main)
    assert sum(rec.outcome is Outcome.WIN for rec in records) == 2
    assert [(g.round, g.resource, g.connections, g.streams, g.sends) for g in firer.gate_writes] == [
        (1, 0, 20, 20, 20),
        (1, 1, 20, 20, 20),
    ]
    for gate in firer.gate_writes:
        stamps = [rec.sent_ns for rec in records if rec.resource == gate.resource]
        assert gate.ns >= max(stamps) - min(stamps) > 0  # it starts before the first final write
        assert gate.bytes >= 20  # at least the final byte of every request
        if sys.platform == "linux":
            assert gate.segments is not None
            assert gate.segments >= gate.connections
