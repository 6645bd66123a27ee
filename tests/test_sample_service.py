"""The bundled sample service, served for real: a uvicorn subprocess on a socket we bound."""

from __future__ import annotations

import json
import os
import re
import secrets
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import h11
import httpx
import pytest

import sample_service
from pytest_seatrace.service import ServiceError, ServiceHandle, ServiceStartError, start_sample_service
from sample_service import SEAT_TAKEN, SESSION_COOKIE, SeatStore, create_app

SEATS = 16
CLIENTS = 100
REQUEST_TIMEOUT = 10.0
RACE_TIMEOUT = 120.0
REPO_ROOT = Path(sample_service.__file__).resolve().parent.parent


@dataclass(frozen=True)
class Answer:
    seat: str
    user: str
    status: int
    body: Any


# -- a lean concurrent client: one connection per client, opened before the start gate --


@dataclass
class Gate:
    """All clients of a seat connect, then ``opened`` releases them together."""

    clients: int
    connected: int = 0
    all_connected: anyio.Event = field(default_factory=anyio.Event)
    opened: anyio.Event = field(default_factory=anyio.Event)

    async def wait(self) -> None:
        self.connected += 1
        if self.connected == self.clients:
            self.all_connected.set()
        await self.opened.wait()


async def _client(port: int, seat: str, user: str, gate: Gate, answers: list[Answer]) -> None:
    """POST one order on its own connection: build, connect, wait at the gate, send, read."""
    body = json.dumps({"seats": [seat], "user": user}).encode()
    conn = h11.Connection(h11.CLIENT)
    headers = [
        ("Host", "127.0.0.1"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
    ]
    events = (
        h11.Request(method="POST", target="/orders", headers=headers),
        h11.Data(data=body),
        h11.EndOfMessage(),
    )
    request = b"".join(conn.send(event) or b"" for event in events)
    with anyio.fail_after(REQUEST_TIMEOUT):
        stream = await anyio.connect_tcp("127.0.0.1", port)
    async with stream:
        await gate.wait()
        with anyio.fail_after(REQUEST_TIMEOUT):
            await stream.send(request)
            status, chunks = 0, []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive())
                elif isinstance(event, h11.Response):
                    status = event.status_code
                elif isinstance(event, h11.Data):
                    chunks.append(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    break
    answers.append(Answer(seat, user, status, json.loads(b"".join(chunks))))


async def _race(port: int, seats: int, clients: int) -> list[Answer]:
    """Seat after seat, ``clients`` connections each, all released by one gate per seat."""
    answers: list[Answer] = []
    with anyio.fail_after(RACE_TIMEOUT):
        for seat in range(1, seats + 1):
            gate = Gate(clients)
            async with anyio.create_task_group() as tg:
                for client in range(1, clients + 1):
                    tg.start_soon(_client, port, str(seat), f"vu-{seat}-{client}", gate, answers)
                await gate.all_connected.wait()
                gate.opened.set()
    return answers


def race(service: ServiceHandle, seats: int = SEATS, clients: int = CLIENTS) -> list[Answer]:
    answers: list[Answer] = anyio.run(_race, service.port, seats, clients)
    return answers


# -- fixtures --


@pytest.fixture(scope="module")
def shared_service() -> Iterator[ServiceHandle]:
    with start_sample_service(strategy="safe", seats=SEATS) as service:
        yield service


ClientOf = Callable[[ServiceHandle], httpx.Client]


@pytest.fixture(scope="module")
def module_clients() -> Iterator[ClientOf]:
    """One client per service, made once per module: each new httpx.Client builds an SSL
    context (tens of ms)."""
    made: dict[str, httpx.Client] = {}

    def client_of(service: ServiceHandle) -> httpx.Client:
        if service.url not in made:
            made[service.url] = httpx.Client(base_url=service.url, trust_env=False, timeout=REQUEST_TIMEOUT)
        return made[service.url]

    yield client_of
    for http in made.values():
        http.close()


@pytest.fixture
def client(shared_service: ServiceHandle, module_clients: ClientOf) -> httpx.Client:
    """The shared service with every seat free."""
    shared_service.reset()
    return module_clients(shared_service)


def arrival_ns(response: httpx.Response) -> int:
    return int(response.headers["X-Arrival-Ns"])


def assert_json_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    arrival_ns(response)
    error = response.json()["error"]
    assert isinstance(error, str)
    assert error
    return error


# -- the race invariants --


def test_safe_sells_each_seat_once_under_100_concurrent_orders() -> None:
    with start_sample_service(strategy="safe", seats=SEATS) as service:
        answers = race(service)

        assert len(answers) == SEATS * CLIENTS
        assert Counter(a.status for a in answers) == {201: SEATS, 409: SEATS * CLIENTS - SEATS}
        winners = {a.seat: a for a in answers if a.status == 201}
        assert sorted(winners, key=int) == [str(seat) for seat in range(1, SEATS + 1)]
        assert all(a.body == {"error": SEAT_TAKEN} for a in answers if a.status == 409)
        for seat, winner in winners.items():
            assert winner.body["seats"] == [seat]
            assert service.holders(seat) == [winner.user]


def test_unsafe_double_books_under_100_concurrent_orders() -> None:
    # 50 ms between check and act: all 100 connections are open before the gate and
    # their requests reach the service within a few ms, so many pass the check.
    with start_sample_service(strategy="unsafe", seats=SEATS, window_ms=50) as service:
        answers = race(service)

        assert len(answers) == SEATS * CLIENTS
        statuses = Counter(a.status for a in answers)
        assert set(statuses) <= {201, 409}
        assert statuses[201] > SEATS
        wins = Counter(a.seat for a in answers if a.status == 201)
        holders = {str(seat): service.holders(seat) for seat in range(1, SEATS + 1)}
        # Every acknowledged booking is recorded: a double booking shows as holders.
        assert {seat: len(users) for seat, users in holders.items() if users} == dict(wins)
        assert max(len(users) for users in holders.values()) >= 2


# -- the API --


def test_order_answers_201_and_seat_shows_holder_and_order(client: httpx.Client) -> None:
    response = client.post("/orders", json={"seats": [3, "4"], "user": "alice"})
    assert response.status_code == 201
    order = response.json()
    assert order["seats"] == ["3", "4"]
    assert isinstance(order["order_id"], int)
    for seat in ("3", "4"):
        assert client.get(f"/seats/{seat}").json() == {
            "id": seat,
            "holders": ["alice"],
            "orders": [order["order_id"]],
        }


def test_taken_seat_answers_409_whether_named_by_int_or_string(client: httpx.Client) -> None:
    assert client.post("/orders", json={"seats": [5], "user": "alice"}).status_code == 201
    for seat in (5, "5"):
        response = client.post("/orders", json={"seats": [seat], "user": "bob"})
        assert assert_json_error(response, 409) == SEAT_TAKEN
    assert client.get("/seats/5").json()["holders"] == ["alice"]


def test_multi_seat_order_is_all_or_nothing(client: httpx.Client) -> None:
    assert client.post("/orders", json={"seats": [2], "user": "bob"}).status_code == 201
    assert assert_json_error(client.post("/orders", json={"seats": [1, 2], "user": "alice"}), 409)
    assert client.get("/seats/1").json() == {"id": "1", "holders": [], "orders": []}
    assert client.get("/seats/2").json()["holders"] == ["bob"]
    # An unknown seat in the order books nothing either.
    assert "99" in assert_json_error(client.post("/orders", json={"seats": [1, 99], "user": "alice"}), 404)
    assert client.get("/seats/1").json()["holders"] == []


BAD_BODIES = {
    "malformed JSON": b'{"seats": [1], "user": ',
    "empty body": b"",
    "invalid UTF-8": b'{"seats": [1], "user": "\xff"}',
    "a list": b"[1]",
    "a string": b'"seats"',
    "null": b"null",
    "seats missing": b'{"user": "a"}',
    "seats empty": b'{"seats": [], "user": "a"}',
    "seats a string": b'{"seats": "1", "user": "a"}',
    "seats an object": b'{"seats": {"1": 1}, "user": "a"}',
    "seat repeated": b'{"seats": [1, 1], "user": "a"}',
    "seat repeated as int and string": b'{"seats": [1, "1"], "user": "a"}',
    "seat a bool": b'{"seats": [true], "user": "a"}',
    "seat a float": b'{"seats": [1.0], "user": "a"}',
    "seat NaN": b'{"seats": [NaN], "user": "a"}',
    "seat null": b'{"seats": [null], "user": "a"}',
    "seat nested list": b'{"seats": [[1]], "user": "a"}',
    "seat an object": b'{"seats": [{"id": 1}], "user": "a"}',
    "user missing": b'{"seats": [1]}',
    "user empty": b'{"seats": [1], "user": ""}',
    "user an int": b'{"seats": [1], "user": 5}',
    "user null": b'{"seats": [1], "user": null}',
    "user a list": b'{"seats": [1], "user": ["a"]}',
    "user a lone surrogate": b'{"seats": [1], "user": "\\ud800"}',
    "a 5000-digit seat": b'{"seats": [' + b"1" * 5000 + b'], "user": "a"}',
    "nested 100000 deep": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_order_answers_422_and_books_nothing(client: httpx.Client, body: bytes) -> None:
    response = client.post("/orders", content=body, headers={"Content-Type": "application/json"})
    assert_json_error(response, 422)
    assert all(seat["holders"] == [] for seat in client.get("/seats").json())


@pytest.mark.parametrize("seat", [17, 0, -1, "abc", "", "01", "\ud800"])
def test_unknown_seat_answers_404_naming_it(client: httpx.Client, seat: int | str) -> None:
    # json.dumps escapes a lone surrogate as \ud800 (httpx's json= would fail to encode it)
    body = json.dumps({"seats": [seat], "user": "a"}).encode()
    response = client.post("/orders", content=body, headers={"Content-Type": "application/json"})
    assert repr(str(seat)) in assert_json_error(response, 404)


def test_seat_reads(client: httpx.Client) -> None:
    assert client.post("/orders", json={"seats": [10], "user": "carol"}).status_code == 201
    seats = client.get("/seats").json()
    assert [seat["id"] for seat in seats] == [str(n) for n in range(1, SEATS + 1)]
    assert {seat["id"]: seat["holders"] for seat in seats}["10"] == ["carol"]
    assert "'99'" in assert_json_error(client.get("/seats/99"), 404)


def test_reset_frees_every_seat(client: httpx.Client) -> None:
    assert client.post("/orders", json={"seats": [1, 2, 3], "user": "alice"}).status_code == 201
    response = client.post("/reset")
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    arrival_ns(response)
    assert all(seat["holders"] == [] for seat in client.get("/seats").json())
    assert client.post("/orders", json={"seats": [1], "user": "bob"}).status_code == 201


def test_health(client: httpx.Client) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "strategy": "safe", "seats": SEATS}


def test_unknown_route_and_method_answer_json(client: httpx.Client) -> None:
    assert_json_error(client.get("/nowhere"), 404)
    response = client.get("/orders")
    assert_json_error(response, 405)
    assert response.headers["allow"] == "POST"


def test_every_answer_is_stamped_with_this_machines_monotonic_clock(client: httpx.Client) -> None:
    """X-Arrival-Ns is perf_counter_ns in the service, comparable with ours (CLOCK_MONOTONIC)."""
    calls = [
        ("POST", "/orders", {"seats": [7], "user": "alice"}, 201),
        ("POST", "/orders", {"seats": [7], "user": "bob"}, 409),
        ("POST", "/orders", {"seats": [], "user": "bob"}, 422),
        ("POST", "/orders", {"seats": [99], "user": "bob"}, 404),
        ("GET", "/seats/7", None, 200),
        ("GET", "/seats", None, 200),
        ("GET", "/health", None, 200),
        ("GET", "/nowhere", None, 404),
        ("POST", "/reset", None, 200),
    ]
    for method, path, body, status in calls:
        before = time.perf_counter_ns()
        response = client.request(method, path, json=body)
        after = time.perf_counter_ns()
        assert response.status_code == status, (method, path, response.text)
        if sys.platform == "linux":
            assert before <= arrival_ns(response) <= after, (method, path)
        else:
            assert arrival_ns(response) > 0


def test_busy_database_answers_503_with_retry_after(tmp_path: Path) -> None:
    """Another process holding the write lock: wait busy_timeout, then 503, never 500."""
    db = tmp_path / "seats.db"
    with (
        start_sample_service(db_path=db, seats=4, busy_timeout_ms=200) as service,
        httpx.Client(base_url=service.url, trust_env=False, timeout=REQUEST_TIMEOUT) as http,
    ):
        locker = sqlite3.connect(db, isolation_level=None)
        try:
            locker.execute("BEGIN IMMEDIATE")
            started = time.monotonic()
            response = http.post("/orders", json={"seats": [1], "user": "alice"})
            waited = time.monotonic() - started
            assert "locked" in assert_json_error(response, 503)
            assert response.headers["retry-after"] == "1"
            assert waited >= 0.15  # it waited for the lock (busy_timeout) before giving up
            assert http.get("/seats/1").json()["holders"] == []  # WAL readers go on
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert http.post("/orders", json={"seats": [1], "user": "alice"}).status_code == 201


# -- durability and restart --


def test_acknowledged_bookings_survive_sigkill_and_restart(tmp_path: Path) -> None:
    db = tmp_path / "seats.db"
    acknowledged: dict[str, str] = {}
    with start_sample_service(db_path=db, seats=8) as service:
        for seats, user in [([1], "u1"), ([2], "u2"), ([3], "u3"), ([5, 6], "u56")]:
            status, body = service.request("POST", "/orders", {"seats": seats, "user": user})
            assert status == 201, body
            acknowledged.update(dict.fromkeys(body["seats"], user))
        service.kill()
        assert service.returncode == -signal.SIGKILL

    with start_sample_service(db_path=db, seats=10) as restarted:
        for seat in range(1, 11):
            expected = [acknowledged[str(seat)]] if str(seat) in acknowledged else []
            assert restarted.holders(seat) == expected, seat
        status, body = restarted.request("POST", "/orders", {"seats": [1], "user": "late"})
        assert (status, body) == (409, {"error": SEAT_TAKEN})
        assert restarted.request("GET", "/health")[1]["seats"] == 10


def test_start_error_carries_the_log(tmp_path: Path) -> None:
    with (
        pytest.raises(ServiceStartError, match="invalid choice"),
        start_sample_service(strategy="bogus", db_path=tmp_path / "seats.db"),
    ):
        pass


def test_stop_is_clean_and_temp_dir_removed() -> None:
    with start_sample_service() as service:
        pass
    assert service.returncode in (0, -signal.SIGTERM)
    assert not service.db_path.parent.exists()


def test_app_in_process(tmp_path: Path) -> None:
    """The ASGI app alone, over httpx's ASGI transport (no lifespan runs there)."""

    async def scenario(store: SeatStore) -> None:
        transport = httpx.ASGITransport(app=create_app(store, strategy="safe"))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            assert (await http.post("/orders", json={"seats": [1], "user": "alice"})).status_code == 201
            assert (await http.post("/orders", json={"seats": ["1"], "user": "bob"})).status_code == 409
            assert (await http.get("/seats/1")).json()["holders"] == ["alice"]
            assert (await http.get("/health")).json() == {"ok": True, "strategy": "safe", "seats": 2}

    store = SeatStore.open(tmp_path / "seats.db", seats=2)
    try:
        anyio.run(scenario, store)
    finally:
        store.close()


# -- --auth: orders need a token from POST /login --


@pytest.fixture
def auth_client(auth_service: ServiceHandle, module_clients: ClientOf) -> httpx.Client:
    """The auth service with every seat free, and a client with no session cookie yet."""
    http = module_clients(auth_service)
    http.cookies.clear()
    return http


def login(http: httpx.Client, user: str) -> str:
    response = http.post("/login", json={"user": user})
    assert response.status_code == 200, response.text
    arrival_ns(response)
    body = response.json()
    assert set(body) == {"token", "user"}
    assert body["user"] == user
    token: str = body["token"]
    assert len(token) >= 20  # random enough that guessing one is not a way in
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_auth_order_without_a_token_is_401_with_a_bearer_challenge(auth_client: httpx.Client) -> None:
    for body in ({"seats": [1], "user": "alice"}, {"seats": "not even valid"}):  # 401 before 422
        response = auth_client.post("/orders", json=body)
        assert "POST /login" in assert_json_error(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
    # Reads need no token.
    assert auth_client.get("/seats/1").json()["holders"] == []
    assert auth_client.get("/seats").status_code == 200
    assert auth_client.get("/health").json() == {"ok": True, "strategy": "safe", "seats": 4}


def test_auth_login_then_order_books_as_the_tokens_user(auth_client: httpx.Client) -> None:
    alice, alice_again, bob = (
        login(auth_client, "alice"),
        login(auth_client, "alice"),
        login(auth_client, "bob"),
    )
    assert len({alice, alice_again, bob}) == 3  # a fresh token per login
    auth_client.cookies.clear()  # the header alone, not the cookie the logins set
    response = auth_client.post("/orders", json={"seats": [1], "user": "alice"}, headers=bearer(alice))
    assert response.status_code == 201, response.text
    arrival_ns(response)
    # "user" may be left out: the token says who books; the scheme's case does not matter.
    response = auth_client.post("/orders", json={"seats": [2]}, headers={"Authorization": f"bearer {bob}"})
    assert response.status_code == 201, response.text
    assert auth_client.post("/orders", json={"seats": [3]}, headers=bearer(alice_again)).status_code == 201
    holders = {seat: auth_client.get(f"/seats/{seat}").json()["holders"] for seat in (1, 2, 3)}
    assert holders == {1: ["alice"], 2: ["bob"], 3: ["alice"]}
    # A taken seat is still a 409, and a bad body still a 422, once the token is good.
    assert assert_json_error(auth_client.post("/orders", json={"seats": [1]}, headers=bearer(bob)), 409)
    assert assert_json_error(auth_client.post("/orders", json={"seats": []}, headers=bearer(bob)), 422)


def test_auth_order_for_another_user_is_403_and_books_nothing(auth_client: httpx.Client) -> None:
    token = login(auth_client, "alice")
    response = auth_client.post("/orders", json={"seats": [1], "user": "mallory"}, headers=bearer(token))
    message = assert_json_error(response, 403)
    assert "'alice'" in message
    assert "'mallory'" in message
    assert auth_client.get("/seats/1").json()["holders"] == []


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(f"Bearer {secrets.token_urlsafe(24)}", id="forged token"),
        pytest.param("Bearer", id="no token"),
        pytest.param("Token {token}", id="good token under another scheme"),
        pytest.param("Basic YWxpY2U6c2VjcmV0", id="basic scheme"),
        pytest.param("{token}x", id="good token without a scheme"),
        pytest.param("Bearer {token}x", id="altered token"),
        pytest.param("Bearer {token}", id="token of another user"),
    ],
)
def test_auth_wrong_or_forged_token_is_401(auth_client: httpx.Client, authorization: str) -> None:
    token = login(auth_client, "alice")  # also sets alice's cookie: a header that is sent decides alone
    body = {"seats": [1], "user": "bob"}
    response = auth_client.post(
        "/orders", json=body, headers={"Authorization": authorization.format(token=token)}
    )
    if authorization == "Bearer {token}":
        assert_json_error(response, 403)  # the token is good, only it is alice's and the order bob's
    else:
        assert_json_error(response, 401)
        assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'
    assert auth_client.get("/seats/1").json()["holders"] == []


