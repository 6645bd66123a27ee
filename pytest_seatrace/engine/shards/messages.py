"""What the coordinator and its shards say to each other: one dataclass per message, each named.

execnet carries builtins only, so a message travels as ``(name, {field: value})`` (the shape in
which pytest-xdist's workers send their events) and is rebuilt by its name on the far side; both
sides import these definitions, so a field is added in one place. A receiver hands a message it
did not wait for to its ``<role>_<name>`` method (``dispatch``), as xdist's ``DSession`` calls
``worker_<event>``.

Coordinator to shard: ``Plan`` (once), ``ClockRequest`` (a few times), then per round ``Round``
(the first wave's fields), per wave ``Start`` (with the next wave's fields), and ``End``. Shard to
coordinator: ``Hello`` (or, from ``remote.py``, ``ImportFailed``), ``ClockReading``, per wave
``Ready`` and ``Records``, or ``Missed``/``Failed`` once it leaves the race.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pytest_seatrace.engine.shards.travel import RaceSettings

if sys.version_info >= (3, 11):
    from typing import dataclass_transform
elif TYPE_CHECKING:
    from typing_extensions import dataclass_transform
else:  # Python 3.10 at run time: the marker only tells type checkers what ``_message`` makes

    def dataclass_transform(**_: Any) -> Callable[[Any], Any]:
        return lambda decorator: decorator


_M = TypeVar("_M", bound="Message")
_KINDS: dict[str, type[Message]] = {}


@dataclass(frozen=True, slots=True)
class Message:
    """A message; ``NAME`` is what it is called on the wire and in its handlers' names."""

    NAME: ClassVar[str] = "message"
    PARTS: ClassVar[dict[str, Callable[..., Any]]] = {}
    """Fields that are dataclasses themselves: they travel as dicts and are rebuilt by these."""

    @property
    def called(self) -> str:
        """What the sender called it (an unrecognised message: whatever it said)."""
        return self.NAME

    def encode(self) -> tuple[str, dict[str, Any]]:
        """This message as builtins, for ``channel.send``."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in self.PARTS:
            values[name] = plain_fields(values[name])
        return (self.NAME, values)


def plain_fields(data: Any) -> dict[str, Any]:
    """A dataclass's fields as a dict (not ``dataclasses.asdict``, which deep-copies)."""
    return {f.name: getattr(data, f.name) for f in fields(data)}


@dataclass_transform(frozen_default=True)
def _message(name: str) -> Callable[[type[_M]], type[_M]]:
    """A message class: a frozen dataclass with slots, called ``name`` on the wire and in its
    handlers' names, known to ``decode``."""

    def register(kind: type[_M]) -> type[_M]:
        made = dataclass(frozen=True, slots=True)(kind)
        made.NAME = name
        _KINDS[name] = made
        return made

    return register


@dataclass(frozen=True, slots=True)
class Unrecognised(Message):
    """What arrived was not a message of this version (the far side runs another one)."""

    NAME: ClassVar[str] = "unrecognised"
    said: str

    @property
    def called(self) -> str:
        return self.said


def decode(data: Any) -> Message:
    """A message as received; anything that is not one of ours is ``Unrecognised``."""
    try:
        name, values = data
        kind = _KINDS[name]
        parts = {key: build(**values[key]) for key, build in kind.PARTS.items()}
        return kind(**{**values, **parts})
    except (TypeError, ValueError, KeyError):
        said = data[0] if isinstance(data, tuple) and data and isinstance(data[0], str) else repr(data)
        return Unrecognised(said[:200])


def dispatch(receiver: object, role: str, message: Message) -> Callable[[Any], Any] | None:
    """``receiver``'s handler of ``message``: its method ``<role>_<name>`` (``-`` read as ``_``),
    or ``None`` when it has none."""
    handler: Callable[[Any], Any] | None = getattr(receiver, f"{role}_{message.NAME.replace('-', '_')}", None)
    return handler


# -- coordinator to shard -----------------------------------------------------------------------


@_message("plan")
class Plan(Message):
    """The race as a shard needs it: settings, the request's constant fields, which fields vary
    (their values come wave by wave), and this shard's place."""

    PARTS: ClassVar[dict[str, Callable[..., Any]]] = {"race": RaceSettings}
    number: int
    shards: int
    race: RaceSettings
    keep_body: bool
    """A predicate needs whole responses: every body and the headers go back."""
    base_url: str | None
    tls: tuple[str, Any]
    """``travel.tls_for_shard``: verification, or a CA bundle's text."""
    method: str | None
    """``None`` when the method varies (it is then among ``varying``)."""
    constants: dict[str, Any]
    varying: list[str]
    python_version: list[int]
    """The coordinator's: equal to the shard's, tables and rows travel as ``marshal`` bytes."""
    h3_at: list[list[Any]] = field(default_factory=list)
    """``travel.h3_for_shard``: where HTTP/3 answers, when ``auto`` found it off the URL's port."""


@_message("clock")
class ClockRequest(Message):
    """What time is it on your wall clock? (answered with ``ClockReading``)"""


@_message("round")
class Round(Message):
    round: int
    waves: list[list[int]]
    share: Any
    """This shard's clients of every resource index (packed like the tables)."""
    tables: Any
    """The first wave's varying fields of this shard's clients."""


@_message("start")
class Start(Message):
    at_ns: int
    """The start instant on the shard's own wall clock."""
    tables: Any
    """The next wave's varying fields, or ``None``."""


@_message("end")
class End(Message):
    """The race is over: the shard closes its connections and returns."""


# -- shard to coordinator -----------------------------------------------------------------------


@_message("hello")
class Hello(Message):
    host: str
    pid: int
    python: str
    python_version: list[int]
    version: str
    """The pytest-seatrace installed there: both sides must run the same one."""
    wall_ns: int
    perf_ns: int
    """One (``time_ns``, ``perf_counter_ns``) pair of the shard's host, read together."""


@_message("import-error")
class ImportFailed(Message):
    """Sent by ``remote.py``, which imports nothing of ours (it writes this message by hand)."""

    python: str
    error: str


@_message("clock-reading")
class ClockReading(Message):
    wall_ns: int


@_message("ready")
class Ready(Message):
    round: int
    wave: int
    eta_ns: int
    """When a heralded wave's prefixes will be written (the shard's wall clock), else 0."""


@_message("records")
class Records(Message):
    round: int
    wave: int
    rows: Any
    """One row per request (``worker.Recorder.row``), packed like the tables."""
    late_ns: int
    """The latest this shard released a wave after its start instant so far."""
    replaced: int
    """Kept connections it replaced so far (the server had closed them)."""
    releases: list[list[int]] = field(default_factory=list)
    """A single-datagram wave's releases on this shard (``travel.release_rows``)."""


@_message("missed")
class Missed(Message):
    round: int
    wave: int
    late_ns: int


@_message("error")
class Failed(Message):
    text: str


CROSSING = frozenset({Ready.NAME, Records.NAME})
"""Messages that cross: in last-byte mode a shard reports the next wave ready (a herald) before
it sends the last wave's records."""
