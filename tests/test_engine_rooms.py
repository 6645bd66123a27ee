"""The engine's rooms on their own: the wave pipeline and its declared hooks, the keep-alive pool,
an HTTP/2 connection's state table. No server: fakes stand for the connections and the start."""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass

import anyio
import anyio.lowlevel
import pytest

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.records import Record
from pytest_seatrace.engine.http2 import HTTP2Connection, LinkState
from pytest_seatrace.engine.keepalive import PROBE_NS
from pytest_seatrace.engine.pool import KeptPool
from pytest_seatrace.engine.stream import NetworkStream, Origin
from pytest_seatrace.engine.waves import ReleaseAtOnce, WavePipeline

A = Origin("http", "127.0.0.1", 8001)
B = Origin("http", "127.0.0.1", 8002)


# -- the wave pipeline -----------------------------------------------------------------------


class Hooks:
    paced = True

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def start(self) -> None:
        self.log.append("hooks.start")

    def released(self) -> None:
        self.log.append("hooks.released")

    def herald(self, writes: int) -> None:
        self.log.append(f"hooks.herald({writes})")


class Steps(WavePipeline[list[Record]]):
    """A start that only says which step ran, for which wave."""

    log: list[str]

    def equip(self) -> None:
        self.log = []

    async def build(self, rnd: int, indices: Sequence[int]) -> list[Record]:
        self.log.append(f"build{list(indices)}")
        return [Record(resource=i, client=c, round=rnd) for i in indices for c in (1, 2)]

    def records(self, wave: list[Record]) -> list[Record]:
        return wave

    async def prepare(self, rnd: int, wave: list[Record]) -> None:
        self.log.append(f"prepare{sorted({r.resource for r in wave})}")

    async def ready(self, rnd: int, wave: list[Record]) -> None:
        self.log.append("ready")

    async def release(self, rnd: int, indices: Sequence[int], wave: list[Record]) -> None:
        assert self.in_flight == wave  # Ctrl-C from here on keeps the wave's records
        self.log.append(f"release{list(indices)}")

    async def collect(self, wave: list[Record]) -> None:
        await anyio.lowlevel.checkpoint()
        self.log.append("collect")

    async def settle(self) -> None:
        self.log.append("settle")


class HeraldingSteps(Steps):
    heralds = True


def steps(heralds: bool, hooks: Hooks | None) -> Steps:
    config = RaceConfig(resources=(1, 2), concurrency=2, timeout=1.0)
    kind = HeraldingSteps if heralds else Steps
    return kind(config, None, None, None, hooks=hooks)  # type: ignore[arg-type]


def test_the_pipeline_tells_its_hooks_of_every_wave_in_order() -> None:
    log: list[str] = []
    firer = steps(True, Hooks(log))
    firer.log = log
    sink: list[Record] = []
    anyio.run(firer.fire_waves, 1, [range(0, 1), range(1, 2)], sink)
    assert log[:5] == ["build[0]", "prepare[0]", "ready", "hooks.start", "release[0]"]
    assert log[5] == "hooks.released"
    assert sorted(log[6:8]) == ["build[1]", "collect"]  # the next wave is built during collection
    assert log[8:10] == ["settle", "hooks.herald(2)"]  # the next wave's prefixes: two clients
    assert log[10:] == ["prepare[1]", "ready", "hooks.start", "release[1]", "hooks.released", "collect"]
    assert [(r.resource, r.client) for r in sink] == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert firer.in_flight == []


def test_a_start_that_does_not_herald_never_tells_the_hook() -> None:
    log: list[str] = []
    firer = steps(False, Hooks(log))
    firer.log = log
    anyio.run(firer.fire_waves, 1, [range(0, 1), range(1, 2)], [])
    assert not [entry for entry in log if entry.startswith("hooks.herald")]
    assert log.count("hooks.start") == log.count("hooks.released") == 2


def test_without_hooks_every_wave_is_released_at_once() -> None:
    firer = steps(True, None)
    assert isinstance(firer.hooks, ReleaseAtOnce)
    assert firer.hooks.paced is False
    anyio.run(firer.fire_waves, 1, [range(0, 2)], [])
    assert "release[0, 1]" in firer.log


# -- the keep-alive pool ---------------------------------------------------------------------


@dataclass(eq=False)
class Conn:
    origin: Origin
    idle_since: int
    spoke: bool = False
    closed: bool = False

    def close(self) -> None:
        self.closed = True


def test_the_pool_keeps_by_origin_and_weeds_what_the_server_spoke_on() -> None:
    firer = steps(False, None)
    pool: KeptPool[Conn] = KeptPool(lambda conns: [c.spoke for c in conns], firer.keepalive)
    quiet, closed, other = Conn(A, 0), Conn(A, 0, spoke=True), Conn(B, 0)
    for conn in (quiet, closed, other):
        pool.keep(pool.opened(conn), 1)  # answered at 1 ns: idle ever since
    assert len(pool) == 3
    pool.weed(origin=A)
    assert closed.closed
    assert not quiet.closed
    assert not other.closed
    assert firer.replaced == 1
    assert firer.keepalive.limit_ns is not None  # the close taught the server's keep-alive
    assert pool.take(A) is quiet
    assert pool.take(A) is None  # nothing else kept to A
    assert pool.take(B) is other
    pool.close()
    assert [conn.closed for conn in (quiet, other)] == [True, True]  # every connection it opened


def test_the_probe_waits_once_for_the_connections_of_its_origin() -> None:
    firer = steps(False, None)
    pool: KeptPool[Conn] = KeptPool(lambda conns: [False for _ in conns], firer.keepalive)

    async def probes() -> tuple[int, int, int, int]:
        empty = await pool.probe(A)  # nothing kept yet: no wait, and the probe is still to come
        pool.keep(Conn(A, 0), time.perf_counter_ns())  # just answered
        return empty, await pool.probe(B), await pool.probe(A), await pool.probe(A)

    empty, elsewhere, first, second = anyio.run(probes)
    assert empty == elsewhere == 0  # nothing kept (to that origin): no wait, the probe still to come
    assert 0 < first <= PROBE_NS  # the rest of PROBE_S since the connection was answered
    assert second == 0  # once a race


# -- an HTTP/2 connection's state --------------------------------------------------------------


def test_a_link_moves_only_along_its_table_and_may_always_close() -> None:
    ours, theirs = socket.socketpair()
    try:
        link = HTTP2Connection(NetworkStream(ours, A))
        assert link.state is LinkState.CONNECTING
        assert link.state.doing == "connecting"
        with pytest.raises(RuntimeError, match="CONNECTING -> HOLDING"):
            link.move(LinkState.HOLDING)
        link.move(LinkState.SETTINGS)
        assert link.state.doing == "waiting for the server's HTTP/2 SETTINGS"
        link.close()
        assert link.state.name == "CLOSED"
        with pytest.raises(RuntimeError, match="CLOSED -> SETTINGS"):
            link.move(LinkState.SETTINGS)
    finally:
        theirs.close()
