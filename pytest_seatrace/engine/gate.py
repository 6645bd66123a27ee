"""Gate start with httpx: one ``AsyncClient`` per client, all released by one event.

A ``ResourceGate`` opens when every client of the wave has arrived or given up.

The flexible path: arbitrary attempt logic (``race.run``), in-process ASGI apps, anything the
raw path cannot express. Each client has its own connection (``max_connections=1``), warmed
before the gate, and all clients share one SSL context.
"""

from __future__ import annotations

import contextlib
import functools
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import httpx

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.records import Outcome, Record
from pytest_seatrace.engine.classify import ARRIVAL_HEADER, Classifier
from pytest_seatrace.engine.plan import Attempt, AttemptFn, Roster, release_order
from pytest_seatrace.engine.requests import RequestBuilder


class ResourceGate:
    """Opens when each of ``clients`` has either arrived or given up (failed before it)."""

    def __init__(self, clients: int, *, held: bool = False) -> None:
        self._pending = clients
        self.full = anyio.Event()
        """Every client has arrived or given up."""
        self._open = anyio.Event() if held else self.full
        """``held``: the gate opens only on ``open()``, after it is full (a shard's start)."""
        if clients <= 0:
            self.full.set()

    def _count(self) -> None:
        self._pending -= 1
        if self._pending <= 0:
            self.full.set()

    def open(self) -> None:
        self._open.set()

    def leave(self) -> None:
        """A client that will never arrive (its set-up failed) must not hold the others."""
        self._count()

    async def arrive(self) -> None:
        self._count()
        await self._open.wait()


