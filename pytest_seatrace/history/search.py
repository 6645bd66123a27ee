"""Wing & Gong's search for a linearization, with Lowe's memo of (what is linearized, state) as in
Porcupine, and the reduction races need: of several operations that could go next and are identical,
only the one returning first is tried (any linearization placing another can swap the two).

Two frontiers say which operations may go next: the general one keeps the unplaced operations sorted by
call and by return (an operation may go next when it was called before every unplaced one returned); a
single wave, where every call precedes every return, needs only a count per class of identical
operations, and memoises on those counts, which is sound only there.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from pytest_seatrace.history.operation import Operation


class Stepper(Protocol):
    """What the search needs of a model (``Model`` has more)."""

    initial: Any

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]: ...


class Frontier(Protocol):
    """Which unplaced operations may go next; a handle names one of them to ``place``."""

    def done(self) -> bool: ...
    def candidates(self) -> list[Any]: ...
    def place(self, handle: Any) -> None: ...
    def unplace(self) -> None: ...
    def memo_key(self) -> Hashable: ...
    def op_of(self, handle: Any) -> int: ...
    def next_ops(self) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class Outcome:
    """A partition's result: the longest prefix found (all of it when linearizable, as indexes into
    the partition's operations) and, when not, the operations that could go next and cannot."""

    linearizable: bool
    prefix: tuple[int, ...]
    stuck: tuple[int, ...]


def returns(op: Operation) -> float:
    """An ``info`` may take effect at any later time: it returns at +inf."""
    return op.ret if op.completed else math.inf


def classes(ops: Sequence[Operation]) -> list[int]:
    """A class number per operation; equal numbers mean identical to the model."""
    ids: dict[Hashable, int] = {}
    return [ids.setdefault((op.key, op.f, op.input, op.type, op.output), len(ids)) for op in ops]


class GeneralFrontier:
    """Unplaced operations by call and by return; placing one removes it from both, LIFO."""

    def __init__(self, ops: Sequence[Operation]) -> None:
        self.ops = ops
        self.cls = classes(ops)
        self.calls = [op.call for op in ops]
        self.rets = [returns(op) for op in ops]
        self.by_call = sorted(range(len(ops)), key=lambda i: (ops[i].call, i))
        self.by_return = sorted((ret, i) for i, ret in enumerate(self.rets))
        self.placed = 0
        self.undo: list[tuple[int, int, int]] = []

    def done(self) -> bool:
        return not self.by_return or self.by_return[0][0] == math.inf

    def candidates(self) -> list[tuple[int, int]]:
        """(position by call, operation) of each class's earliest-returning operation that may go next."""
        first_return = self.by_return[0][0]
        calls, rets, cls = self.calls, self.rets, self.cls
        best: dict[int, tuple[float, int, int]] = {}
        for at, i in enumerate(self.by_call):
            if calls[i] > first_return:
                break
            seen = best.get(cls[i])
            if seen is None or rets[i] < seen[0]:
                best[cls[i]] = (rets[i], at, i)
        return [(at, i) for _, at, i in sorted((ret == math.inf, at, i) for ret, at, i in best.values())]

    def place(self, handle: tuple[int, int]) -> None:
        at, i = handle
        del self.by_call[at]
        where = bisect_left(self.by_return, (self.rets[i], i))
        del self.by_return[where]
        self.undo.append((at, i, where))
        self.placed |= 1 << i

    def unplace(self) -> None:
        at, i, where = self.undo.pop()
        self.by_call.insert(at, i)
        self.by_return.insert(where, (self.rets[i], i))
        self.placed &= ~(1 << i)

    def memo_key(self) -> Hashable:
        return self.placed

    def op_of(self, handle: tuple[int, int]) -> int:
        return handle[1]

    def next_ops(self) -> list[int]:
        first_return = self.by_return[0][0]
        return [i for i in self.by_call if self.calls[i] <= first_return]


