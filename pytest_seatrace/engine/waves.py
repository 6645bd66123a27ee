"""The wave pipeline every connection-owning start runs: build, prepare, release, collect.

Waves take turns at the service: wave ``i + 1`` is built (client-side work only, nothing sent)
while the answers of wave ``i`` come in, then connected and written once wave ``i`` is answered
in full, on the connections it kept alive. That last answer is the settle point: a service
still parsing the next wave while it answers this one spreads this wave's arrivals and is busy
when the next release comes (measured in ``benchmarks/detection.py``).

A start (``engine.lastbyte``, ``engine.single_packet``) says how each step is done; its owner
(the runner, a shard) hears of the steps through the hooks the ``Firer`` protocol declares.
"""

from __future__ import annotations

import socket
import ssl
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Generic, Protocol, TypeVar

import anyio

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.records import Record
from pytest_seatrace.engine.classify import ResponseRecorder
from pytest_seatrace.engine.keepalive import KeepAlive
from pytest_seatrace.engine.plan import Roster, keep_outcome
from pytest_seatrace.engine.requests import RequestBuilder
from pytest_seatrace.engine.stream import data_segments_out


class WaveHooks(Protocol):
    """What a firer's owner is told of each wave (a shard paces its release by them)."""

    @property
    def paced(self) -> bool:
        """The release waits for an instant named elsewhere (a shard's start instant): every
        replacement happens before it, and nothing is sent after it."""

    async def start(self) -> None:
        """Awaited once per wave right before the held bytes go out."""

    def released(self) -> None:
        """Called right after each wave's held bytes are out (a shard gives up its CPU there, so
        that another shard of the same host releases on time)."""

    def herald(self, writes: int) -> None:
        """Told, as soon as a wave is answered, how many prefixes of the next wave are about to
        be written on its kept connections (a shard tells its coordinator when it expects to be
        ready, before it hands over the records). Only starts that write on kept connections
        per client herald (last-byte)."""


@dataclass(frozen=True, slots=True)
class GateWrite:
    """What one resource's gate cost on the wire: for tests and benchmarks, never for judging."""

    round: int
    resource: int
    connections: int
    streams: int
    bytes: int
    sends: int
    """``send()`` calls made at the gate: one per connection unless a socket buffer was full."""
    ns: int
    """From just before the first gate ``send()`` (last-byte: once its release order is drawn)
    to the return of the last."""
    segments: int | None = None
    """TCP segments with data those sends made (``count_segments`` on Linux), else None."""
    datagrams: int | None = None
    """UDP datagrams of an HTTP/3 release (single-datagram: its ``sends``); None over TCP."""


def segments_now(socks: Sequence[socket.socket]) -> list[int | None]:
    """Each socket's TCP segments with data sent so far (Linux; None elsewhere)."""
    return [data_segments_out(sock) for sock in socks]


def segments_since(before: Sequence[int | None], socks: Sequence[socket.socket]) -> int | None:
    """Segments with data the sockets sent since ``before``; None unless every one was counted."""
    counted = [
        (a, b) for a, b in zip(before, segments_now(socks), strict=True) if a is not None and b is not None
    ]
    return sum(b - a for a, b in counted) if len(counted) == len(socks) else None


class ReleaseAtOnce:
    """The hooks of a race with no one to wait for: every wave is released as soon as it is
    ready."""

    paced = False

    async def start(self) -> None:
        return None

    def released(self) -> None:
        return None

    def herald(self, writes: int) -> None:
        return None


class Firer(Protocol):
    """A start mode's firer, as the runner and the shard worker drive it."""

    ungated: list[str]
    """Keys of attempts that returned without awaiting ``a.gate()`` (gate mode only)."""
    hooks: WaveHooks
    """What the firer tells its owner of each wave (``ReleaseAtOnce`` unless a shard)."""

    @property
    def in_flight(self) -> list[Record]:
        """The records of the wave being fired, until they are in the sink: Ctrl-C keeps those
        sent."""

    async def fire_waves(self, rnd: int, waves: Sequence[Sequence[int]], sink: list[Record]) -> None: ...

    async def aclose(self) -> None: ...


