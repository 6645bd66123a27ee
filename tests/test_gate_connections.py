"""Gate mode's connections: opened before the gate without a request, kept ones trusted only
while the server keeps them, and a warm-up (``warmup=``) named in everything it causes."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest

from pytest_seatrace import RaceUsageError
from pytest_seatrace.engine import RaceConfig, RacePlan, TargetOptions, run_race
from pytest_seatrace.engine.plan import RequestSpec
from tests.support import INNER_INI, bound_socket, closing_after_answer_server, raw_server, read_request_head
from tests.wire import read_request


def seat(url: str) -> Callable[[Any], str]:
    return lambda a: f"{url}/seat/{a.resource}"


@pytest.mark.parametrize(("delay_s", "warmup"), [(0.005, True), (0.03, True), (0.03, False)])
def test_a_server_that_closes_after_each_answer_passes_in_gate_mode(race, delay_s, warmup):
    """Keep-alive headers, yet one request per connection: 5 ms (closed before most next waves
    look) and 30 ms (still open when the next wave looks: the race waits and sees it close).
    Without a warm-up the kept connections are checked all the same."""
    with closing_after_answer_server(delay_s) as url:
        result = race.post(
            seat(url), json={}, resources=3, concurrency=20, parallel=1, sync="gate", warmup=warmup
        )
    assert result.passed
    assert result.status_counts == {201: 3, 409: 57}


@contextlib.contextmanager
def keep_alive_server(*, head_body: bytes = b"") -> Iterator[tuple[str, list[bytes], list[int]]]:
    """A seat server that keeps connections; yields its URL, the request lines it saw and one
    entry per connection it accepted. ``head_body``: bytes it wrongly writes after a HEAD's head."""
    taken: set[bytes] = set()
    seen: list[bytes] = []
    accepted: list[int] = []
    lock = threading.Lock()

    def handle(conn: socket.socket) -> None:
        with lock:
            accepted.append(1)
        buffered = bytearray()
        with contextlib.suppress(OSError):
            for _ in range(1000):  # requests on this connection
                line = read_request(conn, buffered, timeout=10)
                if line is None:
                    return
                method, path = line.split(b" ")[:2]
                with lock:
                    seen.append(line)
                    won = method != b"HEAD" and path not in taken
                    taken.add(path)
                status = b"201 Created" if won else b"409 Conflict" if method != b"HEAD" else b"200 OK"
                body = b'{"won": true}' if won else b'{"won": false}'
                reply = (
                    b"HTTP/1.1 " + status + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n"
                )
                conn.sendall(reply + (head_body if method == b"HEAD" else body))

    with raw_server(handle) as url:
        yield url, seen, accepted


def test_kept_connections_are_reused_across_waves_without_a_hidden_request(race):
    with keep_alive_server() as (url, seen, accepted):
        result = race.post(seat(url), json={}, resources=3, concurrency=4, sync="gate")
    assert result.status_counts == {201: 3, 409: 9}
    assert len(accepted) == 4  # one connection per client, kept for the three waves
    assert all(line.startswith(b"POST /seat/") for line in seen)  # no HEAD / before the gate


def test_a_head_answered_with_a_body_cannot_corrupt_the_raced_request(race):
    """The server writes a body after its HEAD answer (RFC 9110 forbids it): the warm-up's
    connection is closed after it, so those bytes never reach the raced request's parser."""
    with keep_alive_server(head_body=b'{"won": true}') as (url, seen, _):
        result = race.post(seat(url), json={}, resources=2, concurrency=5, sync="gate", warmup="/health")
    assert result.passed, result.error_reasons
    assert result.status_counts == {201: 2, 409: 8}
    assert seen.count(b"HEAD /health HTTP/1.1") == 5  # once per client, not per wave


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_connections_opened_before_the_gate_on_either_backend(backend):
    """httpcore's anyio backend serves both (httpx alone would pick its trio backend)."""
    config = RaceConfig(resources=(1, 2), concurrency=3, sync="gate", timeout=10.0)
    with keep_alive_server() as (url, seen, accepted):
        request = RequestSpec("POST", seat(url), json={})
        plan = RacePlan(name="gate", config=config, target=TargetOptions(), request=request)
        run = anyio.run(run_race, plan, backend=backend)
    assert sorted(r.status for r in run.records) == [201, 201, 409, 409, 409, 409]
    assert len(accepted) == 3
    assert len(seen) == 6


