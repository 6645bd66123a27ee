"""The shard coordinator against scripted channels (no process, no network), as pytest-xdist tests
``DSession`` with ``MockNode``: what it sends, in which order, and what each answer makes of a
shard. Real gateways and their faults are in ``tests/test_shards.py``."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from typing import Any

import anyio
import pytest

from pytest_seatrace.core.config import RaceConfig, make_rule
from pytest_seatrace.core.records import DatagramRelease, Outcome
from pytest_seatrace.core.result import RaceResult
from pytest_seatrace.engine import RacePlan, RequestSpec, TargetOptions, http3, run_race, single_datagram
from pytest_seatrace.engine.shards import messages as m
from pytest_seatrace.engine.shards import remote, worker
from pytest_seatrace.engine.shards.clock import ClockMap
from pytest_seatrace.engine.shards.travel import (
    PYTHON_VERSION,
    RaceSettings,
    h3_for_shard,
    h3_on_shard,
    plugin_version,
    release_rows,
)
from pytest_seatrace.engine.stream import Origin
from tests.shard_fakes import Script, ScriptedChannel, ScriptedPool, clock_answers, hello

URL = "http://127.0.0.1:9/orders"  # never connected to: the scripted shard answers instead


def race(
    channels: list[ScriptedChannel | Exception], *, concurrency: int = 2
) -> tuple[RaceResult, RaceConfig]:
    """One last-byte race of one resource over scripted shards ("popen" by name)."""
    config = RaceConfig(
        resources=("A",),
        concurrency=concurrency,
        timeout=1.0,
        sync="last-byte",
        shards=len(channels),
        tx=("popen",) * len(channels),
    )
    plan = RacePlan(
        name="scripted",
        config=config,
        target=TargetOptions(shard_pool=ScriptedPool(channels)),
        request=RequestSpec("POST", URL, json=lambda a: {"user": a.key}),
    )
    return RaceResult.from_run("scripted", config, anyio.run(run_race, plan)), config


def answering(on_round: list[Any], on_start: list[Any]) -> Script:
    """A shard on our clock that answers ``Round`` and ``Start`` with these."""

    def script(message: m.Message) -> list[Any]:
        if isinstance(message, m.Round):
            return on_round
        if isinstance(message, m.Start):
            return on_start
        return clock_answers(message)

    return script


def reasons(result: RaceResult) -> set[str | None]:
    return {r.reason for r in result.history}


def row(client: int, call: int, sent: int, end: int, status: int) -> list[Any]:
    """A record row of resource 0, round 1, as ``worker.Recorder.row`` writes it (its body kept,
    no headers); the outcome is the coordinator's to decide."""
    unclassified = int(Outcome.ERROR)
    return [0, client, 1, call, sent, end, status, unclassified, None, 0, False, False, True, b"{}", None]


def test_a_scripted_shard_races_a_wave_and_the_coordinator_classifies_its_records() -> None:
    sent = time.perf_counter_ns()
    rows = [row(1, sent - 500, sent, sent + 1_000_000, 201), row(2, 0, sent, sent + 2_000_000, 409)]
    channel = ScriptedChannel([hello()], answering([m.Ready(1, 1, 0)], [m.Records(1, 1, rows, 0, 0)]))
    result, config = race([channel])
    assert (result.requests, result.wins, result.rejections, result.errors) == (2, 1, 1, 0)
    assert [said.NAME for said in channel.sent] == ["plan", *["clock"] * 12, "round", "start", "end"]
    plan = channel.sent[0]
    assert isinstance(plan, m.Plan)
    assert plan.race == RaceSettings.of(config)
    assert (plan.method, plan.varying, plan.constants) == ("POST", ["json"], {"url": URL})
    # The records are on our clock (one host here: the mapping moves them by less than 1 ms).
    by_client = {r.client: r for r in result.history}
    assert abs(by_client[1].sent_ns - sent) < 1_000_000
    assert by_client[2].end_ns - by_client[2].sent_ns == 2_000_000
    # The call travels in the row and is mapped with the same clock; no call (0) stays 0.
    assert by_client[1].sent_ns - by_client[1].call_ns == 500
    assert by_client[2].call_ns == 0
    assert {r.shard for r in result.history} == {1}
    assert {r.operation for r in result.history} == {"POST /orders"}


