"""Sharded races on real execnet popen gateways against the sample service.

Gateways are the session's (started once, reused), so most tests here cost a race, not a
start; the fault tests use gateways of their own (a pool per race), torn down when it ends.
Faults and another host's clock are a test's stand-in on a shard's channel (``tests.shard_fakes``:
a tap on a real channel), never a hook in the product; the coordinator's own rules are tested
against scripted channels with no process at all (``tests/test_shard_protocol.py``).
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import anyio
import pytest

from pytest_seatrace import Attempt, RaceUsageError
from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.records import Outcome
from pytest_seatrace.core.result import RaceResult
from pytest_seatrace.engine import RacePlan, RequestSpec, TargetOptions, run_race
from pytest_seatrace.engine.shards import Gateways
from tests.shard_fakes import ClockAhead, KilledAtStart, ReadyWithheld, StartDelayed, TappedPool
from tests.support import INNER_INI, interrupted_race_test


def order(a: Attempt) -> dict[str, object]:
    return {"seats": [a.resource], "user": a.key}


def every_request_accounted(result: RaceResult, shards: int) -> None:
    """Each (round, resource, client) exactly once, and each client on the shard it belongs to."""
    seen = Counter((r.round, r.resource, r.client) for r in result.history)
    expected = {
        (rnd, i, c)
        for rnd in range(1, result.rounds + 1)
        for i in range(len(result.resources))
        for c in range(1, result.concurrency + 1)
    }
    assert set(seen) == expected
    assert set(seen.values()) == {1}
    assert all(r.shard == (r.client - 1) % shards + 1 for r in result.history)


@pytest.mark.parametrize("shards", [2, 3])
def test_safe_service_one_winner_per_seat_from_every_shard(race, sample_service, shards):
    result = race.post(
        sample_service.url + "/orders", json=order, resources=3, concurrency=6, shards=shards, rounds=2
    )
    assert (result.requests, result.wins, result.errors, result.unknown) == (36, 6, 0, 0)
    assert all(len(wins) == 2 for wins in result.winners.values())  # one per seat and round
    every_request_accounted(result, shards)
    for seat in (1, 2, 3):
        assert sample_service.holders(seat) == [f"r2-{seat}-{result.winners[seat][1].client}"]
    assert [s["shard"] for s in result.shards] == list(range(1, shards + 1))
    assert all(
        s["spec"] == "popen" and s["failure"] is None and s["requests"] == 36 // shards for s in result.shards
    )
    assert all(s["pid"] != os.getpid() for s in result.shards)
    assert len({s["pid"] for s in result.shards}) == shards
    # One host: the clocks agree, so the estimate is near zero within its own error bound.
    assert all(abs(s["clock_offset_ns"]) <= s["clock_error_ns"] + 2_000_000 for s in result.shards)
    assert result.spread.median_ns < 50e6
    assert all(0 <= s["start_late_ns"] < 250e6 for s in result.shards)  # a later start is missed
    assert result.to_dict()["shards"] == list(result.shards)


def test_unsafe_service_is_caught_across_shards(race, sample_service_factory):
    service = sample_service_factory(strategy="unsafe", window_ms=20)
    result = race.post(service.url + "/orders", json=order, resources=2, concurrency=6, shards=3, check=False)
    assert not result.passed
    assert result.double_bookings > 0
    assert {v.kind for v in result.violations} == {"too-many"}
    every_request_accounted(result, 3)
    winning_shards = {r.shard for r in result.history if r.outcome is Outcome.WIN}
    assert len(winning_shards) >= 2  # the seats were contended from several processes


@pytest.mark.parametrize(("sync", "hold"), [("gate", None), ("last-byte", "headers"), ("last-byte", "body")])
def test_every_http1_start_mode_shards(race, sample_service, sync, hold):
    args = {"sync": sync} if hold is None else {"sync": sync, "hold": hold}
    result = race.post(
        sample_service.url + "/orders", json=order, resources=2, concurrency=4, shards=2, **args
    )
    assert result.mode == sync
    assert (result.requests, result.wins, result.errors) == (8, 2, 0)
    assert result.early == 0
    every_request_accounted(result, 2)
    assert all(r.sent_ns and r.end_ns >= r.sent_ns and r.server_ns for r in result.history)


def test_single_packet_shards_on_hypercorn(race, sample_service_factory):
    service = sample_service_factory(server="hypercorn")
    result = race.post(
        service.url + "/orders", json=order, resources=2, concurrency=6, shards=2, sync="single-packet"
    )
    assert result.mode == "single-packet"
    assert result.raced is not None
    assert result.raced.http_version == "HTTP/2"
    assert (result.requests, result.wins, result.errors, result.early) == (12, 2, 0, 0)
    every_request_accounted(result, 2)


def test_a_predicate_sees_the_whole_response_and_its_request(race, sample_service):
    """The coordinator classifies: a predicate gets the body, the headers and the request."""
    seen: list[tuple[str, str, bool]] = []

    def won(response):
        seen.append((response.request.method, response.request.url.path, "x-arrival-ns" in response.headers))
        return response.status_code == 201 and response.json()["seats"]

    result = race.post(
        sample_service.url + "/orders", json=order, resources=2, concurrency=4, shards=2, success=won
    )
    assert result.wins == 2
    assert seen
    assert set(seen) == {("POST", "/orders", True)}
    assert len(seen) == 8


def test_an_injected_clock_offset_is_mapped_away(sample_service):
    """Shard 2's wall clock runs 5 s ahead (another host's clock): its offset is estimated, the
    start instant corrected and its stamps mapped, so spread, latency and verdict stay right."""
    pool = TappedPool({("popen", 1): lambda channel: ClockAhead(channel, 5_000_000_000)})
    result, _ = sharded(sample_service.url, ("popen", "popen"), resources=3, concurrency=6, pool=pool)
    assert result.passed
    assert result.wins == 3
    one, two = result.shards
    assert abs(one["clock_offset_ns"]) < 50_000_000
    assert abs(two["clock_offset_ns"] - 5_000_000_000) < 50_000_000
    # Unmapped, shard 2's sends would sit 5 s from shard 1's: the spread would be ~5 s.
    assert result.spread.max_ns < 100e6
    assert result.latency.all.max < 2e9
    by_shard = {s: [r.sent_ns for r in result.history if r.shard == s] for s in (1, 2)}
    assert abs(min(by_shard[1]) - min(by_shard[2])) < 100e6
    # Server stamps (one clock) agree: the two shards' requests arrived together.
    assert result.spread.server_max_ns is not None
    assert result.spread.server_max_ns < 100e6


def test_an_ssl_context_cannot_travel_to_a_shard(race, sample_service):
    with pytest.raises(RaceUsageError, match=r"tls_verify=<ssl.SSLContext>.*True, False or the path"):
        race.post(
            sample_service.url + "/orders",
            json=order,
            shards=2,
            concurrency=2,
            tls_verify=ssl.create_default_context(),
        )


def test_attempt_functions_cannot_be_sharded(race, sample_service):
    race.base_url = sample_service.url

    async def attempt(a):
        await a.gate()
        return await a.http.post("/orders", json=order(a))

    with pytest.raises(
        RaceUsageError, match=r"shards=2.*race.run/arun attempts and race.app cannot be sharded"
    ):
        race.run(attempt, shards=2, concurrency=2)


# -- faults: gateways of their own ---------------------------------------------------------------


def sharded(
    url: str,
    tx: tuple[str, ...],
    *,
    resources: int = 3,
    concurrency: int = 4,
    timeout: float = 5.0,
    pool: Gateways | None = None,
) -> tuple[RaceResult, float]:
    """One last-byte race over ``tx``; with ``pool``, on its gateways (closed when it ends)."""
    config = RaceConfig(
        resources=tuple(range(1, resources + 1)),
        concurrency=concurrency,
        timeout=timeout,
        sync="last-byte",
        shards=len(tx),
        tx=tx,
    )
    plan = RacePlan(
        name="sharded",
        config=config,
        target=TargetOptions(shard_pool=pool),
        request=RequestSpec("POST", url + "/orders", json=order),
    )
    start = time.monotonic()
    try:
        run = anyio.run(run_race, plan)
    finally:
        if pool is not None:
            pool.close()
    return RaceResult.from_run("sharded", config, run), time.monotonic() - start


def shard_errors(result: RaceResult, shard: int) -> set[str]:
    return {r.reason or "" for r in result.history if r.shard == shard and r.outcome is Outcome.ERROR}


def kept_shard(result: RaceResult, shard: int, requests: int) -> None:
    """The healthy shard's records are all there, answered and classified."""
    own = [r for r in result.history if r.shard == shard]
    assert len(own) == requests
    assert all(r.status in (201, 409) for r in own)


