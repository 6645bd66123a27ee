"""Stand-ins for gateways and channels, so the shard coordinator can be tested as pytest-xdist
tests ``DSession`` with ``MockGateway``/``MockNode`` (``testing/test_dsession.py``).

- ``TappedPool``: real popen gateways, but the channel to one shard passes through a ``Tap`` that
  sees every message as its dataclass and may change, hold back, delay or drop it, or kill the
  shard: another host's clock and the faults, with no hook in the product.
- ``ScriptedPool``: no process at all; each shard is a ``ScriptedChannel`` that answers the
  coordinator's messages as a test script says.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import execnet

from pytest_seatrace.engine.shards import GatewayPool
from pytest_seatrace.engine.shards.messages import (
    ClockReading,
    ClockRequest,
    Hello,
    Message,
    Ready,
    Records,
    Round,
    Start,
    decode,
)
from pytest_seatrace.engine.shards.travel import PYTHON_VERSION, plugin_version

TAP_WAIT_S = 10.0
"""The longest a tap waits for a shard's message it needs before a fault (bounded)."""


class Tap:
    """The channel to one real shard, with a test in its path. Subclasses override ``outgoing``
    (coordinator to shard) and ``incoming`` (shard to coordinator): each returns the message to
    pass on, or ``None`` to drop it."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.held: list[Any] = []
        """Messages read from the shard ahead of the coordinator (``read_until``)."""
        self.passed: list[Message] = []
        """Messages of the shard's that reached the coordinator."""
        self.pid = 0
        self.round = 0
        self.wave = 0
        """The wave the last ``Start`` sent was for (counted from each ``Round``)."""

    # what the coordinator calls
    def send(self, data: Any) -> None:
        message = decode(data)
        if isinstance(message, Round):
            self.round, self.wave = message.round, 0
        elif isinstance(message, Start):
            self.wave += 1
        passed = self.outgoing(message)
        if passed is not None:
            self.channel.send(passed.encode())

    def receive(self, timeout: float | None = None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.held:
                data = self.held.pop(0)
            else:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                data = self.channel.receive(left)
            message = decode(data)
            if isinstance(message, Hello):
                self.pid = message.pid
            passed = self.incoming(message)
            if passed is not None:
                self.passed.append(passed)
                return passed.encode()

    def close(self) -> None:
        self.channel.close()

    def isclosed(self) -> bool:
        return bool(self.channel.isclosed())

    # what a test changes
    def outgoing(self, message: Message) -> Message | None:
        return message

    def incoming(self, message: Message) -> Message | None:
        return message

    # helpers for faults
    def read_until(self, wanted: Callable[[Message], bool]) -> None:
        """Read the shard's messages ahead of the coordinator (kept for it, in order) until one
        is ``wanted``; bounded by ``TAP_WAIT_S``."""
        deadline = time.monotonic() + TAP_WAIT_S
        while not any(wanted(m) for m in self.passed) and not any(wanted(decode(d)) for d in self.held):
            self.held.append(self.channel.receive(max(0.0, deadline - time.monotonic())))

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)


class ClockAhead(Tap):
    """The shard's wall clock runs ``offset_ns`` ahead of ours (another host's clock): every wall
    instant it sends is shifted forward, every one it gets shifted back."""

    def __init__(self, channel: Any, offset_ns: int) -> None:
        super().__init__(channel)
        self.offset_ns = offset_ns

    def incoming(self, message: Message) -> Message | None:
        if isinstance(message, Hello | ClockReading):
            return dataclasses.replace(message, wall_ns=message.wall_ns + self.offset_ns)
        if isinstance(message, Ready) and message.eta_ns:
            return dataclasses.replace(message, eta_ns=message.eta_ns + self.offset_ns)
        return message

    def outgoing(self, message: Message) -> Message | None:
        if isinstance(message, Start):
            return dataclasses.replace(message, at_ns=message.at_ns - self.offset_ns)
        return message


class KilledAtStart(Tap):
    """The shard is killed (SIGKILL) when the start of ``(round, wave)`` is due to it, once it has
    sent the wave before's records (as a shard killed after it got that start)."""

    def __init__(self, channel: Any, at: tuple[int, int]) -> None:
        super().__init__(channel)
        self.at = at

    def outgoing(self, message: Message) -> Message | None:
        if isinstance(message, Start) and (self.round, self.wave) == self.at:
            before = self.wave - 1
            self.read_until(lambda m: isinstance(m, Records) and (m.round, m.wave) == (self.round, before))
            self.kill()
            return None
        return message


