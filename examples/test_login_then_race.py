"""Log in first (untimed), then race the booking: two ways.

``setup=`` (the first test) logs every client in before the race, on its own
``httpx.AsyncClient`` (cookies kept); what it returns is ``a.setup`` for the request callables,
and the booking then starts like any request race: last-byte, held at its headers, all the
clients' held bytes sent back to back. Use it when the raced step is one request.

``race.run(attempt)`` (sync tests) and ``await race.arun(attempt)`` (async tests) take an async
function of the attempt. Everything before ``await a.gate()`` is set-up: it is not timed and
does not count. At the gate every client of the resource waits for the others; the request
after it is the one that races, and the response the function returns is classified like any
other. ``a.http`` is the client's own ``httpx.AsyncClient``, with ``race.base_url`` as base URL
(and the in-process app as transport when ``race.app`` is set). Attempts always start in gate
mode.

Measured on the idle 2-core development machine, client and service on the same cores, three
runs of this file: the median per-seat start spread of the 4 seats x 25 clients was 0.11 ms with
``setup=`` (last-byte) and 0.85-1.04 ms with ``race.run`` (gate) against the sample service;
docs/guide.md ("Log in first") and docs/benchmarks.md have the figures at 16 x 100.

Run: ``pytest examples/test_login_then_race.py -v``.
"""

from __future__ import annotations

import secrets
from typing import Any

import httpx
import pytest

from examples.asgi_json import Receive, Send, read_json, send_json
from pytest_seatrace import Attempt, Race, ServiceHandle


class BookingApp:
    """``POST /login`` ``{"user"}`` → ``{"token"}``; ``POST /book/{seat}`` with ``Authorization:
    Bearer <token>`` → 201 for the first, 409 after, 401 without a valid token."""

    def __init__(self) -> None:
        self.tokens: dict[str, str] = {}
        self.holders: dict[str, str] = {}

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = await read_json(receive)
        headers = dict(scope["headers"])
        path = scope["path"]
        if path == "/login":
            token = secrets.token_hex(8)
            self.tokens[token] = body["user"]
            await send_json(send, 200, {"token": token})
            return
        user = self.tokens.get(headers.get(b"authorization", b"").decode().removeprefix("Bearer "))
        if user is None:
            await send_json(send, 401, {"error": "log in first"})
        elif not path.startswith("/book/"):
            await send_json(send, 404, {"error": "not found"})
        else:
            seat = path.removeprefix("/book/")
            if seat in self.holders:
                await send_json(send, 409, {"error": "seat taken"})
            else:
                self.holders[seat] = user
                await send_json(send, 201, {"seat": seat, "user": user})


async def log_in(a: Attempt) -> str:
    """``setup=``: one client logs in on its own client; the token becomes ``a.setup``."""
    assert a.http is not None
    response = await a.http.post("/login", json={"user": f"user-{a.client}-{a.resource}"})
    response.raise_for_status()
    token: str = response.json()["token"]
    return token


@pytest.mark.race(resources=4, concurrency=25)
def test_setup_then_a_precise_start(race: Race, sample_service_factory: Any) -> None:
    """The sample service with ``--auth``: ``POST /orders`` needs a bearer token from ``POST /login``."""
    service: ServiceHandle = sample_service_factory(auth=True)
    race.base_url = service.url
    result = race.post(
        "/orders",
        setup=log_in,
        headers=lambda a: {"Authorization": f"Bearer {a.setup}"},
        json=lambda a: {"seats": [a.resource], "user": f"user-{a.client}-{a.resource}"},
    )
    assert result.mode == "last-byte"
    assert result.status_counts == {201: 4, 409: 96}


async def login_then_book(a: Attempt) -> httpx.Response:
    """One client: log in (set-up), wait at the gate, book (the timed, classified request)."""
    assert a.http is not None  # set inside race.run/arun attempts
    login = await a.http.post("/login", json={"user": f"user-{a.client}"})
    token = login.json()["token"]
    await a.gate()  # every client of this seat meets here
    return await a.http.post(
        f"/book/{a.resource}",
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": a.key},  # a.key: "r1-A1-7"
    )


@pytest.mark.race(resources=["A1", "A2"], concurrency=20)
def test_login_then_book(race: Race) -> None:
    app = race.app = BookingApp()
    result = race.run(login_then_book)  # sync test: race.run
    assert (result.wins, result.rejections, result.status_counts) == (2, 38, {201: 2, 409: 38})
    for seat, wins in result.winners.items():
        assert app.holders[str(seat)] == f"user-{wins[0].client}"


@pytest.mark.race(resources=["A1", "A2"], concurrency=20)
@pytest.mark.asyncio
async def test_login_then_book_async(race: Race) -> None:
    race.app = BookingApp()
    result = await race.arun(login_then_book)  # async test: await race.arun, on the test's own loop
    assert (result.wins, result.rejections) == (2, 38)
    assert result.mode == "gate"


@pytest.mark.race(resources=4, concurrency=25)
def test_health_check_then_book_on_the_sample_service(race: Race, sample_service: ServiceHandle) -> None:
    """The bundled service has no login: ``GET /health`` stands in for the untimed set-up."""
    race.base_url = sample_service.url

    async def attempt(a: Attempt) -> httpx.Response:
        assert a.http is not None
        (await a.http.get("/health")).raise_for_status()  # opens the connection, untimed
        await a.gate()
        return await a.http.post("/orders", json={"seats": [a.resource], "user": a.key})

    result = race.run(attempt)
    assert result.wins == 4
    assert result.status_counts == {201: 4, 409: 96}
