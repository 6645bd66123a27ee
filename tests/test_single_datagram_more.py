"""Everything a race has, over the single-datagram start: the plugin's HTTP/3 sample service,
``setup=`` tokens and cookies on each client's HTTP/3 request, ``tls_verify=``, and a lost
release datagram."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest

pytest.importorskip("aioquic")

from pytest_seatrace import RaceResult, ServiceHandle
from pytest_seatrace.core.records import Outcome, RaceRun
from pytest_seatrace.core.violations import ViolationKind
from pytest_seatrace.engine import RacePlan, TargetOptions, http3, run_race, single_datagram
from pytest_seatrace.engine.http3 import RELEASE_LOST
from pytest_seatrace.engine.plan import Attempt, RequestSpec
from pytest_seatrace.marker import resolve
from pytest_seatrace.options import Settings
from pytest_seatrace.service import start_sample_service
from tests.support import INNER_INI
from tests.test_http3_connection import DroppingRelay
from tests.test_single_datagram import RACE_LIMIT_S
from tests.test_xdist_turns import overlapping, wall_intervals

CLIENTS = 10


def user(a: Attempt) -> str:
    return f"vu-{a.client}"


def run(
    url: str,
    tls_verify: Any,
    *,
    base_url: str | None = None,
    setup: Any = None,
    timeout: float = 5.0,
    **request: Any,
) -> RaceResult:
    """One single-datagram race on seat 1 through the runner, bounded in time."""
    marker = {"sync": "single-datagram", "timeout": timeout, "hold": "body", "concurrency": CLIENTS}
    config = resolve({}, marker, Settings(), flexible=False)
    request.setdefault("json", lambda a: {"seats": [a.resource], "user": user(a)})
    plan = RacePlan(
        name="h3",
        config=config,
        target=TargetOptions(base_url=base_url, tls_verify=tls_verify),
        request=RequestSpec("POST", url, **request),
        setup=setup,
    )

    async def main() -> RaceRun:
        with anyio.fail_after(RACE_LIMIT_S):
            return await run_race(plan)

    return RaceResult.from_run("h3", config, anyio.run(main))


@pytest.fixture(scope="module")
def auth_h3() -> Iterator[ServiceHandle]:
    """With ``--auth``: orders need a login token; every test starts with its seats free."""
    with start_sample_service(http3=True, seats=2, auth=True) as service:
        yield service


@pytest.fixture(autouse=True)
def _free_seats(auth_h3: ServiceHandle) -> None:
    auth_h3.reset()


@pytest.fixture(scope="module")
def plain_h3() -> Iterator[ServiceHandle]:
    """Without auth: for inner test files, which reset it between rounds."""
    with start_sample_service(http3=True, seats=4) as service:
        yield service


# -- the sample service's HTTP/3 variant ------------------------------------------------------


INNER_FACTORY = """
import pytest

@pytest.mark.race(sync="single-datagram", hold="body", concurrency=20)
def test_h3(race, sample_service_factory):
    service = sample_service_factory(http3=True, seats=1)
    assert (service.server, service.tls) == ("hypercorn", True)
    assert service.http3_url != service.url
    result = race.post(
        service.http3_url + "/orders",
        json=lambda a: {{"seats": [a.resource], "user": f"vu-{{a.client}}"}},
        tls_verify=service.ca_path,
    )
    assert result.mode == "single-datagram"
    assert result.status_counts == {{201: 1, 409: 19}}
    assert service.holders(1) == [f"vu-{{result.winners[1][0].client}}"]
