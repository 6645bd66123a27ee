"""Gathers every race of the session, merges pytest-xdist workers, writes the reports.

Registered as a plugin in ``pytest_configure``. Summary figures arrive on test reports (xdist
replays those on the controller); request histories, too bulky for reports, go through one
file per worker whose path travels back in ``workeroutput``, as pytest-cov does.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from pytest_seatrace.options import Settings
from pytest_seatrace.results import RaceResult, history_columns


def is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class RaceLog:
    """The session's races, in the order their tests reported."""

    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config = config
        self.settings = settings
        self.races: list[dict[str, Any]] = []
        self.local: list[RaceResult] = []
        self.worker_histories: dict[tuple[str, str], dict[str, Any]] = {}
        self.crashed_workers: list[str] = []
        self.written: list[str] = []
        self.write_errors: list[str] = []
        self._exchange: Path | None = None

    @property
    def wants_history(self) -> bool:
        return self.settings.json is not None or self.settings.html is not None

    def record(self, result: RaceResult) -> None:
        """A race ran in this process: log it now (so even an interrupted test keeps it),
        unless it travels to the controller on a worker's report."""
        if not is_xdist_worker(self.config):
            self.races.append(result.to_dict())
        if self.wants_history:
            self.local.append(result)

    def worker_count(self) -> int:
        return len({r.get("worker") for r in self.races if r.get("worker")})

    # -- hooks ---------------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """On the controller, races of xdist workers arrive with the replayed reports."""
        races = getattr(report, "seatrace", None)
        if races and not is_xdist_worker(self.config):
            self.races.extend(races)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["seatrace_seed"] = self.settings.seed  # one seed for the whole run
        if self.wants_history:
            if self._exchange is None:
                self._exchange = Path(tempfile.mkdtemp(prefix="seatrace-xdist-"))
            node.workerinput["seatrace_dir"] = str(self._exchange)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output: dict[str, Any] = getattr(node, "workeroutput", {}) or {}
        path = output.get("seatrace_history")
        worker = getattr(node, "workerinput", {}).get("workerid", "?")
        if error or (self.wants_history and not path):
            self.crashed_workers.append(f"{worker}: {error or 'no history sent'}")
        if path:
            try:
                for race in json.loads(Path(path).read_text(encoding="utf-8")):
                    self.worker_histories[(worker, race["name"])] = race["history"]
            except (OSError, ValueError) as exc:
                self.crashed_workers.append(f"{worker}: history unreadable ({exc})")

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if is_xdist_worker(self.config):
            self._send_history()
            return
        from pytest_seatrace.reports import write_reports

        self.written, self.write_errors = write_reports(self.settings, self.full_races())
        if self._exchange is not None:
            shutil.rmtree(self._exchange, ignore_errors=True)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if is_xdist_worker(self.config):
            return
        for path in self.written:
            terminalreporter.write_line(f"seatrace: report written to {path}")
        for error in self.write_errors:
            terminalreporter.write_line(f"seatrace: {error}", red=True, bold=True)
        for crash in self.crashed_workers:
            terminalreporter.write_line(f"seatrace: worker lost its race history: {crash}", red=True)

    # -- merging ---------------------------------------------------------------------------

    def _send_history(self) -> None:
        directory = getattr(self.config, "workerinput", {}).get("seatrace_dir")
        if not directory or not self.wants_history:
            return
        worker = self.config.workerinput["workerid"]  # type: ignore[attr-defined]
        path = Path(directory) / f"{worker}.json"
        data = [{"name": r.name, "history": history_columns(r.history, r.resources)} for r in self.local]
        try:
            path.write_text(json.dumps(data), encoding="utf-8")
        except OSError:  # the controller reports the missing history; the figures still travel
            return
        self.config.workeroutput["seatrace_history"] = str(path)  # type: ignore[attr-defined]

    def full_races(self) -> list[dict[str, Any]]:
        """Every race dict with its history attached where it is known."""
        local = {r.name: r for r in self.local}
        out = []
        for race in self.races:
            race = dict(race)
            worker = race.get("worker")
            if worker:
                race["history"] = self.worker_histories.get((worker, race["name"]))
            elif race["name"] in local:
                result = local[race["name"]]
                race["history"] = history_columns(result.history, result.resources)
            out.append(race)
        return out
