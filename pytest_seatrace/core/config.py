"""The settings of one race, as data the engine and the judges both read.

Built-in defaults come from the settings table (``core/settings.py``); ``core/precedence.py``
makes a ``RaceConfig`` from a call's arguments, its marker and the session's options.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

from pytest_seatrace.core.document import ExpectDoc, format_expect
from pytest_seatrace.core.settings import (
    DEFAULT_CONCURRENCY,
    DEFAULT_EXPECT,
    DEFAULT_HOLD,
    DEFAULT_HTTP3,
    DEFAULT_PARALLEL,
    DEFAULT_ROUNDS,
    DEFAULT_SHARDS,
    DEFAULT_SYNC,
    DEFAULT_TIMEOUT,
    DEFAULT_WARMUP,
)
from pytest_seatrace.core.settings import DEFAULT_RESOURCE_LABEL as DEFAULT_RESOURCE_LABEL
from pytest_seatrace.core.settings import HOLD_POINTS as HOLD_POINTS
from pytest_seatrace.core.settings import SYNC_MODES as SYNC_MODES
from pytest_seatrace.core.settings import HoldPoint as HoldPoint
from pytest_seatrace.core.settings import SyncMode as SyncMode

if TYPE_CHECKING:
    import httpx

    from pytest_seatrace.core.thresholds import Threshold

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


def expect_doc(expect: range) -> ExpectDoc:
    """``expect`` as the reports keep it: the fewest and the most winners allowed."""
    return {"min": expect.start, "max": expect.stop - 1}


def describe_range(expect: range) -> str:
    """``expect`` as people write it: ``1``, or ``0..1`` for a range."""
    return format_expect(expect_doc(expect))


@dataclass(frozen=True, slots=True)
class RaceConfig:
    """Resolved settings of one race call (call argument > marker > CLI > ini > default)."""

    resources: tuple[Hashable, ...]
    concurrency: int = DEFAULT_CONCURRENCY
    expect: range = range(DEFAULT_EXPECT, DEFAULT_EXPECT + 1)
    success: Rule = SUCCESS_DEFAULT
    reject: Rule = REJECT_DEFAULT
    success_given: bool = False
    reject_given: bool = False
    error: Rule = ERROR_DEFAULT
    """Responses that are failures whatever their status, checked before ``success``."""
    error_given: bool = False
    model: Any = None
    """The model each (round, resource)'s history is checked against (``history.Model``); ``None``:
    the winners are counted against ``expect`` alone."""
    expect_given: bool = False
    """``expect`` came from the marker or the call: with a model it is judged only then."""
    timeout: float = DEFAULT_TIMEOUT
    thresholds: tuple[Threshold, ...] = ()
    allow_errors: bool = False
    rounds: int = DEFAULT_ROUNDS
    sync: SyncMode = DEFAULT_SYNC
    hold: HoldPoint = DEFAULT_HOLD
    hold_given: bool = False
    """An explicit hold point (marker, call, CLI or ini): ``auto`` then chooses last-byte over
    single-packet (never over single-datagram, whose streams can hold either point)."""
    http3: str = DEFAULT_HTTP3
    """``"auto"``: ``sync="auto"`` probes an ``https://`` origin for HTTP/3 (``Alt-Svc: h3``);
    ``"on"``: HTTP/3 on the URL's port, no probe; ``"off"``: never."""
    parallel: int = DEFAULT_PARALLEL
    seed: int = 0
    shards: int = DEFAULT_SHARDS
    """Processes sharing the race's clients (execnet gateways); 1: the test process alone."""
    tx: tuple[str, ...] = ()
    """One execnet gateway spec per shard (``popen``, ``ssh=host//python=...``); empty: no shards."""
    resource_label: str | None = None
    """The noun ``-v`` puts before every resource id (``Ticket 8123``); ``None``: ``Seat`` for
    the numbered resources of ``resources=N``, the bare id otherwise."""
    warmup: bool | str = DEFAULT_WARMUP
    """Gate mode, before the gate: ``True`` opens each client's connection (no request),
    ``False`` nothing, a path also sends ``HEAD`` of it once per client."""

    def describe(self) -> dict[str, Any]:
        """Builtins-only view for reports."""
        return {
            "resources": [str(r) for r in self.resources],
            "concurrency": self.concurrency,
            "expect": expect_doc(self.expect),
            "success": self.success.text,
            "reject": self.reject.text,
            "error": self.error.text,
            "timeout_s": self.timeout,
            "thresholds": [t.text for t in self.thresholds],
            "allow_errors": self.allow_errors,
            "rounds": self.rounds,
            "sync": self.sync,
            "hold": self.hold,
            "http3": self.http3,
            "parallel": self.parallel,
            "seed": self.seed,
            "shards": self.shards,
            "tx": list(self.tx),
            "resource_label": self.resource_label,
            "warmup": self.warmup,
            "model": None if self.model is None else type(self.model).__name__,
        }
