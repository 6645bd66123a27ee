"""Book, cancel and read one seat at once, judged by a model of seats instead of a count.

A third of the clients book the seat as ``u{n}``, a third cancel ``u{n}``'s booking (which may
not exist yet: a clean 409), a third read the holders, all released by the same start. No count
of winners says whether that went right: several bookings may win one after another, with
cancellations in between. ``model=Seats(...)`` checks the whole history of each seat instead:
some order of the operations, each taking effect between its call and its return, must explain
every response (a seat of capacity 1: a booking wins only when the seat is free, a cancellation
only when its user holds it, a read sees the holders of that moment).

The unsafe strategy checks, waits 5 ms, then books: several bookings of one seat all win, and
the model catches it (``not-linearizable``) with no ``verify=``. ``expect=`` is not given, so it
is not judged: the default of one winner would call the safe run's bookings and cancellations
too many.

Run: ``pytest examples/test_seats_model.py -v``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from pytest_seatrace import Attempt, Race, RaceViolation, ServiceHandle
from pytest_seatrace.models import Seats

BOOK, CANCEL, READ = 0, 1, 2


def role(a: Attempt) -> int:
    return a.client % 3


def user(a: Attempt) -> str:
    """Client 3n books as ``u{n}`` and client 3n+1 cancels that same booking."""
    return f"u{a.client // 3}"


def method(a: Attempt) -> str:
    return "GET" if role(a) == READ else "POST"


def url(a: Attempt) -> str:
    return ("/orders", f"/seats/{a.resource}/cancel", f"/seats/{a.resource}")[role(a)]


def body(a: Attempt) -> dict[str, Any] | None:
    if role(a) == BOOK:
        return {"seats": [a.resource], "user": user(a)}
    return {"user": user(a)} if role(a) == CANCEL else None


def holders(response: httpx.Response) -> frozenset[str]:
    return frozenset(response.json()["holders"])


SEATS = Seats(
    book=("POST /orders", lambda request: request.json["user"]),
    cancel=("POST /seats/{resource}/cancel", lambda request: request.json["user"]),
    read=("GET /seats/{resource}", holders),
)


def race_all(race: Race, service: ServiceHandle) -> Any:
    race.base_url = service.url
    return race.request(method, url, json=body)


@pytest.mark.race(resources=4, concurrency=30, model=SEATS)
def test_every_seat_history_is_linearizable(race: Race, sample_service: ServiceHandle) -> None:
    result = race_all(race, sample_service)
    ops = {op["operation"] for op in result.by_operation()}
    assert ops == {"POST /orders", "POST /seats/{resource}/cancel", "GET /seats/{resource}"}
    assert not result.violations


@pytest.mark.xfail(raises=RaceViolation, strict=True, reason="unsafe: one seat booked by several")
@pytest.mark.race(resources=4, concurrency=30, model=SEATS)
def test_unsafe_service_caught_by_the_model(
    race: Race, sample_service_factory: Callable[..., ServiceHandle]
) -> None:
    try:
        race_all(race, sample_service_factory(strategy="unsafe", window_ms=5))
    except RaceViolation as exc:
        # The model alone caught it: no verify=, no expect=.
        assert "not-linearizable" in {v.kind for v in exc.result.violations}  # noqa: PT017
        raise