class GateFirer:
    """Fires waves in gate mode; ``spec`` requests through ``builder``, or ``attempt_fn``."""

    def __init__(
        self,
        config: RaceConfig,
        classifier: Classifier,
        ssl_context: ssl.SSLContext,
        *,
        base_url: str | None,
        builder: RequestBuilder | None = None,
        attempt_fn: AttemptFn | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        roster: Roster | None = None,
    ) -> None:
        self.config = config
        self.classifier = classifier
        self.ssl_context = ssl_context
        self.base_url = base_url
        self.builder = builder
        self.attempt_fn = attempt_fn
        self.transport = transport
        self._clients: list[httpx.AsyncClient] = []
        self._timed: dict[int, Record] = {}
        """Client slot → record whose timed request has not been written yet: its ``sent_ns``
        is stamped when httpcore has written the last byte (the gate's time until then)."""
        self._warm: set[int] = set()
        self.roster = roster or Roster(config)
        """Who races (request races with ``setup=``: not those whose set-up failed)."""
        self.ungated: list[str] = []
        """Keys of attempts that returned without awaiting ``a.gate()``: they were not raced."""
        self.in_flight: list[Record] = []
        """The wave being raced, until its records are in the sink (Ctrl-C keeps those sent)."""
        self.starter: Callable[[], Awaitable[None]] | None = None
        """Awaited once per wave when every client is at the gate, before it opens (a shard
        waits for the coordinator's start instant there); ``None``: open at once."""

    def _client(self, slot: int) -> httpx.AsyncClient:
        while len(self._clients) <= slot:
            self._clients.append(
                httpx.AsyncClient(
                    base_url=self.base_url or "",
                    limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                    timeout=self.config.timeout,
                    verify=self.ssl_context,
                    trust_env=False,
                    transport=self.transport,
                    event_hooks={"request": [functools.partial(self._arm_trace, len(self._clients))]},
                )
            )
        return self._clients[slot]

    async def _arm_trace(self, slot: int, request: httpx.Request) -> None:
        """After the gate, ask httpcore to report when the request's last byte is written."""
        if slot in self._timed:
            request.extensions["trace"] = functools.partial(self._trace, slot)

    async def _trace(self, slot: int, event: str, info: object) -> None:
        if event == "http11.send_request_body.complete":
            rec = self._timed.pop(slot, None)
            if rec is not None:
                rec.sent_ns = time.perf_counter_ns()

    async def fire_waves(self, rnd: int, waves: Sequence[Sequence[int]], sink: list[Record]) -> None:
        """Race every wave of a round, appending each wave's records to ``sink`` as it ends."""
        for indices in waves:
            sink.extend(await self.fire_wave(rnd, indices))
            self.in_flight = []

    async def fire_wave(self, rnd: int, indices: Sequence[int]) -> list[Record]:
        cfg = self.config
        records: list[Record] = []
        jobs: list[tuple[int, Record, ResourceGate, httpx.Request | None]] = []
        # One gate per wave: every resource of the wave is released back to back, as in last-byte.
        racing = {index: self.roster.clients(index) for index in indices}
        gate = ResourceGate(sum(len(clients) for clients in racing.values()), held=self.starter is not None)
        for position, index in enumerate(indices):
            for client in release_order(cfg.seed, rnd, index, racing[index]):
                rec = Record(resource=index, client=client, round=rnd)
                records.append(rec)
                request = None
                if self.builder is not None:  # built up front: a bad URL stops the race, once
                    attempt = self.roster.attempt(index, client, rnd)
                    request = _own_copy(self.builder.build(attempt))
                    target = request.url.raw_path.decode("ascii")
                    rec.operation = self.builder.operation(request.method, target, attempt)
                jobs.append((position * cfg.concurrency + client - 1, rec, gate, request))
        self.in_flight = records
        async with anyio.create_task_group() as tg:
            if self.starter is not None:
                tg.start_soon(self._open_at_start, gate, self.starter)
            for slot, rec, gate, request in jobs:
                tg.start_soon(self._run_one, self._client(slot), slot, rec, gate, request)
        return records

    @staticmethod
    async def _open_at_start(gate: ResourceGate, starter: Callable[[], Awaitable[None]]) -> None:
        await gate.full.wait()
        await starter()
        gate.open()

    async def _warm_up(self, client: httpx.AsyncClient, slot: int, url: httpx.URL | None) -> None:
        """Open the connection before the gate with a HEAD of the origin's root (status ignored)."""
        if slot in self._warm or self.transport is not None or url is None or not url.host:
            return
        await client.head(url.copy_with(path="/", query=None, fragment=None))
        self._warm.add(slot)

    async def _run_one(
        self,
        client: httpx.AsyncClient,
        slot: int,
        rec: Record,
        gate: ResourceGate,
        request: httpx.Request | None,
    ) -> None:
        cfg = self.config
        attempt_gate_used = False
        scope = anyio.CancelScope(deadline=anyio.current_time() + cfg.timeout)

        async def at_gate() -> None:
            nonlocal attempt_gate_used
            if attempt_gate_used:
                raise RuntimeError("attempt.gate() called twice in one attempt")
            attempt_gate_used = True
            scope.deadline = math.inf
            await gate.arrive()
            scope.deadline = anyio.current_time() + cfg.timeout
            rec.sent_ns = time.perf_counter_ns()
            self._timed[slot] = rec

        response: Any = None
        try:
            with scope:
                if self.attempt_fn is not None:
                    attempt = Attempt(
                        cfg.resources[rec.resource], rec.client, rec.round, http=client, _gate=at_gate
                    )
                    base = httpx.URL(self.base_url) if self.base_url else None
                    await self._warm_up(client, slot, base)
                    response = await self.attempt_fn(attempt)
                elif request is not None:
                    await self._warm_up(client, slot, request.url)
                    await at_gate()
                    response = await client.send(request)
        except httpx.TimeoutException as exc:
            self._transport_failure(rec, exc, after_gate=attempt_gate_used)
        except httpx.TransportError as exc:
            self._transport_failure(rec, exc, after_gate=False)
        except Exception as exc:
            rec.outcome, rec.fatal = Outcome.ERROR, True
            rec.reason = f"attempt raised {type(exc).__name__}: {exc}"
        finally:
            self._timed.pop(slot, None)
            if not attempt_gate_used:
                gate.leave()
        rec.end_ns = time.perf_counter_ns()
        # An attempt that never called gate() stays untimed (sent_ns 0): no latency, no spread.
        if scope.cancelled_caught:
            rec.timed_out = True
            if attempt_gate_used:
                rec.outcome, rec.reason = Outcome.UNKNOWN, f"no response within {cfg.timeout}s after the gate"
            else:
                rec.outcome, rec.reason = Outcome.ERROR, f"set-up before the gate took over {cfg.timeout}s"
            return
        if rec.reason:
            return
        if not isinstance(response, httpx.Response):
            rec.outcome, rec.fatal = Outcome.ERROR, True
            rec.reason = f"attempt returned {type(response).__name__}, expected httpx.Response"
            return
        await response.aread()
        arrival = response.headers.get(ARRIVAL_HEADER)
        self.classifier.fill(rec, response.status_code, arrival, response.content, response)
        if self.attempt_fn is not None and not attempt_gate_used:
            self.ungated.append(f"r{rec.round}-{cfg.resources[rec.resource]}-{rec.client}")

    def _transport_failure(self, rec: Record, exc: httpx.HTTPError, *, after_gate: bool) -> None:
        url = ""
        with contextlib.suppress(RuntimeError):  # an exception raised outside a request has none
            url = str(exc.request.url)
        rec.timed_out = isinstance(exc, httpx.TimeoutException)
        if after_gate and isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout)):
            rec.outcome, rec.reason = Outcome.UNKNOWN, f"{type(exc).__name__} after the gate"
            return
        text = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectError) and "refused" in text.lower():
            text = "connection refused"
        rec.outcome, rec.reason = Outcome.ERROR, f"{text} to {url}" if url else text

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):  # also when the race was cancelled
            for client in self._clients:
                await client.aclose()
        self._clients.clear()


def _own_copy(request: httpx.Request) -> httpx.Request:
    """A request of this client's own: a constant request is one shared object, and each send
    gets its own ``trace`` extension."""
    return httpx.Request(
        request.method, request.url, headers=request.headers, content=request.read(), extensions={}
    )