"""


def test_the_fixture_starts_the_http3_variant_and_a_race_books_over_it(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_inner=INNER_FACTORY.format())
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=RACE_LIMIT_S)
    result.assert_outcomes(passed=1)


def test_http3_needs_hypercorn() -> None:
    refused = pytest.raises(ValueError, match=r"http3=True needs server='hypercorn', not server='uvicorn'")
    with refused, start_sample_service(http3=True, server="uvicorn"):
        pass  # pragma: no cover - refused before it starts


def test_a_service_without_http3_has_no_http3_url(auth_h3: ServiceHandle) -> None:
    assert auth_h3.http3_port is not None
    assert auth_h3.http3_url == f"https://127.0.0.1:{auth_h3.http3_port}"
    with start_sample_service(seats=1) as plain:
        assert plain.http3_port is None
        with pytest.raises(RuntimeError, match="started without http3=True"):
            _ = plain.http3_url


# -- setup= -----------------------------------------------------------------------------------


async def log_in(a: Attempt) -> str:
    """Over httpx on the HTTPS (TCP) side of the same service: the token, and its session cookie."""
    assert a.http is not None
    response = await a.http.post("/login", json={"user": user(a)})
    response.raise_for_status()
    token: str = response.json()["token"]
    return token


def run_logged_in(service: ServiceHandle, path: str) -> RaceResult:
    """Every client logged in over HTTPS first, its order sent over HTTP/3 with the bearer token."""
    return run(
        service.http3_url + path,
        service.ca_path,
        base_url=service.url,
        setup=log_in,
        headers=lambda a: {"Authorization": f"Bearer {a.setup}"},
    )


def test_setup_tokens_go_with_each_client_s_http3_request(auth_h3: ServiceHandle) -> None:
    result = run_logged_in(auth_h3, "/orders")
    assert result.mode == "single-datagram"
    assert result.status_counts == {201: 1, 409: CLIENTS - 1}
    assert auth_h3.holders(1) == [f"vu-{result.winners[1][0].client}"]


def test_setup_cookies_go_with_each_client_s_http3_request(auth_h3: ServiceHandle) -> None:
    """No header: only the session cookie the set-up received can say who books."""
    result = run(auth_h3.http3_url + "/orders", auth_h3.ca_path, base_url=auth_h3.url, setup=log_in)
    assert result.status_counts == {201: 1, 409: CLIENTS - 1}
    assert auth_h3.holders(1) == [f"vu-{result.winners[1][0].client}"]


def test_without_the_setup_every_http3_request_is_refused(auth_h3: ServiceHandle) -> None:
    """The control: the service does refuse orders that carry no token."""
    result = run(auth_h3.http3_url + "/orders", auth_h3.ca_path)
    assert result.status_counts == {401: CLIENTS}
    assert auth_h3.holders(1) == []


# -- tls_verify= ------------------------------------------------------------------------------


def test_tls_verify_false_races_without_checking_the_certificate(auth_h3: ServiceHandle) -> None:
    result = run(auth_h3.http3_url + "/orders", False)
    assert result.status_counts == {401: CLIENTS}  # answered: the handshake went through


@pytest.mark.parametrize("verify", ["wrong-ca", True])
def test_an_untrusted_certificate_fails_the_handshake_as_a_clear_error(
    auth_h3: ServiceHandle, verify: Any, tmp_path: Any
) -> None:
    """Another throwaway CA, or the system's: the service's certificate is not trusted."""
    if verify == "wrong-ca":
        with start_sample_service(tls=True, seats=1, db_path=tmp_path / "other.db") as other:
            assert other.ca_path is not None
            verify = other.ca_path.read_bytes()
        verify_path = tmp_path / "other-ca.pem"
        verify_path.write_bytes(verify)
        verify = verify_path
    started = time.perf_counter()
    result = run(auth_h3.http3_url + "/orders", verify)
    assert time.perf_counter() - started < RACE_LIMIT_S / 2
    assert result.errors == CLIENTS
    reasons = {rec.reason for rec in result.history}
    assert len(reasons) == 1
    [reason] = reasons
    assert reason is not None
    assert f"HTTP/3 handshake with {auth_h3.http3_url} failed" in reason
    assert "certificate" in reason.lower()
    assert auth_h3.holders(1) == []


# -- a lost release ---------------------------------------------------------------------------


class ReleaseDroppingRelay(DroppingRelay):
    """The relay, told at the gate to swallow the next datagram from the client: the release."""

    def forward_pending(self) -> None:
        """Forward what already waits on the client side (ACKs sent while settling), so the next
        datagram to arrive is the release's first."""
        while True:
            try:
                data, self.client = self.front.recvfrom(65536)
            except BlockingIOError:
                return
            self.back.send(data)


