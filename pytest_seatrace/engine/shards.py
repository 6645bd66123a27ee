"""Sharded races: one race's clients over several execnet gateways, with one start per wave.

execnet is the engine under pytest-xdist; a ``GatewayPool`` (owned by the session) starts one
gateway per spec on first use and reuses it for every sharded race. ``ShardedFirer`` is the
coordinator: it is a firer like the others (``run_race`` drives its rounds, resets, verify and
interruptions), but its waves run on the shards (``shard_worker.py``, started through
``shard_remote.py``):

1. the plan travels as plain data: the request's constant fields once, its varying fields
   evaluated here per client, wave by wave (a wave's travel with the previous wave's start);
   every shard holds a share of every resource's clients;
2. per wave each shard connects and writes its prefixes and reports ready (in last-byte mode
   it reports as soon as the last wave is answered, with the instant it expects to have
   written them: a herald); the start instant is half a millisecond after the last ready
   report on our wall clock, or the latest such expected instant, sent to each shard
   corrected by its clock offset by the thread that heard that report; each shard sleeps,
   spins the last ~0.2 ms, and releases;
3. each shard sends back its records (status, arrival stamp, body start, stamps on its own
   ``perf_counter_ns``); they are mapped onto our clock and classified here, a shard's as
   they arrive, while the next wave races.

Clocks: at start each shard sends a (``time_ns``, ``perf_counter_ns``) pair, and its wall-clock
offset is estimated NTP-style over its channel (the exchange with the shortest round trip; the
error bound is half of it). A shard that cannot start, dies, or misses a start makes its clients'
records errors that name its gateway spec; the other shards' records are kept.
"""

from __future__ import annotations

import contextlib
import functools
import json
import marshal
import os
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import httpx

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.errors import RaceUsageError
from pytest_seatrace.core.records import Outcome, Record, ShardInfo
from pytest_seatrace.engine import shard_remote
from pytest_seatrace.engine.classify import Classifier
from pytest_seatrace.engine.plan import REQUEST_FIELDS, Attempt, RacePlan, RequestSpec, Roster
from pytest_seatrace.engine.requests import RequestBuilder
from pytest_seatrace.engine.shard_worker import plugin_version, unpack

_T = TypeVar("_T")
SHARD_TEST_ENV = "SEATRACE_SHARD_TEST"
"""Tests only: JSON ``{"<shard number>": {"offset_ns": ..., "kill_at": [round, wave],
"delay_ready_at": [round, wave], "delay_ready_s": ..., "slow_at": [round, wave], "slow_s":
...}}`` shipped to those shards (an injected clock offset stands for another host's clock; the
others are faults: ``slow_at`` stalls a shard after it heralded that wave)."""
NTP_EXCHANGES = 12
START_MARGIN_NS = 500_000
"""The start instant is at least this much (plus four best round trips) after the last ready
report; a heralded wave starts when its slowest shard expects to have written its prefixes,
if that is later. (2 ms was the first figure: with heralds the wait overlaps with the writing,
and each wave's turn-around on 2 cores went from ~6 ms to ~3.5 ms, one process's ~3 ms.)"""
RELEASE_NS = 4_000_000
"""After the start instant the coordinator leaves the cores to the releasing shards this long
before its own work (classifying the last wave, the next tables): on 2 cores, that work done
at once kept a shard off the CPU at its start instant and made it ~2 ms late."""
GRACE_S = 1.0
"""Beyond the race's timeout, for messages to cross the channel."""
HELLO_TIMEOUT_S = 30.0
"""A started gateway's first answer (its python imports the engine)."""


