"""The single-datagram start (engine/single_datagram.py) against the HTTP/3 sample service:
one winner per seat on the safe strategy, the window caught on the unsafe one, every client's
held byte in one UDP datagram, its waves fired from shards, and what a single-datagram race
refuses."""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import socket
import ssl
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from typing import Any

import anyio
import jsonschema
import pytest

pytest.importorskip("aioquic")

from pytest_seatrace import RaceResult, RaceUsageError
from pytest_seatrace.core.records import Outcome, RaceRun, Record
from pytest_seatrace.engine import RacePlan, TargetOptions, http3, run_race
from pytest_seatrace.engine.classify import Classifier
from pytest_seatrace.engine.firers import make_firer, ssl_context_for
from pytest_seatrace.engine.plan import Attempt, RequestSpec, Roster
from pytest_seatrace.engine.requests import RequestBuilder
from pytest_seatrace.engine.single_datagram import SingleDatagramFirer, fewest_links
from pytest_seatrace.marker import resolve
from pytest_seatrace.models import Seats
from pytest_seatrace.options import Settings
from pytest_seatrace.report.wording import releases_text
from tests.h3_small_credit import SmallCreditService, small_credit_service
from tests.http3_service import Http3Service, http3_service
from tests.support import INNER_INI

RACE_LIMIT_S = 60.0
MAX_DATAGRAM = 1200


def order(a: Attempt) -> dict[str, object]:
    return {"seats": [a.resource], "user": f"vu-{a.client}"}


def url_of(service: Http3Service) -> str:
    """QUIC listens on its own UDP port: the race's URL names it."""
    return f"https://127.0.0.1:{service.udp_port}"


@dataclass
class Fired:
    results: list[RaceResult]
    firer: SingleDatagramFirer
    records: list[Record]


def fire(
    spec: RequestSpec, service: Http3Service, *, waves: int = 1, rounds: int = 1, **marker: Any
) -> Fired:
    """``rounds`` rounds of ``waves`` single-resource waves on one firer (its connections kept),
    the service reset between rounds, each round judged as the runner would judge it."""
    marker.setdefault("timeout", 10.0)
    marker.setdefault("resources", range(1, waves + 1))
    config = resolve({}, {"sync": "single-datagram", **marker}, Settings(), flexible=False)

    async def main() -> Fired:
        context = ssl_context_for("single-datagram", service.ca_path)
        builder = RequestBuilder(spec, None, context)
        firer = make_firer(
            "single-datagram",
            config,
            Classifier(config),
            context,
            builder=builder,
            roster=Roster(config),
            base_url=None,
            tls_verify=service.ca_path,
        )
        assert isinstance(firer, SingleDatagramFirer)
        results: list[RaceResult] = []
        records: list[Record] = []
        try:
            with anyio.fail_after(RACE_LIMIT_S):
                for rnd in range(1, rounds + 1):
                    if rnd > 1:
                        await anyio.to_thread.run_sync(service.tcp.reset)
                    sink: list[Record] = []
                    started = time.perf_counter()
                    await firer.fire_waves(rnd, [range(i, i + 1) for i in range(waves)], sink)
                    run = RaceRun(records=tuple(sink), duration=time.perf_counter() - started)
                    results.append(RaceResult.from_run("single-datagram", config, run))
                    records += sink
        finally:
            await firer.aclose()
            await builder.aclose()
        return Fired(results, firer, records)

    return anyio.run(main)


@pytest.fixture(scope="module")
def safe_process() -> Iterator[Http3Service]:
    with http3_service(seats=4) as service:
        yield service


@pytest.fixture
def safe(safe_process: Http3Service) -> Http3Service:
    safe_process.tcp.reset()
    return safe_process


def posts(service: Http3Service) -> RequestSpec:
    return RequestSpec("POST", url_of(service) + "/orders", json=order)


