"""What the engine writes down per request, and what one race run hands to the judges.

Small on purpose: 50,000 records must stay in a few MB. Records from several processes merge
by concatenation; every figure of a result is derived from them.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from pytest_seatrace.core.document import StoppedDoc

BODY_KEEP = 1024
"""Bytes of a winning response body kept for reports (the first KiB)."""
SAMPLE_LOSERS = 3
"""Non-winning responses per resource shown as samples when they are of one kind (one per kind
when there are more kinds, up to ``SAMPLE_KINDS``)."""
SAMPLE_KINDS = 8
"""Most non-winning samples per resource: one per distinct (status, reason)."""


class Outcome(enum.IntEnum):
    """How one response counts towards the invariant."""

    __module__ = "pytest_seatrace"  # the public name: tracebacks and pickles say it

    WIN = 0
    REJECTION = 1
    ERROR = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(slots=True)
class Record:
    """One request of a race.

    ``sent_ns`` is when its final write returned (gate mode: when it was handed to the client),
    ``end_ns`` when the response was complete (or the outcome was decided), both
    ``time.perf_counter_ns``. ``server_ns`` is the service's ``X-Arrival-Ns`` stamp, or 0.
    """

    __module__ = "pytest_seatrace"  # the public name: tracebacks and pickles say it

    resource: int
    client: int
    round: int
    sent_ns: int = 0
    end_ns: int = 0
    status: int = 0
    outcome: Outcome = Outcome.ERROR
    reason: str | None = None
    """Why it is an error or unknown (``500 database is locked``, ``connection refused``)."""
    said: str | None = None
    """What a non-winning response's body said, in short (``core.reasons``); ``None`` for a
    win, an empty body, or no response."""
    body: bytes | None = None
    """The first KiB of the body: every winner's, and a few samples of each kind of the rest."""
    server_ns: int = 0
    fatal: bool = False
    """Fails the race even with ``allow_errors=True``: a predicate or attempt function raised."""
    early: bool = False
    """Answered before its held bytes were sent: classified as usual, but not synchronised."""
    by_rule: bool = False
    """Classified by a ``success=``/``reject=``/``error=`` rule the test gave (not a built-in default)."""
    timed_out: bool = False
    """Its outcome was decided by ``timeout`` (unknown after the gate, an error before it)."""
    operation: str = ""
    """What it did: ``POST /seats/{resource}/book`` (``core.operations``); empty for a
    ``race.run`` attempt without a model (with one, named from the request its response
    answers) and for a client whose set-up failed (nothing was sent)."""
    shard: int = 0
    """The shard (execnet gateway, 1-based) that sent it; 0: the test process itself."""
    call_ns: int = 0
    """The earliest instant the server could act on it (design §7), stamped before the write that
    made that possible: the release at ``hold="headers"``, the start of the prefix write at
    ``hold="body"``, for single-packet (a bodyless request's: its gate write, where its HEADERS
    go) and for a request answered early, the start of sending in gate mode. 0: nothing of it was
    sent (not an operation of the history)."""
    input: Hashable = None
    """What the model's input function took from the request (model races only)."""
    output: Hashable = None
    """What the model's read function took from the response (model races only; ``None`` when
    the response was no win, or the function has no read)."""

    @property
    def latency_ns(self) -> int:
        return max(0, self.end_ns - self.sent_ns) if self.sent_ns else 0


@dataclass(frozen=True, slots=True)
class Raced:
    """What was raced, so a report read later explains itself: the first request's method and
    URL (credentials and secret-looking query values already stripped), the base URL, and the
    HTTP version spoken."""

    method: str
    url: str
    base_url: str | None
    http_version: str
    stripped: tuple[str, ...] = ()
    """What was taken out of the URL (``userinfo``, query parameter names)."""
    why: str | None = None
    """Why this start ran, when ``sync="auto"`` had something to say (``HTTP/3 offered by Alt-Svc
    h3=:8443``, ``no HTTP/3: …``)."""


@dataclass(frozen=True, slots=True)
class ShardInfo:
    """One shard of a sharded race: where it ran and how its clock was mapped onto ours.

    ``offset_ns`` is its wall clock minus ours (NTP-style estimate over its channel),
    ``error_ns`` the estimate's bound (half the best round trip); ``failure`` says why the
    shard dropped out (could not start, died, missed a start), ``None`` when it raced throughout.
    """

    number: int
    spec: str
    host: str = ""
    pid: int = 0
    offset_ns: int = 0
    error_ns: int = 0
    failure: str | None = None
    late_ns: int = 0
    """The latest it released a wave after the start instant (a busy host wakes up late)."""


