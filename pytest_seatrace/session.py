"""The session's races: one role chosen at start-up, the figures gathered, the reports written.

As pytest-cov picks ``Central``, ``DistMaster`` or ``DistWorker`` once, the plugin picks one
role here and every hook delegates to it; nothing else looks at ``workerinput`` or
``workeroutput``:

- ``Controller``: a plain run, or pytest-xdist's controller. It keeps every race document,
  receives workers' documents on their replayed test reports and their request histories
  through one file per worker (its path comes back in ``workeroutput``, as pytest-cov does),
  prints the summary and writes the reports and the ``--race-history`` files.
- ``Worker``: a pytest-xdist worker. Its race documents ride to the controller on the test
  reports (builtins only), its request histories and EDN histories in one file at the end; it
  prints and writes nothing.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_seatrace.core.document import RaceDoc
from pytest_seatrace.options import settings_from_config

if TYPE_CHECKING:  # the result and the reports load with the first race or report
    from pytest_seatrace.core.result import RaceResult
    from pytest_seatrace.report.files import ReportFiles
    from pytest_seatrace.report.history_files import HistoryFiles

RACES = pytest.StashKey[list[RaceDoc]]()
"""Race documents of one test item, in the order its races ran."""
REPORTED = pytest.StashKey[int]()
"""How many of an item's races have already ridden on a report to the controller."""

JUNIT_FIGURES = ("requests", "wins", "rejections", "errors", "unknown", "double_bookings", "rps", "mode")
JUNIT_LATENCIES = ("med_ns", "p95_ns", "p99_ns", "max_ns")


def junit_properties(doc: RaceDoc, number: int) -> list[tuple[str, object]]:
    """A race's key figures as JUnit properties: ``race_requests``, ``race2_p95_ms``, …"""
    prefix = "race" if number == 1 else f"race{number}"
    figures: Mapping[str, Any] = doc
    props: list[tuple[str, object]] = [(f"{prefix}_{key}", _rounded(figures[key])) for key in JUNIT_FIGURES]
    lat: Mapping[str, Any] = doc["latency"]["all"]
    for key in JUNIT_LATENCIES:
        value = lat[key]
        if value is not None:
            props.append((f"{prefix}_{key[:-3]}_ms", round(value / 1e6, 3)))
    props.append((f"{prefix}_passed", doc["passed"]))
    stopped = doc.get("stopped")
    if stopped is not None:  # a race a hook or Ctrl-C ended early says where and why
        props.append((f"{prefix}_stopped", stopped["reason"]))
    return props


def _rounded(value: object) -> object:
    """Floats in JUnit XML to a readable precision: ``race_rps`` 1,234.5, not 1234.5432109876."""
    return round(value, 1) if isinstance(value, float) else value


def choose_role(config: pytest.Config) -> RaceSessionRole:
    """The role of this process, decided once: worker under pytest-xdist, else controller."""
    workerinput: dict[str, Any] | None = getattr(config, "workerinput", None)
    if workerinput is not None:
        return Worker(config, workerinput)
    return Controller(config)


class RaceSessionRole:
    """What every role does: keep each race as it ends, with its document made once."""

    is_worker = False

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.settings = settings_from_config(config, inherited_seed=self.inherited_seed())
        """CLI and ini resolved once for the session."""
        self.local: list[RaceResult] = []
        """Races of this process whose histories go into the reports."""
        self._shard_pool: Any = None

    def shard_pool(self) -> object:
        """This process's execnet gateways for sharded races: started on first use, reused by
        every sharded race, torn down when the session ends (Ctrl-C included)."""
        if self._shard_pool is None:
            from pytest_seatrace.engine.shards import GatewayPool

            self._shard_pool = GatewayPool()
            self.config.add_cleanup(self._shard_pool.close)
        return self._shard_pool

    @property
    def wants_history(self) -> bool:
        return self.settings.json is not None or self.settings.html is not None

    @property
    def wants_exchange(self) -> bool:
        """An xdist worker sends what it kept to the controller at the end (request histories for
        the reports, EDN histories for ``--race-history``)."""
        return self.wants_history or self.settings.history is not None

    def inherited_seed(self) -> int | None:
        """The seed chosen by someone else for this run (a worker's controller), if any."""
        return None

    def check_reports(self) -> str | None:
        """Why a report file could not be written at the end (checked at start-up); ``None``
        where this role writes none."""
        return None

    @property
    def lock_dir(self) -> str | None:
        """Where races against one origin take turns across processes; ``None``: no turns."""
        return None

    def record(self, item: pytest.Item, result: RaceResult) -> None:
        """A race of ``item`` ended: log it now, so even an interrupted test keeps it."""
        doc = result.to_dict()
        races = item.stash.setdefault(RACES, [])
        races.append(doc)
        item.user_properties.extend(junit_properties(doc, len(races)))
        if self.wants_history:
            self.local.append(result)
        if self.settings.history is not None and result.config.model is not None:
            from pytest_seatrace.core.history_edn import history_edn
            from pytest_seatrace.report.history_files import file_stem

            config = result.config
            text = history_edn(result.history, config.model, config.resources, result.shard_infos)
            self.export(file_stem(item.nodeid, len(races)), text)
        self.keep(doc)

    def keep(self, doc: RaceDoc) -> None:
        raise NotImplementedError

    def export(self, stem: str, text: str) -> None:
        """A race's ``--race-history`` file, named from ``stem``."""
        raise NotImplementedError

    def on_report(self, item: pytest.Item, report: pytest.TestReport) -> None:
        """A test report was made in this process (``pytest_runtest_makereport``)."""


