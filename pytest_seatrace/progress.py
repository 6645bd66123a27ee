"""The live progress line of a long race on a terminal.

A race that has run for more than ``SHOW_AFTER`` seconds shows one line below pytest's own
progress line, redrawn at most every ``EVERY`` seconds from the ``race`` fixture's progress
callback (which the engine calls after each wave)::

    race test_x.py::test_y: round 3/8, wave 5/16, 4,800 requests, 37 wins, 0 errors so far (4 s)

The line never clobbers pytest's: each draw goes down a row, clears it, writes, and puts the
cursor back where pytest left it (up one row, then its column), so whatever pytest writes next
lands where it expects. When the race ends (its last wave, or the fixture's teardown) the row is
cleared. Output capture is suspended around every write through the capture manager, as
pytest-timeout and live logging do.

Nothing is drawn when the terminal reporter does not write to a TTY (or ``TERM=dumb``), under
``-q``, on a pytest-xdist worker, or when live logging (``log_cli``) writes to the terminal
during tests.

``SEATRACE_PROGRESS_AFTER`` (seconds) replaces ``SHOW_AFTER``: internal, for the tests.

The line counts wins and errors and, once there are any, the (round, resource) pairs with more
winners than the race's ``expect`` allows (``N over expect``: double bookings so far); the
other rules are judged at the end.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from itertools import islice
from typing import TYPE_CHECKING

from pytest_seatrace.core.records import Outcome
from pytest_seatrace.report.wording import plural

if TYPE_CHECKING:
    import pytest

    from pytest_seatrace.core.records import Record, WaveDone

SHOW_AFTER = 2.0
"""Seconds a race runs before its live line appears."""
EVERY = 0.25
"""Seconds between two draws at least (about four a second)."""
AFTER_ENV = "SEATRACE_PROGRESS_AFTER"
"""Internal: overrides ``SHOW_AFTER`` (the pseudo-terminal tests set it to 0)."""

MIN_NAME = 16
"""Characters of the test name kept at least before the figures get shorter."""
ELLIPSIS = "..."
CLEAR_ROW = "\r\n\x1b[K"
"""To the start of the row below pytest's line, and clear it."""


