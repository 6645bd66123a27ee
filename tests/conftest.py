"""What every test module of this suite shares.

The plugin loads its engine on first use, and gate mode loads httpcore only when a race runs
in it, so that a plain last-byte race never does. pytester restores ``sys.modules`` after each
in-process run, so a module first imported inside one comes back later as a second copy: httpx,
holding the first copy's exception classes, then no longer maps the second copy's (a refused
connection read ``attempt raised ConnectError`` instead of ``connection refused``), and a class
checked with ``isinstance`` across the copies is another class. Imported here once, before any
pytester run, they stay the one copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpcore  # noqa: F401
import pytest

import pytest_seatrace.engine.httpx_start
import pytest_seatrace.engine.runner
import pytest_seatrace.engine.shards
import pytest_seatrace.engine.single_packet
import pytest_seatrace.race  # noqa: F401
from pytest_seatrace.service import ServiceHandle, start_sample_service
from tests.support import INNER_INI, SEATS_CONFTEST


@pytest.fixture
def inner(pytester: pytest.Pytester) -> pytest.Pytester:
    """A pytester project with the suite's inner ini and the ``seats`` fixture of SEATS_CONFTEST."""
    pytester.makeini(INNER_INI)
    pytester.makeconftest(SEATS_CONFTEST)
    return pytester


@pytest.fixture(scope="module")
def _auth_service_process() -> Iterator[ServiceHandle]:
    with start_sample_service(strategy="safe", seats=4, auth=True) as service:
        yield service


@pytest.fixture
def auth_service(_auth_service_process: ServiceHandle) -> ServiceHandle:
    """The sample service with ``--auth`` (4 seats), one process per module, every seat free."""
    _auth_service_process.reset()
    return _auth_service_process


@pytest.fixture(scope="module")
def _module_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ServiceHandle]]:
    """Start a sample service per set of options on first use; stop them all after the module."""
    with ExitStack() as stack:
        started: dict[str, ServiceHandle] = {}

        def get(**options: Any) -> ServiceHandle:
            key = repr(sorted(options.items()))
            if key not in started:
                db_path = tmp_path_factory.mktemp("seatrace-module-db") / "seats.db"
                started[key] = stack.enter_context(start_sample_service(db_path=db_path, **options))
            return started[key]

        yield get


@pytest.fixture
def module_service(_module_services: Callable[..., ServiceHandle]) -> Callable[..., ServiceHandle]:
    """``sample_service_factory`` for tests that race and then read: one process per module and options.

    Same arguments as ``sample_service_factory``; the service starts on first use in the module and
    is reset (every seat free, no orders) before each test gets it, so a test sees what a fresh
    service would show. Tests that kill, reconfigure or fill the database keep
    ``sample_service_factory``.
    """

    def get(**options: Any) -> ServiceHandle:
        handle = _module_services(**options)
        handle.reset()
        return handle

    return get


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    """A named pipe in the test's directory, with no reader or writer yet."""
    path = tmp_path / "report.fifo"
    os.mkfifo(path)
    return path
