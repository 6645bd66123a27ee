"""One shard as the coordinator sees it: its gateway's channel, its clock map, and how it ended.

A shard that cannot start, dies, or says something other than what is due is failed with a
reason naming its gateway spec; its channel is closed and the coordinator races on without it.
What a shard says when it leaves a race (``Missed``, ``Failed``, ``ImportFailed``) is turned into
that reason by the link's ``shard_<name>`` handler (``messages.dispatch``).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from pytest_seatrace.core.records import ShardInfo
from pytest_seatrace.engine.shards import remote
from pytest_seatrace.engine.shards.clock import ClockMap
from pytest_seatrace.engine.shards.gateways import Gateways
from pytest_seatrace.engine.shards.messages import (
    CROSSING,
    ClockReading,
    ClockRequest,
    Failed,
    Hello,
    ImportFailed,
    Message,
    Missed,
    Plan,
    decode,
    dispatch,
)
from pytest_seatrace.engine.shards.travel import PYTHON_VERSION, cannot_travel, plugin_version

_M = TypeVar("_M", bound=Message)
HELLO_TIMEOUT_S = 30.0
"""A started gateway's first answer (its python imports the engine)."""


@dataclass
class ShardLink:
    number: int
    spec: str
    occurrence: int
    channel: Any = None
    host: str = ""
    pid: int = 0
    packed: bool = False
    """Same Python version on both sides: rows and tables travel as ``marshal`` bytes."""
    clock: ClockMap = field(default_factory=ClockMap)
    failure: str | None = None
    inbox: dict[str, Message] = field(default_factory=dict)
    """A wave's ``Ready`` that came before the last wave's ``Records``, or the other way round."""
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
        clock = self.clock
        return ShardInfo(
            self.number,
            self.spec,
            self.host,
            self.pid,
            clock.offset_ns,
            clock.error_ns,
            self.failure,
            self.late_ns,
        )

    # -- starting ------------------------------------------------------------------------------

    def open(self, pool: Gateways, plan: Plan, timeout: float) -> None:
        """Start (or reuse) the gateway, start the shard on it, hand it ``plan``, map its clock
        (blocking); a failure fails the shard."""
        try:
            gateway = pool.gateway(self.spec, self.occurrence)
        except Exception as exc:
            self.fail(f"the gateway could not start ({type(exc).__name__}: {exc}); check the spec's python=")
            return
        try:
            channel = gateway.remote_exec(remote)
        except OSError:  # a kept gateway that died since: start a new one, once
            pool.discard(self.spec, self.occurrence)
            try:
                channel = pool.gateway(self.spec, self.occurrence).remote_exec(remote)
            except Exception as exc:
                self.fail(f"the gateway could not start ({type(exc).__name__}: {exc})")
                return
        self.channel = channel
        try:
            hello = decode(channel.receive(HELLO_TIMEOUT_S))
        except Exception as exc:
            self.fail(f"the shard did not start ({type(exc).__name__}: {exc})")
            return
        if not isinstance(hello, Hello):
            self.ended_by(hello, Hello)
            return
        here = plugin_version()
        if hello.version != here:
            there = hello.version
            self.fail(
                f"pytest-seatrace {there} there, {here} here: install the same version into {hello.python}"
            )
            return
        self.host, self.pid, self.packed = hello.host, hello.pid, hello.python_version == PYTHON_VERSION
        try:
            channel.send(plan.encode())
        except Exception as exc:
            self.fail(f"the shard did not start ({type(exc).__name__}: {exc})")
            return
        try:
            self.clock = ClockMap.measure(lambda: self._ask_time(timeout), hello.wall_ns, hello.perf_ns)
        except Exception as exc:
            self.fail(f"the clock exchange failed ({type(exc).__name__}: {exc})")

    def _ask_time(self, timeout: float) -> int:
        self.channel.send(ClockRequest().encode())
        reading = decode(self.channel.receive(timeout))
        if not isinstance(reading, ClockReading):
            raise TypeError(f"sent {reading.called!r} where {ClockReading.NAME!r} was due")
        return reading.wall_ns

    # -- racing --------------------------------------------------------------------------------

    def send(self, message: Message) -> None:
        """A message to this live shard; one that cannot be sent ends the shard (or, when the
        request's arguments cannot travel, the race: a usage error)."""
        try:
            self.channel.send(message.encode())
        except Exception as exc:
            if type(exc).__name__ == "DumpError" or isinstance(exc, ValueError):
                raise cannot_travel(exc) from None
            self.fail(f"died mid-race ({type(exc).__name__}: {exc})")

    def expect(self, due: type[_M], timeout: float, late: str) -> _M | None:
        """The next message, which must be a ``due`` (blocking; ``late``: the reason when none
        comes within ``timeout``); anything else ends the shard (``None``)."""
        import execnet

        early = self.inbox.pop(due.NAME, None)
        if early is not None:
            return early  # type: ignore[return-value]  # filed under its own kind's name
        try:
            message = decode(self.channel.receive(timeout))
            while message.NAME in CROSSING and message.NAME != due.NAME and message.NAME not in self.inbox:
                self.inbox[message.NAME] = message  # one wave's ready and another's records cross
                message = decode(self.channel.receive(timeout))
        except execnet.TimeoutError:
            self.fail(late)
            return None
        except Exception as exc:
            self.fail(f"died mid-race ({type(exc).__name__}: {exc})")
            return None
        if isinstance(message, due):
            return message
        self.ended_by(message, due)
        return None

    def ended_by(self, message: Message, due: type[Message]) -> None:
        """``message`` came where a ``due`` was expected: the shard is failed with what it said."""
        handler = dispatch(self, "shard", message)
        self.fail(
            handler(message) if handler is not None else f"sent {message.called!r} where {due.NAME!r} was due"
        )

    # Handlers of what a shard says when it leaves a race: the reason it is failed with.

    def shard_missed(self, message: Missed) -> str:
        return (
            f"missed the start of round {message.round} wave {message.wave} by {message.late_ns / 1e6:.1f} ms"
        )

    def shard_error(self, message: Failed) -> str:
        return f"failed: {message.text}"

    def shard_import_error(self, message: ImportFailed) -> str:
        python = message.python
        return (
            f"pytest_seatrace is not importable by {python} ({message.error}): install "
            f"pytest-seatrace into that python ({python} -m pip install pytest-seatrace), "
            "or point the spec's python= at one that has it"
        )


async def gather(
    links: Sequence[ShardLink],
    due: type[_M],
    wait: float,
    late: str,
    then: Callable[[ShardLink, _M], None] | None = None,
    last: Callable[[dict[int, _M]], None] | None = None,
) -> dict[int, _M]:
    """The next message of each shard, which must be a ``due`` (``ShardLink.expect``), each
    handed to ``then`` as it comes; ``last`` runs in the receiving thread that completes the set
    (on 2 cores a hop through the event loop cost a shard its CPU at the worst moment)."""
    got: dict[int, _M] = {}
    lock = threading.Lock()
    left = [len(links)]

    def receive(link: ShardLink) -> _M | None:
        message = link.expect(due, wait, late)
        with lock:
            if message is not None:
                got[link.number] = message
            left[0] -= 1
            complete = left[0] == 0
        if complete and last is not None:
            last(got)
        return message

    async def one(link: ShardLink) -> None:
        message = await anyio.to_thread.run_sync(receive, link, abandon_on_cancel=True)
        if message is not None and then is not None:
            then(link, message)

    async with anyio.create_task_group() as tg:
        for link in links:
            tg.start_soon(one, link)
    return got
