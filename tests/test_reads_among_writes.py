"""Bodyless reads raced among JSON-bodied writes on the hypercorn sample service, in every start.

``GET /seats/{id}`` beside ``POST /orders`` and ``POST /seats/{id}/cancel`` in one race. Under
single-packet a bodyless stream once held an empty DATA frame for the gate; hypercorn runs a
complete ``GET`` at its HEADERS, answers and forgets the stream, and the DATA frame that then
arrives raises ``KeyError`` in its connection task (``hypercorn/protocol/h2.py``, the unguarded
``DataReceived`` lookup), so every POST beside it went unanswered. Each race here has a short
``timeout`` so that a regression fails in seconds.
"""

from __future__ import annotations

from typing import Any

import pytest

from pytest_seatrace import Attempt

STARTS = pytest.mark.parametrize(
    "start",
    [
        {"sync": "single-packet"},
        {"sync": "single-packet", "tls": True},
        {"sync": "last-byte", "hold": "headers"},
        {"sync": "last-byte", "hold": "body"},
        {"sync": "gate"},
    ],
    ids=["single-packet-h2c", "single-packet-tls", "last-byte-headers", "last-byte-body", "gate"],
)
READ, BOOK, CANCEL = "GET /seats/{resource}", "POST /orders", "POST /seats/{resource}/cancel"


def kind(a: Attempt) -> str:
    return ("read", "book", "cancel")[a.client % 3]


def method(a: Attempt) -> str:
    return "GET" if kind(a) == "read" else "POST"


def url(a: Attempt) -> str:
    paths = {"read": f"/seats/{a.resource}", "book": "/orders", "cancel": f"/seats/{a.resource}/cancel"}
    return paths[kind(a)]


def body(a: Attempt) -> dict[str, Any] | None:
    """No body for a read; a cancellation asks for a booking nobody holds (a 409 that reads its
    body first), so exactly one booking per seat wins."""
    if kind(a) == "read":
        return None
    return {"seats": [a.resource], "user": f"u{a.client}"} if kind(a) == "book" else {"user": "nobody"}


def booked(response: Any) -> bool:
    return bool(response.status_code == 201)


@STARTS
def test_reads_and_writes_are_all_answered(race: Any, module_service: Any, start: dict[str, Any]) -> None:
    tls = start.pop("tls", False)
    service = module_service(server="hypercorn", seats=4, tls=tls)
    race.base_url = service.url
    result = race.request(
        method, url, json=body, resources=4, concurrency=9, timeout=2.0, success=booked, expect=1,
        tls_verify=service.ca_path if tls else True, **start,
    )  # fmt: skip
    assert (result.mode, result.passed, result.wins) == (start["sync"], True, 4)
    assert (result.unknown, result.errors) == (0, 0)
    ops = {op["operation"]: op for op in result.by_operation()}
    assert {name: op["requests"] for name, op in ops.items()} == {READ: 12, BOOK: 12, CANCEL: 12}
    assert set(ops[READ]["status_counts"]) == {"200"}
    assert ops[BOOK]["status_counts"] == {"201": 4, "409": 8}
    assert ops[CANCEL]["status_counts"] == {"409": 12}
    if start["sync"] == "single-packet":
        assert result.early == 0  # a read's whole HEADERS go at the gate, so none is answered early