def test_an_attempt_logging_in_first_gets_a_fresh_connection_from_a_closing_server(race):
    """The log-in's connection is closed by the server after its answer: ``a.gate()`` sees it
    and opens another before the gate, so the booking is never sent on a dead connection."""
    with closing_after_answer_server(0.03) as url:

        async def attempt(a):
            await a.http.post(f"{url}/login/{a.resource}-{a.client}", json={})
            await a.gate()
            return await a.http.post(f"{url}/seat/{a.resource}", json={})

        race.base_url = url
        result = race.run(attempt, resources=2, concurrency=5, success=201, reject=409)
    assert result.status_counts == {201: 2, 409: 8}
    assert result.errors == 0


def closed_port() -> int:
    sock = bound_socket()
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def test_a_refused_warm_up_connection_is_named_as_the_warm_up(race):
    url = f"http://127.0.0.1:{closed_port()}"
    result = race.post(url + "/orders", json={}, concurrency=2, sync="gate", check=False)
    assert result.error_reasons == {f"warm-up connection to {url} failed: connection refused": 2}


def test_without_a_warm_up_nothing_is_opened_before_the_gate(race):
    """``warmup=False``: the raced request opens its own connection, after the gate."""
    url = f"http://127.0.0.1:{closed_port()}"
    result = race.post(url + "/orders", json={}, concurrency=2, sync="gate", warmup=False, check=False)
    assert result.error_reasons == {f"connection refused to {url}/orders": 2}


def test_a_warm_up_head_the_server_drops_is_named_with_its_url(race):
    def hang_up(conn: socket.socket) -> None:
        read_request_head(conn)
        conn.close()

    with raw_server(hang_up) as url:
        result = race.post(url + "/orders", json={}, concurrency=2, sync="gate", warmup="/", check=False)
    (reason,) = result.error_reasons
    assert reason.startswith(f"warm-up HEAD {url}/ failed: ")
    assert "set-up" not in reason


def test_a_warm_up_head_that_hangs_is_named_with_its_timeout(race):
    def silent(conn: socket.socket) -> None:
        read_request_head(conn, timeout=5)
        with contextlib.suppress(OSError):
            conn.recv(1)  # never answers; ends when the client goes

    with raw_server(silent) as url:
        result = race.post(
            url + "/orders", json={}, concurrency=2, sync="gate", warmup="/health", timeout=0.5, check=False
        )
    assert result.error_reasons == {f"warm-up HEAD {url}/health took over 0.5s": 2}


@pytest.mark.parametrize("value", ["health", "", 1, "http://127.0.0.1/health"])
def test_a_bad_warmup_is_named(race, value):
    with pytest.raises(RaceUsageError, match=r"warmup=.*: expected True, False or a path starting with '/'"):
        race.post("http://127.0.0.1:9/orders", json={}, warmup=value)


def test_a_bad_warmup_on_the_marker_errors_only_its_test(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.race(warmup="health")
        def test_bad(race):
            pass

        @pytest.mark.race(warmup="/health")
        def test_good(race):
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*warmup='health': expected True, False or a path starting with '/'*"])


def test_an_attempts_own_trace_callback_still_gets_its_events(race):
    """The engine traces every request for its own stamps; a callback the attempt passes is kept."""
    events: list[str] = []

    async def trace(event: str, info: dict[str, Any]) -> None:
        events.append(event)

    async def attempt(a):
        await a.gate()
        return await a.http.post(f"/seat/{a.resource}", json={}, extensions={"trace": trace})

    with keep_alive_server() as (url, _, _):
        race.base_url = url
        race.run(attempt, concurrency=2, success=201, reject=409)
    assert events.count("http11.send_request_body.complete") == 2
    assert events.count("http11.response_closed.complete") == 2
