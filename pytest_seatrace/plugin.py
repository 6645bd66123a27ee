"""pytest hooks of pytest-seatrace: options, the ``race`` marker, fixtures, summary, reports.

Hooks only; the logic lives in the modules they call. Options are resolved once into
``config.stash[SETTINGS]``; per-test figures ride on the test reports as builtins, so
pytest-xdist brings them to the controller, which alone prints and writes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_seatrace.collector import RaceLog, is_xdist_worker
from pytest_seatrace.marker import MARKER_DOC, MarkerError
from pytest_seatrace.marker import race as race_signature
from pytest_seatrace.options import OPTIONS, Settings
from pytest_seatrace.reports import check_writable
from pytest_seatrace.results import RaceResult
from pytest_seatrace.service import ServiceHandle, start_sample_service
from pytest_seatrace.summary import summary_lines

if TYPE_CHECKING:
    from pytest_seatrace.fixtures import Race

SETTINGS = pytest.StashKey[Settings]()
LOG = pytest.StashKey[RaceLog]()
MARKER_ARGS = pytest.StashKey[dict[str, Any]]()
MARKER_ERROR = pytest.StashKey[str]()
RESULTS = pytest.StashKey[list[RaceResult]]()
REPORTED = pytest.StashKey[int]()
SERVICES = pytest.StashKey[list[ServiceHandle]]()

JUNIT_FIGURES = ("requests", "wins", "rejections", "errors", "unknown", "double_bookings", "rps", "mode")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("seatrace", "pytest-seatrace: concurrency invariants")
    for opt in OPTIONS:
        if opt.choices:  # closed sets: argparse checks and lists them, as xdist's --dist does
            kind: dict[str, Any] = {"choices": opt.choices}
            shown = f"{opt.help}, one of {', '.join(opt.choices)}"
        else:
            kind, shown = {"type": opt.parse}, opt.help
        group.addoption(
            opt.flag,
            dest=opt.ini,
            default=None,
            metavar=opt.metavar,
            help=f"{shown} (ini: {opt.ini})",
            **kind,
        )
        parser.addini(opt.ini, f"{opt.help} (option: {opt.flag})", default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_DOC)
    config.stash[SETTINGS] = settings = Settings.from_config(config)
    if not is_xdist_worker(config):
        for path, flag in ((settings.json, "--race-json"), (settings.html, "--race-html")):
            problem = check_writable(path, flag) if path is not None else None
            if problem:
                raise pytest.UsageError(problem)
    log = RaceLog(config, settings)
    config.stash[LOG] = log
    config.pluginmanager.register(log, "seatrace-log")


def pytest_report_header(config: pytest.Config) -> str:
    return config.stash[SETTINGS].header()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Check every race marker at collection; a bad one fails only its own test, at setup."""
    for item in items:
        markers = list(item.iter_markers("race"))
        if not markers:
            continue
        kwargs: dict[str, Any] = {}
        args: tuple[Any, ...] = ()
        for marker in reversed(markers):  # farthest first: the closest marker wins per key
            kwargs.update(marker.kwargs)
            args = args or marker.args
        try:
            item.stash[MARKER_ARGS] = race_signature(*args, **kwargs)
        except (TypeError, MarkerError) as exc:
            item.stash[MARKER_ERROR] = str(exc)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    error = item.stash.get(MARKER_ERROR, None)
    if error is not None:
        pytest.fail(f"@pytest.mark.race on {item.name}: {error}", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """On an xdist worker, races ride to the controller on the report (builtins only); a failed
    test shows the log of every sample service it started."""
    report = yield
    if report.failed:
        for handle in item.stash.get(SERVICES, []):
            report.sections.append(
                (f"sample service log ({handle.strategy}, {handle.url})", handle.log_tail())
            )
    if not is_xdist_worker(item.config):
        return report
    results = item.stash.get(RESULTS, [])
    done = item.stash.get(REPORTED, 0)
    if len(results) > done:
        worker = getattr(item.config, "workerinput", {}).get("workerid")
        races = [r.to_dict() for r in results[done:]]
        for race in races:
            race["worker"] = worker
        report.seatrace = races
        item.stash[REPORTED] = len(results)
    return report


@pytest.fixture
def race(request: pytest.FixtureRequest) -> Iterator[Race]:
    """Race concurrent requests per resource and assert the invariant (see ``@pytest.mark.race``)."""
    from pytest_seatrace.fixtures import Race  # the engine (anyio, httpx, h11) loads on first use

    item = request.node
    config = request.config
    results = item.stash.setdefault(RESULTS, [])

    def record(result: RaceResult) -> None:
        results.append(result)
        config.stash[LOG].record(result)
        prefix = "race" if len(results) == 1 else f"race{len(results)}"
        data = result.to_dict()
        for key in JUNIT_FIGURES:
            item.user_properties.append((f"{prefix}_{key}", data[key]))
        lat = data["latency"]["all"]
        for key in ("med_ns", "p95_ns", "p99_ns", "max_ns"):
            if lat[key] is not None:
                item.user_properties.append((f"{prefix}_{key[:-3]}_ms", round(lat[key] / 1e6, 3)))
        item.user_properties.append((f"{prefix}_passed", result.passed))

    racer = Race(
        name=item.nodeid,
        marker=item.stash.get(MARKER_ARGS, {}),
        settings=config.stash[SETTINGS],
        record=record,
    )
    try:
        yield racer
    finally:
        racer.close()


@pytest.fixture
def sample_service_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ServiceHandle]]:
    """Start the bundled seat service in a subprocess: ``factory(strategy="unsafe", seats=16, window_ms=5)``.

    Each call gets a fresh database and port; every service is stopped after the test.
    """
    from contextlib import ExitStack

    with ExitStack() as stack:

        def start(
            strategy: str = "safe", seats: int = 16, window_ms: float = 5.0, db_path: Path | None = None
        ) -> ServiceHandle:
            if db_path is None:
                db_path = tmp_path_factory.mktemp("seatrace-db") / "seats.db"
            handle = stack.enter_context(
                start_sample_service(strategy=strategy, seats=seats, window_ms=window_ms, db_path=db_path)
            )
            request.node.stash.setdefault(SERVICES, []).append(handle)
            return handle

        yield start


@pytest.fixture
def sample_service(sample_service_factory: Callable[..., ServiceHandle]) -> ServiceHandle:
    """The bundled seat service, ``safe`` strategy, 16 seats, fresh DB, started for this test."""
    return sample_service_factory()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    if is_xdist_worker(config):
        return
    log = config.stash[LOG]
    settings = config.stash[SETTINGS]
    lines = summary_lines(
        log.races, verbosity=config.get_verbosity(), mode=settings.summary, workers=log.worker_count()
    )
    if not lines:
        return
    terminalreporter.ensure_newline()  # else the first table line would follow a blank one
    terminalreporter.section("race summary")
    for line in lines:
        terminalreporter.write_line(line.text, red=line.red, green=line.green, bold=line.bold)