def test_auth_session_cookie_books_without_the_header(auth_client: httpx.Client) -> None:
    response = auth_client.post("/login", json={"user": "carol"})
    assert response.status_code == 200
    token = response.json()["token"]
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}={token};")
    assert "httponly" in cookie.lower()
    assert "path=/" in cookie.lower()
    assert "secure" not in cookie.lower()  # plain http: a Secure cookie would never come back
    assert auth_client.cookies[SESSION_COOKIE] == token
    response = auth_client.post("/orders", json={"seats": [4]})  # the jar sends the cookie
    assert response.status_code == 201, response.text
    assert auth_client.get("/seats/4").json()["holders"] == ["carol"]
    auth_client.cookies.set(SESSION_COOKIE, secrets.token_urlsafe(24))
    response = auth_client.post("/orders", json={"seats": [3]})
    assert_json_error(response, 401)
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


def test_auth_tokens_survive_reset(auth_service: ServiceHandle, auth_client: httpx.Client) -> None:
    token = login(auth_client, "dave")
    auth_client.cookies.clear()
    assert auth_client.post("/orders", json={"seats": [1]}, headers=bearer(token)).status_code == 201
    auth_service.reset()
    assert auth_service.holders(1) == []
    assert auth_client.post("/orders", json={"seats": [1]}, headers=bearer(token)).status_code == 201
    assert auth_service.holders(1) == ["dave"]


