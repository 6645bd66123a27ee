"""One shard of a sharded race, on the far side of its execnet channel: it sends and receives.

The coordinator (``shards.py``) ships the plan as plain data: the race's settings, the
request's constant fields, and wave by wave every varying field already evaluated per client.
The shard rebuilds the requests with the engine's own builders, races its share of every
resource's clients in the race's start mode, and waits at each wave's gate for the start
instant the coordinator names on the wall clock (sleep, then spin the last ~0.2 ms). It
classifies nothing: each record goes back with its status, arrival stamp, the first KiB of
the body (all of it, and the headers, when a predicate needs them) and its stamps, on this
host's ``perf_counter_ns``; the coordinator maps them onto its own clock.

Messages (tuples of builtins) in: ``("plan", dict)``, ``("clock",)``, ``("round", rnd, waves,
share, tables)`` (the first wave's varying fields), ``("start", t_ns, tables)`` (the next wave's,
or ``None``), ``("end",)``; out: ``("hello", dict)``, ``("clock", t_ns)``, ``("ready", rnd,
wave, eta_ns)`` (``eta_ns``: when a heralded wave will be written, else 0), ``("records", rnd,
wave, rows, late_ns, replaced)`` (``replaced``: kept connections replaced so far),
``("missed", rnd, wave, late_ns)``, ``("error", text)``. A wave's fields
come with the previous wave's start (a firer builds wave ``i + 1`` while wave ``i`` is
answered); in last-byte mode a wave's ``ready`` goes out as soon as the previous wave is
answered, ahead of that wave's ``records``, which follow once the prefixes are written.
"""

from __future__ import annotations

import marshal
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.errors import RaceUsageError
from pytest_seatrace.core.records import BODY_KEEP, Record
from pytest_seatrace.engine.classify import Classifier, ResponseSource
from pytest_seatrace.engine.firers import make_firer, ssl_context_for
from pytest_seatrace.engine.lastbyte import LastByteFirer
from pytest_seatrace.engine.limits import ensure_open_files
from pytest_seatrace.engine.plan import Attempt, RequestSpec, Roster
from pytest_seatrace.engine.requests import RequestBuilder

SPIN_NS = 200_000
"""The last stretch before the start instant is spun, not slept (a sleep wakes a little late),
kept short: on 2 cores a shard that spins holds a core the other shard and the service (still
reading the held heads) need; spinning 1 ms, a shard's release came ~1.5 ms late half the time
(16 seats x 500 clients, 2 shards)."""
START_GRACE_S = 5.0
"""Beyond the race's timeout, how long a ready shard waits for its start instant (the
coordinator gives up on a wave's laggards after the timeout and closes their channels)."""
WRITE_NS = 6_000
"""A first guess at one client's share of the work between a herald and the wait for the
start (writing the prefixes, handing over the records); then the slowest of the last ``RATES``
waves'. One wave's figure swung 3x on 2 cores, and a shard that is not done by the start
releases late: with the median, two shards of one host released 2-8 ms apart in a third of
the waves (16 seats x 500 clients); with the slowest, the 2-shard spread fell from 6.3 to 4.9 ms
and the race took no longer (12 interleaved races each; the second slowest gave 7.5 ms where
the slowest gave 7.0 ms). The price: a stall in one wave delays the next few waves' starts."""
RATES = 5
HERALD_NS = 100_000
"""Added to a heralded wave's expected end of writing: the start message, the next wave's
fields and the spin fit in it."""
COARSE_NS = 2_000_000
"""Closer than this to the start instant, a shard sleeps in ``time.sleep`` (nanosecond timers)
rather than in the event loop, whose timers round up to the millisecond."""
MISSED_NS = 250_000_000
"""A start instant that had passed by this much when it arrived is missed: the wave is not
released (its requests would not be synchronised with the other shards'). A start that arrives
a little late (a busy host) is released at once, and the spread shows the lateness."""


def unpack(data: Any) -> Any:
    """Rows or tables as sent, either way: ``marshal`` bytes between equal Python versions
    (execnet's own serialiser is pure Python, ~55 µs a record row each way against marshal's
    ~0.5 µs), else execnet's plain builtins."""
    return marshal.loads(data) if isinstance(data, bytes) else data  # noqa: S302 - our own coordinator and shards, over a channel that runs our code anyway


class _Stop(Exception):
    """The shard leaves the race (it missed a start, or the coordinator is gone)."""


