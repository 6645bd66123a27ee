"""pytest hooks and fixtures of pytest-seatrace, each a few lines that delegate.

Options are resolved once into ``config.stash[SETTINGS]``; the session's role (controller or
xdist worker, ``session.py``) is chosen once and gathers, prints and writes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_seatrace.marker import MARKER_DOC, MarkerError, merged_marker_args
from pytest_seatrace.options import OPTIONS, Settings
from pytest_seatrace.session import RaceSessionRole, choose_role

if TYPE_CHECKING:  # each loads on first use: a session that races nothing never pays for them
    from pytest_seatrace.race import Race
    from pytest_seatrace.service import ServiceHandle

SETTINGS = pytest.StashKey[Settings]()
ROLE = pytest.StashKey[RaceSessionRole]()
MARKER_ARGS = pytest.StashKey[dict[str, Any]]()
MARKER_ERROR = pytest.StashKey[str]()
SERVICES = pytest.StashKey["list[ServiceHandle]"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("seatrace", "pytest-seatrace: concurrency invariants")
    for opt in OPTIONS:
        if opt.choices:  # closed sets: argparse checks and lists them, as xdist's --dist does
            kind: dict[str, Any] = {"choices": opt.choices}
            shown = f"{opt.help}, one of {', '.join(opt.choices)}"
        else:
            kind, shown = {"type": opt.parse}, opt.help
        if opt.multiple:
            kind["action"] = "append"
        group.addoption(
            opt.flag,
            dest=opt.ini,
            default=None,
            metavar=opt.metavar,
            help=f"{shown} (ini: {opt.ini})",
            **kind,
        )
        if opt.multiple:
            parser.addini(opt.ini, f"{opt.help} (option: {opt.flag})", type="linelist", default=[])
        else:
            parser.addini(opt.ini, f"{opt.help} (option: {opt.flag})", default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_DOC)
    role = choose_role(config)
    config.stash[SETTINGS] = role.settings
    problem = role.check_reports()  # the probe the final write makes
    if problem:
        raise pytest.UsageError(problem)
    config.stash[ROLE] = role
    config.pluginmanager.register(role, "seatrace-session")


def pytest_report_header(config: pytest.Config) -> str:
    return config.stash[SETTINGS].header()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Check every race marker at collection; a bad one fails only its own test, at setup."""
    for item in items:
        try:
            args = merged_marker_args(item.iter_markers("race"))
        except (TypeError, MarkerError) as exc:
            item.stash[MARKER_ERROR] = str(exc)
        else:
            if args is not None:
                item.stash[MARKER_ARGS] = args


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    error = item.stash.get(MARKER_ERROR, None)
    if error is not None:
        pytest.fail(f"@pytest.mark.race on {item.name}: {error}", pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """A failed test shows the log of every sample service it started; the role may put the
    test's races on the report."""
    report = yield
    if report.failed:
        for handle in item.stash.get(SERVICES, []):
            report.sections.append(
                (f"sample service log ({handle.strategy}, {handle.url})", handle.log_tail())
            )
    item.config.stash[ROLE].on_report(item, report)
    return report


@pytest.fixture
def race(request: pytest.FixtureRequest) -> Iterator[Race]:
    """Race concurrent requests per resource and assert the invariant (see ``@pytest.mark.race``)."""
    from pytest_seatrace.progress import live_line
    from pytest_seatrace.race import Race  # the engine (anyio, httpx, h11) loads on first use

    item = request.node
    role = request.config.stash[ROLE]
    live = live_line(request.config, is_worker=role.is_worker)
    racer = Race(
        name=item.nodeid,
        marker=item.stash.get(MARKER_ARGS, {}),
        settings=request.config.stash[SETTINGS],
        record=lambda result: role.record(item, result),
        progress=live,
        lock_dir=role.lock_dir,
        shard_pool=role.shard_pool,
    )
    try:
        yield racer
    finally:
        if live is not None:
            live.clear()
        racer.close()


@pytest.fixture
def sample_service_factory(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ServiceHandle]]:
    """Start the bundled seat service in a subprocess: ``factory(strategy="unsafe", seats=16, window_ms=5)``.

    Also ``server="hypercorn"`` (HTTP/2 and HTTP/1.1), ``tls=True`` (a throwaway CA: the handle's
    ``ca_path``), ``auth=True`` (``POST /login`` first), ``h2_max_streams=N``, ``keep_alive_s=S``
    (how long the server keeps an idle connection), ``http3=True`` (HTTP/3 too, on the handle's
    ``http3_port``: hypercorn and TLS). Each call gets a
    fresh database and port; every service is stopped after the test.
    """
    from pytest_seatrace.service import start_sample_service

    with ExitStack() as stack:

        def start(
            strategy: str = "safe",
            seats: int = 16,
            window_ms: float = 5.0,
            db_path: Path | None = None,
            **options: Any,
        ) -> ServiceHandle:
            if db_path is None:
                db_path = tmp_path_factory.mktemp("seatrace-db") / "seats.db"
            handle = stack.enter_context(
                start_sample_service(
                    strategy=strategy, seats=seats, window_ms=window_ms, db_path=db_path, **options
                )
            )
            request.node.stash.setdefault(SERVICES, []).append(handle)
            return handle

        yield start


@pytest.fixture
def sample_service(sample_service_factory: Callable[..., ServiceHandle]) -> ServiceHandle:
    """The bundled seat service, ``safe`` strategy, 16 seats, fresh DB, started for this test."""
    return sample_service_factory()