class GatewayPool:
    """The session's gateways: one per (spec, occurrence), started on first use, reused by every
    sharded race, torn down by ``close()`` (the plugin calls it when the session ends)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._group: Any = None
        self._gateways: dict[tuple[str, int], Any] = {}

    def gateway(self, spec: str, occurrence: int) -> Any:
        """The gateway for ``spec`` (blocking: starting one takes 0.1-0.5 s locally)."""
        import execnet

        key = (spec, occurrence)
        with self._lock:
            if self._group is None:
                self._group = execnet.Group()
            group = self._group
            gateway = self._gateways.get(key)
        if gateway is None:
            gateway = group.makegateway(spec)
            with self._lock:
                self._gateways[key] = gateway
        return gateway

    def discard(self, spec: str, occurrence: int) -> None:
        """Forget a gateway that died (the next race starts a new one)."""
        with self._lock:
            gateway = self._gateways.pop((spec, occurrence), None)
        if gateway is not None:
            with contextlib.suppress(Exception):
                gateway.exit()

    @property
    def started(self) -> int:
        return len(self._gateways)

    def close(self) -> None:
        """Tear every gateway down (a gateway that will not exit is killed)."""
        with self._lock:
            group, self._group = self._group, None
            self._gateways.clear()
        if group is not None:
            group.terminate(timeout=1.0)


@dataclass
class _Shard:
    number: int
    spec: str
    occurrence: int
    channel: Any = None
    host: str = ""
    pid: int = 0
    packed: bool = False
    """Same Python version on both sides: rows and tables travel as ``marshal`` bytes."""
    offset_ns: int = 0
    error_ns: int = 0
    delta_ns: int = 0
    """Added to this shard's ``perf_counter_ns`` stamps: the same instant on our clock."""
    failure: str | None = None
    inbox: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    """A wave's ``ready`` that came before the last wave's ``records``, or the other way round."""
    late_ns: int = 0
    """The latest it released a wave after the start instant (its own clock)."""
    replaced: int = 0
    """Kept connections it replaced so far (the server had closed them)."""

    @property
    def name(self) -> str:
        return f"shard {self.number} ({self.spec})"

    @property
    def live(self) -> bool:
        return self.failure is None

    def fail(self, reason: str) -> None:
        if self.failure is None:
            self.failure = f"{self.name}: {reason}"
        if self.channel is not None:
            with contextlib.suppress(Exception):
                self.channel.close()

    def info(self) -> ShardInfo:
        return ShardInfo(
            self.number,
            self.spec,
            self.host,
            self.pid,
            self.offset_ns,
            self.error_ns,
            self.failure,
            self.late_ns,
        )


_IN_TURN = frozenset({"ready", "records"})
"""Messages that cross: in last-byte mode a shard reports the next wave ready (a herald) before
it sends the last wave's records."""
_HTTPX_FIELDS = frozenset({"headers", "params", "cookies", "url"})
"""The request fields a callable may answer with an httpx container."""


def _plain(name: str, value: Any) -> Any:
    """httpx's own containers as builtins, which execnet can carry."""
    if isinstance(value, httpx.Headers):
        return list(value.multi_items())
    if isinstance(value, httpx.QueryParams):
        return list(value.multi_items())
    if isinstance(value, httpx.Cookies):
        return dict(value.items())
    if isinstance(value, httpx.URL):
        return str(value)
    return value


def _tls(tls_verify: Any) -> tuple[str, Any]:
    if isinstance(tls_verify, ssl.SSLContext):
        raise RaceUsageError(
            "tls_verify=<ssl.SSLContext>: a context cannot cross an execnet channel to a shard; "
            "for shards pass tls_verify=True, False or the path of a CA bundle"
        )
    if isinstance(tls_verify, bool):
        return ("bool", tls_verify)
    if isinstance(tls_verify, (str, os.PathLike)):
        try:
            return ("ca", Path(tls_verify).read_text(encoding="utf-8"))  # the far host may lack the file
        except OSError as exc:
            raise RaceUsageError(f"tls_verify={tls_verify!r}: cannot read the CA bundle ({exc})") from None
    raise RaceUsageError(f"tls_verify={tls_verify!r}: for shards expected True, False or a CA bundle path")


def _cannot_travel(exc: Exception) -> RaceUsageError:
    return RaceUsageError(
        f"shards: a request argument cannot travel to a shard ({exc}); request arguments of "
        "sharded races must be builtins (str, bytes, numbers, lists, dicts)"
    )


def _knobs() -> dict[str, Any]:
    text = os.environ.get(SHARD_TEST_ENV)
    if not text:
        return {}
    knobs: dict[str, Any] = json.loads(text)
    return knobs


