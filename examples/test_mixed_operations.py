"""Mixed operations under one start: book a seat while others take it off sale.

``race.request`` takes the method as a function of the attempt, like every other argument:
here odd clients ``POST /orders`` (book the seat) while even ones ``DELETE /seats/{id}``
(withdraw it from sale), all released by the same start. Of all of them exactly one may
succeed, so the one ``expect=1`` counts the wins of both operations, and a per-operation
``success=`` says what a win is: each ``httpx.Response`` carries its own request, so the
predicate reads ``response.request.method``. ``verify=`` then reads the end state: the seat's
holders plus one if it was withdrawn must be one claim, never two.

The summary and the JSON/HTML reports break the statuses down per operation
(``POST /orders``, ``DELETE /seats/{resource}``) when a race mixes them.

Run: ``pytest examples/test_mixed_operations.py -v``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from pytest_seatrace import Attempt, Race, RaceViolation, ServiceHandle


def method(a: Attempt) -> str:
    return "POST" if a.client % 2 else "DELETE"


def url(a: Attempt) -> str:
    return "/orders" if a.client % 2 else f"/seats/{a.resource}"


def body(a: Attempt) -> dict[str, Any] | None:
    return {"seats": [a.resource], "user": f"vu-{a.client}"} if a.client % 2 else None


def won(response: httpx.Response) -> bool:
    """A booking wins with 201 Created, a withdrawal with 200 OK; a 409 is a clean loss."""
    return response.status_code == (201 if response.request.method == "POST" else 200)


def claims(service: ServiceHandle) -> Callable[[Any], int]:
    """How many claims the seat has in the end: its holders, plus one if it is off sale."""

    def read(seat: Any) -> int:
        status, seat_json = service.request("GET", f"/seats/{seat}")
        assert status == 200, seat_json
        return len(seat_json["holders"]) + int(seat_json.get("withdrawn", False))

    return read


def race_both(race: Race, service: ServiceHandle) -> Any:
    race.base_url = service.url
    return race.request(method, url, json=body, success=won, verify=claims(service))


@pytest.mark.race(resources=4, concurrency=50)
def test_one_claim_per_seat(race: Race, sample_service: ServiceHandle) -> None:
    result = race_both(race, sample_service)
    ops = {op["operation"]: op for op in result.by_operation()}
    assert set(ops) == {"POST /orders", "DELETE /seats/{resource}"}
    assert ops["POST /orders"]["wins"] + ops["DELETE /seats/{resource}"]["wins"] == 4


@pytest.mark.xfail(raises=RaceViolation, strict=True, reason="unsafe: a seat both sold and withdrawn")
@pytest.mark.race(resources=4, concurrency=50)
def test_unsafe_service_sells_a_withdrawn_seat(
    race: Race, sample_service_factory: Callable[..., ServiceHandle]
) -> None:
    race_both(race, sample_service_factory(strategy="unsafe", window_ms=5))
