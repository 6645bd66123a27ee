"""One shard of a sharded race, on the far side of its execnet channel: it sends and receives.

The coordinator (``coordinator.py``) ships the plan as plain data (``messages.Plan``): the race's
settings, the request's constant fields, and wave by wave every varying field already evaluated
per client. The shard rebuilds the requests with the engine's own builders, races its share of
every resource's clients in the race's start mode (``firers.make_firer``), and waits at each
wave's gate for the start instant the coordinator names on the wall clock (``starter.py``). It
classifies nothing: each record goes back with its status, arrival stamp, the first KiB of the
body (all of it, and the headers, when a predicate needs them) and its stamps, on this host's
``perf_counter_ns``; the coordinator maps them onto its own clock.

A wave's fields come with the previous wave's start (a firer builds wave ``i + 1`` while wave
``i`` is answered); in last-byte mode a wave's ``Ready`` goes out as soon as the previous wave is
answered, ahead of that wave's ``Records``, which follow once the prefixes are written.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from typing import Any

import anyio
import anyio.to_thread

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.errors import RaceUsageError
from pytest_seatrace.core.records import BODY_KEEP, Record
from pytest_seatrace.engine.classify import ResponseRecorder, ResponseSource
from pytest_seatrace.engine.firers import make_firer, ssl_context_for
from pytest_seatrace.engine.http3 import Http3Error
from pytest_seatrace.engine.lastbyte import LastByteFirer
from pytest_seatrace.engine.limits import ensure_open_files
from pytest_seatrace.engine.plan import Attempt, RequestSpec, Roster
from pytest_seatrace.engine.requests import RequestBuilder
from pytest_seatrace.engine.shards.messages import (
    ClockReading,
    ClockRequest,
    End,
    Failed,
    Hello,
    Message,
    Plan,
    Records,
    Round,
    decode,
    dispatch,
)
from pytest_seatrace.engine.shards.starter import ShardStop, Starter
from pytest_seatrace.engine.shards.travel import (
    PYTHON_VERSION,
    h3_on_shard,
    pack,
    plugin_version,
    release_rows,
    tls_on_shard,
    unpack,
)


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


class _Recorder(ResponseRecorder):
    """Records each response and keeps what the coordinator needs to classify it (no rules
    here: the coordinator has them)."""

    def __init__(self, keep_body: bool) -> None:
        self.keep_body = keep_body
        self.answers: dict[int, tuple[bytes, list[tuple[bytes, bytes]] | None]] = {}

    @property
    def needs_response(self) -> bool:
        return self.keep_body

    def keep(self, rec: Record, body: bytes | None, response: ResponseSource) -> None:
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
            rec.call_ns,
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
        self.releases: list[Any] = []
        """The firer's single-datagram releases so far: the new ones go with each wave's records."""
        self._reported = 0
        self._held: list[Records] = []

    def extend(self, wave: Iterable[Record]) -> None:
        rows = [self._recorder.row(rec) for rec in wave]
        state = self._state
        sent = pack(rows, self._packed)  # execnet's serialiser is slow
        releases = release_rows(self.releases[self._reported :])
        self._reported = len(self.releases)
        late = state.get("late", 0)
        message = Records(state["round"], state["wave"], sent, late, self.replaced(), releases)
        self._held.append(message)
        if not self.hold:
            self.flush()

    def flush(self) -> None:
        held, self._held = self._held, []
        for message in held:
            self._channel.send(message.encode())


async def _receive(channel: Any) -> Message:
    try:
        return decode(await anyio.to_thread.run_sync(channel.receive, abandon_on_cancel=True))
    except EOFError:
        raise ShardStop("the coordinator closed the channel") from None


class _Race:
    """This shard's side of one race: its firer, and a handler per message of the coordinator's
    (``coordinator_<name>``, dispatched by name) until ``End``."""

    def __init__(self, channel: Any, plan: Plan, folder: str) -> None:
        self.channel = channel
        race = plan.race
        config = race.config()
        self.roster = _Share(config)
        self.fields = _Fields((name, _Field(name)) for name in plan.varying)
        method: Any = self.fields.get("method") or plan.method  # a _Field when it varies
        request: dict[str, Any] = {**plan.constants, **self.fields}
        request.pop("method", None)
        spec = RequestSpec(method, **request)
        self.recorder = _Recorder(plan.keep_body)
        tls_verify = tls_on_shard(plan.tls, folder)  # aioquic loads a CA bundle from its file
        ssl_context = ssl_context_for(race.sync, tls_verify)
        builder = RequestBuilder(spec, plan.base_url, ssl_context)
        self.state = {"round": 0, "wave": 0}
        starter = Starter(channel, self.state, self.fields.install, float(race.timeout))
        try:
            self.firer = firer = make_firer(
                race.sync,
                config,
                self.recorder,
                ssl_context,
                builder=builder,
                roster=self.roster,
                base_url=plan.base_url,
                hooks=starter,
                tls_verify=tls_verify,
                h3_at=h3_on_shard(plan.h3_at),
            )
        except Http3Error as exc:  # single-datagram without the [http3] extra on this host
            where = f"{sys.executable} on {socket.gethostname()}"
            raise RaceUsageError(f"{exc}: install it into {where}") from None
        self.sink = sink = _Sink(channel, self.recorder, self.state, plan.python_version == PYTHON_VERSION)
        sink.replaced = lambda: getattr(firer, "replaced", 0)
        sink.releases = getattr(firer, "datagram_releases", [])
        starter.before_start = sink.flush
        if isinstance(firer, LastByteFirer):
            sink.hold = True  # until the next wave's prefixes are written: see _Sink
        share = -(-race.concurrency // plan.shards)
        ensure_open_files(share * race.parallel)  # one set of connections: waves take turns

    async def run(self, first: Message) -> None:
        """Race every round the coordinator sends (``first`` came before the event loop ran)."""
        message = first
        try:
            while True:
                handler = dispatch(self, "coordinator", message)
                if handler is None:
                    raise ShardStop(f"unexpected {message.called!r} from the coordinator")
                if not await handler(message):
                    return
                message = await _receive(self.channel)
        finally:
            with anyio.CancelScope(shield=True):
                await self.firer.aclose()

    async def coordinator_clock(self, message: ClockRequest) -> bool:
        self.channel.send(ClockReading(time.time_ns()).encode())
        return True

    async def coordinator_round(self, message: Round) -> bool:
        self.roster.share = {int(index): list(ids) for index, ids in unpack(message.share).items()}
        self.fields.clear_values()
        self.fields.install(message.tables)
        self.state["round"], self.state["wave"] = message.round, 0
        try:
            await self.firer.fire_waves(message.round, message.waves, self.sink)
        finally:
            self.sink.flush()  # the round's last wave (or the waves before a failure)
        return True

    async def coordinator_end(self, message: End) -> bool:
        return False


def _root(exc: BaseException) -> BaseException:
    """The first real exception inside task groups' exception groups."""
    while isinstance(getattr(exc, "exceptions", None), tuple) and exc.exceptions:  # type: ignore[attr-defined]
        exc = exc.exceptions[0]  # type: ignore[attr-defined]
    return exc