class Controller(RaceSessionRole):
    """A plain run or the xdist controller: gathers every race, prints, writes the reports."""

    def __init__(self, config: pytest.Config) -> None:
        super().__init__(config)
        self.races: list[RaceDoc] = []
        self.worker_histories: dict[tuple[str, str], dict[str, list[Any]]] = {}
        self.crashed_workers: list[str] = []
        self.written: list[str] = []
        self.write_errors: list[str] = []
        self._exchange: Path | None = None
        self._locks: Path | None = None
        """The lock directory handed to workers (``--race-xdist serial``)."""
        self.unserialised: list[str] = []
        """Workers that could not reach the lock directory: their races were not serialised."""
        self.reports: ReportFiles | None = None
        """The report files, with the writer that holds what their start-up probe opened."""
        if self.wants_history:  # the report modules load only when a report is asked for
            from pytest_seatrace.report.files import ReportFiles

            self.reports = ReportFiles(self.settings.json, self.settings.html)
        self.history_files: HistoryFiles | None = None
        """The ``--race-history`` directory's files, each written as its race (or its worker) ends."""
        if self.settings.history is not None:
            from pytest_seatrace.report.history_files import HistoryFiles

            self.history_files = HistoryFiles(self.settings.history)

    def check_reports(self) -> str | None:
        """The probe the final write makes, naming the option; what it keeps open for the write
        is closed when the session ends, written or not. The ``--race-history`` directory is
        made here."""
        if self.reports is not None:
            self.config.add_cleanup(self.reports.release)
            problem = self.reports.probe()
            if problem:
                return problem
        return self.history_files.prepare() if self.history_files is not None else None

    def keep(self, doc: RaceDoc) -> None:
        self.races.append(doc)

    def export(self, stem: str, text: str) -> None:
        if self.history_files is not None:
            self.history_files.write(stem, text)

    def worker_count(self) -> int:
        return len({r["worker"] for r in self.races if r.get("worker")})

    # -- hooks ---------------------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Races of xdist workers arrive with the reports xdist replays here."""
        races: list[RaceDoc] | None = getattr(report, "seatrace", None)
        if races:
            self.races.extend(races)

    @property
    def serialised(self) -> bool:
        """Races against one origin took turns across xdist workers."""
        return self._locks is not None

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        node.workerinput["seatrace_seed"] = self.settings.seed  # one seed for the whole run
        if self.settings.xdist == "serial":
            if self._locks is None:
                self._locks = Path(tempfile.mkdtemp(prefix="seatrace-locks-"))
            node.workerinput["seatrace_lock_dir"] = str(self._locks)
        if self.wants_exchange:
            if self._exchange is None:
                self._exchange = Path(tempfile.mkdtemp(prefix="seatrace-xdist-"))
            node.workerinput["seatrace_dir"] = str(self._exchange)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        output: dict[str, Any] = getattr(node, "workeroutput", {}) or {}
        path = output.get("seatrace_history")
        worker = getattr(node, "workerinput", {}).get("workerid", "?")
        if output.get("seatrace_unserialised"):
            self.unserialised.append(f"{worker}: {output['seatrace_unserialised']}")
        if error or (self.wants_exchange and not path):
            self.crashed_workers.append(f"{worker}: {error or 'no history sent'}")
        if path:
            try:
                sent = json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                self.crashed_workers.append(f"{worker}: history unreadable ({exc})")
                return
            for race in sent["histories"]:
                self.worker_histories[(worker, race["name"])] = race["history"]
            for stem, text in sent["edn"]:
                self.export(stem, text)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.reports is not None:
            self.written, self.write_errors = self.reports.write(self.full_races(), seed=self.settings.seed)
        if self.history_files is not None:
            self.write_errors += self.history_files.errors
        if self.write_errors and session.exitstatus == pytest.ExitCode.OK:
            # A lost report fails the run, as pytest-cov's --cov-fail-under does; the terminal
            # summary (run after this hook) names the file.
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        for directory in (self._exchange, self._locks):
            if directory is not None:
                shutil.rmtree(directory, ignore_errors=True)

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        settings = self.settings
        lines = []
        if self.races:  # no race, no summary: its modules load only after a race
            from pytest_seatrace.report.summary import summary_lines

            lines = summary_lines(
                self.races,
                verbosity=self.config.get_verbosity(),
                mode=settings.summary,
                workers=self.worker_count(),
                serialised=self.serialised,
            )
        if lines:
            terminalreporter.ensure_newline()  # else the first table line would follow a blank one
            terminalreporter.section("race summary")
            for line in lines:
                terminalreporter.write_line(
                    line.text, red=line.red, green=line.green, yellow=line.yellow, bold=line.bold
                )
        for path in self.written:
            terminalreporter.write_line(f"seatrace: report written to {path}")
        if self.history_files is not None and self.history_files.written:
            count = len(self.history_files.written)
            terminalreporter.write_line(
                f"seatrace: {count} race histor{'y' if count == 1 else 'ies'} written to "
                f"{self.history_files.directory}"
            )
        for error in self.write_errors:
            terminalreporter.write_line(f"seatrace: {error} (the session fails)", red=True, bold=True)
        for worker in self.unserialised:
            terminalreporter.write_line(
                f"seatrace: races against one origin were not serialised on {worker}", red=True
            )
        for crash in self.crashed_workers:
            terminalreporter.write_line(f"seatrace: worker lost its race history: {crash}", red=True)

    # -- merging ---------------------------------------------------------------------------

    def full_races(self) -> list[RaceDoc]:
        """Every race document with its history attached where it is known."""
        if not self.wants_history:
            return list(self.races)
        from pytest_seatrace.core.result import history_columns

        local = {r.name: r for r in self.local}
        out = []
        for race in self.races:
            race = RaceDoc(**race)  # a copy: the summary's documents stay small
            worker = race.get("worker")
            if worker:
                race["history"] = self.worker_histories.get((worker, race["name"]))
            elif race["name"] in local:
                result = local[race["name"]]
                race["history"] = history_columns(result.history, result.resources)
            out.append(race)
        return out