@pytest.mark.parametrize(
    "body",
    [b"", b"{", b"[]", b"{}", b'{"user": ""}', b'{"user": 5}', b'{"user": null}', b'{"user": "\\ud800"}'],
)
def test_auth_login_with_a_bad_body_is_422(auth_client: httpx.Client, body: bytes) -> None:
    response = auth_client.post("/login", content=body, headers={"Content-Type": "application/json"})
    assert_json_error(response, 422)
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


def test_login_exists_only_with_auth(client: httpx.Client) -> None:
    assert_json_error(client.post("/login", json={"user": "alice"}), 404)
    assert client.post("/orders", json={"seats": [1], "user": "alice"}).status_code == 201


def test_handle_login_and_request_with_token(
    auth_service: ServiceHandle, shared_service: ServiceHandle
) -> None:
    assert auth_service.auth
    assert auth_service.server == "uvicorn"
    assert not auth_service.tls
    assert auth_service.ca_path is None
    auth_service.reset()
    token = auth_service.login("erin")
    assert auth_service.request("POST", "/orders", {"seats": [2]})[0] == 401
    status, body = auth_service.request("POST", "/orders", {"seats": [2]}, token=token)
    assert status == 201, body
    assert auth_service.holders(2) == ["erin"]
    with pytest.raises(ServiceError, match=r"404.*auth=True"):
        shared_service.login("erin")