def test_safe_service_one_winner_per_seat_each_release_one_datagram(safe: Http3Service) -> None:
    fired = fire(posts(safe), safe, waves=4, hold="body")
    [result] = fired.results
    assert (result.requests, result.wins, result.rejections, result.errors) == (400, 4, 396, 0)
    assert result.status_counts == {201: 4, 409: 396}
    assert result.passed
    assert result.early == 0
    for seat in range(1, 5):
        assert safe.tcp.holders(seat) == [f"vu-{result.winners[seat][0].client}"]
    # Each release one connection (kept, or fresh when the kept one's stream credit is short of
    # 100: hypercorn grants 128 at a time) and one datagram of 100 streams.
    assert fired.firer.connections <= 4
    gates = fired.firer.gate_writes
    assert [(g.connections, g.streams, g.datagrams, g.sends) for g in gates] == [(1, 100, 1, 1)] * 4
    assert all(g.bytes <= MAX_DATAGRAM for g in gates)
    assert all(r.build_ns > 0 and r.write_ns > 0 for r in fired.firer.datagram_releases)
    # hold="body": the server could act from the prefix on, so the call begins before the release.
    assert all(rec.server_ns and 0 < rec.call_ns < rec.sent_ns <= rec.end_ns for rec in fired.records)
    assert {rec.operation for rec in fired.records} == {"POST /orders"}


def test_hold_headers_calls_begin_at_the_release_and_still_sell_once(safe: Http3Service) -> None:
    """The HEADERS tail held: nothing can act before the release, whose instant is every call's;
    the bodies ride in the release too, so it takes more than one datagram."""
    fired = fire(posts(safe), safe, hold="headers")
    [result] = fired.results
    assert result.status_counts == {201: 1, 409: 99}
    assert result.passed
    [gate] = fired.firer.gate_writes
    assert gate.datagrams is not None
    assert gate.datagrams > 1
    assert len({rec.call_ns for rec in fired.records}) == 1
    assert all(0 < rec.call_ns <= rec.sent_ns for rec in fired.records)


def test_two_hundred_clients_of_one_seat_take_two_connections_and_two_datagrams(safe: Http3Service) -> None:
    """hypercorn grants 128 streams a connection: 200 clients need a second one."""
    fired = fire(posts(safe), safe, concurrency=200, hold="body")
    [result] = fired.results
    assert result.status_counts == {201: 1, 409: 199}
    assert fired.firer.connections >= 2
    [gate] = fired.firer.gate_writes
    assert gate.connections >= 2
    assert gate.datagrams is not None
    assert gate.datagrams <= 2


def test_every_round_of_two_hundred_takes_two_connections_kept_or_fresh(safe: Http3Service) -> None:
    """After a round of 100 + 100 the kept connections have fewer than 100 streams left each
    (aioquic grants more in batches): the next round closes them rather than spread 200
    streams over three connections, and each release is still two datagrams."""
    fired = fire(posts(safe), safe, rounds=3, hold="body", concurrency=200)
    assert [r.status_counts for r in fired.results] == [{201: 1, 409: 199}] * 3
    assert [(g.connections, g.datagrams) for g in fired.firer.gate_writes] == [(2, 2)] * 3


def test_a_release_too_large_for_one_burst_fails_its_wave_and_the_next_wave_races(safe: Http3Service) -> None:
    """Seat 1's 150 clients each carry a 1 KB note and hold their HEADERS, so every body rides
    in the release: far more than aioquic lets out at once on either of its two connections.
    That wave fails at once with the reason, both connections closed, nobody booked; seat 2's
    small orders then race on fresh connections."""

    def noted(a: Attempt) -> dict[str, object]:
        return {**order(a), "note": "x" * 1000 if a.resource == 1 else ""}

    started = time.monotonic()
    spec = RequestSpec("POST", url_of(safe) + "/orders", json=noted)
    fired = fire(spec, safe, waves=2, hold="headers", concurrency=150, timeout=30.0)
    elapsed = time.monotonic() - started
    first, second = fired.records[:150], fired.records[150:]
    assert {rec.outcome for rec in first} == {Outcome.ERROR}  # HEADERS never whole: no call began
    [reason] = {rec.reason for rec in first}
    assert reason is not None
    assert re.search(r"the release fit \d+ of \d+ streams' final bytes .*: no late start", reason), reason
    assert not any(rec.timed_out for rec in first)
    assert safe.tcp.holders(1) == []
    assert Counter(rec.status for rec in second) == {201: 1, 409: 149}
    assert fired.firer.connections == 4
    assert elapsed < 15.0  # a bound, far above the second it takes: the failed wave's
    # connections were closed, so nobody waited out its 30 s for answers that cannot come