class ShardedFirer:
    """Fires a race's waves on its shards; the records come back mapped and classified."""

    def __init__(
        self,
        plan: RacePlan,
        config: RaceConfig,
        builder: RequestBuilder,
        classifier: Classifier,
        roster: Roster,
        pool: GatewayPool,
    ) -> None:
        self.plan = plan
        self.config = config
        self.builder = builder
        self.spec: RequestSpec = builder.spec
        self.classifier = classifier
        self.roster = roster
        self.pool = pool
        self.ungated: list[str] = []
        """Always empty: request races only."""
        self._fired: list[tuple[int, Sequence[int], int, list[tuple[int, dict[int, list[int]]]]]] = []
        """Waves started whose records are not in the sink yet: round, resource indices, start
        instant, and each shard that raced them with its share (resource index → clients)."""
        seen: dict[str, int] = {}
        self._shards: list[_Shard] = []
        for number, spec in enumerate(config.tx, 1):
            self._shards.append(_Shard(number, spec, seen.get(spec, 0)))
            seen[spec] = seen.get(spec, 0) + 1
        self._tls = _tls(plan.target.tls_verify)
        fields = ("method", *REQUEST_FIELDS)  # the method may vary too: a race of mixed operations
        self._varying = [name for name in fields if callable(getattr(self.spec, name))]
        self._constants = {
            name: _plain(name, getattr(self.spec, name))
            for name in REQUEST_FIELDS
            if name not in self._varying and getattr(self.spec, name) is not None
        }
        self._targets: dict[tuple[str, str, str], str] = {}
        """(method, URL, params) as evaluated → the request target it makes (operations)."""
        self._values: dict[tuple[int, int, int], dict[str, Any]] = {}
        """(round, resource index, client) → the varying fields evaluated for it (predicates'
        ``response.request`` is built from them, only when asked for)."""
        self._one_operation: str | None = None
        """The operation of every record, when neither method nor URL nor query varies."""
        self._started = False
        self._interrupted = False

    @property
    def shards(self) -> tuple[ShardInfo, ...]:
        return tuple(shard.info() for shard in self._shards)

    @property
    def replaced(self) -> int:
        """Kept connections the shards replaced (the server had closed them)."""
        return sum(shard.replaced for shard in self._shards)

    # -- starting ------------------------------------------------------------------------------

    def _plan_data(self, shard: _Shard, knobs: dict[str, Any]) -> dict[str, Any]:
        cfg = self.config
        return {
            "number": shard.number,
            "shards": len(self._shards),
            "mode": cfg.sync,
            "keep_body": self.classifier.needs_response,
            "resources": len(cfg.resources),
            "concurrency": cfg.concurrency,
            "timeout": cfg.timeout,
            "hold": cfg.hold,
            "hold_given": cfg.hold_given,
            "parallel": cfg.parallel,
            "seed": cfg.seed,
            "base_url": self.plan.target.base_url,
            "tls": self._tls,
            "method": None if self.spec.method_varies else self.spec.method,
            "constants": self._constants,
            "varying": self._varying,
            "knobs": knobs.get(str(shard.number), {}),
            "python_version": list(sys.version_info[:2]),
        }

    def _open(self, shard: _Shard, knobs: dict[str, Any]) -> None:
        """Start (or reuse) the shard's gateway, start the shard, map its clock (blocking)."""
        try:
            gateway = self.pool.gateway(shard.spec, shard.occurrence)
        except Exception as exc:
            shard.fail(f"the gateway could not start ({type(exc).__name__}: {exc}); check the spec's python=")
            return
        try:
            channel = gateway.remote_exec(shard_remote)
        except OSError:  # a kept gateway that died since: start a new one, once
            self.pool.discard(shard.spec, shard.occurrence)
            try:
                channel = self.pool.gateway(shard.spec, shard.occurrence).remote_exec(shard_remote)
            except Exception as exc:
                shard.fail(f"the gateway could not start ({type(exc).__name__}: {exc})")
                return
        shard.channel = channel
        try:
            channel.send(("plan", self._plan_data(shard, knobs)))
            message = channel.receive(HELLO_TIMEOUT_S)
        except Exception as exc:
            shard.fail(f"the shard did not start ({type(exc).__name__}: {exc})")
            return
        if message[0] == "import-error":
            shard.fail(
                f"pytest_seatrace is not importable by {message[1]} ({message[2]}): install "
                f"pytest-seatrace into that python ({message[1]} -m pip install pytest-seatrace), "
                "or point the spec's python= at one that has it"
            )
            return
        hello = message[1]
        here = plugin_version()
        if hello["version"] != here:
            shard.fail(
                f"pytest-seatrace {hello['version']} there, {here} here: install the same "
                f"version into {hello['python']}"
            )
            return
        shard.host, shard.pid = hello["host"], hello["pid"]
        shard.packed = hello.get("python_version") == list(sys.version_info[:2])
        try:
            shard.offset_ns, shard.error_ns = self._offset(channel)
        except Exception as exc:
            shard.fail(f"the clock exchange failed ({type(exc).__name__}: {exc})")
            return
        here_wall, here_perf = time.time_ns(), time.perf_counter_ns()
        shard.delta_ns = (hello["wall_ns"] - hello["perf_ns"]) - shard.offset_ns - (here_wall - here_perf)

    def _offset(self, channel: Any) -> tuple[int, int]:
        """The shard's wall clock minus ours, from the exchange with the shortest round trip."""
        best: tuple[int, int] | None = None
        for _ in range(NTP_EXCHANGES):
            sent = time.time_ns()
            channel.send(("clock",))
            message = channel.receive(self.config.timeout + GRACE_S)
            back = time.time_ns()
            half = (back - sent) // 2
            if best is None or half < best[1]:
                best = (message[1] - (sent + half), half)
        return best or (0, 0)

    async def _start(self, meanwhile: Callable[[], _T]) -> _T:
        """Open every shard (in threads: they wait on their channels) and, meanwhile, run
        ``meanwhile`` here; its result."""
        knobs = _knobs()
        done: list[_T] = []
        failed: list[Exception] = []

        async def then() -> None:
            try:
                done.append(meanwhile())
            except Exception as exc:  # a request callable: raised as itself, not in a group
                failed.append(exc)

        async with anyio.create_task_group() as tg:
            for shard in self._shards:
                opening = functools.partial(self._open, shard, knobs)
                tg.start_soon(functools.partial(anyio.to_thread.run_sync, opening, abandon_on_cancel=True))
            tg.start_soon(then)  # after the threads are asked for (asyncio runs tasks in order)
        if failed:
            raise failed[0]
        return done[0]

    # -- racing ---------------------------------------------------------------------------------

    async def fire_waves(self, rnd: int, waves: Sequence[Sequence[int]], sink: list[Record]) -> None:
        try:
            await self._fire_waves(rnd, waves, sink)
        except (KeyboardInterrupt, anyio.get_cancelled_exc_class()):
            self._interrupted = True
            raise

    def _shares(self, waves: Sequence[Sequence[int]]) -> list[dict[int, list[int]]]:
        """Each shard's clients of every resource: client ``c`` goes to shard ``(c - 1) % N``."""
        count = len(self._shards)
        shares: list[dict[int, list[int]]] = [{} for _ in self._shards]
        for indices in waves:
            for index in indices:
                for client in self.roster.clients(index):
                    shares[(client - 1) % count].setdefault(index, []).append(client)
        return shares

    def _tables(
        self, rnd: int, share: dict[int, list[int]], indices: Sequence[int]
    ) -> dict[str, list[list[Any]]]:
        """The varying fields of this shard's clients of one wave, evaluated here (user callables
        stay here)."""
        tables: dict[str, list[list[Any]]] = {name: [] for name in self._varying}
        columns = [(name, tables[name].append, name in _HTTPX_FIELDS) for name in self._varying]
        kept, attempt_of, value = self._values, self.roster.attempt, self._value
        for index in indices:
            for client in share.get(index, ()):
                attempt = attempt_of(index, client, rnd)
                values = kept[(rnd, index, client)] = {}
                for name, append, plain in columns:
                    got = value(name, attempt)
                    values[name] = got = _plain(name, got) if plain else got
                    append([index, client, got])
        return tables

    def _wave_tables(
        self, rnd: int, shares: Sequence[dict[int, list[int]]], indices: Sequence[int]
    ) -> list[dict[str, list[list[Any]]] | None]:
        """One wave's tables for each shard (``None`` for a shard that dropped out)."""
        return [
            self._tables(rnd, share, indices) if shard.live else None
            for shard, share in zip(self._shards, shares, strict=True)
        ]

    def _packed(self, shard: _Shard, data: Any) -> Any:
        """``data`` as it travels to ``shard``: ``marshal`` bytes where both sides run the same
        Python (execnet's own serialiser is pure Python), else builtins."""
        return self._packable(data) if shard.packed and data is not None else data

    @staticmethod
    def _packable(tables: Any) -> bytes:
        try:
            return marshal.dumps(tables)
        except ValueError as exc:
            raise _cannot_travel(exc) from None

    def _value(self, name: str, attempt: Attempt) -> Any:
        return self.spec.method_of(attempt) if name == "method" else self.spec.value(name, attempt)

    def _operation(self, rnd: int, index: int, client: int) -> str:
        """The record's operation (``core.operations``), named here as in one process; the request
        target is worked out once per distinct method, URL and query."""
        if self._one_operation is not None:
            return self._one_operation
        values = self._values.get((rnd, index, client), {})
        method = str(values.get("method", self.spec.method))
        key = (method, repr(values.get("url")), repr(values.get("params")))
        target = self._targets.get(key)
        if target is None:
            request = self.builder.build_from(self._args(rnd, index, client))
            target = self._targets[key] = request.url.raw_path.decode("ascii")
        if not self.builder.operations.templated:  # one name per (method, target): no attempt needed
            name = self.builder.operation(method, target, None)  # type: ignore[arg-type]
            if not {"method", "url", "params"} & set(self._varying):
                self._one_operation = name  # a constant target: every record's operation
            return name
        return self.builder.operation(method, target, self.roster.attempt(index, client, rnd))

    def _check_first(self, rnd: int, share: dict[int, list[int]]) -> None:
        """Build one request here: a bad URL is a usage error at once, and ``first_url`` is known."""
        if self.builder.first_url is None:
            for index, clients in share.items():
                if clients:
                    self.builder.build_from(self._args(rnd, index, clients[0]))
                    return

    def _args(self, rnd: int, index: int, client: int) -> dict[str, Any]:
        args = {"method": self.spec.method, **self._constants, **self._values.get((rnd, index, client), {})}
        return {name: value for name, value in args.items() if value is not None}

    async def _fire_waves(self, rnd: int, waves: Sequence[Sequence[int]], sink: list[Record]) -> None:
        """Per wave: every shard ready, one start instant, its records. A wave's varying fields
        travel with the previous wave's start, and the coordinator's own work (the next tables,
        classifying the last wave) runs while the shards' requests are being answered, never
        while they wait to release."""
        self._values.clear()
        shares = self._shares(waves)
        head = functools.partial(self._wave_tables, rnd, shares, waves[0] if waves else ())
        if not self._started:  # the first wave's fields are evaluated while the shards start
            self._started = True
            tables = [await self._start(head)]
        else:
            tables = [head()]
        for shard, share in zip(self._shards, shares, strict=True):
            self._check_first(rnd, share)
            if shard.live:
                first = self._packed(shard, tables[0][shard.number - 1])
                self._send(shard, ("round", rnd, [list(w) for w in waves], self._packed(shard, share), first))
        failed: list[Exception] = []
        """A later wave's fields that raised (a request callable): the waves evaluated before it
        race, then the race stops, as in one process."""
        if len(waves) > 1:
            self._ahead(tables, failed, rnd, shares, waves[1])
        timeout = self.config.timeout + GRACE_S
        pending: Sequence[int] | None = None
        """The wave whose records are due: a last-byte shard sends them once the next wave's
        prefixes are written."""
        for number, indices in enumerate(waves):
            if number >= len(tables):  # its fields raised: nothing of it goes out
                break
            racing = [s for s in self._shards if s.live]
            upcoming = tables[number + 1] if number + 1 < len(tables) else None
            after = {
                s.number: None if upcoming is None else self._packed(s, upcoming[s.number - 1])
                for s in racing
            }
            starts: list[int] = []
            release = functools.partial(self._release, racing, after, starts)
            late = f"did not report ready within {timeout:g}s: it missed the start"
            await self._gather(racing, "ready", timeout, late, last=release)
            start = starts[0] if starts else time.time_ns()
            if starts:
                raced = [(s.number, shares[s.number - 1]) for s in racing if s.live]
                self._fired.append((rnd, indices, start, raced))
            await anyio.sleep(max(0, start + RELEASE_NS - time.time_ns()) / 1e9)
            if pending is not None:  # the last wave's records, classified while this one races
                sink.extend(await self._records(rnd, pending, shares, timeout))
                self._landed(pending)
            if number + 2 < len(waves) and not failed:
                self._ahead(tables, failed, rnd, shares, waves[number + 2])
            pending = indices
        if pending is not None:
            sink.extend(await self._records(rnd, pending, shares, timeout))
            self._landed(pending)
        if failed:
            raise failed[0]

    def _landed(self, indices: Sequence[int]) -> None:
        """A started wave's records are in the sink: no longer in flight."""
        self._fired = [wave for wave in self._fired if wave[1] is not indices]

    @property
    def in_flight(self) -> list[Record]:
        """The clients of the waves started whose records have not come back (read at Ctrl-C):
        their requests went out at the start instant (on our clock); the runner marks them
        unknown."""
        wall, perf = time.time_ns(), time.perf_counter_ns()
        return [
            Record(
                resource=index,
                client=client,
                round=rnd,
                sent_ns=perf - max(0, wall - start),
                shard=number,
                operation=self._operation(rnd, index, client),
            )
            for rnd, indices, start, raced in self._fired
            for number, share in raced
            for index in indices
            for client in share.get(index, ())
        ]

    def _ahead(
        self,
        tables: list[list[dict[str, list[list[Any]]] | None]],
        failed: list[Exception],
        rnd: int,
        shares: Sequence[dict[int, list[int]]],
        indices: Sequence[int],
    ) -> None:
        """A later wave's fields into ``tables``; a callable that raises goes to ``failed``, to be
        raised once the waves before it are in (their requests went out)."""
        try:
            tables.append(self._wave_tables(rnd, shares, indices))
        except Exception as exc:
            failed.append(exc)

    def _release(
        self,
        racing: Sequence[_Shard],
        after: dict[int, Any],
        starts: list[int],
        reports: dict[int, tuple[Any, ...]],
    ) -> None:
        """Send the start instant (and each shard's next fields) to every ready shard, from the
        thread that heard the last ready report: a little after it, or when the slowest
        heralded shard expects to be ready."""
        ready = [s for s in racing if s.live]
        margin = START_MARGIN_NS + 8 * max((s.error_ns for s in ready), default=0)
        expected = max((reports[s.number][3] - s.offset_ns for s in ready if s.number in reports), default=0)
        start = max(time.time_ns() + margin, expected)
        for shard in ready:
            self._send(shard, ("start", start + shard.offset_ns, after[shard.number]))
        starts.append(start)

    async def _records(
        self, rnd: int, indices: Sequence[int], shares: Sequence[dict[int, list[int]]], wait: float
    ) -> list[Record]:
        """A wave's records from every shard, on our clock and classified as each shard's arrive
        (one shard's requests are often all answered well before another's); a shard that sent
        none gives errors naming it."""
        merged: dict[int, list[Record]] = {}

        def merge(shard: _Shard, message: tuple[Any, ...]) -> None:
            shard.late_ns = max(shard.late_ns, int(message[4]))
            shard.replaced = max(shard.replaced, int(message[5]))
            merged[shard.number] = self._merge(shard, unpack(message[3]))

        live = [s for s in self._shards if s.live]
        late = f"sent no records within {wait:g}s of the start (hung or cut off)"
        await self._gather(live, "records", wait, late, then=merge)
        records: list[Record] = []
        for shard, share in zip(self._shards, shares, strict=True):
            got = merged.get(shard.number)
            records.extend(got if got is not None else self._lost(shard, rnd, indices, share))
        return records

    @staticmethod
    def _send(shard: _Shard, message: tuple[Any, ...]) -> None:
        """A message to a live shard; one that cannot be sent ends that shard (or, when the
        request's arguments cannot travel, the race: a usage error)."""
        try:
            shard.channel.send(message)
        except Exception as exc:
            if type(exc).__name__ == "DumpError" or isinstance(exc, ValueError):
                raise _cannot_travel(exc) from None
            shard.fail(f"died mid-race ({type(exc).__name__}: {exc})")

    async def _gather(
        self,
        shards: Sequence[_Shard],
        kind: str,
        wait: float,
        late: str,
        then: Callable[[_Shard, tuple[Any, ...]], None] | None = None,
        last: Callable[[dict[int, tuple[Any, ...]]], None] | None = None,
    ) -> dict[int, tuple[Any, ...]]:
        """The next message of each shard, which must be ``kind`` (any other ends that shard),
        each handed to ``then`` as it comes; ``last`` runs in the receiving thread that
        completes the set (on 2 cores a hop through the event loop cost a shard its CPU at
        the worst moment)."""
        got: dict[int, tuple[Any, ...]] = {}
        lock = threading.Lock()
        left = [len(shards)]

        def receive(shard: _Shard) -> tuple[Any, ...] | None:
            message = self._receive(shard, kind, wait, late)
            with lock:
                if message is not None:
                    got[shard.number] = message
                left[0] -= 1
                complete = left[0] == 0
            if complete and last is not None:
                last(got)
            return message

        async def one(shard: _Shard) -> None:
            message = await anyio.to_thread.run_sync(receive, shard, abandon_on_cancel=True)
            if message is not None and then is not None:
                then(shard, message)

        async with anyio.create_task_group() as tg:
            for shard in shards:
                tg.start_soon(one, shard)
        return got

    @staticmethod
    def _receive(shard: _Shard, kind: str, timeout: float, late: str) -> tuple[Any, ...] | None:
        import execnet

        early = shard.inbox.pop(kind, None)
        if early is not None:
            return early
        try:
            message: tuple[Any, ...] = shard.channel.receive(timeout)
            while message[0] in _IN_TURN and message[0] != kind and message[0] not in shard.inbox:
                shard.inbox[message[0]] = message  # one wave's ready and another's records cross
                message = shard.channel.receive(timeout)
        except execnet.TimeoutError:
            shard.fail(late)
            return None
        except Exception as exc:
            shard.fail(f"died mid-race ({type(exc).__name__}: {exc})")
            return None
        if message[0] == kind:
            return message
        if message[0] == "missed":
            late_ms = message[3] / 1e6
            shard.fail(f"missed the start of round {message[1]} wave {message[2]} by {late_ms:.1f} ms")
        elif message[0] == "error":
            shard.fail(f"failed: {message[1]}")
        else:
            shard.fail(f"sent {message[0]!r} where {kind!r} was due")
        return None

    def _lost(
        self, shard: _Shard, rnd: int, indices: Sequence[int], share: dict[int, list[int]]
    ) -> list[Record]:
        """The clients of a shard that dropped out: errors naming it (violations of kind ``error``
        unless ``allow_errors=True``, like any transport failure)."""
        now = time.perf_counter_ns()
        return [
            Record(
                resource=index,
                client=client,
                round=rnd,
                end_ns=now,
                outcome=Outcome.ERROR,
                reason=shard.failure,
                shard=shard.number,
            )
            for index in indices
            for client in share.get(index, [])
        ]

    def _merge(self, shard: _Shard, rows: Sequence[Sequence[Any]]) -> list[Record]:
        """A shard's records on our clock, classified here."""
        delta = shard.delta_ns
        out = []
        for row in rows:
            index, client, rnd, sent, end, status, outcome, reason, server, early, timed_out = row[:11]
            answered, body, headers = row[11:]
            rec = Record(
                resource=index,
                client=client,
                round=rnd,
                sent_ns=sent + delta if sent else 0,
                end_ns=end + delta if end else 0,
                status=status,
                outcome=Outcome(outcome),
                reason=reason,
                server_ns=server,
                early=early,
                timed_out=timed_out,
                shard=shard.number,
                operation=self._operation(rnd, index, client),
            )
            if answered:
                response = functools.partial(self._response, rnd, index, client, status, headers, body)
                self.classifier.decide(rec, body, response)  # the shard recorded status and stamp
            out.append(rec)
        return out

    def _response(
        self,
        rnd: int,
        index: int,
        client: int,
        status: int,
        headers: list[tuple[bytes, bytes]] | None,
        body: bytes | None,
    ) -> httpx.Response:
        request = self.builder.build_from(self._args(rnd, index, client))
        return httpx.Response(status, headers=headers or [], content=body or b"", request=request)

    async def aclose(self) -> None:
        for shard in self._shards:
            if shard.channel is not None:
                with contextlib.suppress(Exception):
                    if shard.live:
                        shard.channel.send(("end",))
                    shard.channel.close()
        if self._interrupted:  # Ctrl-C: no gateway outlives the race
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self.pool.close)
