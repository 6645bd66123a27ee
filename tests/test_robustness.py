"""Faults a real suite throws at the plugin: dead services, Ctrl-C, file limits, crashes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from pytest_seatrace import Attempt
from pytest_seatrace.engine.limits import SPARE_FDS, ensure_open_files
from pytest_seatrace.service import start_sample_service
from tests.support import INNER_INI, interrupted_race_test

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def order(a: Attempt) -> dict[str, object]:
    return {"seats": [a.resource], "user": a.key}


def test_service_killed_mid_race_counts_errors_and_keeps_acknowledged_bookings(race, sample_service_factory):
    """SIGKILL in the middle of a race: errors are counted, the test fails, and after a restart on
    the same database every booking acknowledged with 201 is still held (WAL + synchronous=NORMAL)."""
    service = sample_service_factory(strategy="safe", seats=8)
    race.base_url = service.url
    killed: list[bool] = []

    async def attempt(a):
        await a.gate()
        if a.resource == 5 and a.client == 1 and not killed:
            killed.append(True)
            service.kill()
        return await a.http.post("/orders", json=order(a))

    result = race.run(attempt, resources=8, concurrency=10, timeout=5, check=False)
    assert killed
    assert result.errors >= 10  # at least the seats after the kill failed
    assert "error" in {v.kind for v in result.violations}
    assert not result.passed
    won = {seat: wins for seat, wins in result.winners.items() if wins}
    assert set(won) >= {1, 2, 3, 4}
    with start_sample_service(strategy="safe", seats=8, db_path=service.db_path) as restarted:
        for seat, wins in won.items():
            assert len(wins) == 1
            winner = json.loads(wins[0].body)
            assert winner["seats"] == [str(seat)]
            holders = restarted.holders(seat)
            assert holders == [f"r1-{seat}-{wins[0].client}"], (seat, holders)


def test_open_file_limit_is_raised_toward_the_hard_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2000
    if hard != resource.RLIM_INFINITY and hard < want + SPARE_FDS:
        pytest.skip(f"hard open-file limit {hard} is below {want + SPARE_FDS}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert ensure_open_files(want) >= want + SPARE_FDS
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= want + SPARE_FDS
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_open_file_limit_too_low_says_how_many() -> None:
    code = textwrap.dedent(
        """
        import resource
        resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))
        from pytest_seatrace.engine.limits import ensure_open_files
        try:
            ensure_open_files(1600)
        except Exception as exc:
            print(type(exc).__name__, exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.startswith("RaceUsageError this race needs 1600 sockets")
    assert "allows about 236 (soft 300, hard 300)" in out.stdout


def test_ctrl_c_during_a_race_keeps_the_partial_summary_and_reports(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "250")  # the whole table
    pytester.makeini(INNER_INI)
    pytester.makepyfile(
        interrupted_race_test("resources=2, concurrency=5, rounds=50")
        + "\n\ndef test_never_reached():\n    pass\n"
    )
    result = pytester.runpytest_subprocess("--race-json", "r.json", timeout=120)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    out = result.stdout.str()
    assert "KeyboardInterrupt" in out
    result.stdout.fnmatch_lines(["*= race summary =*", "*::test_interrupted*2 × 5*INTERRUPTED"])
    report = json.loads((pytester.path / "r.json").read_text())
    (race,) = report["races"]
    assert race["interrupted"] is True
    assert 20 <= race["requests"] < 500
    assert race["requests"] % 5 == 0  # whole waves (5 clients of one seat) only
    assert len(race["history"]["outcome"]) == race["requests"]


@pytest.mark.parametrize("workers", ["2", "4"])
def test_xdist_merges_summary_and_json(pytester: pytest.Pytester, workers: str) -> None:
    pytester.makeini(INNER_INI)
    for i in range(4):
        pytester.makepyfile(
            **{
                f"test_w{i}": f"""
                import pytest

                @pytest.mark.race(resources=2, concurrency={i + 3})
                def test_race(race, sample_service):
                    race.post(sample_service.url + "/orders",
                              json=lambda a: {{"seats": [a.resource], "user": a.key}})
                """
            }
        )
    result = pytester.runpytest("-n", workers, "--race-json", "r.json")
    result.assert_outcomes(passed=4)
    out = result.stdout.str()
    assert out.count("race summary") == 1
    result.stdout.fnmatch_lines(["*201*8*", "start mode: last-byte (4 races)"])
    report = json.loads((pytester.path / "r.json").read_text())
    assert sorted(r["requests"] for r in report["races"]) == [6, 8, 10, 12]
    assert all(len(r["history"]["outcome"]) == r["requests"] for r in report["races"])
    assert {r["settings"]["seed"] for r in report["races"]} == {report["seed"]}  # one seed per run
    assert "worker lost" not in out
