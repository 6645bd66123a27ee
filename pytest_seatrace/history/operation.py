"""One operation of a history: what a client asked, what it saw, and when it could have taken effect."""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Literal

OpType = Literal["ok", "fail", "info"]
"""Jepsen's outcome of an operation: ``ok`` it happened, ``fail`` it did not (an observation the model
checks), ``info`` it may have happened (timed out, transport error, 5xx)."""

OP_TYPES: tuple[OpType, ...] = ("ok", "fail", "info")


@dataclass(frozen=True, slots=True)
class Operation:
    """A completed call: the model judges ``f``, ``input``, ``type`` and ``output``; the instants bound
    when it took effect (an ``info`` returns at +inf, since it may take effect at any later time).

    ``input`` and ``output`` must be hashable (see :func:`freeze`): identical operations are grouped by
    them, and the checker's memo keys on model states built from them.
    """

    process: int
    f: str
    input: Any
    type: OpType
    output: Any
    call: float
    ret: float
    key: Hashable = None
    op: str = ""

    def __post_init__(self) -> None:
        if self.type not in OP_TYPES:
            raise ValueError(f"type {self.type!r}: expected one of ok, fail, info")
        try:
            hash((self.key, self.input, self.output))
        except TypeError:
            raise TypeError(
                f"process {self.process} {self.f}: key, input and output must be hashable (see freeze): "
                f"{self.key!r}, {self.input!r}, {self.output!r}"
            ) from None
        if math.isnan(self.call) or math.isnan(self.ret) or self.ret < self.call:
            raise ValueError(
                f"process {self.process} {self.f}: returns at {self.ret} before its call {self.call}"
            )

    @property
    def completed(self) -> bool:
        """True when the outcome is known (ok or fail), so the operation must be placed."""
        return self.type != "info"


def freeze(value: Any) -> Hashable:
    """Make a JSON-like value hashable: lists become tuples, sets frozensets, dicts sorted item tuples."""
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    if isinstance(value, set | frozenset):
        return frozenset(freeze(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    hash(value)
    return value  # type: ignore[no-any-return]