def test_a_shard_whose_python_does_not_exist_is_an_error_naming_its_spec(sample_service):
    result, _ = sharded(sample_service.url, ("popen", "popen//python=/nonexistent/python3"))
    (reason,) = shard_errors(result, 2)
    assert reason.startswith("shard 2 (popen//python=/nonexistent/python3): the gateway could not start")
    kept_shard(result, 1, 6)
    assert not result.passed
    assert result.errors == 6
    assert any("shard 2" in v.detail for v in result.violations)


def test_a_python_without_pytest_seatrace_says_what_to_install_where(sample_service, tmp_path):
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    spec = f"popen//python={python}"
    result, _ = sharded(sample_service.url, ("popen", spec))
    (reason,) = shard_errors(result, 2)
    assert reason.startswith(f"shard 2 ({spec}): pytest_seatrace is not importable by {python}")
    assert f"install pytest-seatrace into that python ({python} -m pip install pytest-seatrace)" in reason
    kept_shard(result, 1, 6)
    assert result.shards[1]["failure"] == reason


def test_a_shard_killed_mid_race_is_an_error_and_the_others_records_stay(sample_service):
    pool = TappedPool({("popen", 1): lambda channel: KilledAtStart(channel, (1, 2))})
    result, took = sharded(sample_service.url, ("popen", "popen"), timeout=5.0, pool=pool)
    pid = result.shards[1]["pid"]
    kept_shard(result, 1, 6)
    wave_one = [r for r in result.history if r.shard == 2 and r.resource == 0]
    assert len(wave_one) == 2
    assert all(r.status in (201, 409) for r in wave_one)
    (reason,) = shard_errors(result, 2)
    assert reason.startswith("shard 2 (popen): died mid-race")
    assert sum(1 for r in result.history if r.shard == 2 and r.reason == reason) == 4  # waves 2 and 3
    assert took < 5.0 + 1.0 + 5.0  # the timeout and grace, and starting the gateways
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_shard_that_misses_the_start_is_an_error_and_nothing_waits_past_the_timeout(sample_service):
    pool = TappedPool({("popen", 1): lambda channel: ReadyWithheld(channel, (1, 1))})
    result, took = sharded(sample_service.url, ("popen", "popen"), timeout=1.0, pool=pool)
    (reason,) = shard_errors(result, 2)
    assert reason == "shard 2 (popen): did not report ready within 2s: it missed the start"
    kept_shard(result, 1, 6)
    assert result.wins == 3  # shard 1 alone raced and won every seat
    assert took < 1.0 + 1.0 + 5.0  # one ready deadline, not one per wave


