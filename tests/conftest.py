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

from collections.abc import Iterator

import httpcore  # noqa: F401
import pytest

import pytest_seatrace.engine.gate
import pytest_seatrace.engine.h2
import pytest_seatrace.engine.runner
import pytest_seatrace.engine.shards
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