class WaveFrontier:
    """One wave: every operation may go next at any point, so identical ones are interchangeable and
    the memo keys on how many of each class are left."""

    def __init__(self, ops: Sequence[Operation]) -> None:
        cls = classes(ops)
        members: list[list[int]] = [[] for _ in range(max(cls, default=-1) + 1)]
        for i in sorted(range(len(ops)), key=lambda i: (returns(ops[i]), i), reverse=True):
            members[cls[i]].append(i)  # popped from the end: earliest return first
        self.members = members
        self.counts = [len(m) for m in members]
        self.must = sum(1 for op in ops if op.completed)
        self.completed = [ops[m[0]].completed if m else False for m in members]
        self.taken: list[int] = []

    def done(self) -> bool:
        return self.must == 0

    def candidates(self) -> list[int]:
        return [c for c, n in enumerate(self.counts) if n]

    def place(self, c: int) -> None:
        self.counts[c] -= 1
        self.must -= self.completed[c]
        self.taken.append(c)

    def unplace(self) -> None:
        c = self.taken.pop()
        self.counts[c] += 1
        self.must += self.completed[c]

    def memo_key(self) -> Hashable:
        return tuple(self.counts)

    def op_of(self, c: int) -> int:
        return self.members[c][self.counts[c] - 1]  # the next unused member, earliest return first

    def next_ops(self) -> list[int]:
        return [i for c, n in enumerate(self.counts) for i in self.members[c][:n]]


def one_wave(ops: Sequence[Operation]) -> bool:
    return max((op.call for op in ops), default=0.0) <= min((returns(op) for op in ops), default=math.inf)


class Search:
    """Depth-first search for an order of ``ops`` the model accepts, resumable so that the checker can
    share its time between partitions; ``info`` operations may be left out.

    Two more cuts, both sound: an ``info`` that would not change the state is left out (it stays free
    to go later), and a completed read (``pure``: it never changes any state) that the state allows goes
    next with no alternative tried (moving it earlier in any linearization keeps every state the same).
    """

    def __init__(self, ops: Sequence[Operation], model: Stepper, pure: Callable[[Operation], bool]) -> None:
        self.ops = ops
        self.model = model
        self.pure = [op.completed and pure(op) for op in ops]
        self.frontier: Frontier = WaveFrontier(ops) if one_wave(ops) else GeneralFrontier(ops)
        self.state = model.initial
        self.seen: set[tuple[Hashable, Hashable]] = set()
        self.path: list[tuple[int, Any, list[Any]]] = []  # (operation, state before, its siblings left)
        self.deepest = 0
        self.longest: tuple[int, ...] = ()  # the path when the search first backed out of the deepest
        self.stuck: tuple[int, ...] | None = None
        self.todo: list[Any] = [] if self.frontier.done() else self._candidates()
        self.outcome: Outcome | None = Outcome(True, (), ()) if self.frontier.done() else None

    def _candidates(self) -> list[Any]:
        """What to try next, last first: a read the state allows alone, else all but the reads."""
        todo: list[Any] = []
        for handle in self.frontier.candidates():
            i = self.frontier.op_of(handle)
            if not self.pure[i]:
                todo.append(handle)
            elif self.model.step(self.state, self.ops[i])[0]:
                return [handle]
        todo.reverse()
        return todo

    def run(self, steps: int) -> Outcome | None:
        """Search on for at most ``steps`` steps; the outcome once decided, else None."""
        if self.outcome is not None:
            return self.outcome
        ops, step, frontier, seen, path = self.ops, self.model.step, self.frontier, self.seen, self.path
        state, todo = self.state, self.todo
        for _ in range(steps):
            if todo:
                handle = todo.pop()
                i = frontier.op_of(handle)
                legal, after = step(state, ops[i])
                if not legal or (after == state and not ops[i].completed):
                    continue
                frontier.place(handle)
                key = (frontier.memo_key(), after)
                if key in seen:
                    frontier.unplace()
                    continue
                seen.add(key)
                path.append((i, state, todo))
                self.state = state = after
                if len(path) > self.deepest:
                    self.deepest, self.stuck = len(path), None
                if frontier.done():
                    self.outcome = Outcome(True, tuple(p[0] for p in path), ())
                    return self.outcome
                todo = self._candidates()
                continue
            if self.stuck is None and len(path) == self.deepest:  # copied once per depth, not per step
                self.longest = tuple(p[0] for p in path)
                self.stuck = tuple(i for i in frontier.next_ops() if ops[i].completed)
            if not path:
                self.outcome = Outcome(False, self.longest, self.stuck or ())
                return self.outcome
            _, state, todo = path.pop()
            self.state = state
            frontier.unplace()
        self.todo = todo
        return None