def test_a_lost_release_fails_the_wave_with_unknown_requests_not_a_late_start(
    auth_h3: ServiceHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert auth_h3.http3_port is not None
    relay = ReleaseDroppingRelay(("127.0.0.1", auth_h3.http3_port))

    def dropping_release(links: Any) -> Any:
        relay.forward_pending()
        relay.drop_next = True
        return http3.release(links)

    monkeypatch.setattr(single_datagram, "release", dropping_release)
    marker = {"sync": "single-datagram", "timeout": 5.0, "hold": "body", "concurrency": CLIENTS}
    config = resolve({}, marker, Settings(), flexible=False)
    plan = RacePlan(
        name="h3",
        config=config,
        target=TargetOptions(base_url=auth_h3.url, tls_verify=auth_h3.ca_path),
        request=RequestSpec(
            "POST",
            f"https://127.0.0.1:{relay.port}/orders",
            json=lambda a: {"seats": [a.resource], "user": user(a)},
            headers=lambda a: {"Authorization": f"Bearer {a.setup}"},
        ),
        setup=log_in,
        verify=lambda seat: len(auth_h3.holders(seat)),  # settles the unknown: nobody holds it
    )

    async def main() -> RaceRun:
        with anyio.fail_after(RACE_LIMIT_S):
            async with anyio.create_task_group() as tg:
                tg.start_soon(relay.forward_from_client)
                tg.start_soon(relay.forward_from_server)
                run = await run_race(plan)
                tg.cancel_scope.cancel()
        return run

    started = time.perf_counter()
    try:
        result = RaceResult.from_run("h3", config, anyio.run(main))
    finally:
        relay.close()
    assert time.perf_counter() - started < RACE_LIMIT_S / 2
    assert relay.dropped == 1
    assert result.unknown == CLIENTS
    assert {(rec.outcome, rec.reason) for rec in result.history} == {(Outcome.UNKNOWN, RELEASE_LOST)}
    assert result.held == {(1, 0): 0}
    # verify= read the final state: the lost release sold nothing, so the seat went unsold.
    assert [(v.kind, v.found) for v in result.violations] == [(ViolationKind.TOO_FEW, "0")]
    assert not result.passed
    assert auth_h3.holders(1) == []  # no final byte ever reached the server: nobody booked


# -- redaction, timeouts ----------------------------------------------------------------------


def test_the_race_document_strips_the_raced_url_s_secrets(auth_h3: ServiceHandle) -> None:
    result = run_logged_in(auth_h3, "/orders?token=hunter2&seat=1")
    assert result.status_counts == {201: 1, 409: CLIENTS - 1}
    assert result.raced is not None
    assert result.raced.url == auth_h3.http3_url + "/orders?token=***&seat=1"
    assert result.raced.stripped == ("query token",)
    document = json.dumps(result.to_dict(history=True))
    assert "hunter2" not in document
    assert "Bearer" not in document


def test_no_answer_within_the_timeout_after_the_release_is_unknown() -> None:
    """The unsafe handler sleeps 3 s between its check and its write: past the 0.5 s timeout."""
    with start_sample_service(http3=True, strategy="unsafe", seats=1, window_ms=3000) as slow:
        started = time.perf_counter()
        result = run(slow.http3_url + "/orders", slow.ca_path, timeout=0.5)
        elapsed = time.perf_counter() - started
    assert elapsed < RACE_LIMIT_S / 2
    assert result.unknown == CLIENTS
    assert all(
        rec.outcome is Outcome.UNKNOWN
        and rec.timed_out
        and rec.reason == "no response within 0.5s after the release"
        for rec in result.history
    )


# -- xdist turns, Ctrl-C ----------------------------------------------------------------------


FOUR_H3_RACES = """
import ssl
import httpx
import pytest

def reset():
    context = ssl.create_default_context(cafile={ca!r})
    httpx.post({tcp!r} + "/reset", verify=context).raise_for_status()

@pytest.mark.race(sync="single-datagram", hold="body", concurrency=100, rounds=8)
@pytest.mark.parametrize("seat", [1, 2, 3, 4])
def test_seat(race, seat):
    race.post({url!r} + "/orders", resources=[seat], tls_verify={ca!r}, reset=reset,
              json=lambda a: {{"seats": [a.resource], "user": f"u{{a.client}}"}})
"""


def test_single_datagram_races_against_one_origin_take_turns_under_xdist(
    pytester: pytest.Pytester, plain_h3: ServiceHandle
) -> None:
    pytester.makeini(INNER_INI)
    ca = str(plain_h3.ca_path)
    pytester.makepyfile(test_turns=FOUR_H3_RACES.format(tcp=plain_h3.url, url=plain_h3.http3_url, ca=ca))
    report = pytester.path / "r.json"
    result = pytester.runpytest_subprocess(
        "-n", "2", "-p", "no:cacheprovider", "--race-json", str(report), timeout=RACE_LIMIT_S * 2
    )
    result.assert_outcomes(passed=4)
    races = json.loads(report.read_text(encoding="utf-8"))
    assert {race["mode"] for race in races["races"]} == {"single-datagram"}
    assert len({race["worker"] for race in races["races"]}) == 2  # both workers raced
    assert overlapping(wall_intervals(races)) == []
    result.stdout.fnmatch_lines(["*races against one origin took turns*"])


INTERRUPTED_H3 = """
import os
import signal
import pytest

@pytest.mark.race(sync="single-datagram", hold="body", resources=2, concurrency=5, rounds=50)
def test_interrupted(race):
    calls = []

    def reset():
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)

    race.post({url!r} + "/orders", tls_verify={ca!r}, reset=reset,
              json=lambda a: {{"seats": [a.resource], "user": a.key}})
"""


def test_ctrl_c_during_a_single_datagram_race_keeps_the_partial_summary_and_reports(
    pytester: pytest.Pytester, plain_h3: ServiceHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As tests/test_robustness.py for the other starts: SIGINT at the second reset."""
    monkeypatch.setenv("COLUMNS", "250")  # the whole table
    pytester.makeini(INNER_INI)
    pytester.makepyfile(INTERRUPTED_H3.format(url=plain_h3.http3_url, ca=str(plain_h3.ca_path)))
    result = pytester.runpytest_subprocess("--race-json", "r.json", timeout=RACE_LIMIT_S * 2)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert "KeyboardInterrupt" in result.stdout.str()
    result.stdout.fnmatch_lines(["*= race summary =*", "*::test_interrupted*2 × 5*INTERRUPTED"])
    (race,) = json.loads((pytester.path / "r.json").read_text())["races"]
    assert race["mode"] == "single-datagram"
    assert race["interrupted"] is True
    assert 20 <= race["requests"] < 500
    assert race["requests"] % 5 == 0  # whole waves (5 clients of one seat) only
    assert len(race["history"]["outcome"]) == race["requests"]
