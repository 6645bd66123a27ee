"""``setup=``: per-client set-up (log in) before a precise start of the raced request."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_seatrace import RaceUsageError, RaceViolation, ServiceHandle
from tests.support import INNER_INI, bearer, login, order


def test_login_then_book_with_a_last_byte_start(race, auth_service):
    race.base_url = auth_service.url
    result = race.post("/orders", setup=login, headers=bearer, json=order, resources=4, concurrency=25)
    assert result.mode == "last-byte"
    assert result.wins == 4
    assert result.status_counts == {201: 4, 409: 96}
    assert result.spread.by_resource  # every seat started through the gate


def test_setup_cookies_go_with_the_raced_request(race, auth_service):
    """The login's session cookie is the only credential the raced request carries."""
    race.base_url = auth_service.url
    result = race.post("/orders", setup=login, json=order, resources=2, concurrency=10)
    assert result.status_counts == {201: 2, 409: 18}


def test_without_setup_the_same_race_is_refused(race, auth_service):
    race.base_url = auth_service.url
    with pytest.raises(RaceViolation, match="every response was 401"):
        race.post("/orders", json=order, resources=1, concurrency=5)


def test_a_failing_setup_makes_its_client_an_error_the_others_race(race, auth_service):
    race.base_url = auth_service.url

    async def flaky(a):
        if a.client == 3:
            raise RuntimeError("no such user")
        return await login(a)

    result = race.post(
        "/orders", setup=flaky, headers=bearer, json=order, resources=2, concurrency=5, check=False
    )
    assert result.requests == 10
    assert result.wins == 2
    assert result.errors == 2
    assert result.error_reasons == {"set-up raised RuntimeError: no such user": 2}
    assert [v.kind for v in result.violations] == ["error", "error"]


def test_when_every_setup_fails_the_race_says_why(race, auth_service):
    race.base_url = auth_service.url

    def broken(a):
        raise ValueError("login service down")

    with pytest.raises(RaceViolation, match="set-up raised ValueError: login service down") as info:
        race.post("/orders", setup=broken, headers=bearer, json=order, concurrency=4)
    raced = info.value.result.to_dict()["raced"]
    assert raced is not None
    assert (raced["method"], raced["url"]) == ("POST", auth_service.url + "/orders")  # not "race.run attempt"


def test_setup_runs_once_per_client_unless_each_round(race, auth_service):
    race.base_url = auth_service.url
    calls: list[tuple[Any, int, int]] = []

    async def counted(a):
        calls.append((a.resource, a.client, a.round))
        return await login(a)

    race.post("/orders", setup=counted, headers=bearer, json=order, concurrency=3, rounds=3)
    assert sorted(calls) == [(1, c, 1) for c in (1, 2, 3)]
    calls.clear()
    auth_service.reset()
    race.post(
        "/orders", setup=counted, headers=bearer, json=order, concurrency=3, rounds=2, setup_each_round=True
    )
    assert sorted(calls) == [(1, c, r) for c in (1, 2, 3) for r in (1, 2)]


def test_setups_are_bounded(race, auth_service):
    race.base_url = auth_service.url
    running = 0
    most = 0

    async def watched(a):
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            return await login(a)
        finally:
            running -= 1

    race.post(
        "/orders", setup=watched, headers=bearer, json=order, resources=2, concurrency=20, setup_concurrency=4
    )
    assert 1 < most <= 4


def test_sync_setup_works_too(race, auth_service):
    race.base_url = auth_service.url
    seen: list[int] = []

    def plain(a):
        seen.append(a.client)
        return f"client-{a.client}"

    result = race.post(
        "/orders",
        setup=plain,
        json=lambda a: {"seats": [a.resource], "user": a.setup},
        concurrency=3,
        expect=0,
        reject=401,
    )
    assert sorted(seen) == [1, 2, 3]
    assert result.status_counts == {401: 3}


def test_a_sync_setup_that_outlives_the_timeout_is_an_error_and_the_race_goes_on(race, sample_service):
    """A thread cannot be cancelled: the race stops waiting for it at ``timeout`` and goes on."""
    release = threading.Event()

    def hangs_for_client_one(a):
        if a.client == 1:
            release.wait(10)  # a login to a hung service; bounded so the test cannot hang
        return a.client

    started = time.monotonic()
    try:
        result = race.post(
            sample_service.url + "/orders",
            setup=hangs_for_client_one,
            json=order,
            concurrency=4,
            timeout=1,
            check=False,
        )
    finally:
        release.set()
    assert time.monotonic() - started < 5  # not the 10 s the thread would take
    assert result.error_reasons == {"set-up timed out after 1s": 1}
    assert result.wins == 1
    assert result.requests == 4
    assert not result.passed