def test_a_shard_that_gets_its_start_late_releases_at_once_and_says_so(sample_service):
    """Wave 2's start instant reaches shard 2 60 ms late (a busy host): it finds the start past
    and releases at once: late, reported, nothing lost."""
    pool = TappedPool({("popen", 1): lambda channel: StartDelayed(channel, (1, 2), 0.06)})
    result, _ = sharded(sample_service.url, ("popen", "popen"), resources=3, concurrency=4, pool=pool)
    assert (result.requests, result.wins, result.errors, result.unknown) == (12, 3, 0, 0)
    every_request_accounted(result, 2)
    late = {s["shard"]: s["start_late_ns"] for s in result.shards}
    assert 50e6 <= late[2] < 250e6  # released, not missed
    assert late[1] < 50e6
    seat_two = [r.sent_ns for r in result.history if r.resource == 1]
    assert max(seat_two) - min(seat_two) >= 50e6  # the spread shows it


def test_records_carry_the_operation_as_in_one_process(race, sample_service):
    result = race.post(sample_service.url + "/orders", json=order, resources=2, concurrency=4, shards=2)
    assert {r.operation for r in result.history} == {"POST /orders"}


# -- through pytest: options, markers, Ctrl-C ------------------------------------------------------


def test_ctrl_c_tears_every_gateway_down_and_keeps_the_partial_figures(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    pytester.makeini(INNER_INI)
    pytester.makepyfile(interrupted_race_test("resources=2, concurrency=4, rounds=50, shards=2"))
    result = pytester.runpytest_subprocess("--race-json", "r.json", timeout=120)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*= race summary =*", "*::test_interrupted*2 × 4 × 2 shards*INTERRUPTED"])
    (race,) = json.loads((pytester.path / "r.json").read_text())["races"]
    assert race["interrupted"] is True
    assert 16 <= race["requests"] < 400
    assert race["requests"] % 4 == 0
    assert sorted(set(race["history"]["shard"])) == [1, 2]
    pids = [s["pid"] for s in race["shards"]]
    assert len(pids) == 2
    assert all(pids)
    deadline = time.monotonic() + 10
    alive = pids
    while alive and time.monotonic() < deadline:  # bounded: an orphan is reaped by init
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists()]
        time.sleep(0.05)
    assert alive == []