class LiveLine:
    """Draws the live line of one test's races through ``emit``.

    ``emit(make)`` writes the text ``make()`` returns; it calls ``make`` with output capture
    suspended, so ``width`` (the terminal's width, which pytest measures on the real stdout) and
    ``column`` (the width of pytest's current line) are read right. ``clock`` is
    ``time.perf_counter_ns``, the records' clock.
    """

    def __init__(
        self,
        emit: Callable[[Callable[[], str]], None],
        width: Callable[[], int],
        column: Callable[[], int],
        *,
        after: float = SHOW_AFTER,
        every: float = EVERY,
        clock: Callable[[], int] = time.perf_counter_ns,
    ) -> None:
        self._emit, self._width, self._column, self._clock = emit, width, column, clock
        self._after_ns, self._every_ns = int(after * 1e9), int(every * 1e9)
        self._name: str | None = None
        self._started = 0
        self._last = -math.inf
        self._shown = False
        self._counted = self._wins = self._errors = self._timeouts = 0
        self._won: dict[tuple[int, int], int] = {}
        self._over: set[tuple[int, int]] = set()

    @property
    def shown(self) -> bool:
        return self._shown

    def __call__(self, name: str, wave: WaveDone) -> None:
        """The race called ``name`` finished a wave: draw if it is due."""
        now = self._clock()
        if name != self._name:
            self._begin(name, wave.records, now)
        if wave.round >= wave.rounds and wave.wave >= wave.waves:  # its last wave: the race is over
            self.clear()
            self._name = None
            return
        if now - self._started < self._after_ns or now - self._last < self._every_ns:
            return
        self._last = now
        self._count(wave.records, wave.expect.stop - 1)
        self._emit(lambda: CLEAR_ROW + self.text(name, wave, now) + self._home())
        self._shown = True

    def _begin(self, name: str, records: Sequence[Record], now: int) -> None:
        """A new race: it started at its first send (the first wave's records), or now."""
        self._name = name
        self._started = min((r.sent_ns for r in records if r.sent_ns), default=now)
        self._last = -math.inf
        self._counted = self._wins = self._errors = self._timeouts = 0
        self._won.clear()
        self._over.clear()

    def _count(self, records: Sequence[Record], most: int) -> None:
        """Count the records not counted yet (the engine's list only grows during a race)."""
        for rec in islice(records, self._counted, None):
            if rec.outcome is Outcome.WIN:
                self._wins += 1
                key = (rec.round, rec.resource)
                self._won[key] = self._won.get(key, 0) + 1
                if self._won[key] > most:
                    self._over.add(key)
            elif rec.outcome is Outcome.ERROR:
                self._errors += 1
            elif rec.outcome is Outcome.UNKNOWN:
                self._timeouts += 1
        self._counted = len(records)

    def text(self, name: str, wave: WaveDone, now: int) -> str:
        """The line, at most the terminal's width less one (so it never wraps): a long test
        name loses its middle; a narrow terminal gets short figures, then a cut line."""
        room = max(self._width() - 1, 1)
        timeouts = f", {self._timeouts:,} timed out" if self._timeouts else ""
        over = f", {len(self._over):,} over expect" if self._over else ""
        full = (
            f": round {wave.round}/{wave.rounds}, wave {wave.wave}/{wave.waves}, "
            f"{plural(len(wave.records), 'request', grouped=True)}, "
            f"{plural(self._wins, 'win', grouped=True)}, "
            f"{plural(self._errors, 'error', grouped=True)}{timeouts}{over} so far "
            f"({(now - self._started) / 1e9:.0f} s)"
        )
        short = (
            f": {wave.round}/{wave.rounds} {wave.wave}/{wave.waves} {len(wave.records):,} req "
            f"{self._wins:,} win {self._errors + self._timeouts:,} err"
        )
        for figures in (full, short):
            left = room - len("race ") - len(figures)
            if len(name) <= left:
                return f"race {name}{figures}"
            if left >= MIN_NAME:
                keep = left - len(ELLIPSIS)
                return f"race {name[: keep - keep // 2]}{ELLIPSIS}{name[len(name) - keep // 2 :]}{figures}"
        return f"race {name}{short}"[:room]

    def _home(self) -> str:
        """Back up to pytest's line, at the column where pytest left its cursor."""
        width = max(self._width(), 1)
        column = self._column() % width
        return "\x1b[1A\r" + (f"\x1b[{column}C" if column else "")

    def clear(self) -> None:
        """Erase the line, if one is shown."""
        if self._shown:
            self._emit(lambda: CLEAR_ROW + self._home())
            self._shown = False


def _show_after() -> float:
    value = os.environ.get(AFTER_ENV, "")
    try:
        seconds = float(value)
    except ValueError:
        return SHOW_AFTER
    return seconds if math.isfinite(seconds) and seconds >= 0 else SHOW_AFTER


def _live_logging(config: pytest.Config) -> bool:
    """Whether pytest's live logging writes to the terminal during tests (as pytest decides)."""
    return config.getoption("log_cli_level", None) is not None or bool(config.getini("log_cli"))


def live_line(config: pytest.Config, *, is_worker: bool) -> LiveLine | None:
    """A live line for this session's terminal, or ``None`` where none may be drawn."""
    if is_worker or config.get_verbosity() < 0 or os.environ.get("TERM") == "dumb":
        return None
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is None or not bool(reporter.isatty) or _live_logging(config):
        return None
    capture = config.pluginmanager.getplugin("capturemanager")
    terminal = config.get_terminal_writer()
    raw: Callable[..., None] | None = getattr(reporter, "write_raw", None)  # not in pytest 8.0

    def emit(make: Callable[[], str]) -> None:
        suspended = capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()
        with suspended:
            text = make()
            if raw is not None:
                raw(text, flush=True)
            else:
                sys.stdout.write(text)
                sys.stdout.flush()

    return LiveLine(
        emit,
        width=lambda: terminal.fullwidth,
        column=lambda: terminal.width_of_current_line,
        after=_show_after(),
    )
