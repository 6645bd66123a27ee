"""Recipe: race a Flask app under gunicorn (gthread workers) in a subprocess.

Flask's development server and its test client are no place for a race: the test client runs
one request at a time, and a server thread in the test process shares the GIL with the race
engine. The fixture below runs the app the way it is deployed, under a real WSGI server in its
own process, on a loopback socket it binds and passes by fd, on a fresh SQLite file per test.
Run: ``pytest examples/recipes/test_flask.py -v``; docs/recipes.md explains.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from examples.recipes.checks import only_double_bookings
from examples.recipes.flask_app import holder, init_db
from examples.recipes.servers import Server, serve
from pytest_seatrace import Attempt, Race, RaceViolation

SEATS = 4


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "seats.db"
    init_db(path, SEATS)
    return path


@pytest.fixture
def flask_server(db_path: Path) -> Iterator[Server]:
    """Gunicorn, one process of 100 threads: a thread per held connection (see ``servers.py``)."""
    with serve(gunicorn=f"examples.recipes.flask_app:create_app({str(db_path)!r})") as server:
        yield server


def booking(a: Attempt) -> dict[str, str]:
    return {"user": f"user-{a.resource}-{a.client}"}


@pytest.mark.race(resources=SEATS, concurrency=20)
def test_conditional_update_books_each_seat_once(race: Race, flask_server: Server, db_path: Path) -> None:
    race.base_url = flask_server.url
    result = race.post(lambda a: f"/book/{a.resource}", json=booking)
    assert result.mode == "last-byte"
    assert result.status_counts == {201: SEATS, 409: SEATS * 19}
    for seat, wins in result.winners.items():  # the database agrees with the answers
        assert holder(db_path, str(seat)) == f"user-{seat}-{wins[0].client}"


@pytest.mark.xfail(strict=True, raises=RaceViolation, reason="check-then-act: caught double-booking")
@pytest.mark.race(resources=SEATS, concurrency=20)
def test_check_then_act_view_double_books(race: Race, flask_server: Server) -> None:
    race.base_url = flask_server.url
    with only_double_bookings():  # a crash would be a RaceViolation too
        race.post(lambda a: f"/unsafe/book/{a.resource}", json=booking)