def _own_socket_times_out(a):
    left, right = socket.socketpair()
    with left, right:
        left.settimeout(0.01)
        left.recv(1)  # nothing comes: the set-up's own socket times out


async def _own_wait_times_out(a):
    raise TimeoutError("login took too long")


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (_own_socket_times_out, "set-up raised TimeoutError: timed out"),
        (_own_wait_times_out, "set-up raised TimeoutError: login took too long"),
    ],
)
def test_a_timeout_the_setup_raises_itself_is_reported_as_raised(race, sample_service, setup, reason):
    result = race.post(
        sample_service.url + "/orders", setup=setup, json=order, concurrency=2, timeout=5, check=False
    )
    assert result.error_reasons == {reason: 2}


HUNG_SETUP = """
import threading

import pytest

def hung_login(a):
    threading.Event().wait()  # never returns: the thread is left behind

def test_book(race):
    result = race.post("/orders", setup=hung_login, json={"seats": ["1"], "user": "u"},
                       concurrency=2, timeout=1, check=False)
    assert result.error_reasons == {"set-up timed out after 1s": 2}
"""


def test_a_setup_thread_left_behind_does_not_keep_the_session_alive(
    pytester: pytest.Pytester, sample_service: ServiceHandle
) -> None:
    """The abandoned thread is a daemon: the interpreter exits although it never returns."""
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_hung=HUNG_SETUP)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--race-base-url", sample_service.url, timeout=60
    )
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"setup": "login"}, r"setup='login'\): expected a sync or async callable"),
        ({"setup": login, "setup_concurrency": 0}, r"setup_concurrency=0\): expected an integer >= 1"),
        ({"setup": login, "setup_each_round": "yes"}, r"setup_each_round='yes'\): expected True or False"),
    ],
)
def test_bad_setup_arguments_are_named(race, kwargs, message):
    with pytest.raises(RaceUsageError, match=message):
        race.post("http://127.0.0.1:9/orders", json={}, **kwargs)


def test_setup_is_for_request_races(race):
    async def attempt(a):
        await a.gate()
        return await a.http.get("/")

    with pytest.raises(RaceUsageError, match=r"set-up is for request races"):
        race.run(attempt, setup=login)


LOGIN_RACE = """
import json, pathlib, pytest

TOKENS = pathlib.Path(__file__).with_name("tokens.txt")

async def login(a):
    response = await a.http.post("/login", json={"user": f"u{a.client}"})
    token = response.json()["token"]
    with TOKENS.open("a") as fh:
        fh.write(token + "\\n")
    return token

@pytest.mark.race(resources=2, concurrency=10)
def test_book(race):
    race.post(
        "/orders?session=s3cr3t-query",
        setup=login,
        headers=lambda a: {"Authorization": f"Bearer {a.setup}"},
        json=lambda a: {"seats": [a.resource], "user": f"u{a.client}"},
        expect=range(0, 11),
    )
"""


def test_no_report_shows_the_tokens_it_used(pytester: pytest.Pytester, auth_service: ServiceHandle) -> None:
    """CI artifacts are often public: every report of a login-then-book race is free of its tokens."""
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_secret=LOGIN_RACE)
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-v",
        "--race-base-url",
        auth_service.url,
        "--race-json",
        "r.json",
        "--race-html",
        "r.html",
        "--junitxml",
        "r.xml",
    )
    result.assert_outcomes(passed=1)
    tokens = Path(pytester.path, "tokens.txt").read_text(encoding="utf-8").split()
    assert len(tokens) == 20
    texts = {
        name: Path(pytester.path, name).read_text(encoding="utf-8") for name in ("r.json", "r.html", "r.xml")
    }
    texts["terminal"] = result.stdout.str()
    for name, text in texts.items():
        leaked = [t for t in tokens if t in text]
        assert leaked == [], f"{name} shows {len(leaked)} tokens"
        assert "s3cr3t-query" not in text, name
    raced = json.loads(texts["r.json"])["races"][0]["raced"]
    assert raced["url"].endswith("/orders?session=***")
    assert raced["stripped"] == ["query session"]