class Worker(RaceSessionRole):
    """A pytest-xdist worker: races travel to the controller; nothing printed or written here."""

    is_worker = True

    def __init__(self, config: pytest.Config, workerinput: dict[str, Any]) -> None:
        self.workerinput = workerinput
        self.worker_id: str = workerinput.get("workerid", "?")
        self.edn: list[tuple[str, str]] = []
        """``--race-history`` files (name stem, EDN text) for the controller to write."""
        super().__init__(config)

    def inherited_seed(self) -> int | None:
        seed: int | None = self.workerinput.get("seatrace_seed")
        return seed

    @property
    def lock_dir(self) -> str | None:
        """The controller's lock directory, when this worker shares its filesystem."""
        directory: str | None = self.workerinput.get("seatrace_lock_dir")
        if directory is None or Path(directory).is_dir():
            return directory
        return None

    def pytest_sessionstart(self) -> None:
        """A worker on another host (``--tx ssh``/``socket``) cannot take the controller's locks."""
        directory = self.workerinput.get("seatrace_lock_dir")
        if directory is not None and not Path(directory).is_dir():
            workeroutput: dict[str, Any] = getattr(self.config, "workeroutput", {})
            workeroutput["seatrace_unserialised"] = (
                f"the lock directory {directory} is not on this worker's filesystem"
            )

    def keep(self, doc: RaceDoc) -> None:
        doc["worker"] = self.worker_id

    def export(self, stem: str, text: str) -> None:
        """Kept for the controller, which writes every file (see ``pytest_sessionfinish``)."""
        self.edn.append((stem, text))

    def on_report(self, item: pytest.Item, report: pytest.TestReport) -> None:
        """Races not sent yet ride to the controller on this report (builtins only)."""
        races = item.stash.get(RACES, [])
        done = item.stash.get(REPORTED, 0)
        if len(races) > done:
            report.seatrace = races[done:]  # type: ignore[attr-defined]
            item.stash[REPORTED] = len(races)

    def pytest_sessionfinish(self) -> None:
        """Send the request histories, too bulky for reports, and the EDN histories through one
        file."""
        directory = self.workerinput.get("seatrace_dir")
        if not directory or not self.wants_exchange:
            return
        from pytest_seatrace.core.result import history_columns

        path = Path(directory) / f"{self.worker_id}.json"
        histories = [{"name": r.name, "history": history_columns(r.history, r.resources)} for r in self.local]
        data = {"histories": histories, "edn": self.edn}
        try:
            path.write_text(json.dumps(data), encoding="utf-8")
        except OSError:  # the controller reports the missing history; the figures still travel
            return
        workeroutput: dict[str, Any] = getattr(self.config, "workeroutput", {})
        workeroutput["seatrace_history"] = str(path)
