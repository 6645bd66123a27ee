"""Locust side of ``seed_scenario.py``: the seed race (100 users x 16 seats) as a Locust test.

Run by ``seed_scenario.py`` in a subprocess (gevent monkey-patches the process), headless,
with ``-u`` equal to ``SEATRACE_CLIENTS``. Every user books each seat once, in seat order:

- ``SEATRACE_MODE=barrier``: all users meet at a barrier before each seat, so a seat's
  requests start together (the design's "Locust with a per-seat barrier");
- ``SEATRACE_MODE=free``: one barrier before the first seat (so spawning is not timed),
  then every user books its seats as fast as it can (a load test, not a race).

Each request is recorded (seat, user, status, start/end ``perf_counter_ns``, the service's
``X-Arrival-Ns``, error text); the last user to finish writes them as JSON to
``SEATRACE_OUT`` and stops the runner. ``--run-time`` bounds the run if a user gets stuck.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar

from gevent.event import Event  # type: ignore[import-not-found, import-untyped, unused-ignore]
from locust import FastHttpUser, constant  # type: ignore[import-not-found, unused-ignore]
from locust.exception import StopUser  # type: ignore[import-not-found, unused-ignore]

SEATS = int(os.environ.get("SEATRACE_SEATS", "16"))
CLIENTS = int(os.environ.get("SEATRACE_CLIENTS", "100"))
MODE = os.environ.get("SEATRACE_MODE", "barrier")
OUT = os.environ.get("SEATRACE_OUT", "")
TIMEOUT = float(os.environ.get("SEATRACE_TIMEOUT", "10"))

if MODE not in ("barrier", "free"):
    raise SystemExit(f"SEATRACE_MODE must be barrier or free, not {MODE!r}")
if not OUT:
    raise SystemExit("SEATRACE_OUT (where to write the records) is not set")


class Barrier:
    """A reusable barrier for ``parties`` greenlets; gevent is cooperative, so no lock is needed."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.count = 0
        self.event: Any = Event()
        self.releases: list[int] = []
        """``perf_counter_ns`` of each release."""

    def wait(self, timeout: float) -> None:
        event = self.event
        self.count += 1
        if self.count == self.parties:
            self.count = 0
            self.event = Event()
            self.releases.append(time.perf_counter_ns())
            event.set()
        elif not event.wait(timeout):
            raise StopUser()


BARRIER = Barrier(CLIENTS)
RECORDS: list[list[Any]] = []
"""[seat, user, status, start_ns, end_ns, arrival_ns, error] per request."""
STATE = {"next_user": 0, "finished": 0}


def _dump() -> None:
    payload = {"mode": MODE, "releases": BARRIER.releases, "records": RECORDS}
    tmp = Path(OUT + ".tmp")
    tmp.write_text(json.dumps(payload), encoding="utf-8")
    tmp.replace(OUT)


class SeedUser(FastHttpUser):  # type: ignore[misc, unused-ignore]
    wait_time = constant(0)
    network_timeout = TIMEOUT
    connection_timeout = TIMEOUT

    def on_start(self) -> None:
        STATE["next_user"] += 1
        self.user_id = STATE["next_user"]

    def book_every_seat(self) -> None:
        """The one task: every seat once, then stop (the last user to finish stops the run)."""
        if MODE == "free":
            BARRIER.wait(TIMEOUT * 10)
        for seat in range(1, SEATS + 1):
            if MODE == "barrier":
                BARRIER.wait(TIMEOUT * 10)
            self._book(seat)
        STATE["finished"] += 1
        if STATE["finished"] == CLIENTS:
            _dump()
            self.environment.runner.quit()
        raise StopUser()

    def _book(self, seat: int) -> None:
        body = {"seats": [seat], "user": f"vu-{self.user_id}"}
        start = time.perf_counter_ns()
        with self.client.post("/orders", json=body, name="/orders", catch_response=True) as response:
            end = time.perf_counter_ns()
            status = int(response.status_code or 0)
            arrival = response.headers.get("X-Arrival-Ns", "") if response.headers else ""
            error = "" if status else str(response.error or "no response")
            # 409 is the expected loss, not a failure; our own records judge the race.
            response.success()
        RECORDS.append(
            [seat, self.user_id, status, start, end, int(arrival) if arrival.isdigit() else 0, error]
        )

    tasks: ClassVar[list[Any]] = [book_every_seat]
