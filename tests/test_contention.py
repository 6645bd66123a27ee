"""Contention seen by the service: how many requests it had in flight together, and the note
that says so when a 40-client race was really a 5-way race (``core.contention``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.contention import FAR_BELOW, Contention, occupancy, weighted_median
from pytest_seatrace.core.document import RaceDoc
from pytest_seatrace.core.records import Outcome, RaceRun, Record
from pytest_seatrace.core.result import RaceResult
from pytest_seatrace.report.summary import summary_lines
from tests.support import INNER_INI

MS = 1_000_000
T0 = 10_000 * MS
"""perf_counter_ns of the gate in the hand-made races."""


def record(
    client: int, arrival_ms: float | None, end_ms: float, *, sent_ms: float = 0.0, resource: int = 0
) -> Record:
    """One answered request of round 1; ``arrival_ms=None``: the service sent no stamp."""
    return Record(
        resource=resource,
        client=client,
        round=1,
        sent_ns=T0 + int(sent_ms * MS),
        end_ns=T0 + int(end_ms * MS),
        status=201 if client == 1 else 409,
        outcome=Outcome.WIN if client == 1 else Outcome.REJECTION,
        server_ns=0 if arrival_ms is None else T0 + int(arrival_ms * MS),
    )


def pool(clients: int, size: int, service_ms: float = 50.0, *, stamps: bool = True) -> list[Record]:
    """A service with ``size`` workers: the first ``size`` requests arrive 0.5 ms apart, and
    each worker takes the next waiting one 0.1 ms after answering, ``service_ms`` after it got
    in: batches of ``size`` arrivals."""
    out = []
    for i in range(clients):
        turn, worker = divmod(i, size)
        arrival = 0.5 + worker * 0.5 + turn * (service_ms + 0.1)
        out.append(record(i + 1, arrival if stamps else None, arrival + service_ms, sent_ms=(i % 7) * 0.03))
    return out


# -- the pure computation ----------------------------------------------------------------------


def assert_note_says(contention: Contention, *phrases: str) -> None:
    """The contention note exists and holds every one of ``phrases``."""
    note = contention.note
    assert note is not None
    missing = [phrase for phrase in phrases if phrase not in note]
    assert missing == [], note


def test_in_flight_counts_arrived_and_not_yet_answered_over_the_busy_time() -> None:
    # [0, 10) [2, 5) [4, 12) [11, 13)
    segments = occupancy([0, 2, 4, 11], [10, 5, 12, 13])
    assert segments == [(1, 2), (2, 2), (3, 1), (2, 5), (1, 1), (2, 1), (1, 1)]
    assert weighted_median(segments) == 2  # two in flight for 8 of the 13 busy ns


def test_batches_of_five_arrivals_are_a_worker_limit_named_in_the_note() -> None:
    contention = Contention.of(pool(40, 5), clients=40)
    assert (contention.source, contention.reading) == ("stamps", "limit")
    assert (contention.median, contention.peak) == (5, 5)
    assert contention.groups[0].waited == 35  # all but the first batch waited for an answer
    assert_note_says(
        contention,
        "the service had only 5 of 40 requests in flight at once",
        "5-way race",
        "gunicorn --workers/--threads",
        "answers timed at the client, an upper bound",
    )


def test_a_service_serving_other_resources_in_between_is_not_a_limit() -> None:
    # One at a time on one event loop: runs of 10 arrivals 0.1 ms apart, then 5 ms for other
    # resources' requests, while the client reads each run's answers when it gets to them.
    # Their stays run from 0.3 ms to 5 ms: no pool's work, which takes about as long each time.
    reads = [2.0, 4.0, 3.0, 5.0, 1.2]
    records = []
    for i in range(50):
        run, place = divmod(i, 10)
        arrival = 1 + run * 6 + place * 0.1
        records.append(record(i + 1, arrival, 1 + run * 6 + reads[run], sent_ms=(i % 7) * 0.03))
    contention = Contention.of(records, clients=50)
    assert contention.groups[0].waited == 40
    assert contention.far_below  # 10 of 50 in flight, yet
    assert contention.reading != "limit"
    assert contention.note is None


def milliseconds(text: str) -> list[float]:
    return [float(ms) for ms in text.split()]


# A gate-mode race of 50 clients on the bundled sample service (one request at a time on one
# event loop), recorded: ms since the first send. The client read the answers in bursts.
LATE_ARRIVALS = milliseconds(
    "1.25 1.58 1.71 1.8 1.88 1.96 2.04 2.12 2.2 2.27 2.34 2.41 2.48 2.54 2.61 2.67 2.74 2.81 2.87 "
    "2.94 3 3.07 3.13 3.2 3.27 3.33 3.4 3.46 3.53 3.59 3.65 3.71 3.78 3.84 3.9 3.97 4.03 4.09 4.16 "
    "4.23 66.57 66.78 66.87 66.95 67.02 67.09 67.16 67.22 67.29 67.35"
)
LATE_ENDS = milliseconds(
    "2.26 2.32 3.45 3.49 3.53 3.57 3.61 3.65 5.72 5.79 5.84 12.58 12.65 12.69 12.74 12.78 12.82 12.86 "
    "12.9 12.93 12.97 13 13.04 13.07 13.1 13.14 15.49 15.54 15.58 15.61 15.65 15.69 15.72 15.76 15.8 "
    "15.83 15.87 15.9 15.96 66.89 67.38 67.91 67.96 69.04 69.09 69.13 69.17 69.21 69.65 69.7"
)
LATE_SENDS = milliseconds(
    "0.35 0.39 0.43 0.46 0.49 0.52 0.55 0.59 0.62 0.65 0.69 0.74 0.77 0.81 0.84 0.87 0.9 0.94 0.97 1 "
    "1.05 1.08 1.11 1.14 1.17 1.2 1.23 1.26 1.29 1.32 1.35 1.38 1.42 1.45 1.48 1.51 1.54 1.57 1.6 "
    "1.63 1.66 1.69 0 0.06 0.1 0.13 0.16 0.2 0.23 0.26"
)


def test_a_count_in_flight_that_grows_while_requests_wait_is_not_a_limit() -> None:
    # Answers read in bursts make the count in flight (an upper bound) climb from 2 to 32 in
    # short runs of arrivals; a full pool would keep it steady near its size.
    records = [
        record(i + 1, arrival, end, sent_ms=sent)
        for i, (arrival, end, sent) in enumerate(zip(LATE_ARRIVALS, LATE_ENDS, LATE_SENDS, strict=True))
    ]
    contention = Contention.of(records, clients=50)
    assert contention.far_below
    assert contention.reading != "limit"
    assert contention.note is None


def test_arrivals_together_answered_one_by_one_is_serialised_by_design_without_a_note() -> None:
    # 40 arrivals within 1 ms, answered 10 ms apart: a lock inside the service.
    records = [record(i + 1, i * 0.025, 5 + i * 10) for i in range(40)]
    contention = Contention.of(records, clients=40)
    assert contention.reading == "serialised"
    assert contention.median is not None
    assert contention.median > 40 / FAR_BELOW
    assert contention.note is None


def test_arrivals_together_answered_together_is_concurrent() -> None:
    records = [record(i + 1, i * 0.025, 5 + i * 0.01) for i in range(40)]
    contention = Contention.of(records, clients=40)
    assert (contention.reading, contention.peak, contention.note) == ("concurrent", 40, None)


def test_one_at_a_time_gives_no_note_since_a_single_worker_and_one_event_loop_look_alike() -> None:
    # Each request arrives after the previous one was answered, as on the bundled sample service.
    records = [record(i + 1, 1 + i * 0.3, 1.1 + i * 0.3) for i in range(40)]
    contention = Contention.of(records, clients=40)
    assert (contention.reading, contention.median, contention.note) == ("one-at-a-time", 1, None)


def test_the_note_needs_fewer_than_a_quarter_of_the_clients_in_flight() -> None:
    at_quarter = Contention.of(pool(40, 10), clients=40)
    below = Contention.of(pool(40, 9), clients=40)
    assert (at_quarter.reading, at_quarter.median, at_quarter.note) == ("limit", 10, None)
    assert below.reading == "limit"
    assert below.note is not None
    assert "only 9 of 40" in below.note
    eight = Contention.of(pool(40, 8), clients=40).note
    assert eight is not None
    assert "made this an 8-way race" in eight


def test_a_limit_within_the_clients_timing_noise_is_not_believed() -> None:
    # Batches of 5 answered 1 ms later read as a limit, but not when the client's own sends
    # spread over 4 ms: a client that busy sends and reads late by as much.
    records = pool(40, 5, service_ms=1.0)
    assert Contention.of(records, clients=40).reading == "limit"
    records[0].sent_ns = T0 + 4 * MS
    contention = Contention.of(records, clients=40)
    assert contention.reading != "limit"
    assert contention.note is None


def test_answers_read_late_by_a_busy_client_are_not_a_limit() -> None:
    # The service takes one request every 0.1 ms and answers it at once; the client reads
    # answers once a millisecond, so about 5 look in flight, in runs of 10 arrivals with no
    # answer between them: a limit of 5 would let about 5 in per answer.
    records = []
    for i in range(40):
        arrival = 0.1 + 0.1 * i
        records.append(record(i + 1, arrival, int(arrival) + 1.01, sent_ms=(i % 7) * 0.03))
    contention = Contention.of(records, clients=40)
    assert contention.median is not None
    assert contention.median * FAR_BELOW < 40  # far below the clients, yet
    assert (contention.reading, contention.note) == ("mixed", None)


def test_answers_stamped_no_later_than_their_arrival_do_not_break_it() -> None:
    # A shard's clock mapping can put a client's end before the service's stamp.
    records = [record(i + 1, 1 + i * 0.3, 0.5 + i * 0.3) for i in range(10)]
    contention = Contention.of(records, clients=10)
    assert contention.source == "stamps"
    assert contention.note is None


def test_without_stamps_batches_of_answers_are_an_estimate_with_both_readings() -> None:
    contention = Contention.of(pool(40, 5, stamps=False), clients=40)
    assert (contention.source, contention.reading, contention.median) == ("responses", "batches", 5)
    assert_note_says(
        contention,
        "estimated from response times",
        "either a worker or thread limit",
        "serialises part of its work by design",
        "X-Arrival-Ns",
    )


def test_without_stamps_evenly_spaced_answers_say_nothing() -> None:
    records = [record(i + 1, None, 1 + i * 0.3) for i in range(40)]
    contention = Contention.of(records, clients=40)
    assert (contention.reading, contention.median, contention.note) == ("unclear", None, None)


def test_each_round_and_resource_is_its_own_group_in_the_document() -> None:
    records = [*pool(40, 5), *[record(i + 1, i * 0.025, 5 + i * 0.01, resource=1) for i in range(40)]]
    doc = Contention.of(records, clients=40).to_dict(["A", "B"])
    groups = {g["resource"]: (g["round"], g["reading"], g["median"]) for g in doc["by_resource"]}
    assert groups == {"A": (1, "limit", 5), "B": (1, "concurrent", 40)}
    assert doc["median"] == (5 + 40) / 2


def race_doc(name: str, records: list[Record]) -> RaceDoc:
    config = RaceConfig(resources=(1,), concurrency=len(records))
    return RaceResult.from_run(name, config, RaceRun(records=tuple(records), duration=1.0)).to_dict()


@pytest.mark.parametrize("verbosity", [0, 1])
def test_the_summary_shows_the_note_once_and_only_for_the_narrow_race(verbosity: int) -> None:
    narrow = race_doc("test_x.py::test_narrow", pool(40, 5))
    wide = race_doc("test_x.py::test_wide", [record(i + 1, i * 0.025, 5 + i * 0.01) for i in range(40)])
    lines = [line.text for line in summary_lines([narrow, wide], verbosity=verbosity, mode="auto", width=400)]
    notes = [i for i, text in enumerate(lines) if "requests in flight at once" in text]
    assert len(notes) == 1
    note = lines[notes[0]]
    assert "the service had only 5 of 40" in note
    assert "A worker or thread limit of about 5 made this a 5-way race" in note
    if verbosity > 0:  # in the narrow race's own block
        headers = [text for text in lines[: notes[0]] if text.startswith("test_x.py::")]
        assert headers[-1].startswith("test_x.py::test_narrow (")
    else:
        assert note.startswith("test_x.py::test_narrow: ")


# -- through pytest ------------------------------------------------------------------------------

GUNICORN_RACE = """
import pytest
from tests.gunicorn_seats import gunicorn_seats

