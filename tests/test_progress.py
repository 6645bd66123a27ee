"""The live progress line of long races: drawn on a terminal below pytest's line, then erased.

``LiveLine`` is checked with a fake clock and writer; the whole thing on a real pseudo-terminal
(pexpect), whose output is replayed on a small terminal model to see the final screen.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

from pytest_seatrace.core.records import Outcome, Record, WaveDone
from pytest_seatrace.progress import AFTER_ENV, CLEAR_ROW, LiveLine

RUN_TIMEOUT = 180
INNER_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
LONG_RACE = """
from __future__ import annotations

import pytest


def seat(a):
    return {"seats": [a.resource], "user": f"u{a.client}"}


@pytest.mark.race(resources=4, concurrency=10, rounds=6, parallel=1)
def test_long(race, sample_service):
    result = race.post(sample_service.url + "/orders", json=seat)
    assert result.requests == 240


def test_after():
    pass
"""
LIVE = "race test_live.py::test_long: round "


# -- LiveLine on its own ---------------------------------------------------------------------------


class Fake:
    """A clock the test moves and a writer that keeps what was written."""

    def __init__(self) -> None:
        self.now = 1_000_000_000_000
        self.out: list[str] = []

    def line(self, *, after: float = 2.0, width: int = 100, column: int = 17) -> LiveLine:
        return LiveLine(
            lambda make: self.out.append(make()),
            lambda: width,
            lambda: column,
            after=after,
            every=0.25,
            clock=lambda: self.now,
        )


def records(n: int, t0: int, outcome: Outcome = Outcome.REJECTION) -> list[Record]:
    return [
        Record(resource=0, client=i, round=1, sent_ns=t0 + i, end_ns=t0 + i + 5, outcome=outcome)
        for i in range(n)
    ]


def test_nothing_before_the_threshold_then_at_most_four_draws_a_second() -> None:
    fake = Fake()
    line = fake.line(after=2.0)
    recs = records(10, fake.now)
    for step in range(1, 401):  # a wave every 10 ms for 4 s
        fake.now += 10_000_000
        line("t.py::test_x", WaveDone(round=1, rounds=1, wave=step, waves=1000, records=recs))
        if step < 200:
            assert fake.out == [], step
    # first draw at 2.0 s, then every 0.25 s up to 4.0 s
    assert len(fake.out) == 9
    assert all(text.startswith(CLEAR_ROW + "race t.py::test_x: round 1/1, wave ") for text in fake.out)
    assert line.shown


def test_the_last_wave_erases_the_line_and_home_is_where_pytest_left_its_cursor() -> None:
    fake = Fake()
    line = fake.line(after=0, column=17)
    recs = records(4, fake.now)
    line("t.py::test_x", WaveDone(round=1, rounds=2, wave=1, waves=1, records=recs))
    assert fake.out == [
        CLEAR_ROW
        + "race t.py::test_x: round 1/2, wave 1/1, 4 requests, 0 wins, 0 errors so far (0 s)"
        + "\x1b[1A\r\x1b[17C"
    ]
    fake.now += 1_000_000_000
    line("t.py::test_x", WaveDone(round=2, rounds=2, wave=1, waves=1, records=recs + recs))
    assert fake.out[1:] == [CLEAR_ROW + "\x1b[1A\r\x1b[17C"]
    assert not line.shown
    line.clear()  # the fixture's teardown: nothing left to erase
    assert len(fake.out) == 2


def test_home_at_column_zero_and_after_a_wrapped_line() -> None:
    for column, home in ((0, "\x1b[1A\r"), (130, "\x1b[1A\r\x1b[30C")):
        fake = Fake()
        line = fake.line(after=0, width=100, column=column)
        line("t.py::test_x", WaveDone(1, 1, 1, 2, records(1, fake.now)))
        assert fake.out[0].endswith("(0 s)" + home), column


def test_counts_wins_errors_and_timeouts_incrementally() -> None:
    fake = Fake()
    line = fake.line(after=0, width=120)
    recs = records(3, fake.now, Outcome.WIN) + records(2, fake.now, Outcome.ERROR)
    line("t.py::test_x", WaveDone(1, 1, 1, 3, recs))
    assert "5 requests, 3 wins, 2 errors, 1 over expect so far" in fake.out[-1]
    assert "timed out" not in fake.out[-1]
    recs += records(1_500, fake.now, Outcome.UNKNOWN) + records(1, fake.now, Outcome.WIN)
    fake.now += 3_000_000_000
    line("t.py::test_x", WaveDone(1, 1, 2, 3, recs))
    assert "1,506 requests, 4 wins, 2 errors, 1,500 timed out, 1 over expect so far (3 s)" in fake.out[-1]
    single = fake.line(after=0, width=120)
    single("t.py::test_y", WaveDone(1, 1, 1, 3, records(1, fake.now, Outcome.WIN)))
    assert "1 request, 1 win, 0 errors so far" in fake.out[-1]


def test_a_long_name_loses_its_middle_and_the_line_never_wraps() -> None:
    name = "tests/" + "deep/" * 30 + "test_x.py::test_y[" + "p" * 60 + "]"
    ends = {
        120: "ppp]: round 12/40, wave 150/160, 9,000 requests, 0 wins, 0 errors so far (0 s)",
        60: "ppp]: 12/40 150/160 9,000 req 0 win 0 err",
        20: "race tests/deep/dee",  # too narrow for any figure: cut, never wrapped
    }
    for width, end in ends.items():
        fake = Fake()
        line = fake.line(after=0, width=width)
        line(name, WaveDone(12, 40, 150, 160, records(9_000, fake.now)))
        text = fake.out[0].removeprefix(CLEAR_ROW).split("\x1b")[0]
        assert len(text) == width - 1, (width, text)
        assert text.startswith("race tests/d"), text
        assert text.endswith(end), text
        assert ("..." in text) == (width > 20), text


def test_a_new_race_starts_its_own_clock_at_its_first_send() -> None:
    fake = Fake()
    line = fake.line(after=2.0)
    first = records(5, fake.now - 2_600_000_000)  # its first request went out 2.6 s ago
    line("t.py::test_x #2", WaveDone(1, 1, 1, 9, first))
    assert len(fake.out) == 1
    assert fake.out[0].split("\x1b")[1].endswith("so far (3 s)")


# -- on a real terminal ----------------------------------------------------------------------------


CSI = re.compile(r"\x1b\[([0-9;]*)([A-Za-z])")


def final_screen(raw: str, width: int) -> list[str]:
    """The rows a terminal shows after ``raw``: text, CR, LF, and the few CSI sequences pytest
    and the live line use (SGR, erase to end of line, cursor up and forward). Anything else
    fails the test, so the model cannot silently ignore what it does not understand."""
    rows: list[list[str]] = [[]]
    row = col = 0
    i = 0
    while i < len(raw):
        ch = raw[i]
        match = CSI.match(raw, i)
        if match:
            arg, cmd = match.group(1), match.group(2)
            n = int(arg or 1) if cmd in "AC" else 0
            if cmd == "m":
                pass
            elif cmd == "K" and arg in ("", "0"):
                del rows[row][col:]
            elif cmd == "A":
                row = max(0, row - n)
            elif cmd == "C":
                col = min(width - 1, col + n)
            else:
                raise AssertionError(f"unexpected escape sequence {match.group(0)!r}")
            i = match.end()
            continue
        if ch == "\r":
            col = 0
        elif ch == "\n":  # the pty already turned "\n" into "\r\n"
            row += 1
        elif ch == "\x1b":
            raise AssertionError(f"unexpected escape {raw[i : i + 8]!r}")
        elif ch >= " ":
            if col >= width:
                row, col = row + 1, 0
            cells = rows[row] if row < len(rows) else []
            cells.extend(" " * (col + 1 - len(cells)))
            cells[col] = ch
            col += 1
        while len(rows) <= row:
            rows.append([])
        i += 1
    return ["".join(cells).rstrip() for cells in rows]


def inner_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "PYTEST_ADDOPTS", "NO_COLOR")}
    env.update({"TERM": "xterm", AFTER_ENV: "0", **extra})
    return env


def run_on_terminal(path: Path, *args: str, width: int = 100) -> str:
    (path / "pytest.ini").write_text(INNER_INI, encoding="utf-8")
    (path / "test_live.py").write_text(LONG_RACE, encoding="utf-8")
    child = pexpect.spawn(
        sys.executable,
        ["-m", "pytest", "-p", "no:cacheprovider", "--color=no", *args, "test_live.py"],
        cwd=str(path),
        env=inner_env(),
        dimensions=(40, width),
        timeout=RUN_TIMEOUT,
        encoding="utf-8",
        codec_errors="replace",
    )
    child.expect(pexpect.EOF)
    child.close()
    raw = child.before
    assert isinstance(raw, str)
    assert child.exitstatus == 0, raw
    return raw


def test_live_line_appears_on_a_terminal_and_is_gone_at_the_end(tmp_path: Path) -> None:
    raw = run_on_terminal(tmp_path)
    assert LIVE in raw
    last = raw.rindex(LIVE)
    # the last draw puts the cursor back on pytest's line; the next write erases the row below
    erase = raw.index(CLEAR_ROW, last)
    assert raw[erase + len(CLEAR_ROW) :].startswith("\x1b[1A\r\x1b[")
    screen = final_screen(raw, 100)
    assert not any("wave " in row for row in screen), "\n".join(screen)
    progress = [row for row in screen if row.startswith("test_live.py ")]
    assert len(progress) == 1, "\n".join(screen)
    assert re.fullmatch(r"test_live\.py \.\. +\[100%\]", progress[0]), progress[0]
    assert any(re.search(r"\b2 passed\b", row) for row in screen), "\n".join(screen)


def test_live_line_keeps_verbose_lines_intact(tmp_path: Path) -> None:
    raw = run_on_terminal(tmp_path, "-v")
    assert LIVE in raw
    screen = final_screen(raw, 100)
    assert not any("wave " in row for row in screen), "\n".join(screen)
    assert any(re.fullmatch(r"test_live\.py::test_long PASSED +\[ 50%\]", row) for row in screen), screen
    assert any(re.fullmatch(r"test_live\.py::test_after PASSED +\[100%\]", row) for row in screen), screen


@pytest.mark.parametrize("args", [["-q"], ["-n", "2"]], ids=["quiet", "xdist"])
def test_no_live_line_under_quiet_or_on_xdist_workers(tmp_path: Path, args: list[str]) -> None:
    raw = run_on_terminal(tmp_path, *args)
    assert "wave " not in raw
    assert "\x1b[K" not in raw
    assert "2 passed" in raw


def test_no_live_line_when_output_is_piped(tmp_path: Path) -> None:
    (tmp_path / "pytest.ini").write_text(INNER_INI, encoding="utf-8")
    (tmp_path / "test_live.py").write_text(LONG_RACE, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "test_live.py"],
        cwd=tmp_path,
        env=inner_env(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    for stream in (done.stdout, done.stderr):
        assert "wave " not in stream
        assert "\x1b[" not in stream