@pytest.fixture(scope="module")
def small_credit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SmallCreditService]:
    with small_credit_service(tmp_path_factory.mktemp("h3-credit"), credit=8) as service:
        yield service


def test_a_server_with_a_small_stream_credit_gets_more_connections_and_still_races(
    small_credit: SmallCreditService,
) -> None:
    """8 streams a connection: 20 clients of a seat go over 3 connections (8, 8 and 4 streams),
    each connection its own datagram, released back to back; one winner a seat, both rounds
    (the second on what the kept connections got back, or fresh ones), and the summary says why."""
    small_credit.holders.clear()
    result = race(
        None, small_credit.url + "/orders", small_credit.ca_path, resources=range(1, 3), concurrency=20
    )
    assert result.status_counts == {201: 2, 409: 38}
    assert small_credit.holders == {seat: f"vu-{result.winners[seat][0].client}" for seat in (1, 2)}
    assert [(r.connections, r.streams, r.datagrams, r.stream_credit) for r in result.releases] == [
        (3, 20, 3, 8)
    ] * 2
    note = releases_text(result.to_dict())
    assert note is not None
    assert "on up to 3 connections (the server grants 8 streams a connection, 20 needed them)" in note


@pytest.mark.parametrize(
    ("kept", "fresh", "count", "chosen"),
    [
        ([], 128, 100, ([], 1)),
        ([100], 128, 100, ([0], 0)),  # a kept one that holds them all: no handshake
        ([57], 128, 100, ([], 1)),
        ([60, 50], 128, 200, ([], 2)),  # not three connections: 60 + 50 + 128 would be
        ([60, 128], 128, 200, ([1], 1)),
        ([200], 128, 150, ([0], 0)),
        ([10, 5], 0, 20, ([0, 1], 0)),  # the server grants nothing more: the caller says so
    ],
)
def test_fewest_links_uses_kept_credit_only_where_it_costs_no_extra_connection(
    kept: list[int], fresh: int, count: int, chosen: tuple[list[int], int]
) -> None:
    assert fewest_links(kept, fresh, count) == chosen


def test_fewest_links_is_never_beaten_by_any_other_choice() -> None:
    """Against every choice of kept connections plus fresh ones, on small random cases."""
    rng = random.Random(26)  # noqa: S311 - test data
    for _ in range(300):
        kept = [rng.randint(0, 12) for _ in range(rng.randint(0, 4))]
        fresh, count = rng.randint(1, 10), rng.randint(1, 40)
        indices, new = fewest_links(kept, fresh, count)
        assert sum(kept[index] for index in indices) + new * fresh >= count
        best = min(
            (len(subset) + math.ceil(max(0, count - sum(kept[i] for i in subset)) / fresh), -len(subset))
            for size in range(len(kept) + 1)
            for subset in itertools.combinations(range(len(kept)), size)
        )
        assert (len(indices) + new, -len(indices)) == best, (kept, fresh, count)


def test_rounds_reuse_the_kept_connections_and_sell_each_seat_once_a_round(safe: Http3Service) -> None:
    """25 clients a wave, four waves: 100 streams, within the 128 a fresh connection is granted,
    so one connection carries both rounds."""
    fired = fire(posts(safe), safe, waves=2, rounds=2, hold="body", concurrency=25)
    assert [r.status_counts for r in fired.results] == [{201: 2, 409: 48}] * 2
    assert all(r.passed for r in fired.results)
    assert [(g.round, g.connections, g.datagrams) for g in fired.firer.gate_writes] == [
        (1, 1, 1),
        (1, 1, 1),
        (2, 1, 1),
        (2, 1, 1),
    ]
    assert fired.firer.connections == 1