@dataclass(frozen=True, slots=True)
class DatagramRelease:
    """One resource's release in a single-datagram race: what went out in UDP datagrams."""

    round: int
    resource: int
    """The resource's index."""
    connections: int
    streams: int
    datagrams: int
    bytes: int
    build_ns: int
    """Handing over the held bytes and building the datagrams, before the gate."""
    write_ns: int
    """The back-to-back ``sendto`` calls alone: the gate write."""
    stream_credit: int = 0
    """Streams the server grants a fresh connection: why a release took more than one."""
    shard: int = 0
    """The shard that released it (0: not sharded)."""


@dataclass(frozen=True, slots=True)
class WaveDone:
    """Progress of a running race, after each wave: for a live line, never for judging."""

    round: int
    rounds: int
    wave: int
    """Waves done in this round (1-based)."""
    waves: int
    records: Sequence[Record]
    """Every record so far (the engine's own list: read it, do not keep it)."""
    expect: range = range(1, 2)
    """Winners allowed per resource and round: a live count of too many can be made."""


@dataclass(frozen=True, slots=True)
class Stop:
    """Where and why a race ended before its last wave: a hook failed (``by="hook"``) or the run
    was interrupted (``by="interrupted"``, Ctrl-C)."""

    by: str
    round: int
    wave: int | None
    """The wave in flight, or the one being built (1-based); ``None``: at a reset or ``verify=``."""
    waves: int
    """Waves per round."""
    reason: str
    error: BaseException | None = field(default=None, compare=False, repr=False)
    """The test's own exception (a hook's), raised as the ``RaceViolation``'s ``__cause__``."""

    @property
    def where(self) -> str:
        """``round 2, wave 3 of 3`` or ``round 2``."""
        wave = f", wave {self.wave} of {self.waves}" if self.wave is not None else ""
        return f"round {self.round}{wave}"

    def to_dict(self) -> StoppedDoc:
        return {
            "by": self.by,
            "round": self.round,
            "wave": self.wave,
            "waves": self.waves,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class WaveHung:
    """Every request of a wave of ``round`` timed out: the service seems hung, so the race
    stopped there, leaving ``not_run`` (round, resource) pairs unfired."""

    round: int
    not_run: int


@dataclass(frozen=True, slots=True)
class HookFailed:
    """A hook of the test failed once requests went out (``reset=``, ``verify=``, a request
    argument, the default ``POST /reset``): the race stopped with what it had."""

    reason: str
    error_type: str
    """The class name of what it raised."""


@dataclass(frozen=True, slots=True)
class NotACount:
    """``verify=`` returned something other than the number of holders; the race went on."""

    resource: Hashable
    round: int
    value: str
    """``repr`` of what it returned."""
    type_name: str


Problem = WaveHung | HookFailed | NotACount
"""Something that went wrong while racing, as the engine saw it; ``core.judge`` words it as a
violation."""


@dataclass(frozen=True)
class RaceRun:
    """What the engine measured for one race call, unjudged.

    ``held`` maps (round, resource index) to the holders ``verify=`` read from the final state
    (``None`` without ``verify=``); ``problems`` are what went wrong while running (a hung wave,
    a failed hook, a ``verify=`` that returned no count), as facts for the judge; ``clock`` is
    one (``time.time_ns()``, ``time.perf_counter_ns()``) pair mapping the records' stamps to
    wall time.
    """

    records: tuple[Record, ...]
    duration: float
    clock: tuple[int, int] = (0, 0)
    held: Mapping[tuple[int, int], int] | None = None
    problems: tuple[Problem, ...] = ()
    interrupted: bool = False
    not_run: tuple[tuple[int, int], ...] = ()
    """(round, resource index) pairs never fired: the race stopped on a hung service."""
    ungated: tuple[str, ...] = ()
    """Keys of ``race.run`` attempts that returned without awaiting ``a.gate()``."""
    raced: Raced | None = None
    mode: str | None = None
    """The start that ran (``auto`` resolved to single-packet or last-byte); ``None``: as configured."""
    shards: tuple[ShardInfo, ...] = ()
    """The shards of a sharded race (``shards=N``); empty for a race in the test process."""
    replaced: int = 0
    """Kept connections the server had closed (or was about to close, idle past its keep-alive)
    that were replaced by fresh ones before their requests were released."""
    stopped: Stop | None = None
    """Why the race ended before its last wave (a hook failed, Ctrl-C); ``None``: it finished."""
    releases: tuple[DatagramRelease, ...] = ()
    """Each release of a single-datagram race; empty for the other starts."""
