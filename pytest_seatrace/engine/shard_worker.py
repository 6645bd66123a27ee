"""One shard of a sharded race, on the far side of its execnet channel: it sends and receives.

The coordinator (``shards.py``) ships the plan as plain data: the race's settings, the
request's constant fields, and per round every varying field already evaluated per client.
The shard rebuilds the requests with the engine's own builders, races its share of every
resource's clients in the race's start mode, and waits at each wave's gate for the start
instant the coordinator names on the wall clock (sleep, then spin the last ~1 ms). It
classifies nothing: each record goes back with its status, arrival stamp, the first KiB of
the body (all of it, and the headers, when a predicate needs them) and its stamps, on this
host's ``perf_counter_ns``; the coordinator maps them onto its own clock.

Messages (tuples of builtins) in: ``("plan", dict)``, ``("clock",)``, ``("round", rnd, waves,
share, tables)``, ``("start", t_ns)``, ``("end",)``; out: ``("hello", dict)``, ``("clock",
t_ns)``, ``("ready", rnd, wave)``, ``("records", rnd, wave, rows, late_ns)``, ``("missed", rnd, wave,
late_ns)``, ``("error", text)``.
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
from pytest_seatrace.engine.gate import GateFirer
from pytest_seatrace.engine.lastbyte import LastByteFirer
from pytest_seatrace.engine.limits import ensure_open_files
from pytest_seatrace.engine.plan import Attempt, RequestSpec, Roster
from pytest_seatrace.engine.requests import RequestBuilder, make_ssl_context

SPIN_NS = 1_000_000
"""The last stretch before the start instant is spun, not slept (a sleep wakes up late). Kept
short: on the 2-core box two shards spinning 2 ms each starved the service and the coordinator,
and the scheduler then preempted a shard just after the start (median spread 1.4-2.5 ms over 8
seats x 20 clients, 2 shards, against 0.14-0.8 ms spinning 0.3-1 ms; load average ~1)."""
MISSED_NS = 250_000_000
"""A start instant that had passed by this much when it arrived is missed: the wave is not
released (its requests would not be synchronised with the other shards'). A start that arrives
a little late (a busy host) is released at once, and the spread shows the lateness."""
H2_ALPN = ("h2", "http/1.1")
H1_ALPN = ("http/1.1",)


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
    """What a firer extends once per wave: the wave's records go back to the coordinator."""

    def __init__(self, channel: Any, recorder: _Recorder, state: dict[str, int], packed: bool) -> None:
        super().__init__()
        self._channel, self._recorder, self._state, self._packed = channel, recorder, state, packed

    def extend(self, wave: Iterable[Record]) -> None:
        rows = [self._recorder.row(rec) for rec in wave]
        state = self._state
        sent: Any = marshal.dumps(rows) if self._packed else rows  # execnet's serialiser is slow
        self._channel.send(("records", state["round"], state["wave"], sent, state.get("late", 0)))


class _Clock:
    """This shard's wall clock; tests add an offset to stand for another host's clock."""

    def __init__(self, offset_ns: int) -> None:
        self.offset_ns = offset_ns

    def now(self) -> int:
        return time.time_ns() + self.offset_ns


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


def _firer(plan: dict[str, Any], folder: str) -> tuple[Any, _Share, dict[str, _Field], _Recorder]:
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
    fields = {name: _Field(name) for name in plan["varying"]}
    method: Any = fields.get("method") or plan["method"]  # a _Field when it varies
    request: dict[str, Any] = {**plan["constants"], **fields}
    request.pop("method", None)
    spec = RequestSpec(method, **request)
    tls = _tls(plan, folder)
    recorder = _Recorder(plan["keep_body"])
    base_url = plan["base_url"]
    firer: Any
    if mode == "gate":
        ssl_context = make_ssl_context(tls)
        builder = RequestBuilder(spec, base_url, ssl_context)
        firer = GateFirer(config, recorder, ssl_context, base_url=base_url, builder=builder, roster=roster)
    elif mode == "single-packet":
        from pytest_seatrace.engine.h2 import SinglePacketFirer

        ssl_context = make_ssl_context(tls, H2_ALPN)
        builder = RequestBuilder(spec, base_url, ssl_context)
        firer = SinglePacketFirer(config, builder, ssl_context, recorder, roster)
    else:
        ssl_context = make_ssl_context(tls, H1_ALPN)
        builder = RequestBuilder(spec, base_url, ssl_context)
        firer = LastByteFirer(config, builder, ssl_context, recorder, roster)
    return firer, roster, fields, recorder


def _starter(channel: Any, clock: _Clock, state: dict[str, int], knobs: dict[str, Any]) -> Callable[[], Any]:
    """What a firer awaits before each wave's release: ready, then the start instant."""

    async def start() -> None:
        state["wave"] += 1
        here = [state["round"], state["wave"]]
        if knobs.get("delay_ready_at") == here:
            await anyio.sleep(float(knobs.get("delay_ready_s", 0)))
        channel.send(("ready", *here))
        message = await _receive(channel)
        if message[0] != "start":
            raise _Stop(f"expected a start instant, got {message[0]!r}")
        at = int(message[1])
        late = clock.now() - at
        if late > MISSED_NS:
            channel.send(("missed", *here, late))
            raise _Stop("missed the start")
        if knobs.get("kill_at") == here:  # a test's stand-in for a shard killed mid-race
            os.kill(os.getpid(), signal.SIGKILL)
        wait = at - clock.now() - SPIN_NS
        if wait > 0:
            await anyio.sleep(wait / 1e9)
        now = clock.now
        while now() < at:
            pass
        state["late"] = now() - at

    return start


async def _race(channel: Any, plan: dict[str, Any], clock: _Clock, folder: str) -> None:
    firer, roster, fields, recorder = _firer(plan, folder)
    state = {"round": 0, "wave": 0}
    firer.starter = _starter(channel, clock, state, plan.get("knobs") or {})
    share = -(-plan["concurrency"] // plan["shards"])
    ensure_open_files(share * plan["parallel"])  # one set of connections: waves take turns
    packed = plan.get("python_version") == list(sys.version_info[:2])
    try:
        while True:
            message = await _receive(channel)
            kind = message[0]
            if kind == "clock":
                channel.send(("clock", clock.now()))
            elif kind == "round":
                _, rnd, waves, clients, tables = message
                if isinstance(tables, bytes):
                    tables = marshal.loads(tables)  # noqa: S302 - from our own coordinator, over a channel that runs our code anyway
                roster.share = {int(index): list(ids) for index, ids in clients.items()}
                for name, rows in tables.items():
                    values = fields[name].values
                    values.clear()
                    values.update(((index, client), value) for index, client, value in rows)
                state["round"], state["wave"] = rnd, 0
                await firer.fire_waves(rnd, waves, _Sink(channel, recorder, state, packed))
            else:  # "end"
                return
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
    with tempfile.TemporaryDirectory(prefix="seatrace-shard-") as folder:
        try:
            anyio.run(_race, channel, plan, clock, folder)
        except BaseException as exc:  # every failure goes back as a message
            root = _root(exc)
            if isinstance(root, (_Stop, EOFError)) or channel.isclosed():
                return
            text = str(root) if isinstance(root, RaceUsageError) else f"{type(root).__name__}: {root}"
            channel.send(("error", text))
