"""A FastAPI booking app with a correct endpoint and a check-then-act one, for the FastAPI recipe.

``POST /book/{seat}`` ``{"user"}``: 201 for the first booking of a seat, 409 after. Both
endpoints take the same ``await`` between checking the seat and taking it (a database round
trip, a payment call); the correct one holds the seat's lock across check and act, the
check-then-act one does not, so every client that arrives during the window passes the check.

The state is in memory, so the lock is enough within one process (uvicorn's default: one
worker). With several workers or replicas the check and the act must be one statement in the
shared database (a conditional ``UPDATE``, as in the Flask and Django recipes).

Serve it: ``uvicorn examples.recipes.fastapi_app:app``.
"""

from __future__ import annotations

import time
from collections import defaultdict

import anyio
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

WINDOW_S = 0.05
"""Between check and act. Wider than the widest start spread of the recipes' races (tens of ms
with live_server or in process on a loaded machine), so the check-then-act test fails on every
run; a shorter window makes the race rarer, not harmless (docs/recipes.md)."""


class Booking(BaseModel):
    user: str


class Seats:
    """Holders by seat, and one lock per seat (created on first use, inside the event loop)."""

    def __init__(self) -> None:
        self.holders: dict[str, str] = {}
        self.locks: defaultdict[str, anyio.Lock] = defaultdict(anyio.Lock)

    async def book_locked(self, seat: str, user: str) -> bool:
        """Check and act under the seat's lock: the window no longer lets anyone in."""
        async with self.locks[seat]:
            return await self.book_unlocked(seat, user)

    async def book_unlocked(self, seat: str, user: str) -> bool:
        """The check-then-act bug: the ``await`` lets every other client pass the check too."""
        if seat in self.holders:
            return False
        await anyio.sleep(WINDOW_S)
        self.holders[seat] = user
        return True


class ArrivalStamp:
    """``X-Arrival-Ns``: when the request reached the app, from which the plugin measures the
    server-side start spread. Plain ASGI, not ``@app.middleware``: that one costs a task per
    request, and the overhead would widen the very spread it stamps."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived = str(time.perf_counter_ns()).encode()

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-arrival-ns", arrived)]
            await send(message)

        await self.app(scope, receive, stamped)


def create_app() -> FastAPI:
    """A fresh app with its own, empty state (``app.state.seats``)."""
    app = FastAPI()
    seats = app.state.seats = Seats()

    app.add_middleware(ArrivalStamp)

    def answer(booked: bool, seat: str, user: str) -> JSONResponse:
        if booked:
            return JSONResponse({"seat": seat, "user": user}, status_code=201)
        return JSONResponse({"error": f"seat {seat} is taken"}, status_code=409)

    @app.post("/book/{seat}")
    async def book(seat: str, booking: Booking) -> JSONResponse:
        return answer(await seats.book_locked(seat, booking.user), seat, booking.user)

    @app.post("/unsafe/book/{seat}")
    async def book_unsafe(seat: str, booking: Booking) -> JSONResponse:
        return answer(await seats.book_unlocked(seat, booking.user), seat, booking.user)

    @app.get("/seats/{seat}")
    async def holder(seat: str) -> dict[str, str | None]:
        return {"seat": seat, "holder": seats.holders.get(seat)}

    @app.post("/reset")
    async def reset() -> dict[str, bool]:
        seats.holders.clear()
        return {"ok": True}

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    return app


app = create_app()
