"""No hook loses a race: a ``reset=``, ``verify=`` or request callable that fails once requests
went out (and a failed default ``POST /reset``, and Ctrl-C) ends the race with what it has."""

from __future__ import annotations

import json
import signal
import sys
import threading
from xml.etree import ElementTree

import httpx
import pytest

from pytest_seatrace import Attempt, RaceUsageError, RaceViolation
from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.records import Outcome, RaceRun, Record, Stop
from pytest_seatrace.core.result import RaceResult
from pytest_seatrace.report.summary import summary_lines
from tests.support import INNER_INI, OneWinnerApp, Receive, Scope, Send, read_body, respond, serve_app
from tests.test_reports import validate

MODES = pytest.mark.parametrize("mode", ["last-byte", "gate"])


def order(a: Attempt) -> dict[str, object]:
    return {"seats": [a.resource], "user": a.key}


class SeatsWithReset(OneWinnerApp):
    """One winner per path; ``POST /reset`` answers ``reset_status`` (a failed default reset)."""

    def __init__(self, reset_status: int) -> None:
        super().__init__(loser_status=409)
        self.reset_status = reset_status

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/reset":
            await read_body(receive)
            await respond(send, self.reset_status, {"error": "no reset here"})
            return
        await super().__call__(scope, receive, send)


@pytest.mark.race(resources=2, concurrency=5, rounds=3)
def test_reset_raising_stops_the_race_even_unchecked(race, sample_service):
    class ResetRefused(Exception):
        pass

    def reset():
        raise ResetRefused("the admin API said no")

    with pytest.raises(RaceViolation) as info:
        race.post(sample_service.url + "/orders", json=order, reset=reset, check=False)
    result = info.value.result
    assert isinstance(info.value.__cause__, ResetRefused)
    assert (result.requests, result.wins, result.rounds) == (10, 2, 3)
    assert [v.kind for v in result.violations] == ["hook"]
    stop = result.stopped
    assert stop is not None
    assert (stop.by, stop.round, stop.wave) == ("hook", 1, None)
    assert stop.reason.startswith("reset= raised after round 1: ResetRefused: the admin API said no at ")
    assert stop.reason.endswith(f"test_hooks.py:{reset.__code__.co_firstlineno + 1}")
    assert result.checked  # raised, so reported as FAIL, not "unchecked"
    assert not result.interrupted
    doc = result.to_dict()
    assert doc["stopped"]["by"] == "hook"
    assert str(info.value).startswith("race could not finish: 1 violation(s) over 2 resource(s)")
    assert "stopped: reset= raised after round 1" in str(info.value)
    # The cause's traceback starts in the test's own code, not in the engine or anyio.
    tb = info.value.__cause__.__traceback__
    assert tb is not None
    assert tb.tb_frame.f_code is reset.__code__


@pytest.mark.parametrize("status", [302, 409])
def test_a_failed_default_reset_keeps_the_race(race, status):
    with serve_app(SeatsWithReset(status)) as url, pytest.raises(RaceViolation) as info:
        race.post(url + "/seat/1", concurrency=4, rounds=2)
    result = info.value.result
    assert (result.requests, result.wins, result.rejections) == (4, 1, 3)
    assert [v.kind for v in result.violations] == ["hook"]
    assert isinstance(info.value.__cause__, httpx.HTTPStatusError)
    assert result.stopped is not None
    assert result.stopped.reason == (
        f"POST {url}/reset between rounds answered {status} after round 1; pass reset= to reset the state"
    )


def test_verify_raising_is_a_hook_and_a_wrong_count_stays_a_verify_violation(race, sample_service):
    def verify(seat):
        if seat == 2:
            raise KeyError(seat)
        return len(sample_service.holders(seat))

    with pytest.raises(RaceViolation) as info:
        race.post(
            sample_service.url + "/orders", json=order, resources=3, concurrency=4, rounds=2, verify=verify
        )
    result = info.value.result
    assert isinstance(info.value.__cause__, KeyError)
    assert result.requests == 12  # round 1 only: verify= ends the race after it
    assert result.held == {(1, 0): 1}  # seat 1 was read before seat 2's verify raised
    assert [v.kind for v in result.violations] == ["hook"]
    assert result.stopped is not None
    assert result.stopped.reason.startswith("verify(2) raised after round 1: KeyError: 2 at test_hooks.py:")

    sample_service.reset()
    wrong = race.post(
        sample_service.url + "/orders", json=order, concurrency=3, verify=lambda seat: "one", check=False
    )
    assert [v.kind for v in wrong.violations] == ["verify"]  # a value that is not a count: as before
    assert wrong.stopped is None


STARTS = pytest.mark.parametrize(
    "start",
    [{"sync": "last-byte"}, {"sync": "gate"}, {"sync": "last-byte", "shards": 2}],
    ids=["last-byte", "gate", "shards"],
)