def test_each_shard_s_single_datagram_releases_come_back_with_its_records() -> None:
    """A release's figures travel as a row with the wave's records; the coordinator gathers every
    shard's into the race's releases."""
    sent = time.perf_counter_ns()
    figures = [DatagramRelease(1, 0, 1, 1, 1, 90 + n, 2_000, 300 + n, stream_credit=128) for n in (1, 2)]
    answers = {1: 201, 2: 409}
    records = [
        m.Records(1, 1, [row(n, sent, sent, sent + 1_000, answers[n])], 0, 0, release_rows([figure]))
        for n, figure in zip((1, 2), figures, strict=True)
    ]
    channels: list[ScriptedChannel | Exception] = [
        ScriptedChannel([hello()], answering([m.Ready(1, 1, 0)], [said])) for said in records
    ]
    result, _ = race(channels)
    assert result.wins == 1
    # each tagged with the shard that released it
    assert sorted(result.releases, key=lambda r: r.bytes) == [
        replace(f, shard=n) for n, f in enumerate(figures, 1)
    ]


def test_a_missed_start_is_an_error_naming_the_shard_and_the_wave() -> None:
    channel = ScriptedChannel([hello()], answering([m.Ready(1, 1, 0)], [m.Missed(1, 1, 300_000_000)]))
    result, _ = race([channel])
    assert reasons(result) == {"shard 1 (popen): missed the start of round 1 wave 1 by 300.0 ms"}
    assert result.errors == 2
    assert result.shards[0]["failure"] == "shard 1 (popen): missed the start of round 1 wave 1 by 300.0 ms"


def test_a_shard_that_fails_says_why() -> None:
    channel = ScriptedChannel([hello()], answering([m.Failed("OSError: too many open files")], []))
    result, _ = race([channel])
    assert reasons(result) == {"shard 1 (popen): failed: OSError: too many open files"}


@pytest.mark.parametrize(("said", "called"), [(hello().encode(), "hello"), (("bogus", {}), "bogus")])
def test_a_message_out_of_turn_ends_that_shard_and_names_both(said: Any, called: str) -> None:
    channel = ScriptedChannel([hello()], answering([said], []))
    result, _ = race([channel])
    assert reasons(result) == {f"shard 1 (popen): sent {called!r} where 'ready' was due"}


def test_a_shard_silent_past_the_timeout_missed_the_start_and_the_other_shard_races_on() -> None:
    sent = time.perf_counter_ns()
    rows = [row(1, sent, sent, sent + 1, 201)]
    healthy = ScriptedChannel([hello()], answering([m.Ready(1, 1, 0)], [m.Records(1, 1, rows, 0, 0)]))
    silent = ScriptedChannel([hello()], answering([], []))
    result, _ = race([healthy, silent])
    by_shard = {r.shard: r for r in result.history}
    assert by_shard[1].outcome is Outcome.WIN
    assert by_shard[2].reason == "shard 2 (popen): did not report ready within 2s: it missed the start"
    assert silent.closed
    assert [said.NAME for said in silent.sent][-1] == "round"  # no start, no end: it was given up on


def test_another_version_there_is_named_with_both_versions_before_any_plan() -> None:
    channel = ScriptedChannel([hello(version="0.0.1")], clock_answers)
    result, _ = race([channel])
    here = plugin_version()
    expected = (
        f"shard 1 (popen): pytest-seatrace 0.0.1 there, {here} here: install the same version into "
        "/scripted/python"
    )
    assert reasons(result) == {expected}
    assert channel.sent == []
    assert channel.closed


def test_a_python_without_pytest_seatrace_is_told_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """``remote.py`` writes its one message by hand: it is the ``ImportFailed`` the coordinator
    reads, and the coordinator says what to install where."""
    said: list[Any] = []

    class Channel:
        def send(self, data: Any) -> None:
            said.append(data)

    monkeypatch.setitem(sys.modules, "pytest_seatrace.engine.shards.worker", None)  # an import that fails
    remote.start(Channel())
    (data,) = said
    failed = m.decode(data)
    assert isinstance(failed, m.ImportFailed)
    assert failed.python == sys.executable
    assert failed.error.startswith("ModuleNotFoundError: import of pytest_seatrace.engine.shards.worker")
    assert data == failed.encode()
    monkeypatch.undo()
    result, _ = race([ScriptedChannel([failed], clock_answers)])
    (reason,) = reasons(result)
    assert reason == (
        f"shard 1 (popen): pytest_seatrace is not importable by {sys.executable} ({failed.error}): install "
        f"pytest-seatrace into that python ({sys.executable} -m pip install pytest-seatrace), or point the "
        "spec's python= at one that has it"
    )


def test_a_gateway_that_cannot_start_is_an_error_naming_its_spec() -> None:
    result, _ = race([OSError("no such file: /nonexistent/python3")])
    assert reasons(result) == {
        "shard 1 (popen): the gateway could not start (OSError: no such file: /nonexistent/python3); "
        "check the spec's python="
    }


