"""The settings of one race, as data the engine and the judges both read, and their defaults.

Each built-in default is written here once; the options, the marker and the report header
read it from here.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Union

if TYPE_CHECKING:
    import httpx

    from pytest_seatrace.core.thresholds import Threshold

SyncMode = Literal["auto", "gate", "last-byte", "single-packet"]
SYNC_MODES: tuple[SyncMode, ...] = ("auto", "gate", "last-byte", "single-packet")

DEFAULT_CONCURRENCY = 100
DEFAULT_RESOURCES = 1
DEFAULT_TIMEOUT = 10.0
DEFAULT_SYNC: SyncMode = "auto"
"""The start of ``race.post``-style calls, decided once per race from the first origin:
single-packet where TLS ALPN picks ``h2``, else last-byte. ``run``/``arun`` and ``race.app``
always use the gate."""

HoldPoint = Literal["headers", "body"]
HOLD_POINTS: tuple[HoldPoint, ...] = ("headers", "body")
DEFAULT_HOLD: HoldPoint = "headers"
"""Where a last-byte request waits for the gate: after all but the last byte of its header
block (no HTTP/1.1 server can act on it yet), or after all but the last byte of its body."""

XDIST_MODES = ("serial", "overlap")
DEFAULT_XDIST = "serial"
"""Under pytest-xdist, races against one origin take turns (``overlap``: they may run at once)."""

Predicate = Callable[["httpx.Response"], object]
RuleSpec = Union[int, Iterable[int], Predicate, None]  # noqa: UP007 - evaluated at runtime on 3.10


@dataclass(frozen=True, slots=True)
class Rule:
    """``success=``, ``reject=`` or ``error=``: a set of statuses, or a predicate on the whole
    response."""

    statuses: frozenset[int] | None = None
    predicate: Predicate | None = None
    text: str = ""

    @property
    def needs_response(self) -> bool:
        return self.predicate is not None


SUCCESS_DEFAULT = Rule(statuses=frozenset(range(200, 300)), text="2xx")
REJECT_DEFAULT = Rule(statuses=frozenset(range(400, 500)), text="4xx")
ERROR_DEFAULT = Rule(statuses=frozenset(), text="none")
"""No response is an error by status or content unless the test says so with ``error=``."""

DEFAULT_RESOURCE_LABEL = "Seat"
"""The noun ``-v`` puts before the numbered resources of ``resources=N`` (``Seat 7``)."""


def make_rule(spec: RuleSpec, default: Rule) -> Rule:
    """Normalise a marker value (int, iterable of ints, predicate, None) into a ``Rule``."""
    if spec is None:
        return default
    if callable(spec):
        return Rule(predicate=spec, text=getattr(spec, "__qualname__", repr(spec)))
    if isinstance(spec, int):
        return Rule(statuses=frozenset({spec}), text=str(spec))
    codes = frozenset(spec)
    return Rule(statuses=codes, text=",".join(str(c) for c in sorted(codes)))


def describe_range(expect: range) -> str:
    """``expect`` as people write it: ``1``, or ``0..1`` for a range."""
    low, high = expect.start, expect.stop - 1
    return str(low) if low == high else f"{low}..{high}"


@dataclass(frozen=True, slots=True)
class RaceConfig:
    """Resolved settings of one race call (call argument > marker > CLI > ini > default)."""

    resources: tuple[Hashable, ...]
    concurrency: int = DEFAULT_CONCURRENCY
    expect: range = range(1, 2)
    success: Rule = SUCCESS_DEFAULT
    reject: Rule = REJECT_DEFAULT
    success_given: bool = False
    reject_given: bool = False
    error: Rule = ERROR_DEFAULT
    """Responses that are failures whatever their status, checked before ``success``."""
    error_given: bool = False
    timeout: float = DEFAULT_TIMEOUT
    thresholds: tuple[Threshold, ...] = ()
    allow_errors: bool = False
    rounds: int = 1
    sync: SyncMode = DEFAULT_SYNC
    hold: HoldPoint = DEFAULT_HOLD
    hold_given: bool = False
    """An explicit hold point (marker, call, CLI or ini): ``auto`` then chooses last-byte."""
    parallel: int = 1
    seed: int = 0
    shards: int = 1
    """Processes sharing the race's clients (execnet gateways); 1: the test process alone."""
    tx: tuple[str, ...] = ()
    """One execnet gateway spec per shard (``popen``, ``ssh=host//python=...``); empty: no shards."""
    resource_label: str | None = None
    """The noun ``-v`` puts before every resource id (``Ticket 8123``); ``None``: ``Seat`` for
    the numbered resources of ``resources=N``, the bare id otherwise."""
    warmup: bool | str = True
    """Gate mode, before the gate: ``True`` opens each client's connection (no request),
    ``False`` nothing, a path also sends ``HEAD`` of it once per client."""

    def describe(self) -> dict[str, Any]:
        """Builtins-only view for reports."""
        return {
            "resources": [str(r) for r in self.resources],
            "concurrency": self.concurrency,
            "expect": {"min": self.expect.start, "max": self.expect.stop - 1},
            "success": self.success.text,
            "reject": self.reject.text,
            "error": self.error.text,
            "timeout_s": self.timeout,
            "thresholds": [t.text for t in self.thresholds],
            "allow_errors": self.allow_errors,
            "rounds": self.rounds,
            "sync": self.sync,
            "hold": self.hold,
            "parallel": self.parallel,
            "seed": self.seed,
            "shards": self.shards,
            "tx": list(self.tx),
            "resource_label": self.resource_label,
            "warmup": self.warmup,
        }
