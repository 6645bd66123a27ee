"""The ``race summary`` fits the terminal, says ``unchecked``, names resources, and says what
clean rounds showed.

Race documents are made by the real result code from records made up here; the terminal runs
go through pytester with ``COLUMNS`` set, as pytest reads it (``shutil.get_terminal_size``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from typing import Any

import pytest

from pytest_seatrace import Outcome, Record
from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.document import RaceDoc
from pytest_seatrace.core.records import RaceRun
from pytest_seatrace.core.result import RaceResult
from pytest_seatrace.report.message import violation_message
from pytest_seatrace.report.race_table import (
    HEADERS,
    NARROWING,
    elide_middle,
    layouts,
    row_cells,
    table_lines,
    terminal_width,
)
from pytest_seatrace.report.summary import quiet_line, summary_lines
from pytest_seatrace.report.wording import failure_rate_bound

LONG = "tests/integration/booking/test_concert_hall_seating.py::test_one_winner_per_seat[balcony-row-7]"


def make_result(
    name: str,
    *,
    resources: Sequence[object] = (1, 2, 3, 4),
    concurrency: int = 5,
    winners: int = 1,
    rounds: int = 1,
    early: int = 0,
    checked: bool = True,
    errors: int = 0,
) -> RaceResult:
    """A race result: per resource and round ``winners`` wins (201), ``errors`` 503s, the
    rest 409; the first ``early`` requests answered early."""
    records = []
    t0 = 1_000_000_000
    n = 0
    for rnd in range(1, rounds + 1):
        for index in range(len(resources)):
            for client in range(concurrency):
                sent = t0 + n * 1000
                rec = Record(resource=index, client=client + 1, round=rnd, sent_ns=sent)
                rec.end_ns = sent + 2_000_000 + 10_000 * client
                if client < winners:
                    rec.status, rec.outcome = 201, Outcome.WIN
                    rec.body = b'{"order_id": 1}'
                elif client < winners + errors:
                    rec.status, rec.outcome, rec.reason = 503, Outcome.ERROR, "503 Service Unavailable"
                else:
                    rec.status, rec.outcome = 409, Outcome.REJECTION
                rec.early = n < early
                records.append(rec)
                n += 1
    config = RaceConfig(
        resources=tuple(resources), concurrency=concurrency, rounds=rounds, allow_errors=bool(errors)
    )
    run = RaceRun(records=tuple(records), duration=0.5, clock=(0, t0))
    return RaceResult.from_run(name, config, run, checked=checked)


def make_race(name: str, **kwargs: Any) -> RaceDoc:
    """The race document of :func:`make_result`."""
    return make_result(name, **kwargs).to_dict()


RACES = [
    make_race(
        "examples/test_seed_scenario.py::test_one_winner_per_seat", concurrency=100, resources=range(1, 17)
    ),
    make_race(
        "examples/test_seed_scenario.py::test_unsafe_service_double_books",
        concurrency=100,
        resources=range(1, 17),
        winners=100,
        checked=False,
    ),
    make_race(LONG, winners=2),
]


# -- pure functions ----------------------------------------------------------------------------


def test_failure_rate_bound_is_exact() -> None:
    assert failure_rate_bound(20) == pytest.approx(0.1391, abs=5e-5)
    assert failure_rate_bound(1) == pytest.approx(0.95)
    assert failure_rate_bound(100) == pytest.approx(1 - 0.05**0.01)
    # the "rule of three" is its approximation for many rounds
    assert failure_rate_bound(300) == pytest.approx(3 / 300, rel=0.01)
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        failure_rate_bound(0)


@pytest.mark.parametrize("width", [12, 20, 24, 30, 33, 43, 60])
def test_elide_middle_keeps_the_end(width: int) -> None:
    text = "tests/deep/dir/test_mod.py::test_x[params]"
    got = elide_middle(text, width)
    assert len(got) <= width
    assert len(got) >= min(width, len(text)) - 3
    if len(text) <= width:
        assert got == text
        return
    assert got.count("…") == 1
    head, _, tail = got.partition("…")
    if width > len("::test_x[params]"):
        assert text.startswith(head)
        assert got.endswith("::test_x[params]")
    else:  # the test's own name does not fit: both ends of it are kept
        assert "test_x[params]".startswith(head)
        assert "test_x[params]".endswith(tail)
        assert head
        assert tail


def test_elide_middle_keeps_the_first_directory_when_there_is_room() -> None:
    assert elide_middle("tests/deep/dir/test_mod.py::test_x[params]", 24) == "tests/…::test_x[params]"
    got = elide_middle("tests/deep/dir/test_mod.py::test_x[params]", 34)
    assert got.startswith("tests/…")
    assert got.endswith("test_mod.py::test_x[params]")


def test_elide_middle_of_a_very_long_test_name_keeps_both_ends() -> None:
    name = "test_a.py::test_" + "x" * 80 + "[end]"
    got = elide_middle(name, 30)
    assert len(got) == 30
    assert got.startswith("test_xxx")
    assert got.endswith("xx[end]")


def test_layouts_narrow_in_the_documented_order() -> None:
    steps = layouts()
    assert len(steps) == len(NARROWING) + 1
    assert [COLUMN_HEADERS[k] for k in steps[0]] == list(HEADERS[1:-1])
    assert "p50/p95/p99" in steps[1]
    assert "p50" not in steps[1]
    assert "max" not in steps[2]
    narrowest = steps[-1]
    assert narrowest == ("requests", "wins", "err/unk", "double")
    for before, after in itertools.pairwise(steps):
        assert len(after) <= len(before)


COLUMN_HEADERS = {
    "res": "res × conc",
    "requests": "requests",
    "successes": "successes exp/act",
    "rejections": "rejections",
    "errors": "errors",
    "unknown": "unknown",
    "double": "double",
    "p50": "p50 ms",
    "p95": "p95 ms",
    "p99": "p99 ms",
    "max": "max ms",
    "rps": "req/s",
    "spread": "spread ms",
    "mode": "mode",
}


def test_row_cells_are_the_full_tables_figures() -> None:
    cells = row_cells(RACES[0])
    assert len(cells) == len(HEADERS) - 2
    assert cells[:3] == ["16 × 100", "1600", "16 / 16"]


# -- the table fits --------------------------------------------------------------------------


@pytest.mark.parametrize("width", [40, 60, 80, 100, 120, 160, 200, 250])
def test_every_line_of_the_table_fits(width: int) -> None:
    lines = table_lines(RACES, width)
    assert lines
    for line in lines:
        assert len(line.text) <= width, (width, line.text)
    text = "\n".join(line.text for line in lines)
    for race in RACES:
        assert str(race["requests"]) in text
    assert "16 / 16" in text
    assert "16 / 1600" in text
    assert "test_one_winner_per_seat" in text
    assert "test_one_winner_per_seat[balcony-row-7]" in text or width < 100
    assert "PASS" in text
    assert "unchecked" in text
    assert "FAIL" in text  # the LONG race had two winners per seat


def test_a_wide_terminal_gets_the_full_table() -> None:
    lines = table_lines(RACES, 250)
    header = lines[0].text
    for name in HEADERS:
        assert name in header, name
    assert LONG in "\n".join(line.text for line in lines)


def test_columns_merge_and_go_as_the_terminal_narrows() -> None:
    widest = table_lines(RACES, 250)[0].text
    at_120 = table_lines(RACES, 120)[0].text
    at_80 = table_lines(RACES, 80)[0].text
    assert "p50 ms" in widest
    assert "max ms" in widest
    assert "p50/p95/p99 ms" in at_120 or "p95 ms" in at_120
    assert "max ms" not in at_120
    for kept in ("requests", "exp/act", "err/unk", "double", "result"):
        assert kept in at_80, kept
    assert "spread ms" not in at_80


def test_names_are_elided_before_columns_go() -> None:
    lines = table_lines(RACES, 200)
    header = lines[0].text
    assert "p50 ms" in header  # the full table still fits once the long name is elided
    row = next(line.text for line in lines if "balcony" in line.text)
    assert "…" in row
    assert "test_one_winner_per_seat[balcony-row-7]" in row


def shown(figure: str, text: str) -> bool:
    """``figure`` appears whole in ``text``: not as a piece of a longer number."""
    return re.search(rf"(?<![\d./]){re.escape(figure)}(?![\d./])", text) is not None


@pytest.mark.parametrize("width", [40, 60, 80, 100, 200])
def test_no_figure_is_cut(width: int) -> None:
    text = "\n".join(line.text for line in table_lines(RACES, width))
    for race in RACES:
        cells = row_cells(race)
        assert shown(str(race["requests"]), text), (width, race["name"])
        assert shown(cells[2], text), (width, cells[2])  # successes expected / actual
        assert shown(str(race["double_bookings"]), text)
        if width >= 100:
            assert shown(cells[8], text)  # p95
    assert not re.search(r"\d…|…\d", text.replace("row-7]", ""))  # no number cut by an ellipsis


def test_a_terminal_too_narrow_for_any_table_gets_a_line_per_race() -> None:
    lines = table_lines(RACES, 40)
    for line in lines:
        assert len(line.text) <= 40
    names = [line.text for line in lines if line.bold]
    if names:  # the stacked form: a name, then its figures
        assert len(names) == len(RACES)
        assert any("test_one_winner_per_seat" in name for name in names)


def test_terminal_width_reads_columns_like_pytest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    assert terminal_width() == 100
    monkeypatch.setenv("COLUMNS", "30")
    assert terminal_width() == 80


# -- verdicts, notes, per-resource lines -----------------------------------------------------


def test_unchecked_is_neither_red_nor_a_failure() -> None:
    unchecked = RACES[1]
    assert not unchecked["passed"]
    row = next(line for line in table_lines(RACES, 200) if "double_books" in line.text)
    assert row.text.endswith("unchecked")
    assert not row.red
    quiet = quiet_line(RACES[:2])
    assert quiet.text == "race summary: 2 races, 3,200 requests, 0 FAIL, 1 unchecked, 1,584 double bookings"
    assert not quiet.red


def test_quiet_line_counts_only_failures_as_fail() -> None:
    quiet = quiet_line(RACES)
    assert "1 FAIL" in quiet.text
    assert "1 unchecked" in quiet.text
    assert quiet.red


def test_clean_rounds_say_what_they_showed() -> None:
    race = make_race("test_r.py::test_rounds", rounds=20)
    assert race["passed"]
    default = " ".join(
        " ".join(line.text for line in summary_lines([race], verbosity=0, mode="auto", width=120)).split()
    )
    verbose = [line.text for line in summary_lines([race], verbosity=1, mode="auto", width=120)]
    claim = (
        "0 of 20 rounds broke the invariant: the per-round failure rate is below 13.9 % at 95 % confidence"
    )
    assert f"test_r.py::test_rounds: {claim}" in default
    assert claim in verbose
    once = make_race("test_r.py::test_once")
    assert not any("rounds broke" in line.text for line in summary_lines([once], verbosity=1, mode="auto"))
    broken = make_race("test_r.py::test_broken", rounds=5, winners=2)
    assert not any("rounds broke" in line.text for line in summary_lines([broken], verbosity=1, mode="auto"))


def test_early_answers_are_shown() -> None:
    race = make_race("test_e.py::test_early", early=12)
    assert race["early"] == 12
    for verbosity in (0, 1):
        lines = summary_lines([race], verbosity=verbosity, mode="auto")
        texts = " ".join(" ".join(line.text for line in lines).split())
        assert "early answers: 12 of 20" in texts
        assert "not synchronised; left out of the start spread" in texts
    plain = make_race("test_e.py::test_on_time")
    assert not any("early" in line.text for line in summary_lines([plain], verbosity=1, mode="auto"))


def test_numbered_resources_are_seats_and_others_their_id() -> None:
    seats = make_race("test_s.py::test_seats", resources=(1, 2, 3))
    named = make_race("test_s.py::test_named", resources=("A1", "B2"))
    texts = [line.text for line in summary_lines([seats, named], verbosity=1, mode="auto")]
    assert "Seat 1: 5 VUs → ✓ 1 success, ✗ 4 failures" in texts
    assert "A1: 5 VUs → ✓ 1 success, ✗ 4 failures" in texts
    assert not any(text.startswith("Seat A1") for text in texts)


def test_zero_failures_are_not_printed() -> None:
    race = make_race("test_z.py::test_all_win", concurrency=2, winners=2)
    texts = [line.text for line in summary_lines([race], verbosity=1, mode="auto")]
    rows = [t for t in texts if t.startswith("Seat ")]
    assert rows
    assert all("failure" not in t for t in rows), rows
    assert "Seat 1: 2 VUs → ✓ 2 successes" in rows


def test_workers_line_says_how_many_raced_and_whether_they_took_turns() -> None:
    serial = [
        line.text for line in summary_lines(RACES, verbosity=0, mode="auto", workers=2, serialised=True)
    ]
    text = " ".join(" ".join(serial).split())
    assert "races ran on 2 xdist workers" in text
    assert (
        "races against one origin took turns across workers (--race-xdist overlap to let them run at once)"
        in text
    )
    overlap = " ".join(
        " ".join(line.text for line in summary_lines(RACES, verbosity=0, mode="auto", workers=2)).split()
    )
    assert "races ran on 2 xdist workers at once" in overlap
    for advice in ("xdist_group", "loadgroup"):
        assert advice not in text
        assert advice not in overlap


def test_prose_lines_fit_too() -> None:
    races = [*RACES, make_race("test_r.py::test_rounds", rounds=20), make_race("test_e.py::test_e", early=3)]
    for width in (40, 80, 100):
        lines = summary_lines(races, verbosity=0, mode="auto", workers=3, serialised=True, width=width)
        for line in lines:
            # a word longer than the line (an option name) is never broken; none is here
            assert len(line.text) <= width, (width, line.text)


def test_violation_table_has_a_round_column_only_with_rounds() -> None:
    once = violation_message(make_result("test_v.py::test_once", winners=2).to_dict())
    header = next(line for line in once.splitlines() if line.lstrip().startswith("resource"))
    assert header.split() == ["resource", "violation", "allowed", "found", "winners", "/", "detail"]
    assert "resource  violation" in header  # two spaces: no empty column between them
    rows = once.splitlines()[3:]
    assert rows[0].split()[:2] == ["1", "too-many"]
    many = violation_message(make_result("test_v.py::test_rounds", winners=2, rounds=3).to_dict())
    header = next(line for line in many.splitlines() if line.lstrip().startswith("resource"))
    assert header.split()[:3] == ["resource", "round", "violation"]
    assert many.splitlines()[3].split()[:3] == ["1", "1", "too-many"]


# -- in a real terminal run -------------------------------------------------------------------


TESTS = """
import pytest