def test_options_and_markers_say_what_is_wrong(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.race(shards=0)
        def test_zero(race):
            pass

        @pytest.mark.race(shards=3)
        def test_disagrees(race):
            race.post("http://127.0.0.1:9/x", concurrency=4)
        """
    )
    bad = [
        (["--race-shards", "0"], "--race-shards: 0 is below the minimum of 1"),
        (["--race-tx", "bogus"], "'bogus' names no gateway"),
        (
            ["--race-shards", "3", "--race-tx", "2*popen"],
            "--race-shards 3 (race_shards) disagrees with --race-tx",
        ),
    ]
    for args, message in bad:
        result = pytester.runpytest(*args)
        assert result.ret == pytest.ExitCode.USAGE_ERROR, args
        assert message in result.stderr.str(), (args, result.stderr.str())
    result = pytester.runpytest("--race-tx", "2*popen", "-rA")
    result.assert_outcomes(failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*test_zero*shards=0: expected an integer >= 1*",
            "*shards=3: --race-tx (race_tx) gives 2 gateway(s) (popen, popen)*drop shards= or make it 2*",
        ]
    )


def test_ini_line_list_and_help(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI + "race_tx =\n    2*popen\n    popen\n")
    pytester.makepyfile("def test_nothing():\n    pass\n")
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["seatrace: *shards=3 (popen, popen, popen)*"])
    help_text = pytester.runpytest("--help").stdout.str()
    assert "--race-shards=N" in help_text
    assert "--race-tx=SPEC" in help_text


def test_set_ups_run_here_and_their_tokens_and_cookies_travel(race, sample_service_factory):
    """``setup=`` logs each client in from the test process; the token (a header callable) and
    the session cookie (set-up cookies) travel to the shards with each client's request."""
    service = sample_service_factory(auth=True)
    race.base_url = service.url

    async def login(a):
        response = await a.http.post("/login", json={"user": f"u{a.client}-{a.resource}"})
        response.raise_for_status()
        return response.json()["token"]

    def booking(a):  # the user the token was issued to
        return {"seats": [a.resource], "user": f"u{a.client}-{a.resource}"}

    with_header = race.post(
        "/orders",
        setup=login,
        headers=lambda a: {"Authorization": f"Bearer {a.setup}"},
        json=booking,
        resources=2,
        concurrency=4,
        shards=2,
    )
    assert with_header.status_counts == {201: 2, 409: 6}
    service.reset()
    with_cookie = race.post("/orders", setup=login, json=booking, resources=2, concurrency=4, shards=2)
    assert with_cookie.status_counts == {201: 2, 409: 6}
    every_request_accounted(with_cookie, 2)


def test_gateways_start_once_per_session_and_are_reused(race, sample_service):
    first = race.post(sample_service.url + "/orders", json=order, resources=1, concurrency=2, shards=2)
    sample_service.reset()
    second = race.post(sample_service.url + "/orders", json=order, resources=1, concurrency=2, shards=2)
    assert [s["pid"] for s in first.shards] == [s["pid"] for s in second.shards]
    assert len({s["pid"] for s in first.shards}) == 2


def test_a_ca_bundle_travels_and_auto_picks_single_packet_over_tls(race, sample_service_factory):
    """``tls_verify=<CA path>``: the bundle goes to the shards as text (their host may lack the
    file); ``auto`` chose single-packet by ALPN in the test process, and the shards use it."""
    service = sample_service_factory(server="hypercorn", tls=True)
    result = race.post(
        service.url + "/orders", json=order, resources=2, concurrency=4, shards=2, tls_verify=service.ca_path
    )
    assert result.mode == "single-packet"
    assert (result.requests, result.wins, result.errors) == (8, 2, 0)
    every_request_accounted(result, 2)


def test_parallel_waves_rounds_and_verify_shard_like_one_process(race, sample_service):
    result = race.post(
        sample_service.url + "/orders",
        json=order,
        resources=4,
        concurrency=4,
        shards=2,
        parallel=2,
        rounds=2,
        verify=lambda seat: len(sample_service.holders(seat)),
    )
    assert (result.requests, result.wins, result.errors) == (32, 8, 0)
    assert dict(result.held) == {(rnd, i): 1 for rnd in (1, 2) for i in range(4)}
    every_request_accounted(result, 2)
