"""Recipe: race a FastAPI app, under uvicorn in a subprocess, and in process for a quick check.

The precise race serves the app the way it runs in production, with uvicorn, in its own
process: the fixture binds a loopback socket, passes its fd, waits for ``GET /health`` and
stops the server after the test. The race then starts like any request race (last-byte, held
at the headers). ``race.app = app`` skips the server: the requests go to the app in process, in
gate mode; fast, and enough to test the locking logic, but its timings say little about a
deployment. Run: ``pytest examples/recipes/test_fastapi.py -v``; docs/recipes.md explains.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from examples.recipes.checks import only_double_bookings
from examples.recipes.fastapi_app import create_app
from examples.recipes.servers import Server, serve
from pytest_seatrace import Attempt, Race, RaceViolation


@pytest.fixture
def fastapi_server() -> Iterator[Server]:
    """The app under uvicorn in a subprocess: a fresh process, so a fresh state, per test."""
    with serve(uvicorn="examples.recipes.fastapi_app:app") as server:
        yield server


def booking(a: Attempt) -> dict[str, str]:
    return {"user": f"user-{a.client}"}


@pytest.mark.race(resources=4, concurrency=20)
def test_locked_endpoint_books_each_seat_once(race: Race, fastapi_server: Server) -> None:
    race.base_url = fastapi_server.url
    result = race.post(lambda a: f"/book/{a.resource}", json=booking)
    assert result.mode == "last-byte"
    assert result.status_counts == {201: 4, 409: 76}


@pytest.mark.xfail(strict=True, raises=RaceViolation, reason="check-then-act: caught double-booking")
@pytest.mark.race(resources=4, concurrency=20)
def test_check_then_act_endpoint_double_books(race: Race, fastapi_server: Server) -> None:
    race.base_url = fastapi_server.url
    with only_double_bookings():  # a crash would be a RaceViolation too
        race.post(lambda a: f"/unsafe/book/{a.resource}", json=booking)


@pytest.mark.race(resources=4, concurrency=20)
def test_in_process_quick_check(race: Race) -> None:
    """``race.app``: no server, no socket, gate mode; the app's own state is at hand."""
    app = race.app = create_app()
    result = race.post(lambda a: f"/book/{a.resource}", json=booking)
    assert result.mode == "gate"
    assert sorted(app.state.seats.holders) == ["1", "2", "3", "4"]


@pytest.mark.xfail(strict=True, raises=RaceViolation, reason="check-then-act: caught in process too")
@pytest.mark.race(resources=4, concurrency=20)
def test_in_process_catches_check_then_act(race: Race) -> None:
    race.app = create_app()
    with only_double_bookings():  # a crash would be a RaceViolation too
        race.post(lambda a: f"/unsafe/book/{a.resource}", json=booking)