def test_app_in_process_with_auth(tmp_path: Path) -> None:
    async def scenario(store: SeatStore) -> None:
        transport = httpx.ASGITransport(app=create_app(store, auth=True))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
            assert (await http.post("/orders", json={"seats": [1], "user": "alice"})).status_code == 401
            token = (await http.post("/login", json={"user": "alice"})).json()["token"]
            response = await http.post("/orders", json={"seats": [1]}, headers=bearer(token))
            assert response.status_code == 201
            assert (await http.get("/seats/1")).json()["holders"] == ["alice"]

    store = SeatStore.open(tmp_path / "seats.db", seats=1)
    try:
        anyio.run(scenario, store)
    finally:
        store.close()


# -- TLS and the start-up arguments --


def test_uvicorn_serves_https_with_a_throwaway_ca(tmp_path: Path) -> None:
    db = tmp_path / "seats.db"
    with start_sample_service(db_path=db, seats=2, tls=True) as service:
        assert re.fullmatch(r"https://127\.0\.0\.1:\d+", service.url)
        assert service.tls
        assert service.server == "uvicorn"
        assert service.ca_path is not None
        assert service.ca_path.parent == tmp_path
        assert "BEGIN CERTIFICATE" in service.ca_path.read_text()
        status, body = service.request("POST", "/orders", {"seats": [1], "user": "alice"})
        assert status == 201, body
        assert service.holders(1) == ["alice"]
        context = service.ssl_context()
        assert context is not None
        with httpx.Client(
            base_url=service.url, verify=context, trust_env=False, timeout=REQUEST_TIMEOUT
        ) as http:
            response = http.get("/seats/1")
            assert response.http_version == "HTTP/1.1"
            assert response.json()["holders"] == ["alice"]
        with (
            pytest.raises(httpx.ConnectError),
            httpx.Client(trust_env=False, timeout=REQUEST_TIMEOUT) as http,
        ):
            http.get(service.url + "/health")  # the throwaway CA is trusted by nobody else
        assert f"listening on {service.url} " in service.log_tail()
    assert service.returncode in (0, -signal.SIGTERM)
    # The database and the log stay beside a given db_path; the throwaway CA goes with the service.
    assert not list(tmp_path.glob("*.pem"))
    assert db.exists()
    assert service.log_path.exists()


