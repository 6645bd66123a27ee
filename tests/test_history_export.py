"""``--race-history DIR``: one Jepsen EDN file per race with a model, read back by ``read_edn`` and
judged by ``python -m pytest_seatrace.history check`` as the race was; merged under pytest-xdist."""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_seatrace.core.history_edn import history_edn
from pytest_seatrace.core.records import Outcome, Record
from pytest_seatrace.history import check, read_edn
from pytest_seatrace.history.edn import Keyword, parse
from pytest_seatrace.models import Seats
from pytest_seatrace.report.history_files import MAX_STEM, HistoryFiles, file_stem
from tests.support import INNER_INI

RACES = """
import pytest
from pytest_seatrace.models import Seats


class EveryoneWins:
    \"\"\"An unsafe seat service: every booking gets a 201.\"\"\"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


@pytest.mark.race(concurrency=8, model=Seats())
def test_safe(seats):
    assert seats.post(lambda a: f"/seat/{a.resource}").linearizable is True


@pytest.mark.race(concurrency=8, model=Seats())
def test_double_booking(race):
    race.app = EveryoneWins()
    assert race.post(lambda a: f"/seat/{a.resource}", check=False).linearizable is False


@pytest.mark.race(concurrency=8)
def test_no_model(seats):
    seats.post(lambda a: f"/seat/{a.resource}")
"""


def record(client: int, outcome: Outcome, call: int, end: int, *, rnd: int = 1) -> Record:
    rec = Record(resource=0, client=client, round=rnd, sent_ns=call)
    rec.call_ns, rec.end_ns, rec.outcome = call, end, outcome
    rec.status = {Outcome.WIN: 201, Outcome.REJECTION: 409}.get(outcome, 0)
    rec.operation = "POST /seat/{resource}"
    return rec


def one_wave(*outcomes: Outcome, rnd: int = 1, t0: int = 5_000_000_000) -> list[Record]:
    return [
        record(i + 1, o, t0 + i * 1_000, t0 + 2_000_000 + i * 10_000, rnd=rnd) for i, o in enumerate(outcomes)
    ]


def lines(text: str) -> list[dict[str, object]]:
    return [{k.name: v for k, v in parse(line).items()} for line in text.splitlines()]


def test_each_operation_is_an_invoke_and_a_completion_with_every_field() -> None:
    records = one_wave(Outcome.WIN, Outcome.REJECTION, Outcome.UNKNOWN)
    text = history_edn(records, Seats(), ["A1"])
    events = lines(text)
    assert len(events) == 6
    assert [e["index"] for e in events] == list(range(6))
    assert {tuple(sorted(e)) for e in events} == {
        ("f", "index", "key", "op", "process", "time", "type", "value")
    }
    assert all(e["f"] == Keyword("book") and e["key"] == "A1" for e in events)
    assert all(e["op"] == "POST /seat/{resource}" for e in events)
    kinds = [(e["process"], e["type"].name) for e in events]  # type: ignore[attr-defined]
    assert kinds[:3] == [(0, "invoke"), (1, "invoke"), (2, "invoke")]
    assert sorted(kinds[3:]) == [(0, "ok"), (1, "fail"), (2, "info")]
    assert kinds[-1] == (2, "info")  # an info completes after everything else
    assert events[0]["time"] == 0  # ns since the race's first call
    assert events[1]["time"] == 1_000


def test_read_back_the_operations_keep_their_types_and_the_verdict() -> None:
    safe = one_wave(Outcome.WIN, *[Outcome.REJECTION] * 5, Outcome.ERROR)
    ops = read_edn(history_edn(safe, Seats(), [7]))
    assert [op.type for op in ops] == ["ok", *["fail"] * 5, "info"]
    assert math.isinf(ops[-1].ret)
    assert check(ops, Seats()).valid is True
    double = one_wave(Outcome.WIN, Outcome.WIN, Outcome.REJECTION)
    assert check(read_edn(history_edn(double, Seats(), [7])), Seats()).valid is False


def test_rounds_are_keyed_apart_so_each_starts_from_a_free_seat() -> None:
    records = one_wave(Outcome.WIN, Outcome.REJECTION) + one_wave(
        Outcome.WIN, Outcome.REJECTION, rnd=2, t0=9_000_000_000
    )
    text = history_edn(records, Seats(), ["A1"])
    assert {e["key"] for e in lines(text)} == {(1, "A1"), (2, "A1")}
    assert check(read_edn(text), Seats()).valid is True


