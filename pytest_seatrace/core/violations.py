"""A broken rule: its kind (an enum that is also the string users compare with) and its numbers."""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass

from pytest_seatrace.core.document import ViolationDoc


class ViolationKind(str, enum.Enum):
    """What a violation broke. A ``str``: ``v.kind == "too-many"`` keeps working."""

    __module__ = "pytest_seatrace"  # the public name: tracebacks and pickles say it

    TOO_MANY = "too-many"
    TOO_FEW = "too-few"
    INDETERMINATE = "indeterminate"
    ERROR = "error"
    PREDICATE = "predicate"
    NO_WINNER_POSSIBLE = "no-winner-possible"
    LOST = "lost"
    PHANTOM = "phantom"
    DOUBLE = "double"
    VERIFY = "verify"
    """The ``verify=`` callable failed."""
    THRESHOLD = "threshold"
    NOT_RACED = "not-raced"
    """Every request of the resource was answered before its held bytes went out."""
    HUNG = "hung"
    """A whole wave timed out: the race stopped, the rest was not run."""
    HOOK = "hook"
    """A callable of the test (``reset=``, ``verify=``, a request argument) raised, or the default
    ``POST /reset`` failed: the race stopped with what it had."""

    NOT_LINEARIZABLE = "not-linearizable"
    """No order of the resource's operations, each at one instant between its call and return,
    is one the race's ``model=`` accepts."""
    HISTORY_UNKNOWN = "history-unknown"
    """The linearizability check ran out of its time budget: unknown, never a pass."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


WINNER_KINDS = frozenset({ViolationKind.TOO_MANY, ViolationKind.TOO_FEW, ViolationKind.INDETERMINATE})
"""Violations about the number of winners: their message shows who won."""


@dataclass(frozen=True, slots=True)
class Violation:
    """One broken rule, per resource and round where it has one.

    ``allowed`` and ``found`` are the texts shown to people; ``excess`` is the number of winners
    (or final-state holders) beyond what ``expect`` allows, counted for double bookings.
    """

    __module__ = "pytest_seatrace"  # the public name: tracebacks and pickles say it

    kind: ViolationKind
    resource: Hashable | None
    round: int | None
    allowed: str
    found: str
    detail: str = ""
    excess: int = 0

    def to_dict(self) -> ViolationDoc:
        return {
            "kind": self.kind.value,
            "resource": None if self.resource is None else str(self.resource),
            "round": self.round,
            "allowed": self.allowed,
            "found": self.found,
            "detail": self.detail,
        }