@pytest.mark.race(resources=1, concurrency=40)
def test_five_sync_workers(race, tmp_path):
    with gunicorn_seats(tmp_path, worker_class="sync", workers=5, delay_ms=50, preload=True) as server:
        race.base_url = server.url
        race.post(lambda a: f"/book/{a.resource}", json=lambda a: {"user": f"u{a.client}"})
"""

SAMPLE_RACE = """
import pytest

@pytest.mark.race(resources=2, concurrency=40)
def test_safe_sample(race, sample_service):
    race.post(sample_service.url + "/orders", json=lambda a: {"seats": [a.resource], "user": f"u{a.client}"})
"""


def run_race(pytester: pytest.Pytester, source: str) -> tuple[pytest.RunResult, dict[str, object]]:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_race=source)
    report = pytester.path / "race.json"
    result = pytester.runpytest("-p", "no:cacheprovider", "--race-json", str(report))
    result.assert_outcomes(passed=1)
    races = json.loads(Path(report).read_text(encoding="utf-8"))["races"]
    contention: dict[str, object] = races[0]["contention"]
    return result, contention


def _lines(result: pytest.RunResult) -> Sequence[str]:
    return result.stdout.lines


def test_five_sync_gunicorn_workers_get_the_worker_limit_note(pytester: pytest.Pytester) -> None:
    result, contention = run_race(pytester, GUNICORN_RACE)
    assert (contention["source"], contention["reading"]) == ("stamps", "limit")
    median = contention["median"]
    assert isinstance(median, (int, float))
    assert median * FAR_BELOW < 40
    result.stdout.fnmatch_lines(["*::test_five_sync_workers: the service had only *"])
    text = " ".join(line.strip() for line in _lines(result))
    limit = contention["limit"]
    assert isinstance(limit, (int, float))
    assert f"A worker or thread limit of about {int(limit + 0.5)} made this" in text
    assert "gunicorn --workers/--threads" in text
    note = contention["note"]
    assert isinstance(note, str)
    assert note in text


def test_the_safe_sample_service_gets_no_note(pytester: pytest.Pytester) -> None:
    result, contention = run_race(pytester, SAMPLE_RACE)
    assert contention["source"] == "stamps"
    assert contention["reading"] != "limit"
    assert contention["note"] is None
    assert "requests in flight at once" not in result.stdout.str()