@pytest.mark.race(resources=4, concurrency=5)
@pytest.mark.parametrize("venue", ["concert-hall-balcony-row-seven", "stadium-north-stand"])
def test_a_rather_long_name_for_a_seat_race_in_a_deeply_nested_module(seats, venue):
    seats.post(lambda a: f"/{venue}/seat/{a.resource}")

@pytest.mark.race(resources=2, concurrency=3)
def test_unchecked(seats):
    result = seats.post("/same-seat-for-all", check=False)
    assert not result.passed

@pytest.mark.race(resources=2, concurrency=3, rounds=20)
def test_rounds(seats):
    seats.post(lambda a: f"/r/{a.resource}")
"""


@pytest.fixture
def inner(inner: pytest.Pytester) -> pytest.Pytester:
    """The suite's ``inner`` project with the tests in a nested package."""
    sub = inner.mkpydir("tests_pkg")
    (sub / "nested").mkdir()
    (sub / "nested" / "__init__.py").write_text("")
    (sub / "nested" / "test_booking_races.py").write_text(TESTS)
    return inner


def race_table(out: str) -> list[str]:
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "race summary" in line) + 1
    end = lines.index("", start)
    return lines[start:end]


@pytest.mark.parametrize("columns", [80, 100, 200])
def test_terminal_table_fits_columns(
    inner: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, columns: int
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    result = inner.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    assert result.ret == 0
    table = race_table(result.stdout.str())
    assert len(table) == 2 + 4, table
    for line in table:
        assert len(line) <= columns, (columns, line)
    text = "\n".join(table)
    assert "row-seven]" in text  # the parameters' end is kept: the two rows stay apart
    assert "north-stand]" in text
    if columns >= 200:
        assert (
            "test_a_rather_long_name_for_a_seat_race_in_a_deeply_nested_module[stadium-north-stand]" in text
        )
    assert "test_unchecked" in text
    assert "test_rounds" in text
    assert text.count("PASS") == 3
    assert "unchecked" in text.splitlines()[4]
    assert "FAIL" not in text
    assert "4 / 4" in text
    assert "40 / 40" in text  # 2 seats × 20 rounds
    out = result.stdout.str()
    assert "below 13.9 % at 95 % confidence" in out
    assert "xdist_group" not in out


def test_quiet_run_does_not_count_unchecked_as_fail(inner: pytest.Pytester) -> None:
    result = inner.runpytest("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(
        ["race summary: 4 races, 166 requests, 0 FAIL, 1 unchecked, 0 double bookings"]
    )
