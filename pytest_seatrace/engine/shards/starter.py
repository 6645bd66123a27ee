"""What a shard's firer awaits before each wave's release: ready, then the start instant.

The shard reports ``Ready`` and waits for the coordinator's ``Start`` (with the next wave's
fields, installed before the spin): it sleeps in the event loop, then in ``time.sleep``, spins the
last ~0.2 ms, and releases. A last-byte firer heralds the next wave as soon as this one is
answered: the shard then reports ready at once, with the instant it expects to have written the
next wave's prefixes and handed over this wave's records (at the slowest rate of its last
waves), and the coordinator's round trip overlaps with that work instead of following it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import anyio

from pytest_seatrace.engine.shards.messages import Missed, Ready, Start, decode

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


class ShardStop(Exception):
    """The shard leaves the race (it missed a start, or the coordinator is gone)."""


def receive_now(channel: Any, timeout: float) -> Any:
    """The next message, blocking this thread: for the start instant, when the shard has
    nothing else to do (a hop through a worker thread cost 0.2-1.5 ms on 2 cores)."""
    try:
        return channel.receive(timeout)
    except EOFError:
        raise ShardStop("the coordinator closed the channel") from None
    except Exception as exc:  # execnet's TimeoutError: the coordinator gave up on this shard
        raise ShardStop(f"no start instant within {timeout:g}s ({type(exc).__name__})") from None


class Starter:
    """The firer's hooks (``engine.waves.WaveHooks``) on a shard: before each wave's release,
    ready, then the start instant; after it, the CPU given up; a last-byte firer's herald."""

    paced = True

    def __init__(
        self,
        channel: Any,
        state: dict[str, int],
        install: Callable[[Any], None],
        timeout: float,
    ) -> None:
        self.channel, self.state, self.install = channel, state, install
        """``install``: the next wave's fields, as ``Start`` brings them."""
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
        self._heralded = (here, writes, time.perf_counter_ns())
        eta = time.time_ns() + HERALD_NS + writes * self.write_ns
        self.channel.send(Ready(here[0], here[1], eta).encode())

    def released(self) -> None:
        """Let another shard of this host release on time."""
        if hasattr(os, "sched_yield"):
            os.sched_yield()

    async def start(self) -> None:
        self.state["wave"] += 1
        here = [self.state["round"], self.state["wave"]]
        heralded, self._heralded = self._heralded, None
        if heralded is None or heralded[0] != here:
            heralded = None
            self.channel.send(Ready(here[0], here[1], 0).encode())
        self.before_start()
        if heralded is not None and heralded[1]:  # this wave was heralded: how long it took
            _, writes, began = heralded
            self._rates.append((time.perf_counter_ns() - began) // writes)
            del self._rates[:-RATES]
            self.write_ns = max(self._rates)
        await self._wait(here)

    async def _wait(self, here: list[int]) -> None:
        channel = self.channel
        message = decode(receive_now(channel, self.timeout))
        if not isinstance(message, Start):
            raise ShardStop(f"expected a start instant, got {message.called!r}")
        at = message.at_ns
        if message.tables is not None:
            self.install(message.tables)
        late = time.time_ns() - at
        if late > MISSED_NS:
            channel.send(Missed(here[0], here[1], late).encode())
            raise ShardStop("missed the start")
        wait = at - time.time_ns() - COARSE_NS
        if wait > 0:  # the event loop's sleep wakes up to a millisecond late: only the far part
            await anyio.sleep(wait / 1e9)
        wait = at - time.time_ns() - SPIN_NS
        if wait > 0:  # nothing else runs in this shard now: a precise blocking sleep
            time.sleep(wait / 1e9)  # noqa: ASYNC251 - blocking on purpose: the gate is next
        now = time.time_ns
        while now() < at:
            pass
        self.state["late"] = now() - at
