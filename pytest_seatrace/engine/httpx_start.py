"""The ``sync="gate"`` start, over httpx: one ``AsyncClient`` per client, each sending its whole
request once a ``ResourceGate`` opens (the gate, as in every start mode, is the release instant).

A ``ResourceGate`` opens when every client of the wave has arrived or given up.

The flexible path: arbitrary attempt logic (``race.run``), in-process ASGI apps, anything the
raw path cannot express. Each client has its own connection (``max_connections=1``), opened
before the gate, and all clients share one SSL context.

Connections before the gate: each client's httpcore pool gets an ``OpeningBackend``
(``engine.httpx_backend``) that first hands out a stream opened here, so the raced request is
the first thing on a fresh connection. A connection kept from an earlier wave is trusted only as
httpcore trusts one (``has_expired()``: idle and not readable, i.e. not closed by the server),
and only once this origin has shown it keeps idle connections open: the first time, the race
waits until the kept connections have been idle ``PROBE_S`` and looks again. A server that
closed them by then closes after answering: every later wave gets fresh connections. A server
seen closing a kept connection after a longer idle time gets its connections replaced once idle
half that long. A request sent after the gate is never replayed (no httpcore retries).
"""

from __future__ import annotations

import contextlib
import functools
import math
import ssl
import time
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

import anyio
import httpcore
import httpx

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.records import Outcome, Record
from pytest_seatrace.engine.classify import ARRIVAL_HEADER, ResponseRecorder
from pytest_seatrace.engine.httpx_backend import OpeningBackend
from pytest_seatrace.engine.keepalive import PROBE_S
from pytest_seatrace.engine.limits import HEAD_TOO_LARGE, MAX_RESPONSE_HEAD, head_limit_words, head_size
from pytest_seatrace.engine.plan import Attempt, AttemptFn, Roster, release_order
from pytest_seatrace.engine.requests import RequestBuilder
from pytest_seatrace.engine.waves import ReleaseAtOnce, WaveHooks

KEEPALIVE_S = 5.0
"""httpx's default: a connection idle longer is closed by httpx itself, not by the server."""
LIMITS = httpx.Limits(max_connections=1, max_keepalive_connections=1, keepalive_expiry=KEEPALIVE_S)
DEFAULT_PORTS = {b"http": 80, b"https": 443}


class _Line:
    """One client's httpx client, the httpcore pool under it (``None`` over an app's transport)
    and the backend that hands the pool its connections opened before the gate."""

    __slots__ = ("backend", "client", "idle_since", "pool", "reused")

    def __init__(
        self, client: httpx.AsyncClient, pool: httpcore.AsyncConnectionPool | None, backend: OpeningBackend
    ) -> None:
        self.client = client
        self.pool = pool
        self.backend = backend
        self.idle_since = 0.0
        """When its last attempt ended (its connection, if kept, idle since)."""
        self.reused = False
        """This wave's request goes out on a connection kept from an earlier request."""


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