def test_gets_among_posts_race_under_one_start(safe: Http3Service) -> None:
    """Odd clients read their seat (no body: its HEADERS held), even ones order it."""
    url = url_of(safe)
    spec = RequestSpec(
        lambda a: "GET" if a.client % 2 else "POST",
        lambda a: f"{url}/seats/{a.resource}" if a.client % 2 else f"{url}/orders",
        json=lambda a: None if a.client % 2 else order(a),
    )
    fired = fire(spec, safe, hold="body", success=[200, 201])
    statuses = Counter((rec.operation.partition(" ")[0], rec.status) for rec in fired.records)
    assert statuses == {("POST", 201): 1, ("POST", 409): 49, ("GET", 200): 50}
    gets = [rec for rec in fired.records if rec.operation.startswith("GET /seats/")]
    assert len(gets) == 50
    release = max(rec.call_ns for rec in fired.records)
    assert all(rec.call_ns == release for rec in gets)  # bodyless: their call is the release


def test_unsafe_service_is_caught() -> None:
    with http3_service(strategy="unsafe", seats=2, window_ms=10) as service:
        fired = fire(posts(service), service, waves=2, hold="body")
    [result] = fired.results
    assert result.errors == 0
    assert result.wins > 2
    assert not result.passed
    assert {v.kind for v in result.violations} == {"too-many"}


# -- through the runner ----------------------------------------------------------------------


def race(service: Http3Service | None, url: str, tls_verify: Any, **marker: Any) -> RaceResult:
    config = resolve({}, {"sync": "single-datagram", "timeout": 10.0, **marker}, Settings(), flexible=False)
    plan = RacePlan(
        name="h3",
        config=config,
        target=TargetOptions(tls_verify=tls_verify),
        request=RequestSpec("POST", url, json=order),
    )

    async def main() -> RaceRun:
        with anyio.fail_after(RACE_LIMIT_S):
            return await run_race(plan)

    return RaceResult.from_run("h3", config, anyio.run(main))


def test_a_bound_model_judges_the_safe_service_linearizable(safe: Http3Service) -> None:
    result = race(safe, url_of(safe) + "/orders", safe.ca_path, model=Seats(), concurrency=20, hold="body")
    assert result.mode == "single-datagram"
    assert result.raced is not None
    assert result.raced.http_version == "HTTP/3"
    assert result.status_counts == {201: 1, 409: 19}
    assert result.linearizable is True
    assert result.passed


def test_the_result_json_and_notes_say_each_release_s_datagrams(safe: Http3Service) -> None:
    result = race(safe, url_of(safe) + "/orders", safe.ca_path, resources=range(1, 3), hold="body")
    assert result.passed
    assert [(r.round, r.resource, r.streams, r.datagrams) for r in result.releases] == [
        (1, 0, 100, 1),
        (1, 1, 100, 1),
    ]
    doc = result.to_dict(history=True)
    assert doc["mode"] == "single-datagram"
    assert doc["raced"] is not None
    assert doc["raced"]["hold"] == "body"
    assert [(r["resource"], r["datagrams"], r["connections"], r["shard"]) for r in doc["releases"]] == [
        ("1", 1, 1, 0),
        ("2", 1, 1, 0),
    ]
    assert {r["stream_credit"] for r in doc["releases"]} == {128}  # hypercorn's (aioquic's) grant
    schema = json.loads(resources.files("pytest_seatrace.report").joinpath("report.schema.json").read_text())
    race_schema = {"$defs": schema["$defs"], **schema["$defs"]["race"]}
    errors = list(jsonschema.Draft202012Validator(race_schema).iter_errors(json.loads(json.dumps(doc))))
    assert not errors, [e.message for e in errors[:5]]
    [note] = [text for text in (releases_text(doc),) if text]
    assert note.startswith(
        "2 releases over HTTP/3, 1 UDP datagram each, on up to 1 connection"
        " (its stream credit holds every client)"
    )


def test_an_ssl_context_is_a_usage_error_naming_tls_verify(safe: Http3Service) -> None:
    context = ssl.create_default_context(cafile=str(safe.ca_path))
    with pytest.raises(RaceUsageError, match=r"tls_verify=.*SSLContext"):
        race(safe, url_of(safe) + "/orders", context)
    assert safe.tcp.holders(1) == []


def test_an_http_url_is_a_usage_error() -> None:
    with pytest.raises(RaceUsageError, match=r"needs an https:// URL \(QUIC is always TLS\)"):
        race(None, "http://127.0.0.1:9/orders", True)


