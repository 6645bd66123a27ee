"""A service that answers 200 to everyone and says in the body who won.

Plenty of real APIs do this: ``200 {"ok": false, "reason": "taken"}`` for the losers. Judged by
status alone every client "wins", so the race needs a ``success=`` predicate that reads the
body. The predicate receives an ``httpx.Response`` with the body read, in both start modes.

The app is raced twice: in process through ``race.app`` (no socket, always gate mode), and over
a real socket with uvicorn in a thread (last-byte mode, the default for ``race.post``). A
server in a thread shares the GIL with the race engine, so its timings are worse than the
bundled sample service's, which runs in a subprocess; the verdict is the same.

Run: ``pytest examples/test_body_classified.py -v``.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvicorn

from pytest_seatrace import Attempt, Race

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class FirstComeApp:
    """``POST /book/{seat}``: ``200 {"ok": true}`` for the first client, ``200 {"ok": false}`` after."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan events to handle
        while (await receive()).get("more_body"):
            pass
        seat = scope["path"].rsplit("/", 1)[-1]
        won = seat not in self.taken
        self.taken.add(seat)
        body = json.dumps({"ok": won, "seat": seat} if won else {"ok": False, "reason": "taken"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def won(response: Any) -> bool:
    """A win is a 200 whose body says ``"ok": true``; every other answer is a clean loss."""
    return bool(response.status_code == 200 and response.json()["ok"])


def seat_url(attempt: Attempt) -> str:
    return f"/book/{attempt.resource}"


@pytest.fixture
def first_come_url() -> Iterator[str]:
    """``FirstComeApp`` served by uvicorn in a thread, on a socket bound here; its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    config = uvicorn.Config(FirstComeApp(), lifespan="off", log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.mark.race(resources=4, concurrency=25, success=lambda r: r.status_code == 200 and r.json()["ok"])
def test_in_process_app(race: Race) -> None:
    race.app = FirstComeApp()  # raced in process: no socket, gate mode
    result = race.post(seat_url)
    assert (result.wins, result.rejections, result.errors) == (4, 96, 0)
    assert result.status_counts == {200: 100}  # every answer was a 200; only the body differs
    assert result.mode == "gate"


@pytest.mark.race(resources=4, concurrency=25, success=won)
def test_over_a_socket(race: Race, first_come_url: str) -> None:
    race.base_url = first_come_url  # relative URLs resolve against it
    result = race.post(seat_url)
    assert (result.wins, result.rejections, result.errors) == (4, 96, 0)
    assert result.mode == "last-byte"
    for seat, wins in result.winners.items():
        assert json.loads(wins[0].body) == {"ok": True, "seat": str(seat)}  # first KiB of the winner's body


def test_status_alone_is_fooled(race: Race) -> None:
    """Without the predicate every 200 is a win: the race reports 25 winners per seat."""
    race.app = FirstComeApp()
    result = race.post(
        seat_url, resources=2, concurrency=25, check=False
    )  # check=False: inspect, do not raise
    assert result.wins == 50
    assert {v.kind for v in result.violations} == {"too-many"}