class ReadyWithheld(Tap):
    """The shard's ready report for ``(round, wave)`` never reaches the coordinator."""

    def __init__(self, channel: Any, at: tuple[int, int]) -> None:
        super().__init__(channel)
        self.at = at

    def incoming(self, message: Message) -> Message | None:
        if isinstance(message, Ready) and (message.round, message.wave) == self.at:
            return None
        return message


class StartDelayed(Tap):
    """The start of ``(round, wave)`` reaches the shard ``delay_s`` late (a busy host)."""

    def __init__(self, channel: Any, at: tuple[int, int], delay_s: float) -> None:
        super().__init__(channel)
        self.at, self.delay_s = at, delay_s
        self.timers: list[threading.Timer] = []

    def outgoing(self, message: Message) -> Message | None:
        if isinstance(message, Start) and (self.round, self.wave) == self.at:
            timer = threading.Timer(self.delay_s, self.channel.send, (message.encode(),))
            self.timers.append(timer)
            timer.start()
            return None
        return message


class _TappedGateway:
    def __init__(self, gateway: Any, tap: Callable[[Any], Tap], taps: list[Tap]) -> None:
        self.gateway, self.tap, self.taps = gateway, tap, taps

    def remote_exec(self, source: Any) -> Tap:
        tap = self.tap(self.gateway.remote_exec(source))
        self.taps.append(tap)
        return tap

    def exit(self) -> None:
        self.gateway.exit()


class TappedPool(GatewayPool):
    """Real gateways; the channels to the shards keyed here pass through their taps."""

    def __init__(self, taps: dict[tuple[str, int], Callable[[Any], Tap]]) -> None:
        super().__init__()
        self.tap_for = taps
        self.taps: list[Tap] = []

    def gateway(self, spec: str, occurrence: int) -> Any:
        real = super().gateway(spec, occurrence)
        tap = self.tap_for.get((spec, occurrence))
        return real if tap is None else _TappedGateway(real, tap, self.taps)


# -- no process at all -----------------------------------------------------------------------------

Script = Callable[[Message], list[Any]]
"""The coordinator's message → what the scripted shard answers (messages, or raw data)."""


def hello(**changes: Any) -> Hello:
    fields = {
        "host": "scripted",
        "pid": 4242,
        "python": "/scripted/python",
        "python_version": PYTHON_VERSION,
        "version": plugin_version(),
        "wall_ns": time.time_ns(),
        "perf_ns": time.perf_counter_ns(),
    }
    return Hello(**{**fields, **changes})


def clock_answers(message: Message) -> list[Any]:
    """A shard on our own clock: the clock exchange answered, nothing else."""
    return [ClockReading(time.time_ns())] if isinstance(message, ClockRequest) else []


class ScriptedChannel:
    """A shard's channel in this process: ``first`` is what it says when started, ``script`` its
    answers; it records what it was sent. Nothing due: execnet's ``TimeoutError``, at once."""

    def __init__(self, first: list[Any], script: Script) -> None:
        self.queue = list(first)
        self.script = script
        self.sent: list[Message] = []
        self.closed = False

    def send(self, data: Any) -> None:
        message = decode(data)
        self.sent.append(message)
        self.queue.extend(self.script(message))

    def receive(self, timeout: float | None = None) -> Any:
        if self.closed:
            raise EOFError("closed")
        if not self.queue:
            raise execnet.TimeoutError("nothing due from the scripted shard")
        item = self.queue.pop(0)
        return item.encode() if isinstance(item, Message) else item

    def close(self) -> None:
        self.closed = True

    def isclosed(self) -> bool:
        return self.closed


class ScriptedGateway:
    def __init__(self, channel: ScriptedChannel) -> None:
        self.channel = channel

    def remote_exec(self, source: Any) -> ScriptedChannel:
        return self.channel

    def exit(self) -> None:
        self.channel.close()


class ScriptedPool:
    """Gateways that start no process: shard ``n`` (1-based) answers through ``channels[n - 1]``;
    a ``channels`` entry that is an exception is raised by ``gateway()`` (a gateway that cannot
    start)."""

    def __init__(self, channels: list[ScriptedChannel | Exception]) -> None:
        self.channels = channels
        self.closed = False

    def gateway(self, spec: str, occurrence: int) -> Any:
        channel = self.channels[occurrence]
        if isinstance(channel, Exception):
            raise channel
        return ScriptedGateway(channel)

    def discard(self, spec: str, occurrence: int) -> None:
        pass

    def close(self) -> None:
        self.closed = True