def test_every_message_travels_as_builtins_and_comes_back_by_its_name() -> None:
    settings = RaceSettings.of(RaceConfig(resources=(1, 2), sync="last-byte", hold="body", hold_given=True))
    messages: list[m.Message] = [
        m.Plan(
            1,
            2,
            settings,
            True,
            "http://h",
            ("ca", "PEM"),
            None,
            {"url": "/x"},
            ["method", "json"],
            [3, 11],
            [[["https", "h", 443], ["https", "h", 8443]]],
        ),
        m.ClockRequest(),
        m.Round(1, [[0], [1]], {0: [1]}, {"json": [[0, 1, {}]]}),
        m.Start(123, None),
        m.End(),
        m.Hello("h", 1, "p", [3, 11], "v", 2, 3),
        m.ImportFailed("p", "ImportError: x"),
        m.ClockReading(5),
        m.Ready(1, 2, 0),
        m.Records(1, 2, b"rows", 0, 3, [[1, 0, 2, 100, 1, 1500, 2000, 300]]),
        m.Missed(1, 2, 300),
        m.Failed("text"),
    ]
    for message in messages:
        name, values = message.encode()
        assert type(name) is str
        assert type(values) is dict
        assert m.decode((name, values)) == message
    assert len({message.NAME for message in messages}) == len(messages)
    assert m.decode(("ready", {"round": 1})) == m.Unrecognised("ready")  # another version's fields
    assert m.decode(42) == m.Unrecognised("42")


def test_the_http3_target_and_the_releases_travel_as_builtins_and_back() -> None:
    h3_at = {Origin("https", "127.0.0.1", 443): Origin("https", "127.0.0.1", 8443)}
    assert h3_on_shard(h3_for_shard(h3_at)) == h3_at
    release = DatagramRelease(2, 1, 3, 30, 1, 1100, 5_000, 400, stream_credit=8)
    [travelled] = release_rows([release])
    assert all(type(value) is int for value in travelled)
    assert DatagramRelease(*travelled) == release


def test_a_shard_without_aioquic_names_the_extra_and_its_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """The shard's side (``worker.serve``, in this process): a single-datagram plan on a host
    whose aioquic is missing (as ``load_aioquic`` reports it) fails with what to install where."""

    def missing() -> None:
        raise http3.Http3Error(f"{http3.NEEDS_EXTRA} (No module named 'aioquic')")

    monkeypatch.setattr(single_datagram, "load_aioquic", missing)
    settings = RaceSettings.of(RaceConfig(resources=(1,), sync="single-datagram", hold="body"))
    plan = m.Plan(1, 1, settings, False, None, ("bool", True), "POST", {"url": URL}, [], PYTHON_VERSION)
    coordinator = ScriptedChannel([plan, m.End()], lambda message: [])
    worker.serve(coordinator)
    hello_there, failed = coordinator.sent
    assert isinstance(hello_there, m.Hello)
    assert failed == m.Failed(
        f"{http3.NEEDS_EXTRA} (No module named 'aioquic'): install it into {sys.executable} on "
        f"{hello_there.host}"
    )


def test_the_race_settings_go_there_and_back_without_rules() -> None:
    config = RaceConfig(
        resources=("A1", "A2", "A3"),
        concurrency=7,
        timeout=2.5,
        sync="single-packet",
        hold="body",
        hold_given=True,
        parallel=2,
        seed=99,
        success=make_rule(lambda r: True, make_rule(None, RaceConfig(resources=(1,)).success)),
    )
    settings = RaceSettings.of(config)
    back = settings.config()
    assert back.resources == (0, 1, 2)  # the coordinator's indices
    kept = ("concurrency", "timeout", "sync", "hold", "hold_given", "parallel", "seed")
    assert {name: getattr(back, name) for name in kept} == {name: getattr(config, name) for name in kept}
    assert back.success == RaceConfig(resources=(1,)).success  # predicates stay on the coordinator
    assert RaceSettings.of(back) == settings


def test_a_clock_five_seconds_ahead_is_mapped_within_its_error_bound() -> None:
    ahead = 5_000_000_000
    wall, perf = time.time_ns() + ahead, time.perf_counter_ns()
    clock = ClockMap.measure(lambda: time.time_ns() + ahead, wall, perf)
    assert abs(clock.offset_ns - ahead) <= clock.error_ns + 1_000_000
    assert clock.error_ns < 50_000_000
    assert abs(clock.here(perf) - perf) < 1_000_000 + clock.error_ns  # one host: the same instant
    assert clock.here(0) == 0
    assert clock.from_there(clock.there(123)) == 123