@STARTS
@pytest.mark.race(resources=3, concurrency=4, parallel=1)
def test_request_callable_raising_in_a_later_wave_keeps_the_waves_that_went_out(race, sample_service, start):
    def body(a):
        if a.resource == 3:
            raise ValueError("no such seat")
        return order(a)

    with pytest.raises(RaceViolation) as info:
        race.post(sample_service.url + "/orders", json=body, check=False, **start)
    result = info.value.result
    assert isinstance(info.value.__cause__, ValueError)
    assert (result.requests, result.wins) == (8, 2)
    assert {r.resource for r in result.history} == {0, 1}
    assert [v.kind for v in result.violations] == ["hook"]
    stop = result.stopped
    assert stop is not None
    assert (stop.round, stop.wave, stop.waves) == (1, 3, 3)
    assert stop.reason.startswith("json= callable raised ValueError: no such seat (attempt r1-3-")
    line = body.__code__.co_firstlineno + 2
    assert stop.reason.endswith(f"at test_hooks.py:{line} (before round 1, wave 3 of 3 went out)")


@STARTS
@pytest.mark.race(resources=3, concurrency=4, parallel=1)
def test_request_callable_raising_before_anything_went_out_is_a_usage_error(race, sample_service, start):
    def body(a):
        raise ValueError("no such seat")

    with pytest.raises(RaceUsageError, match=r"json= callable raised ValueError: no such seat"):
        race.post(sample_service.url + "/orders", json=body, **start)


def test_reset_raising_on_the_unsafe_service_reports_its_double_bookings(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The trial's reproduction: a reset= raising httpx.HTTPStatusError after round 1 of a race on
    a service that double books. The race keeps its row: summary, JSON (its double bookings and
    where it stopped), the user's line in the error, no engine frame in the traceback."""
    monkeypatch.setenv("COLUMNS", "250")  # the whole table
    pytester.makeini(INNER_INI)
    pytester.makepyfile(
        test_unsafe="""
        import httpx
        import pytest

        @pytest.mark.race(resources=2, concurrency=10, rounds=3)
        def test_reset_fails(race, sample_service_factory):
            service = sample_service_factory(strategy="unsafe", window_ms=50)

            def reset():
                httpx.post(service.url + "/no-reset-here").raise_for_status()

            race.post(service.url + "/orders",
                      json=lambda a: {"seats": [a.resource], "user": a.key}, reset=reset)
        """
    )
    files = ["--race-json", "r.json", "--race-html", "r.html", "--junitxml", "j.xml"]
    result = pytester.runpytest_subprocess(*files, "-p", "no:randomly", timeout=120)
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*httpx.HTTPStatusError: Client error '404 Not Found'*",
            "*The above exception was the direct cause of the following exception:*",
            "*RaceViolation: race broke its invariant*",
            "*stopped: reset= raised after round 1: HTTPStatusError: *404* at test_unsafe.py:9",
        ]
    )
    result.stdout.fnmatch_lines(
        [
            "*= race summary =*",
            "*::test_reset_fails*2 × 10*FAIL*",
            "*test_reset_fails: stopped: reset= raised after round 1: HTTPStatusError:*",
        ]
    )
    assert "pytest_seatrace/engine" not in out
    assert "anyio/" not in out
    (race,) = json.loads((pytester.path / "r.json").read_text())["races"]
    assert (race["requests"], race["rounds"]) == (20, 3)
    assert race["double_bookings"] > 0  # the unsafe service's bug is still reported
    kinds = {v["kind"] for v in race["violations"]}
    assert {"too-many", "hook"} <= kinds
    assert race["stopped"]["by"] == "hook"
    assert (race["stopped"]["round"], race["stopped"]["wave"]) == (1, None)
    assert race["stopped"]["reason"].endswith("at test_unsafe.py:9")
    assert len(race["history"]["outcome"]) == 20
    html = (pytester.path / "r.html").read_text()
    assert "stopped: reset= raised after round 1: HTTPStatusError" in html
    junit = ElementTree.parse(pytester.path / "j.xml")  # noqa: S314 - our own file
    props = {p.get("name"): p.get("value") for p in junit.iter("property")}
    assert props["race_stopped"] == race["stopped"]["reason"]
    assert props["race_passed"] == "False"


