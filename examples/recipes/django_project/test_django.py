"""Recipe: race a Django view, with pytest-django's ``live_server`` and with gunicorn in a subprocess.

``live_server`` is the quick way: a server thread in the test process, on the test database.
It shares the GIL with the race engine, so its races start less precisely (docs/recipes.md
has the figures). The precise way serves the same project under gunicorn in its own process,
pointed at the same SQLite test database, which it sees because ``transaction=True`` commits
what the test writes. Either way the correct view passes and the check-then-act view is caught.
Django is configured when the first test here needs it (``conftest.py`` says why), so the model
is imported in the functions that use it, not at the top as a Django project would. Run:
``pytest examples/recipes/django_project -v``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest
from django.db import connection
from pytest_django.live_server_helper import LiveServer

from examples.recipes.checks import only_double_bookings
from examples.recipes.servers import Server, serve
from pytest_seatrace import Attempt, Race, RaceViolation

if TYPE_CHECKING:
    from examples.recipes.django_project.booking.models import Seat

SEATS = 4
pytestmark = [
    pytest.mark.django_db(transaction=True),  # committed rows: other threads and processes see them
    pytest.mark.race(resources=SEATS, concurrency=20),
]


@pytest.fixture
def seat_model(transactional_db: None) -> type[Seat]:
    """The model, imported once Django is set up."""
    from examples.recipes.django_project.booking.models import Seat

    return Seat


@pytest.fixture
def seats(seat_model: type[Seat]) -> list[str]:
    """The free seats ``"1"`` to ``"4"``, committed."""
    numbers = [str(i) for i in range(1, SEATS + 1)]
    seat_model.objects.bulk_create([seat_model(number=n) for n in numbers])
    return numbers


@pytest.fixture
def django_server(transactional_db: None) -> Iterator[Server]:
    """The project under gunicorn in a subprocess, on the test database pytest-django made.

    ``connection.settings_dict["NAME"]`` is that database once it exists (with its xdist
    suffix); the server's settings read it from ``RECIPES_DJANGO_DB``. It is stopped before
    pytest-django empties the tables after the test.
    """
    env = {
        "DJANGO_SETTINGS_MODULE": "examples.recipes.django_project.settings",
        "RECIPES_DJANGO_DB": str(connection.settings_dict["NAME"]),
    }
    with serve(gunicorn="examples.recipes.django_project.wsgi:application", env=env) as server:
        yield server


def booking(a: Attempt) -> dict[str, str]:
    return {"user": f"user-{a.resource}-{a.client}"}


def test_gunicorn_conditional_update(
    race: Race, seats: list[str], django_server: Server, seat_model: type[Seat]
) -> None:
    race.base_url = django_server.url
    result = race.post(lambda a: f"/book/{a.resource}", json=booking)
    assert result.status_counts == {201: SEATS, 409: SEATS * 19}
    holders = dict(seat_model.objects.values_list("number", "holder"))  # what the server wrote
    assert holders == {str(s): f"user-{s}-{wins[0].client}" for s, wins in result.winners.items()}


@pytest.mark.xfail(strict=True, raises=RaceViolation, reason="check-then-act: caught double-booking")
def test_gunicorn_check_then_act(race: Race, seats: list[str], django_server: Server) -> None:
    race.base_url = django_server.url
    with only_double_bookings():  # a crash would be a RaceViolation too
        race.post(lambda a: f"/unsafe/book/{a.resource}", json=booking)


def test_live_server_conditional_update(race: Race, seats: list[str], live_server: LiveServer) -> None:
    race.base_url = live_server.url
    result = race.post(lambda a: f"/book/{a.resource}", json=booking)
    assert result.status_counts == {201: SEATS, 409: SEATS * 19}


@pytest.mark.xfail(strict=True, raises=RaceViolation, reason="check-then-act: caught double-booking")
def test_live_server_check_then_act(race: Race, seats: list[str], live_server: LiveServer) -> None:
    race.base_url = live_server.url
    with only_double_bookings():  # a crash would be a RaceViolation too
        race.post(lambda a: f"/unsafe/book/{a.resource}", json=booking)