@dataclass(eq=False, repr=False)
class HttpxFirer:
    """Fires waves in the ``gate`` start mode (whole requests over httpx); ``spec`` requests
    through ``builder``, or ``attempt_fn``."""

    config: RaceConfig
    classifier: ResponseRecorder
    ssl_context: ssl.SSLContext
    _: KW_ONLY
    base_url: str | None
    roster: Roster
    """Who races (request races with ``setup=``: not those whose set-up failed)."""
    builder: RequestBuilder | None = None
    attempt_fn: AttemptFn | None = None
    transport: httpx.AsyncBaseTransport | None = None
    ungated: list[str] = field(default_factory=list, init=False)
    """Keys of attempts that returned without awaiting ``a.gate()``: they were not raced."""
    in_flight: list[Record] = field(default_factory=list, init=False)
    """The wave being raced, until its records are in the sink (Ctrl-C keeps those sent)."""
    hooks: WaveHooks = field(default_factory=ReleaseAtOnce)
    """``hooks.start`` is awaited once per wave when every client is at the gate, before it
    opens (a shard waits for the coordinator's start instant there)."""
    _lines: list[_Line] = field(default_factory=list, init=False)
    _keeps: dict[tuple[bytes, bytes, int], bool] = field(default_factory=dict, init=False)
    """Per origin: ``True`` once kept connections stayed open ``PROBE_S`` idle, ``False``
    once the server closed them sooner (every wave then gets fresh connections)."""
    _closes_after: dict[tuple[bytes, bytes, int], float] = field(default_factory=dict, init=False)
    """Per origin: the shortest idle time after which the server was seen closing a kept
    connection; kept connections idle half as long are replaced before the gate."""
    _timed: dict[int, Record] = field(default_factory=dict, init=False)
    """Client slot → record whose timed request has not been written yet: its ``sent_ns``
    is stamped when httpcore has written the last byte (the gate's time until then)."""
    _warm: set[int] = field(default_factory=set, init=False)

    def _line(self, slot: int) -> _Line:
        while len(self._lines) <= slot:
            backend = OpeningBackend()
            pool = transport = None
            if self.transport is None:
                # httpx's own transport, over a pool that takes our backend (httpx passes none).
                pool = httpcore.AsyncConnectionPool(
                    ssl_context=self.ssl_context,
                    max_connections=LIMITS.max_connections,
                    max_keepalive_connections=LIMITS.max_keepalive_connections,
                    keepalive_expiry=KEEPALIVE_S,
                    network_backend=backend,
                )
                transport = httpx.AsyncHTTPTransport(verify=self.ssl_context, trust_env=False, limits=LIMITS)
                transport._pool = pool
            client = httpx.AsyncClient(
                base_url=self.base_url or "",
                timeout=self.config.timeout,
                trust_env=False,
                transport=self.transport or transport,
                event_hooks={"request": [functools.partial(self._arm_trace, len(self._lines))]},
            )
            self._lines.append(_Line(client, pool, backend))
        return self._lines[slot]

    async def _arm_trace(self, slot: int, request: httpx.Request) -> None:
        """Ask httpcore to report when the timed request's last byte is written (after the
        gate), and when any request's response is closed (its connection idle from then). A
        ``race.run`` attempt's raced request is named here (``ResponseRecorder.sending``)."""
        timed = self._timed.get(slot)
        if timed is not None and self.attempt_fn is not None:
            self.classifier.sending(timed, request)
        if slot in self._timed or self.transport is None:
            # An attempt's own trace callback still gets every event.
            request.extensions["trace"] = functools.partial(
                self._trace, slot, request.extensions.get("trace")
            )

    async def _trace(self, slot: int, theirs: Any, event: str, info: dict[str, Any]) -> None:
        if theirs is not None:
            await theirs(event, info)
        if event == "http11.send_request_body.complete":
            rec = self._timed.pop(slot, None)
            if rec is not None:
                rec.sent_ns = time.perf_counter_ns()
        elif event == "http11.response_closed.complete":
            self._lines[slot].idle_since = anyio.current_time()

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
        gate = ResourceGate(sum(len(clients) for clients in racing.values()), held=self.hooks.paced)
        for position, index in enumerate(indices):
            for client in release_order(cfg.seed, rnd, index, racing[index]):
                rec = Record(resource=index, client=client, round=rnd)
                records.append(rec)
                request = None
                if self.builder is not None:  # built up front: a bad URL stops the race, once
                    request = _own_copy(self.builder.build_for(rec, self.roster.attempt(index, client, rnd)))
                jobs.append((position * cfg.concurrency + client - 1, rec, gate, request))
        self.in_flight = records
        async with anyio.create_task_group() as tg:
            if self.hooks.paced:
                tg.start_soon(self._open_at_start, gate, self.hooks)
            for slot, rec, gate, request in jobs:
                tg.start_soon(self._run_one, self._line(slot), slot, rec, gate, request)
        return records

    @staticmethod
    async def _open_at_start(gate: ResourceGate, hooks: WaveHooks) -> None:
        await gate.full.wait()
        await hooks.start()
        gate.open()

    async def _prepare(self, line: _Line, slot: int, url: httpx.URL, phase: list[str]) -> None:
        """Before the gate: the warm-up request (``warmup="/path"``, once per client, on a
        connection closed after it), then the client's connection: the kept one when it can be
        trusted, else a fresh one opened now (``warmup=False``: none, the untrusted one closed
        all the same). ``phase`` names the step for a message."""
        warmup = self.config.warmup
        if line.pool is None or not url.host:
            return
        origin = _origin(url)
        root = str(url.copy_with(path="/", query=None, fragment=None)).rstrip("/")
        if isinstance(warmup, str) and slot not in self._warm:
            target = root + warmup
            phase[:] = [f"warm-up HEAD {target}"]
            await line.client.head(target)
            await self._drop(line.pool, origin)  # whatever the server wrote after the head goes with it
            self._warm.add(slot)
        phase[:] = [f"warm-up connection to {root}"]
        line.reused = False
        for conn in line.pool.connections:
            if conn.can_handle_request(origin) and await self._trusted(conn, line, origin):
                line.reused = True
                return
        await self._drop(line.pool, origin)
        if warmup is not False:  # else the raced request opens its connection after the gate
            await line.backend.open(origin, self.ssl_context, self.config.timeout)

    async def _tidy(self, line: _Line, url: httpx.URL) -> None:
        """Before an attempt's own set-up: close a kept connection already known to be unfit
        (closed by the server, or to an origin that closes after answering), so the set-up's
        requests do not go out on it. No waiting here: that is for ``a.gate()``."""
        if line.pool is None:
            return
        origin = _origin(url)
        for conn in line.pool.connections:
            if conn.can_handle_request(origin) and (
                self._keeps.get(_key(origin)) is False or conn.has_expired()
            ):
                await conn.aclose()

    @staticmethod
    async def _drop(pool: httpcore.AsyncConnectionPool, origin: httpcore.Origin) -> None:
        """Close the client's kept connection to ``origin``; its pool forgets closed ones."""
        for conn in pool.connections:
            if conn.can_handle_request(origin):
                await conn.aclose()

    async def _trusted(
        self, conn: httpcore.AsyncConnectionInterface, line: _Line, origin: httpcore.Origin
    ) -> bool:
        """Whether a kept connection may carry a raced request: the server has not closed it
        (httpcore's own ``has_expired()``), keeps connections at all, and this one has not been
        idle for half the time after which the server was seen closing one."""
        key = _key(origin)
        if not conn.is_idle() or self._keeps.get(key) is False:
            return False
        idle = anyio.current_time() - line.idle_since
        short = idle < PROBE_S
        if key not in self._keeps and short:
            await anyio.sleep(PROBE_S - idle)  # the one look at how this server keeps them
            idle = anyio.current_time() - line.idle_since
        if conn.has_expired():
            if short:  # closed within PROBE_S of answering: it closes after each answer
                self._keeps[key] = False
            elif idle < KEEPALIVE_S:  # not httpx's own expiry: the server's idle limit
                self._closes_after[key] = min(idle, self._closes_after.get(key, math.inf))
            return False
        self._keeps.setdefault(key, True)
        return idle < self._closes_after.get(key, math.inf) / 2

    async def _run_one(
        self,
        line: _Line,
        slot: int,
        rec: Record,
        gate: ResourceGate,
        request: httpx.Request | None,
    ) -> None:
        cfg = self.config
        client = line.client
        attempt_gate_used = False
        phase: list[str] = []
        """The warm-up step under way, for its messages (empty: the attempt's own code)."""
        scope = anyio.CancelScope(deadline=anyio.current_time() + cfg.timeout)
        url = request.url if request is not None else httpx.URL(self.base_url) if self.base_url else None

        async def at_gate() -> None:
            nonlocal attempt_gate_used
            if attempt_gate_used:
                raise RuntimeError("attempt.gate() called twice in one attempt")
            if url is not None:
                await self._prepare(line, slot, url, phase)
                phase.clear()
            attempt_gate_used = True
            scope.deadline = math.inf
            await gate.arrive()
            scope.deadline = anyio.current_time() + cfg.timeout
            # The gate is open: the call (design §7), before the timed request can start.
            rec.call_ns = rec.sent_ns = time.perf_counter_ns()
            self._timed[slot] = rec

        response: Any = None
        try:
            with scope:
                if self.attempt_fn is not None:
                    if url is not None:
                        await self._tidy(line, url)
                    attempt = Attempt(
                        cfg.resources[rec.resource], rec.client, rec.round, http=client, _gate=at_gate
                    )
                    response = await self.attempt_fn(attempt)
                elif request is not None:
                    await at_gate()
                    response = await client.send(request)
        except (httpx.HTTPError, httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
            if self.attempt_fn is None and isinstance(exc, _UNSENT):
                rec.call_ns = 0  # no connection, so no byte of the request left: no operation
            if phase:
                rec.outcome, rec.timed_out = (
                    Outcome.ERROR,
                    isinstance(exc, (httpx.TimeoutException, httpcore.ConnectTimeout)),
                )
                rec.reason = f"{phase[0]} failed: {_text(exc)}"
            elif isinstance(exc, httpx.TimeoutException):
                self._transport_failure(rec, exc, after_gate=attempt_gate_used)
            elif isinstance(exc, httpx.TransportError):
                self._transport_failure(rec, exc, after_gate=False)
                if attempt_gate_used and line.reused and url is not None:
                    self._keeps[_key(_origin(url))] = False  # a kept connection failed: no more reuse
            else:
                rec.outcome, rec.fatal = Outcome.ERROR, True
                rec.reason = f"attempt raised {type(exc).__name__}: {exc}"
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
            elif phase:
                rec.outcome, rec.reason = Outcome.ERROR, f"{phase[0]} took over {cfg.timeout:g}s"
            else:
                rec.outcome, rec.reason = (
                    Outcome.ERROR,
                    f"attempt did not reach a.gate() within {cfg.timeout:g}s",
                )
            return
        if rec.reason:
            return
        if not isinstance(response, httpx.Response):
            rec.outcome, rec.fatal = Outcome.ERROR, True
            rec.reason = f"attempt returned {type(response).__name__}, expected httpx.Response"
            return
        await response.aread()
        if head_size(response.headers.raw) > MAX_RESPONSE_HEAD:  # the limit of every start mode
            rec.outcome, rec.reason = Outcome.ERROR, f"{HEAD_TOO_LARGE} from {response.request.url}"
            return
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
        text = _text(exc) if isinstance(exc, httpx.ConnectError) else str(exc) or type(exc).__name__
        text = head_limit_words(text)
        rec.outcome, rec.reason = Outcome.ERROR, f"{text} to {url}" if url else text

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):  # also when the race was cancelled
            for line in self._lines:
                await line.client.aclose()
                await line.backend.aclose()
        self._lines.clear()


_UNSENT = (httpx.ConnectError, httpx.ConnectTimeout, httpcore.ConnectError, httpcore.ConnectTimeout)
"""A request ending so was never written: no operation of the history."""


def _origin(url: httpx.URL) -> httpcore.Origin:
    return httpcore.Origin(url.raw_scheme, url.raw_host, url.port or DEFAULT_PORTS.get(url.raw_scheme, 80))


def _key(origin: httpcore.Origin) -> tuple[bytes, bytes, int]:
    """``httpcore.Origin`` compares by value but is not hashable."""
    return origin.scheme, origin.host, origin.port


def _text(exc: BaseException) -> str:
    return "connection refused" if _refused(exc) else str(exc) or type(exc).__name__


def _refused(exc: BaseException | None) -> bool:
    """Whether a connect failed because it was refused (anyio says only "All connection
    attempts failed" and chains the reasons)."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, ConnectionRefusedError) or "refused" in str(exc).lower():
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


def _own_copy(request: httpx.Request) -> httpx.Request:
    """A request of this client's own: a constant request is one shared object, and each send
    gets its own ``trace`` extension."""
    return httpx.Request(
        request.method, request.url, headers=request.headers, content=request.read(), extensions={}
    )