class _Share(Roster):
    """This shard's share of every resource's clients, for the current round."""

    def __init__(self, config: RaceConfig) -> None:
        super().__init__(config)
        self.share: dict[int, list[int]] = {}

    def clients(self, index: int) -> list[int]:
        return self.share.get(index, [])


class _Field:
    """A request field evaluated by the coordinator per client: looked up, never computed here."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.values: dict[tuple[int, int], Any] = {}

    def __call__(self, attempt: Attempt) -> Any:
        return self.values[(attempt.resource, attempt.client)]


class _Fields(dict[str, _Field]):
    """The request's varying fields, filled wave by wave from the coordinator's tables."""

    def install(self, tables: Any) -> None:
        """Add one wave's tables (``marshal`` bytes or builtins) to the round's values."""
        for name, rows in unpack(tables).items():
            self[name].values.update(((index, client), value) for index, client, value in rows)

    def clear_values(self) -> None:
        for field in self.values():
            field.values.clear()


class _Recorder(Classifier):
    """Stands in for the classifier: keeps what the coordinator needs to classify a response."""

    def __init__(self, keep_body: bool) -> None:  # no rules here: the coordinator has them
        self.keep_body = keep_body
        self.answers: dict[int, tuple[bytes, list[tuple[bytes, bytes]] | None]] = {}

    @property
    def needs_response(self) -> bool:
        return self.keep_body

    def fill(
        self,
        rec: Record,
        status: int,
        arrival: bytes | str | None,
        body: bytes | None,
        response: ResponseSource,
    ) -> None:
        rec.status = status
        rec.server_ns = int(arrival) if arrival and arrival.isdigit() else 0
        headers = None
        if self.keep_body:
            built = response() if callable(response) else response
            headers = [(bytes(k), bytes(v)) for k, v in built.headers.raw]
        kept = (body or b"") if self.keep_body else (body or b"")[:BODY_KEEP]
        self.answers[id(rec)] = (kept, headers)

    def row(self, rec: Record) -> tuple[Any, ...]:
        answer = self.answers.pop(id(rec), None)
        body, headers = answer if answer is not None else (None, None)
        return (
            rec.resource,
            rec.client,
            rec.round,
            rec.sent_ns,
            rec.end_ns,
            rec.status,
            int(rec.outcome),
            rec.reason,
            rec.server_ns,
            rec.early,
            rec.timed_out,
            answer is not None,
            body,
            headers,
        )


class _Sink(list[Record]):
    """What a firer extends once per wave: the wave's records go back to the coordinator.

    Held back (last-byte) until the next wave's prefixes are written, while the shard waits
    for its start instant: sent between a wave's last answer and the next wave's writing,
    they held up the next start (the coordinator classifies them while that wave races)."""

    def __init__(self, channel: Any, recorder: _Recorder, state: dict[str, int], packed: bool) -> None:
        super().__init__()
        self._channel, self._recorder, self._state, self._packed = channel, recorder, state, packed
        self.hold = False
        self.replaced: Callable[[], int] = lambda: 0
        """Kept connections the firer replaced so far (they go with each wave's records)."""
        self._held: list[tuple[Any, ...]] = []

    def extend(self, wave: Iterable[Record]) -> None:
        rows = [self._recorder.row(rec) for rec in wave]
        state = self._state
        sent: Any = marshal.dumps(rows) if self._packed else rows  # execnet's serialiser is slow
        message = ("records", state["round"], state["wave"], sent, state.get("late", 0), self.replaced())
        self._held.append(message)
        if not self.hold:
            self.flush()

    def flush(self) -> None:
        held, self._held = self._held, []
        for message in held:
            self._channel.send(message)


class _Clock:
    """This shard's wall clock; tests add an offset to stand for another host's clock."""

    def __init__(self, offset_ns: int) -> None:
        self.offset_ns = offset_ns

    def now(self) -> int:
        return time.time_ns() + self.offset_ns


def _receive_now(channel: Any, timeout: float) -> Any:
    """The next message, blocking this thread: for the start instant, when the shard has
    nothing else to do (a hop through a worker thread cost 0.2-1.5 ms on 2 cores)."""
    try:
        return channel.receive(timeout)
    except EOFError:
        raise _Stop("the coordinator closed the channel") from None
    except Exception as exc:  # execnet's TimeoutError: the coordinator gave up on this shard
        raise _Stop(f"no start instant within {timeout:g}s ({type(exc).__name__})") from None


async def _receive(channel: Any) -> Any:
    try:
        return await anyio.to_thread.run_sync(channel.receive, abandon_on_cancel=True)
    except EOFError:
        raise _Stop("the coordinator closed the channel") from None


def _tls(plan: dict[str, Any], folder: str) -> Any:
    kind, value = plan["tls"]
    if kind == "ca":  # the CA bundle travelled as text: this host may not have the file
        path = Path(folder) / "ca.pem"
        path.write_text(value, encoding="utf-8")
        return str(path)
    return bool(value)


def _firer(plan: dict[str, Any], folder: str) -> tuple[Any, _Share, _Fields, _Recorder]:
    mode = plan["mode"]
    config = RaceConfig(
        resources=tuple(range(plan["resources"])),
        concurrency=plan["concurrency"],
        timeout=plan["timeout"],
        sync=mode,
        hold=plan["hold"],
        hold_given=plan["hold_given"],
        parallel=plan["parallel"],
        seed=plan["seed"],
    )
    roster = _Share(config)
    fields = _Fields((name, _Field(name)) for name in plan["varying"])
    method: Any = fields.get("method") or plan["method"]  # a _Field when it varies
    request: dict[str, Any] = {**plan["constants"], **fields}
    request.pop("method", None)
    spec = RequestSpec(method, **request)
    recorder = _Recorder(plan["keep_body"])
    ssl_context = ssl_context_for(mode, _tls(plan, folder))
    builder = RequestBuilder(spec, plan["base_url"], ssl_context)
    firer = make_firer(
        mode, config, recorder, ssl_context, builder=builder, roster=roster, base_url=plan["base_url"]
    )
    return firer, roster, fields, recorder


class _Starter:
    """What a firer awaits before each wave's release: ready, then the start instant (and the
    next wave's fields, installed before the spin).

    A last-byte firer heralds the next wave as soon as this one is answered: the shard then
    reports ready at once, with the instant it expects to have written the next wave's prefixes
    and handed over this wave's records (at the slowest rate of its last waves), and the
    coordinator's round trip overlaps with that work instead of following it."""

    def __init__(
        self,
        channel: Any,
        clock: _Clock,
        state: dict[str, int],
        knobs: dict[str, Any],
        fields: _Fields,
        timeout: float,
    ) -> None:
        self.channel, self.clock, self.state, self.knobs, self.fields = channel, clock, state, knobs, fields
        self.write_ns = WRITE_NS
        """One client's share of the work between a herald and the gate (see ``WRITE_NS``)."""
        self._rates: list[int] = []
        self.timeout = timeout + START_GRACE_S
        self.before_start: Callable[[], None] = lambda: None
        """Run once ready, before waiting for the start instant (the last wave's records go)."""
        self._heralded: tuple[list[int], int, int] | None = None
        """The heralded wave, its number of prefixes, and when the herald went out."""

    def herald(self, writes: int) -> None:
        here = [self.state["round"], self.state["wave"] + 1]
        if self.knobs.get("delay_ready_at") == here:
            return  # a test's late shard reports ready the slow way
        self._heralded = (here, writes, time.perf_counter_ns())
        eta = self.clock.now() + HERALD_NS + writes * self.write_ns
        self.channel.send(("ready", *here, eta))
        if self.knobs.get("slow_at") == here:  # a test's shard that writes slower than it said
            time.sleep(float(self.knobs.get("slow_s", 0)))

    async def __call__(self) -> None:
        self.state["wave"] += 1
        here = [self.state["round"], self.state["wave"]]
        heralded, self._heralded = self._heralded, None
        if heralded is None or heralded[0] != here:
            heralded = None
            if self.knobs.get("delay_ready_at") == here:
                await anyio.sleep(float(self.knobs.get("delay_ready_s", 0)))
            self.channel.send(("ready", *here, 0))
        self.before_start()
        if heralded is not None and heralded[1]:  # this wave was heralded: how long it took
            _, writes, began = heralded
            self._rates.append((time.perf_counter_ns() - began) // writes)
            del self._rates[:-RATES]
            self.write_ns = max(self._rates)
        await self._wait(here)

    async def _wait(self, here: list[int]) -> None:
        channel, clock = self.channel, self.clock
        message = _receive_now(channel, self.timeout)
        if message[0] != "start":
            raise _Stop(f"expected a start instant, got {message[0]!r}")
        at = int(message[1])
        if message[2] is not None:
            self.fields.install(message[2])
        late = clock.now() - at
        if late > MISSED_NS:
            channel.send(("missed", *here, late))
            raise _Stop("missed the start")
        if self.knobs.get("kill_at") == here:  # a test's stand-in for a shard killed mid-race
            os.kill(os.getpid(), signal.SIGKILL)
        wait = at - clock.now() - COARSE_NS
        if wait > 0:  # the event loop's sleep wakes up to a millisecond late: only the far part
            await anyio.sleep(wait / 1e9)
        wait = at - clock.now() - SPIN_NS
        if wait > 0:  # nothing else runs in this shard now: a precise blocking sleep
            time.sleep(wait / 1e9)  # noqa: ASYNC251 - blocking on purpose: the gate is next
        now = clock.now
        while now() < at:
            pass
        self.state["late"] = now() - at


async def _race(channel: Any, plan: dict[str, Any], clock: _Clock, folder: str, first: Any) -> None:
    """Race every round the coordinator sends (``first`` is the message that came before the
    event loop ran) until it says ``end``."""
    firer, roster, fields, recorder = _firer(plan, folder)
    state = {"round": 0, "wave": 0}
    starter = _Starter(channel, clock, state, plan.get("knobs") or {}, fields, float(plan["timeout"]))
    firer.starter = starter
    if isinstance(firer, LastByteFirer):
        firer.herald = starter.herald
    sink = _Sink(channel, recorder, state, plan.get("python_version") == list(sys.version_info[:2]))
    sink.replaced = lambda: getattr(firer, "replaced", 0)
    starter.before_start = sink.flush
    if isinstance(firer, LastByteFirer):
        sink.hold = True  # until the next wave's prefixes are written: see _Sink
    if hasattr(firer, "released") and hasattr(os, "sched_yield"):
        firer.released = os.sched_yield  # let another shard of this host release on time
    share = -(-plan["concurrency"] // plan["shards"])
    ensure_open_files(share * plan["parallel"])  # one set of connections: waves take turns
    try:
        message = first
        while True:
            kind = message[0]
            if kind == "clock":
                channel.send(("clock", clock.now()))
            elif kind == "round":
                _, rnd, waves, clients, tables = message
                roster.share = {int(index): list(ids) for index, ids in unpack(clients).items()}
                fields.clear_values()
                fields.install(tables)
                state["round"], state["wave"] = rnd, 0
                try:
                    await firer.fire_waves(rnd, waves, sink)
                finally:
                    sink.flush()  # the round's last wave (or the waves before a failure)
            else:  # "end"
                return
            message = await _receive(channel)
    finally:
        with anyio.CancelScope(shield=True):
            await firer.aclose()


def plugin_version() -> str:
    """The installed pytest-seatrace's version (both sides of a channel must agree)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("pytest-seatrace")
    except importlib.metadata.PackageNotFoundError:  # a bare checkout
        return "0+unknown"


def _root(exc: BaseException) -> BaseException:
    """The first real exception inside task groups' exception groups."""
    while isinstance(getattr(exc, "exceptions", None), tuple) and exc.exceptions:  # type: ignore[attr-defined]
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return exc


def serve(channel: Any) -> None:
    """Race as the coordinator says until it ends the race or closes the channel."""
    message = channel.receive()
    plan: dict[str, Any] = message[1]
    clock = _Clock(int((plan.get("knobs") or {}).get("offset_ns", 0)))
    channel.send(
        (
            "hello",
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "python": sys.executable,
                "python_version": list(sys.version_info[:2]),
                "version": plugin_version(),
                "wall_ns": clock.now(),
                "perf_ns": time.perf_counter_ns(),
            },
        )
    )
    first = channel.receive()
    while first[0] == "clock":  # answered here, not through the event loop: tighter bounds
        channel.send(("clock", clock.now()))
        first = channel.receive()
    with tempfile.TemporaryDirectory(prefix="seatrace-shard-") as folder:
        try:
            anyio.run(_race, channel, plan, clock, folder, first)
        except BaseException as exc:  # every failure goes back as a message
            root = _root(exc)
            if isinstance(root, (_Stop, EOFError)) or channel.isclosed():
                return
            text = str(root) if isinstance(root, RaceUsageError) else f"{type(root).__name__}: {root}"
            channel.send(("error", text))