def test_aioquic_missing_is_a_usage_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """The extra's absence, as ``load_aioquic`` reports it, stops the race before anything is sent."""

    def missing() -> None:
        raise http3.Http3Error(f"{http3.NEEDS_EXTRA} (No module named 'aioquic')")

    monkeypatch.setattr(http3, "load_aioquic", missing)
    with pytest.raises(RaceUsageError, match=r"single-datagram.*pip install 'pytest-seatrace\[http3\]'"):
        race(None, "https://127.0.0.1:9/orders", True)


def test_an_answer_before_the_release_is_kept_and_flagged_early(safe: Http3Service) -> None:
    """A GET with a body held at its DATA tail: the seat's handler ignores the body, so
    hypercorn answers at HEADERS, before the release; each answer is kept, flagged, classified."""
    spec = RequestSpec("GET", url_of(safe) + "/seats/1", json={"ignored": True})
    fired = fire(spec, safe, hold="body", concurrency=10, success=[200], expect=range(0, 11))
    [result] = fired.results
    assert result.status_counts == {200: 10}
    assert result.early == 10
    assert all(rec.early and rec.sent_ns == rec.call_ns for rec in fired.records)
    assert {v.kind for v in result.violations} == {"not-raced"}


def test_a_udp_port_that_answers_nothing_times_out_each_request_as_an_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        started = time.perf_counter()
        result = race(None, f"https://127.0.0.1:{port}/orders", True, concurrency=5, timeout=1.0)
    assert time.perf_counter() - started < RACE_LIMIT_S / 2
    assert result.errors == 5
    assert all(
        rec.timed_out and "timed out after 1.0s connecting to" in (rec.reason or "") for rec in result.history
    )


INNER_RACE = """
import pytest

@pytest.mark.race(sync="single-datagram", hold="body", resources=2, concurrency=100)
def test_h3(race):
    result = race.post(
        {url!r} + "/orders",
        json=lambda a: {{"seats": [a.resource], "user": f"vu-{{a.client}}"}},
        tls_verify={ca!r},
    )
    assert result.mode == "single-datagram"
"""


def test_the_marker_races_single_datagram_and_the_summary_says_its_datagrams(
    pytester: pytest.Pytester, safe: Http3Service
) -> None:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_inner=INNER_RACE.format(url=url_of(safe), ca=str(safe.ca_path)))
    run = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=RACE_LIMIT_S)
    run.assert_outcomes(passed=1)
    run.stdout.fnmatch_lines(
        [
            "start mode: single-datagram (1 race)",
            "test_inner.py::test_h3: 2 releases over HTTP/3, 1 UDP datagram each*",
        ]
    )


def test_auto_in_a_sharded_race_fires_single_datagram_waves_from_every_shard(safe: Http3Service) -> None:
    """Two popen shards: ``auto`` finds HTTP/3 at the Alt-Svc port (that port, the hold point
    and the CA bundle's text travel), each shard holds its clients' bytes and releases them in
    UDP datagrams at the start instant, and their records and releases come back mapped."""
    url = safe.tcp.url + "/orders"  # the HTTPS (TCP) side: its Alt-Svc names the UDP port
    result = race(safe, url, safe.ca_path, sync="auto", shards=2, resources=range(1, 3), concurrency=6)
    assert result.mode == "single-datagram"
    assert result.raced is not None
    assert result.raced.http_version == "HTTP/3"
    assert (result.requests, result.wins, result.rejections, result.errors) == (12, 2, 10, 0)
    assert result.passed
    for seat in (1, 2):
        assert safe.tcp.holders(seat) == [f"vu-{result.winners[seat][0].client}"]
    assert [(s["spec"], s["failure"], s["requests"]) for s in result.shards] == [("popen", None, 6)] * 2
    assert Counter(rec.shard for rec in result.history) == {1: 6, 2: 6}
    assert all(0 < rec.call_ns <= rec.sent_ns <= rec.end_ns for rec in result.history)
    # one release per resource on each shard, each of its 3 clients' streams
    releases = sorted((r.round, r.resource, r.streams, r.shard) for r in result.releases)
    assert releases == [(1, 0, 3, 1), (1, 0, 3, 2), (1, 1, 3, 1), (1, 1, 3, 2)]
    assert all(r.datagrams >= 1 and r.write_ns > 0 for r in result.releases)