class HeldWave:
    """Reads each POST, counts it, and never answers (a service that hangs mid-wave); ``arrived``
    is set once ``expected`` requests are in: the wave is in flight."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.arrived = threading.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await read_body(receive)
        if scope["method"] != "POST":  # gate mode's warm-up HEAD: answered at once
            await respond(send, 200, {})
            return
        self.count += 1
        if self.count >= self.expected:
            self.arrived.set()
        await receive()  # no answer: wait for the client to go away (``http.disconnect``)


@pytest.mark.parametrize(
    "start",
    [
        ["--race-sync", "last-byte"],
        ["--race-sync", "gate"],
        ["--race-sync", "last-byte", "--race-shards", "2"],
    ],
    ids=["last-byte", "gate", "shards"],
)
def test_ctrl_c_in_the_first_wave_keeps_the_interrupted_race(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, start: list[str]
) -> None:
    """SIGINT from outside while the first wave's requests are at the service, unanswered."""
    monkeypatch.setenv("COLUMNS", "250")
    pytester.makeini(INNER_INI)
    pytester.makepyfile(
        test_ctrl_c="""
        import pytest

        @pytest.mark.race(resources=3, concurrency=4, parallel=1, timeout=60)
        def test_interrupted(race):
            race.post("/seats/1")
        """
    )
    app = HeldWave(expected=4)
    with serve_app(app) as url:
        args = ["--race-base-url", url, *start, "--race-json", "r.json", "-p", "no:randomly"]
        proc = pytester.popen(
            [sys.executable, "-m", "pytest", *args], stdout=-1, stderr=-1, stdin=-1, text=True
        )
        try:
            assert app.arrived.wait(timeout=60), "the first wave never reached the service"
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == pytest.ExitCode.INTERRUPTED, out + err
    assert "race summary" in out
    rows = [line for line in out.splitlines() if "::test_interrupted" in line and "INTERRUPTED" in line]
    assert len(rows) == 1, out
    note = "test_interrupted: interrupted (Ctrl-C) in round 1, wave 1 of 3: the figures cover the requests"
    assert note in out
    document = json.loads((pytester.path / "r.json").read_text())
    validate(document)
    (race,) = document["races"]
    assert race["interrupted"] is True
    assert race["requests"] == 4  # the wave in flight: every request of it was sent
    assert race["unknown"] == 4
    assert race["error_reasons"] == {}
    assert race["stopped"] == {
        "by": "interrupted",
        "round": 1,
        "wave": 1,
        "waves": 3,
        "reason": "interrupted (Ctrl-C) in round 1, wave 1 of 3",
    }
    assert set(race["history"]["outcome"]) == {"unknown"}
    assert all(race["history"]["start_ns"])  # each was sent


@pytest.mark.race(resources=3, concurrency=4, parallel=1)
def test_request_callable_raising_in_a_later_wave_of_single_packet(race, module_service):
    service = module_service(server="hypercorn", tls=True)

    def body(a):
        if a.resource == 3:
            raise ValueError("no such seat")
        return order(a)

    with pytest.raises(RaceViolation) as info:
        race.post(service.url + "/orders", json=body, sync="single-packet", tls_verify=service.ca_path)
    result = info.value.result
    assert result.mode == "single-packet"
    assert (result.requests, result.wins) == (8, 2)
    assert result.stopped is not None
    assert (result.stopped.round, result.stopped.wave) == (1, 3)
    assert isinstance(info.value.__cause__, ValueError)


def test_rounds_without_any_reset_is_refused_before_the_first_round(race, sample_service):
    called: list[str] = []

    async def attempt(a):
        called.append(a.key)
        await a.gate()
        return await a.http.post(sample_service.url + "/orders", json=order(a))

    with pytest.raises(RaceUsageError, match=r"rounds > 1 needs reset= or a base URL"):
        race.run(attempt, concurrency=2, rounds=2)
    assert called == []  # nothing raced that could not be reset


def test_every_summary_verbosity_says_where_a_race_stopped() -> None:
    config = RaceConfig(resources=(1, 2, 3), concurrency=2, parallel=1, sync="last-byte")
    records = tuple(
        Record(
            resource=i,
            client=c,
            round=1,
            sent_ns=10,
            end_ns=20,
            status=201 if c == 1 else 409,
            outcome=Outcome.WIN if c == 1 else Outcome.REJECTION,
        )
        for i in (0, 1)
        for c in (1, 2)
    )
    reason = "json= callable raised ValueError: no such seat (attempt r1-3-1) at t.py:5"
    stop = Stop("hook", 1, 3, 3, reason)
    run = RaceRun(records=records, duration=0.1, problems=(), stopped=stop)
    doc = RaceResult.from_run("t.py::test_x", config, run, checked=False).to_dict()
    assert doc["checked"] is True  # a stopped race was raised: FAIL, not "unchecked"
    assert doc["stopped"] == {"by": "hook", "round": 1, "wave": 3, "waves": 3, "reason": reason}
    for verbosity in (0, 1):
        text = "\n".join(
            line.text for line in summary_lines([doc], verbosity=verbosity, mode="auto", width=250)
        )
        assert f"stopped: {reason}" in text


@pytest.mark.anyio
async def test_an_async_reset_raising_in_an_async_test_stops_the_race(race):
    async def reset():
        raise ConnectionError("admin API down")

    stopped = "reset= raised after round 1: ConnectionError"
    with serve_app(SeatsWithReset(200)) as url, pytest.raises(RaceViolation, match=stopped) as info:
        await race.apost(url + "/seat/1", concurrency=3, rounds=2, reset=reset, check=False)
    assert isinstance(info.value.__cause__, ConnectionError)
    assert info.value.result.requests == 3
    tb = info.value.__cause__.__traceback__
    assert tb is not None
    assert tb.tb_frame.f_code is reset.__code__