def test_nothing_sent_is_an_empty_history() -> None:
    rec = record(1, Outcome.ERROR, 0, 0)
    assert history_edn([rec], Seats(), ["A1"]) == ""


def test_file_names_are_sanitised_bounded_and_unique(tmp_path: Path) -> None:
    assert file_stem("tests/test_a.py::test_b[x y/z]", 2) == "tests_test_a.py_test_b_x_y_z-race2"
    assert file_stem("..::weird", 1) == "weird-race1"
    long_a, long_b = file_stem("t.py::" + "a" * 300, 1), file_stem("t.py::" + "a" * 299 + "b", 1)
    assert len(long_a) <= MAX_STEM + len("-race1")
    assert long_a != long_b
    files = HistoryFiles(tmp_path / "new" / "dir")
    assert files.prepare() is None
    files.write(file_stem("t.py::test[a b]", 1), "x\n")
    files.write(file_stem("t.py::test[a/b]", 1), "y\n")  # sanitises to the same stem
    assert sorted(p.name for p in (tmp_path / "new" / "dir").iterdir()) == [
        "t.py_test_a_b-race1-2.edn",
        "t.py_test_a_b-race1.edn",
    ]
    assert files.errors == []


def run_inner(inner: pytest.Pytester, *args: str) -> pytest.RunResult:
    inner.makepyfile(test_races=RACES)
    return inner.runpytest_subprocess("-p", "no:cacheprovider", *args)


def check_file(path: Path) -> int:
    command = [sys.executable, "-m", "pytest_seatrace.history", "check", "--model", "seats", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False).returncode


def test_a_model_race_writes_one_file_the_checker_judges_as_the_race(inner: pytest.Pytester) -> None:
    out = inner.path / "histories"
    result = run_inner(inner, "--race-history", str(out), "--race-html", "report.html")
    result.assert_outcomes(passed=3)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["test_races.py_test_double_booking-race1.edn", "test_races.py_test_safe-race1.edn"]
    safe = read_edn((out / names[1]).read_text(encoding="utf-8"))
    assert len(safe) == 8
    assert sorted(op.type for op in safe) == ["fail"] * 7 + ["ok"]
    assert {op.f for op in safe} == {"book"}
    assert check_file(out / names[1]) == 0
    double = read_edn((out / names[0]).read_text(encoding="utf-8"))
    assert [op.type for op in double] == ["ok"] * 8
    assert check_file(out / names[0]) == 1
    result.stdout.fnmatch_lines([f"seatrace: 2 race histories written to {out}"])
    page = (inner.path / "report.html").read_text(encoding="utf-8")
    (svg,) = re.findall(r'<svg class="history".*?</svg>', page, re.S)  # the double booking's only
    assert len(re.findall(r'<g class="row" data-client="\d+"', svg)) == 8
    assert "op win stuck" in svg


def test_under_xdist_each_race_lands_once_in_the_directory(inner: pytest.Pytester) -> None:
    out = inner.path / "xdist-histories"
    result = run_inner(inner, "-n", "2", "--race-history", str(out))
    result.assert_outcomes(passed=3)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["test_races.py_test_double_booking-race1.edn", "test_races.py_test_safe-race1.edn"]
    assert len(read_edn((out / names[1]).read_text(encoding="utf-8"))) == 8


def test_the_ini_twin_names_the_directory(inner: pytest.Pytester) -> None:
    inner.makeini(INNER_INI + "race_history = h\n")
    result = run_inner(inner, "-k", "no_model or safe")
    result.assert_outcomes(passed=2)
    assert [p.name for p in (inner.path / "h").iterdir()] == ["test_races.py_test_safe-race1.edn"]


@pytest.mark.parametrize("kind", ["file", "under-a-file", "proc"])
def test_a_directory_that_cannot_take_the_files_is_a_usage_error(inner: pytest.Pytester, kind: str) -> None:
    target = inner.path / "taken"
    target.write_text("", encoding="utf-8")
    expected = {
        "file": f"ERROR: --race-history {target}: not a directory",
        "under-a-file": f"ERROR: --race-history {target}/sub: cannot create the directory (Not a directory)",
        "proc": "ERROR: --race-history /proc/seatrace-histories: cannot create the directory (*)",
    }[kind]
    where = {"file": target, "under-a-file": target / "sub", "proc": Path("/proc/seatrace-histories")}[kind]
    result = run_inner(inner, "--race-history", str(where))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([expected])