def test_tls_without_trustme_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "trustme", None)  # makes `import trustme` raise ImportError
    with (
        pytest.raises(ServiceStartError, match="tls=True needs trustme: pip install trustme"),
        start_sample_service(tls=True, db_path=tmp_path / "seats.db"),
    ):
        pass


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"server": "nginx"}, r"server must be one of uvicorn, hypercorn, not 'nginx'"),
        ({"h2_max_streams": 8}, r"h2_max_streams needs server='hypercorn'"),
        ({"server": "hypercorn", "h2_max_streams": 0}, r"h2_max_streams must be an int >= 1"),
    ],
)
def test_start_refuses_bad_arguments_before_starting(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with (
        pytest.raises(ValueError, match=message),
        start_sample_service(db_path=tmp_path / "seats.db", **kwargs),
    ):
        pass
    assert list(tmp_path.iterdir()) == []  # no log, no certificate, no process


# -- the command line --


def _module_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "sample_service", *args]


def _env() -> dict[str, str]:
    """Our environment, with the checkout first on PYTHONPATH (it need not be installed)."""
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _module_command(*args), capture_output=True, text=True, timeout=60, env=_env(), check=False
    )


def _read_line(stream: Any, timeout: float) -> str:
    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no line within {timeout}s"
    line: str = stream.readline()
    return line