W = TypeVar("W")


class WavePipeline(ABC, Generic[W]):
    """The wave loop, once; a start fills in its steps for its own wave type ``W``."""

    heralds: ClassVar[bool] = False
    """Whether ``hooks.herald`` hears of the next wave (see ``WaveHooks.herald``)."""

    def __init__(
        self,
        config: RaceConfig,
        builder: RequestBuilder,
        ssl_context: ssl.SSLContext | None,
        classifier: ResponseRecorder,
        roster: Roster | None = None,
        *,
        hooks: WaveHooks | None = None,
    ) -> None:
        self.config = config
        self.builder = builder
        self.ssl_context = ssl_context
        """For ``https`` origins (the start's ALPN set on it)."""
        self.classifier = classifier
        self.roster = roster or Roster(config)
        """Who races, and what their ``setup=`` returned; a shard: its share of every resource's
        clients."""
        self.hooks: WaveHooks = hooks or ReleaseAtOnce()
        self.keepalive = KeepAlive()
        """The server's keep-alive as learned (its pool's), and how many kept connections were
        replaced."""
        self.ungated: list[str] = []
        """Always empty: every request here waits for the release."""
        self.in_flight: list[Record] = []
        """The wave being raced, until its records are in the sink (Ctrl-C keeps those sent)."""
        self.equip()

    @abstractmethod
    def equip(self) -> None:
        """The start's own parts (its pool, its outcomes), once the common fields are set."""

    @property
    def replaced(self) -> int:
        """Kept connections the server closed (or was about to) that fresh ones replaced."""
        return self.keepalive.replaced

    async def fire_waves(self, rnd: int, waves: Sequence[Sequence[int]], sink: list[Record]) -> None:
        """Race every wave of a round, appending each wave's records to ``sink`` as it ends."""
        if not waves:
            return
        wave = await self.build(rnd, waves[0])
        for number, indices in enumerate(waves):
            await self.prepare(rnd, wave)
            self.in_flight = self.records(wave)
            await self.ready(rnd, wave)
            await self.hooks.start()
            await self.release(rnd, indices, wave)
            self.hooks.released()
            upcoming: list[W] = []
            failures: list[Exception] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.collect, wave)
                if number + 1 < len(waves):
                    tg.start_soon(keep_outcome, upcoming, failures, self.build, rnd, waves[number + 1])
            if upcoming:
                await self.settle()  # before a herald: a shard's promised instant includes it
                if self.heralds:
                    self.hooks.herald(self.writes(upcoming[0]))
            sink.extend(self.records(wave))
            self.in_flight = []
            if failures:  # e.g. a request callable that raised: after this wave's figures are kept
                raise failures[0]
            if upcoming:
                wave = upcoming[0]

    @abstractmethod
    async def build(self, rnd: int, indices: Sequence[int]) -> W:
        """The wave's requests: client-side work only, nothing sent."""

    @abstractmethod
    def records(self, wave: W) -> list[Record]:
        """The wave's records, one per racing client."""

    @abstractmethod
    async def prepare(self, rnd: int, wave: W) -> None:
        """Connections (kept or new) and every request written but its held bytes."""

    async def ready(self, rnd: int, wave: W) -> None:
        """The last look before ``hooks.start``: kept connections the server closed since."""
        return None

    @abstractmethod
    async def release(self, rnd: int, indices: Sequence[int], wave: W) -> None:
        """The held bytes of every resource of the wave, back to back."""

    @abstractmethod
    async def collect(self, wave: W) -> None:
        """Every answer, with one deadline: ``timeout`` after the release."""

    async def settle(self) -> None:
        """Between a wave's last answer and the next wave's writing."""
        return None

    def writes(self, wave: W) -> int:
        """Prefixes the wave will write (for ``hooks.herald``)."""
        return len(self.records(wave))
