"""The Starlette app: a seat-booking API with a safe and a deliberately unsafe strategy.

Every response carries ``X-Arrival-Ns`` (``time.perf_counter_ns()``, CLOCK_MONOTONIC on
Linux, so another process on the machine can compare it): taken after the request body
has been read, because uvicorn calls the app once the headers are in, before the last
byte of the body (hypercorn too, at the HEADERS frame of an HTTP/2 stream).

With ``auth=True`` ``POST /orders`` needs a token from ``POST /login``, as a bearer
header or the ``session`` cookie, so demos and tests can race a login-then-book flow.
"""

from __future__ import annotations

import functools
import json
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal, TypeVar, get_args

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sample_service.db import NotHeldError, SeatState, SeatStore, SeatTakenError, is_busy

Strategy = Literal["safe", "unsafe"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
SEAT_TAKEN = "Seat validation failed: one or more seats already locked"
SESSION_COOKIE = "session"

_T = TypeVar("_T")


class OrderRejectedError(Exception):
    """A request the service refuses, with the status and the message to answer."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def _unauthorized(message: str, *, invalid: bool) -> OrderRejectedError:
    """A 401 with the RFC 6750 challenge: ``invalid_token`` only when credentials were sent."""
    challenge = 'Bearer error="invalid_token"' if invalid else "Bearer"
    return OrderRejectedError(401, message, {"WWW-Authenticate": challenge})


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # bad JSON, bad UTF-8, a >4300-digit int, deep nesting
        raise OrderRejectedError(422, "body must be valid JSON") from None
    if not isinstance(payload, dict):
        raise OrderRejectedError(422, "body must be a JSON object")
    return payload


def _user(payload: dict[str, Any]) -> str:
    user = payload.get("user")
    if not isinstance(user, str) or not user:
        raise OrderRejectedError(422, "'user' must be a non-empty string")
    if not _is_utf8(user):  # JSON allows lone surrogates; SQLite and the response cannot hold them
        raise OrderRejectedError(422, "'user' must be valid Unicode")
    return user


def parse_order(
    body: bytes, known_seats: frozenset[str], *, default_user: str | None = None
) -> tuple[list[str], str]:
    """Validate a ``POST /orders`` body into (seat ids as strings, user).

    Seat ids may be JSON strings or integers (``1`` and ``"1"`` are the same seat);
    anything else, and every other malformed body, is a 422, an unknown seat a 404.
    ``default_user`` (the token's user under auth) stands in for a missing ``"user"``.
    """
    payload = _json_object(body)
    raw_seats = payload.get("seats")
    if not isinstance(raw_seats, list) or not raw_seats:
        raise OrderRejectedError(422, "'seats' must be a non-empty list of seat ids")
    seats: list[str] = []
    for raw in raw_seats:
        # bool is an int subclass; True is not seat "1".
        if isinstance(raw, bool) or not isinstance(raw, (str, int)):
            raise OrderRejectedError(422, f"seat ids must be strings or integers, not {_json_type(raw)}")
        seats.append(str(raw))
    if len(set(seats)) != len(seats):
        raise OrderRejectedError(422, "'seats' must not repeat a seat")
    user = default_user if default_user is not None and "user" not in payload else _user(payload)
    for seat in seats:
        if seat not in known_seats:
            # repr() escapes lone surrogates, which could not be encoded into the response
            raise OrderRejectedError(404, f"unknown seat {seat!r}")
    return seats, user


def _json_type(value: object) -> str:
    names = {bool: "a boolean", float: "a number with a fraction", list: "a list", dict: "an object"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _answer(content: Any, status: int, arrival_ns: int, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(content, status, headers={"X-Arrival-Ns": str(arrival_ns), **(headers or {})})


def _error(status: int, message: str, arrival_ns: int, headers: dict[str, str] | None = None) -> Response:
    return _answer({"error": message}, status, arrival_ns, headers)


def _seat_json(seat: SeatState, *, with_orders: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"id": seat.id, "holders": list(seat.holders)}
    if with_orders:
        body["orders"] = list(seat.orders)
        if seat.withdrawn:
            body["withdrawn"] = True
    return body


class _Sessions:
    """Login tokens, in memory, each bound to the user it was issued to.

    They outlive ``POST /reset``, which frees seats between rounds while the clients keep
    the tokens they logged in with, as a real session store outlives a data reset.
    """

    def __init__(self) -> None:
        self._users: dict[str, str] = {}

    def login(self, user: str) -> str:
        token = secrets.token_urlsafe(24)
        self._users[token] = user
        return token

    def user(self, token: str) -> str | None:
        return self._users.get(token)


Handler = Callable[["_Service", Request, bytes, int], Awaitable[Response]]


def _whole_request(handler: Handler) -> Callable[[_Service, Request], Awaitable[Response]]:
    """Call ``handler(self, request, body, arrival)`` once the whole request is in.

    hypercorn calls the app at HEADERS, so the body is awaited before anything is decided; the
    arrival stamp (``X-Arrival-Ns``) is the instant it was complete. A client that left before
    its body came gets a 400 nobody reads. A rejected request (``OrderRejectedError``) or a
    seat already taken (``SeatTakenError``, a 409) is answered here, for every handler.
    """

    @functools.wraps(handler)
    async def read_first(self: _Service, request: Request) -> Response:
        try:
            body = await request.body()
        except ClientDisconnect:
            return Response(status_code=400)  # nobody is left to read it
        arrival = request.state.arrival_ns = time.perf_counter_ns()
        try:
            return await handler(self, request, body, arrival)
        except OrderRejectedError as exc:
            return _error(exc.status, exc.message, arrival, exc.headers)
        except SeatTakenError:
            return _error(409, SEAT_TAKEN, arrival)
        except NotHeldError as exc:
            return _error(409, f"seat {exc.args[0]!r} is not held by that user", arrival)

    return read_first


class _Service:
    """The handlers, sharing one store whose calls never overlap.

    Store calls run right on the event loop: one takes tens of microseconds, while a
    hop to a worker thread costs 150-200 µs (measured on 2 cores, 100 x 16 orders on
    fresh connections: 1.35 s of server CPU through ``to_thread.run_sync`` with a
    ``CapacityLimiter(1)``, 0.66 s on the loop, 0.5 s for as many bare ``/health``
    calls). The loop is then the process's single writer, so SQLite's busy handler,
    which sleeps 1-100 ms per retry, never runs between our own requests. The store
    fails at once on another process's lock instead of waiting; only then does the
    call go to a worker thread (one at a time), which waits up to busy_timeout, and
    every call behind it queues there too, so the calls keep their order and never
    overlap.
    """

    def __init__(
        self, store: SeatStore, strategy: Strategy, window_ms: float, seats: int, auth: bool
    ) -> None:
        self.store = store
        self.strategy = strategy
        self.window_s = window_ms / 1000
        self.seats = seats
        self.auth = auth
        self.sessions = _Sessions()
        self._book = self._book_safe if strategy == "safe" else self._book_unsafe
        self._limiter: anyio.CapacityLimiter | None = None  # made in the running loop, on first need
        self._queued = 0  # calls waiting for or running in the worker thread
        store.wait_for_locks(False)

    async def _db(self, func: Callable[..., _T], *args: Any) -> _T:
        if not self._queued:
            try:
                return func(*args)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(1)
        self._queued += 1
        try:
            return await anyio.to_thread.run_sync(self._call_waiting, func, *args, limiter=self._limiter)
        finally:
            self._queued -= 1

    def _call_waiting(self, func: Callable[..., _T], *args: Any) -> _T:
        self.store.wait_for_locks(True)
        try:
            return func(*args)
        finally:
            self.store.wait_for_locks(False)

    async def _book_safe(self, seats: Sequence[str], user: str) -> int:
        return await self._db(self.store.book, seats, user)

    async def _book_unsafe(self, seats: Sequence[str], user: str) -> int:
        """Check, wait, act: the window lets concurrent orders all pass the check.

        The wait must be an ``await``: a blocking sleep would hold the event loop and
        serialise the requests, hiding the bug it is here to show.
        """
        if await self._db(self.store.any_booked, seats):
            raise SeatTakenError(seats[0])
        await anyio.sleep(self.window_s)
        return await self._db(self.store.book_unchecked, seats, user)

    def _token_user(self, request: Request) -> str:
        """The user whose token came with the request: the bearer header, else the session cookie.

        A header that is sent decides alone, so a bad one is refused even beside a good
        cookie: a client never books under a session it did not mean to use.
        """
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, token = header.strip().partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                raise _unauthorized("Authorization must be 'Bearer <token>'", invalid=True)
        else:
            token = request.cookies.get(SESSION_COOKIE, "")
            if not token:
                raise _unauthorized(
                    "log in first: POST /login, then send 'Authorization: Bearer <token>'", invalid=False
                )
        user = self.sessions.user(token)
        if user is None:
            raise _unauthorized("invalid or unknown token", invalid=True)
        return user

    @_whole_request
    async def create_order(self, request: Request, body: bytes, arrival: int) -> Response:
        """Book, all or nothing; under auth as the token's user.

        An order naming another ``"user"`` than its token's is a 403 rather than booked
        under the token's name: a race whose clients send mismatched tokens is a bug in
        the test, which should show instead of passing with different holders.
        """
        token_user = self._token_user(request) if self.auth else None
        seats, user = parse_order(body, self.store.seat_ids, default_user=token_user)
        if token_user is not None and user != token_user:
            raise OrderRejectedError(403, f"the token belongs to {token_user!r}, not {user!r}")
        order_id = await self._book(seats, user)
        return _answer({"order_id": order_id, "seats": seats}, 201, arrival)

    @_whole_request
    async def login(self, request: Request, body: bytes, arrival: int) -> Response:
        """``{"user"}`` -> a fresh token, in the body and as an HttpOnly ``session`` cookie."""
        user = _user(_json_object(body))
        token = self.sessions.login(user)
        response = _answer({"token": token, "user": user}, 200, arrival)
        secure = request.url.scheme == "https"
        response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="lax", secure=secure)
        return response

    async def list_seats(self, request: Request) -> Response:
        arrival = request.state.arrival_ns = time.perf_counter_ns()
        seats = await self._db(self.store.all_seats)
        return _answer([_seat_json(seat, with_orders=False) for seat in seats], 200, arrival)

    async def get_seat(self, request: Request) -> Response:
        arrival = request.state.arrival_ns = time.perf_counter_ns()
        seat_id: str = request.path_params["seat_id"]
        seat = await self._db(self.store.seat, seat_id)
        if seat is None:
            return _error(404, f"unknown seat {seat_id!r}", arrival)
        return _answer(_seat_json(seat, with_orders=True), 200, arrival)

    @_whole_request
    async def withdraw_seat(self, request: Request, body: bytes, arrival: int) -> Response:
        """Take a free seat off sale: 200; a booked or withdrawn seat: 409; unknown: 404.

        A second operation on a seat, so one race can mix it with bookings (exactly one of
        all of them may succeed). The unsafe strategy checks, waits, then acts, as it books.
        """
        seat_id: str = request.path_params["seat_id"]
        if self.auth:
            self._token_user(request)
        if seat_id not in self.store.seat_ids:
            raise OrderRejectedError(404, f"unknown seat {seat_id!r}")
        if self.strategy == "safe":
            await self._db(self.store.withdraw, seat_id)
        else:
            if await self._db(self.store.any_booked, [seat_id]):
                raise SeatTakenError(seat_id)
            await anyio.sleep(self.window_s)
            await self._db(self.store.withdraw_unchecked, seat_id)
        return _answer({"seat": seat_id, "withdrawn": True}, 200, arrival)

    @_whole_request
    async def cancel_seat(self, request: Request, body: bytes, arrival: int) -> Response:
        """``{"user"}``: free the seat that user holds: 200; not held by that user: 409; unknown
        seat: 404; under auth only the token's own booking.

        The operation a model of seats calls ``cancel``: a race can book, cancel and read one
        seat at once. The unsafe strategy checks, waits, then deletes, so two cancellations of
        one booking can both succeed.
        """
        seat_id: str = request.path_params["seat_id"]
        token_user = self._token_user(request) if self.auth else None
        user = _user(_json_object(body))
        if token_user is not None and user != token_user:
            raise OrderRejectedError(403, f"the token belongs to {token_user!r}, not {user!r}")
        if seat_id not in self.store.seat_ids:
            raise OrderRejectedError(404, f"unknown seat {seat_id!r}")
        if self.strategy == "safe":
            await self._db(self.store.cancel, seat_id, user)
        else:
            if not await self._db(self.store.holds, seat_id, user):
                raise NotHeldError(seat_id)
            await anyio.sleep(self.window_s)
            await self._db(self.store.cancel_unchecked, seat_id, user)
        return _answer({"seat": seat_id, "cancelled": user}, 200, arrival)

    @_whole_request
    async def reset(self, request: Request, body: bytes, arrival: int) -> Response:
        await self._db(self.store.reset)
        return _answer({"ok": True}, 200, arrival)

    async def health(self, request: Request) -> Response:
        arrival = time.perf_counter_ns()
        return _answer({"ok": True, "strategy": self.strategy, "seats": self.seats}, 200, arrival)


async def _raised_error(request: Request, exc: Exception) -> Response:
    """JSON, with the arrival stamp, for Starlette's own 404/405 and for a busy database.

    ``sqlite3.OperationalError`` is "database is locked" once busy_timeout ran out
    (another process holds the write lock): a 503 the client may retry, never a 500.
    """
    arrival: int = getattr(request.state, "arrival_ns", None) or time.perf_counter_ns()
    if isinstance(exc, HTTPException):
        return _error(exc.status_code, exc.detail, arrival, dict(exc.headers or {}))
    return _error(503, f"database unavailable: {exc}", arrival, {"Retry-After": "1"})


def create_app(
    store: SeatStore,
    *,
    strategy: Strategy = "safe",
    window_ms: float = 5.0,
    seats: int | None = None,
    auth: bool = False,
) -> Starlette:
    """Build the ASGI app over an open store; the caller opens and closes the store.

    The app sets the store to fail at once on another connection's lock (it then waits
    in a worker thread instead, see ``_Service``). ``seats`` is the configured seat
    count reported by ``/health`` (defaults to the number of seats in the store).
    ``auth=True`` adds ``POST /login`` and makes ``POST /orders`` need its token.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    if window_ms < 0:
        raise ValueError(f"window_ms must be >= 0, not {window_ms!r}")
    service = _Service(store, strategy, window_ms, len(store.seat_ids) if seats is None else seats, auth)
    routes = [
        Route("/orders", service.create_order, methods=["POST"]),
        *([Route("/login", service.login, methods=["POST"])] if auth else []),
        Route("/seats", service.list_seats, methods=["GET"]),
        Route("/seats/{seat_id}", service.get_seat, methods=["GET"]),
        Route("/seats/{seat_id}", service.withdraw_seat, methods=["DELETE"]),
        Route("/seats/{seat_id}/cancel", service.cancel_seat, methods=["POST"]),
        Route("/reset", service.reset, methods=["POST"]),
        Route("/health", service.health, methods=["GET"]),
    ]
    handlers = {HTTPException: _raised_error, sqlite3.OperationalError: _raised_error}
    return Starlette(routes=routes, exception_handlers=handlers)