def _start_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    """``python -m sample_service ARGS`` started, and its first line of output (the banner)."""
    process = subprocess.Popen(
        _module_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env()
    )
    try:
        return process, _read_line(process.stdout, timeout=30)
    except BaseException:
        process.kill()
        process.communicate(timeout=30)
        raise


def test_cli_port_0_prints_one_line_and_serves(tmp_path: Path) -> None:
    db = tmp_path / "seats.db"
    process, line = _start_cli("--port", "0", "--db", str(db), "--seats", "4")
    try:
        match = re.fullmatch(
            r"sample_service listening on http://127\.0\.0\.1:(\d+) \(strategy=safe, seats=4, db=(.+)\)\n",
            line,
        )
        assert match, line
        assert match[2] == str(db)
        response = httpx.get(f"http://127.0.0.1:{match[1]}/health", trust_env=False, timeout=REQUEST_TIMEOUT)
        assert response.json() == {"ok": True, "strategy": "safe", "seats": 4}
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode in (0, -signal.SIGTERM)
    assert stdout == ""
    assert "Traceback" not in stderr


def test_cli_busy_port_exits_2_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run("--port", str(port), "--db", str(tmp_path / "seats.db"))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert str(port) in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("kind", ["under a file", "a directory", "not a database"])
def test_cli_bad_database_exits_2_with_one_line(tmp_path: Path, kind: str) -> None:
    if kind == "under a file":
        (tmp_path / "file").write_text("")
        db = tmp_path / "file" / "seats.db"
    elif kind == "a directory":
        db = tmp_path
    else:
        db = tmp_path / "seats.db"
        db.write_bytes(b"this is not an SQLite database " * 100)
    result = _run("--port", "0", "--db", str(db))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "database" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--seats", "0"], "--seats"),
        (["--seats", "x"], "--seats"),
        (["--window-ms", "-1"], "--window-ms"),
        (["--window-ms", "nan"], "--window-ms"),
        (["--strategy", "bogus"], "--strategy"),
        (["--busy-timeout-ms", "-5"], "--busy-timeout-ms"),
        (["--fd", "987"], "fd 987"),
        (["--server", "nginx"], "--server"),
        (["--certfile", "cert.pem"], "--certfile and --keyfile go together"),
        (["--keyfile", "key.pem"], "--certfile and --keyfile go together"),
        (["--certfile", "missing.pem", "--keyfile", "missing.pem"], "cannot use certificate missing.pem"),
        (["--h2-max-streams", "8"], "--h2-max-streams needs --server hypercorn"),
        (["--server", "hypercorn", "--h2-max-streams", "0"], "--h2-max-streams"),
        (["--auth", "yes"], "unrecognized arguments: yes"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(tmp_path: Path, args: list[str], says: str) -> None:
    result = _run("--port", "0", "--db", str(tmp_path / "seats.db"), *args)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("python -m sample_service: error: ")
    assert says in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_cli_unknown_server_names_the_choices(tmp_path: Path) -> None:
    result = _run("--port", "0", "--db", str(tmp_path / "seats.db"), "--server", "nginx")
    assert result.returncode == 2
    [line] = result.stderr.splitlines()
    assert "argument --server: invalid choice: 'nginx'" in line
    assert "uvicorn" in line
    assert "hypercorn" in line


def test_sample_service_imports_neither_pytest_nor_the_plugin() -> None:
    code = (
        "import sys, sample_service.__main__; "
        "assert not {'pytest', 'pytest_seatrace'} & set(sys.modules), sorted(sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=_env(), check=False
    )
    assert result.returncode == 0, result.stderr
