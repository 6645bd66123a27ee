"""Under pytest-xdist, races against one origin take turns: one worker's ``POST /reset`` between
rounds must never wipe another worker's race on a shared service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pytest_seatrace import ServiceHandle
from tests.support import INNER_INI

FOUR_RACES = """
import pytest

@pytest.mark.race(concurrency=100, rounds=8)
@pytest.mark.parametrize("seat", ["1", "2", "3", "4"])
def test_seat(race, seat):
    race.post("/orders", resources=[seat], json=lambda a: {"seats": [a.resource], "user": f"u{a.client}"})
"""


def wall_intervals(report: dict[str, Any]) -> list[tuple[int, int, str]]:
    """Each race's first send to last answer on the wall clock, from its clock pair and history."""
    out = []
    for race in report["races"]:
        clock, history = race["clock"], race["history"]
        offset = clock["time_ns"] - clock["perf_counter_ns"]
        start = min(s for s in history["start_ns"] if s) + offset
        end = max(history["end_ns"]) + offset
        out.append((start, end, race["name"]))
    return sorted(out)


def overlapping(intervals: list[tuple[int, int, str]]) -> list[tuple[str, str]]:
    return [
        (a[2], b[2])
        for i, a in enumerate(intervals)
        for b in intervals[i + 1 :]
        if b[0] < a[1] and a[0] < b[1]
    ]


def run_four(pytester: pytest.Pytester, service: ServiceHandle, *extra: str) -> tuple[Any, dict[str, Any]]:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_turns=FOUR_RACES)
    report = Path(pytester.path, "r.json")
    result = pytester.runpytest_subprocess(
        "-n",
        "2",
        "-p",
        "no:cacheprovider",
        "--race-base-url",
        service.url,
        "--race-json",
        str(report),
        *extra,
    )
    return result, json.loads(report.read_text(encoding="utf-8"))


def test_races_against_one_origin_take_turns(
    pytester: pytest.Pytester, sample_service: ServiceHandle
) -> None:
    result, report = run_four(pytester, sample_service)
    result.assert_outcomes(passed=4)
    assert len({race["worker"] for race in report["races"]}) == 2  # both workers raced
    assert overlapping(wall_intervals(report)) == []
    assert all(race["passed"] for race in report["races"])
    result.stdout.fnmatch_lines(["*races against one origin took turns*"])


def test_overlap_lets_them_run_at_once(pytester: pytest.Pytester, sample_service: ServiceHandle) -> None:
    """Without the lock the races do run at once (which is what lets a reset hit a neighbour)."""
    result, report = run_four(pytester, sample_service, "--race-xdist", "overlap")
    assert len(report["races"]) == 4
    assert overlapping(wall_intervals(report)) != []
    assert "took turns" not in result.stdout.str()


def test_races_against_different_origins_still_run_at_once(pytester: pytest.Pytester) -> None:
    """Each worker's own service is another origin: no turns, so both workers race at once."""
    pytester.makeini(INNER_INI)
    pytester.makepyfile(
        test_own="""
        import pytest

        @pytest.mark.race(concurrency=100, rounds=8)
        @pytest.mark.parametrize("n", [1, 2, 3, 4])
        def test_own_service(race, sample_service, n):
            race.post(
                sample_service.url + "/orders",
                json=lambda a: {"seats": [a.resource], "user": f"u{a.client}"},
            )
        """
    )
    report = Path(pytester.path, "r.json")
    result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", "--race-json", str(report))
    result.assert_outcomes(passed=4)
    intervals = wall_intervals(json.loads(report.read_text(encoding="utf-8")))
    assert overlapping(intervals) != []