def _hello() -> Hello:
    return Hello(
        host=socket.gethostname(),
        pid=os.getpid(),
        python=sys.executable,
        python_version=PYTHON_VERSION,
        version=plugin_version(),
        wall_ns=time.time_ns(),
        perf_ns=time.perf_counter_ns(),
    )


def serve(channel: Any) -> None:
    """Say hello, take the plan, answer the clock exchange, then race as the coordinator says
    until it ends the race or closes the channel."""
    channel.send(_hello().encode())
    try:
        plan = decode(channel.receive())
        first = decode(channel.receive())
        while isinstance(first, ClockRequest):  # answered here, not through the event loop: tighter bounds
            channel.send(ClockReading(time.time_ns()).encode())
            first = decode(channel.receive())
    except EOFError:  # the coordinator did not want this shard (another version)
        return
    if not isinstance(plan, Plan):
        return
    with tempfile.TemporaryDirectory(prefix="seatrace-shard-") as folder:
        try:
            anyio.run(_run, channel, plan, folder, first)
        except BaseException as exc:  # every failure goes back as a message
            root = _root(exc)
            if isinstance(root, (ShardStop, EOFError)) or channel.isclosed():
                return
            text = str(root) if isinstance(root, RaceUsageError) else f"{type(root).__name__}: {root}"
            channel.send(Failed(text).encode())


async def _run(channel: Any, plan: Plan, folder: str, first: Message) -> None:
    await _Race(channel, plan, folder).run(first)
