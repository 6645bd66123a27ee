"""The settings of one race, as data both the engine and the judges read.

Kept apart from the engine so the modules that judge records (``verdict``, ``aggregate``)
need nothing of the engine: arrows go one way, engine → results.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Union

if TYPE_CHECKING:
    import httpx

    from pytest_seatrace.thresholds import Threshold

SyncMode = Literal["gate", "last-byte"]
SYNC_MODES: tuple[SyncMode, ...] = ("gate", "last-byte")

Predicate = Callable[["httpx.Response"], object]
RuleSpec = Union[int, Iterable[int], Predicate, None]  # noqa: UP007 - evaluated at runtime on 3.10


@dataclass(frozen=True, slots=True)
class Rule:
    """``success=`` or ``reject=``: a set of statuses, or a predicate on the whole response."""

    statuses: frozenset[int] | None = None
    predicate: Predicate | None = None
    text: str = ""

    @property
    def needs_response(self) -> bool:
        return self.predicate is not None


def make_rule(spec: RuleSpec, default: frozenset[int] | None, default_text: str) -> Rule:
    """Normalise a marker value (int, iterable of ints, predicate, None) into a ``Rule``."""
    if spec is None:
        return Rule(statuses=default, text=default_text)
    if callable(spec):
        return Rule(predicate=spec, text=getattr(spec, "__qualname__", repr(spec)))
    if isinstance(spec, int):
        return Rule(statuses=frozenset({spec}), text=str(spec))
    codes = frozenset(spec)
    return Rule(statuses=codes, text=",".join(str(c) for c in sorted(codes)))


SUCCESS_DEFAULT = frozenset(range(200, 300))
REJECT_DEFAULT = frozenset(range(400, 500))


@dataclass(frozen=True, slots=True)
class RaceConfig:
    """Resolved settings of one race call (call argument > marker > CLI > ini > default)."""

    resources: tuple[Hashable, ...]
    concurrency: int
    expect: range
    success: Rule
    reject: Rule
    success_given: bool
    timeout: float
    thresholds: tuple[Threshold, ...] = ()
    allow_errors: bool = False
    rounds: int = 1
    sync: SyncMode = "last-byte"
    parallel: int = 1
    seed: int = 0

    @property
    def requests_per_round(self) -> int:
        return len(self.resources) * self.concurrency

    def describe(self) -> dict[str, Any]:
        """Builtins-only view for reports."""
        return {
            "resources": [str(r) for r in self.resources],
            "concurrency": self.concurrency,
            "expect": {"min": self.expect.start, "max": self.expect.stop - 1},
            "success": self.success.text,
            "reject": self.reject.text,
            "timeout_s": self.timeout,
            "thresholds": [t.text for t in self.thresholds],
            "allow_errors": self.allow_errors,
            "rounds": self.rounds,
            "sync": self.sync,
            "parallel": self.parallel,
            "seed": self.seed,
        }
