"""One keep-alive pool per origin, for HTTP/1.1 and HTTP/2 connections alike.

A connection that ends a wave healthy is kept for the next wave and round. Before one is
reused, the pool drops those the server spoke on while they sat idle (closed them, sent a
GOAWAY) and those idle too near its keep-alive to outlive a prefix (``engine.keepalive``), and
counts each as replaced. Like httpcore's ``connection_pool.py``, it is the only place that keeps
connections; unlike it, a connection is checked in batches (one ``poll()`` for all), since a
wave reuses hundreds at once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Generic, Protocol, TypeVar

import anyio

from pytest_seatrace.engine.keepalive import KeepAlive
from pytest_seatrace.engine.stream import Origin, TransportError


class Kept(Protocol):
    """What the pool needs of a connection."""

    origin: Origin
    idle_since: int
    """When it was last answered (``perf_counter_ns``); its idle age counts from here."""

    def close(self) -> None: ...


C = TypeVar("C", bound=Kept)


class KeptPool(Generic[C]):
    """Kept connections by origin, every connection opened (closed at the end), and what was
    learned of the server's keep-alive."""

    def __init__(self, spoke: Callable[[Sequence[C]], Sequence[bool]], keepalive: KeepAlive) -> None:
        self.keepalive = keepalive
        """The server's keep-alive as learned, and how many kept connections were replaced."""
        self._spoke = spoke
        """Which of some kept connections the server spoke on while idle (a close, a GOAWAY)."""
        self._idle: dict[Origin, list[C]] = {}
        self._opened: list[C] = []
        """Every connection ever opened, so a cancelled race still closes them all."""

    def __len__(self) -> int:
        return sum(len(kept) for kept in self._idle.values())

    def __iter__(self) -> Iterator[C]:
        for kept in self._idle.values():
            yield from kept

    def opened(self, conn: C) -> C:
        """A fresh connection, closed with the pool whatever becomes of it."""
        self._opened.append(conn)
        return conn

    def keep(self, conn: C, idle_since: int) -> None:
        """Keep ``conn``, answered at ``idle_since``, for a later wave."""
        conn.idle_since = idle_since
        self._idle.setdefault(conn.origin, []).append(conn)

    def give_back(self, conn: C) -> None:
        """Return a kept connection taken but not used, as idle as it was."""
        self._idle.setdefault(conn.origin, []).append(conn)

    async def open_into(self, out: list[C], count: int, open_one: Callable[[], Awaitable[C]]) -> None:
        """``count`` connections opened at once, added to ``out``; when one fails, every
        connection of ``out`` goes back to the pool and the first failure is raised (not an
        exception group: it is meant for the streams that wanted them)."""
        failures: list[TransportError] = []

        async def one() -> None:
            try:
                out.append(await open_one())
            except TransportError as exc:
                failures.append(exc)

        async with anyio.create_task_group() as tg:
            for _ in range(count):
                tg.start_soon(one)
        if failures:
            for conn in out:
                self.give_back(conn)
            raise failures[0]

    def take(self, origin: Origin) -> C | None:
        """The connection to ``origin`` kept last (weed first), or ``None``."""
        kept = self._idle.get(origin)
        return kept.pop() if kept else None

    async def probe(self, origin: Origin | None = None) -> int:
        """Once a race, before kept connections are first reused: leave them idle ``PROBE_S``,
        so that a server that closes each one soon after answering shows it now. Returns the
        nanoseconds waited, for ``weed``."""
        kept = list(self) if origin is None else self._idle.get(origin, [])
        wait = self.keepalive.probe_wait([conn.idle_since for conn in kept], time.perf_counter_ns())
        if not wait:
            return 0
        await anyio.sleep(wait)
        return int(wait * 1e9)

    def weed(self, probed_ns: int = 0, origin: Origin | None = None) -> None:
        """Drop the kept connections (to ``origin``, or all) the server spoke on since, and those
        idle too near its keep-alive to outlive a prefix: fresh ones replace them. After a probe
        of ``probed_ns``, a close teaches the idle time it began at (the connection was open
        then, as far as anyone looked), not the time it was found at."""
        keepalive = self.keepalive
        for where in [origin] if origin is not None else list(self._idle):
            pool = self._idle.get(where)
            if not pool:
                continue
            kept = []
            spoke = self._spoke(pool)
            now = time.perf_counter_ns()
            for conn, found in zip(pool, spoke, strict=True):
                idle = now - conn.idle_since
                if not found and not keepalive.stale(idle):
                    kept.append(conn)
                    continue
                if found:
                    keepalive.closed_after(idle - probed_ns)
                keepalive.replaced += 1
                conn.close()
            pool[:] = kept

    def close(self) -> None:
        for conn in self._opened:
            conn.close()
        self._opened.clear()
        self._idle.clear()
