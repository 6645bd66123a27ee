"""The built-in models: a seat, a stock, a counter, registers, a key-value store and a set."""

from __future__ import annotations

from collections.abc import Hashable
from types import MappingProxyType
from typing import Any

from pytest_seatrace.history.model import REFUSED, Binding, Model
from pytest_seatrace.history.operation import Operation


class Seats(Model):
    """``capacity`` holders at most. ``book`` adds its input as a holder (None: anonymous), ``cancel``
    removes one, ``read`` sees the holders (a collection) or their number (an int)."""

    main = "book"
    reads = frozenset({"read"})
    conditional = frozenset({"book", "cancel"})

    def __init__(
        self, capacity: int = 1, *, book: Binding = None, cancel: Binding = None, read: Binding = None
    ):
        if capacity < 1:
            raise ValueError(f"Seats(capacity={capacity}): expected at least 1")
        self.capacity = capacity
        self.initial: tuple[Hashable, ...] = ()
        super().__init__(book=book, cancel=cancel, read=read)

    def effect(self, state: tuple[Hashable, ...], op: Operation) -> Any:
        if op.f == "book":
            return REFUSED if len(state) >= self.capacity else tuple(sorted((*state, op.input), key=repr))
        if op.f == "cancel":
            if op.input not in state:
                return REFUSED
            at = state.index(op.input)
            return state[:at] + state[at + 1 :]
        return super().effect(state, op)

    def observes(self, state: tuple[Hashable, ...], op: Operation) -> bool:
        if op.f != "read":
            return super().observes(state, op)
        if op.output is None or isinstance(op.output, int):
            return len(state) == (op.output or 0)
        return tuple(sorted(op.output, key=repr)) == state


class Stock(Model):
    """A quantity that never goes below zero: ``take`` q (refused when fewer than q are left),
    ``give`` q back, ``read`` what is left."""

    main = "take"
    reads = frozenset({"read"})
    conditional = frozenset({"take"})
    default_inputs = MappingProxyType({"take": 1, "give": 1})

    def __init__(self, initial: int, *, take: Binding = None, give: Binding = None, read: Binding = None):
        if initial < 0:
            raise ValueError(f"Stock({initial}): expected at least 0")
        self.initial = initial
        super().__init__(take=take, give=give, read=read)

    def effect(self, state: int, op: Operation) -> Any:
        if op.f == "take":
            return REFUSED if op.input > state else state - op.input
        if op.f == "give":
            return state + op.input
        return super().effect(state, op)

    def observes(self, state: int, op: Operation) -> bool:
        return bool(op.output == state)


class Counter(Model):
    """``add`` n (never refused by the state), ``read`` the total."""

    main = "add"
    reads = frozenset({"read"})
    default_inputs = MappingProxyType({"add": 1})

    def __init__(self, initial: int = 0, *, add: Binding = None, read: Binding = None):
        self.initial = initial
        super().__init__(add=add, read=read)

    def effect(self, state: int, op: Operation) -> Any:
        return state + op.input if op.f == "add" else super().effect(state, op)

    def observes(self, state: int, op: Operation) -> bool:
        return bool(op.output == state)


class Register(Model):
    """One value: ``write`` v, ``read`` the last value written (``initial`` before any)."""

    main = "write"
    reads = frozenset({"read"})

    def __init__(self, initial: Hashable = None, *, write: Binding = None, read: Binding = None):
        self.initial = initial
        super().__init__(write=write, read=read)

    def effect(self, state: Hashable, op: Operation) -> Any:
        return op.input if op.f == "write" else super().effect(state, op)

    def observes(self, state: Hashable, op: Operation) -> bool:
        return bool(op.output == state)


class CasRegister(Register):
    """A register with compare-and-set: ``cas`` (old, new) sets new only when the value is old, and is
    refused otherwise (the model of Jepsen's etcd test)."""

    main = "cas"
    conditional = frozenset({"cas"})

    def __init__(
        self, initial: Hashable = None, *, write: Binding = None, read: Binding = None, cas: Binding = None
    ):
        self.initial = initial
        Model.__init__(self, write=write, read=read, cas=cas)  # Register's binds no cas

    def effect(self, state: Hashable, op: Operation) -> Any:
        if op.f == "cas":
            old, new = op.input
            return new if state == old else REFUSED
        return super().effect(state, op)


class KeyValue(Model):
    """A string per key (the operation's ``key``; "" before any write): ``put`` v, ``append`` v,
    ``get`` (nil reads as "")."""

    main = "put"
    reads = frozenset({"get"})

    def __init__(self, *, get: Binding = None, put: Binding = None, append: Binding = None):
        self.initial: tuple[tuple[Hashable, str], ...] = ()
        super().__init__(get=get, put=put, append=append)

    def effect(self, state: tuple[tuple[Hashable, str], ...], op: Operation) -> Any:
        if op.f not in ("put", "append"):
            return super().effect(state, op)
        values = dict(state)
        values[op.key] = op.input if op.f == "put" else values.get(op.key, "") + op.input
        return tuple(sorted(values.items(), key=repr))

    def observes(self, state: tuple[tuple[Hashable, str], ...], op: Operation) -> bool:
        return dict(state).get(op.key, "") == ("" if op.output is None else op.output)


class Set(Model):
    """``add`` an element, ``read`` the whole set."""

    main = "add"
    reads = frozenset({"read"})

    def __init__(self, *, add: Binding = None, read: Binding = None):
        self.initial: frozenset[Hashable] = frozenset()
        super().__init__(add=add, read=read)

    def effect(self, state: frozenset[Hashable], op: Operation) -> Any:
        return state | {op.input} if op.f == "add" else super().effect(state, op)

    def observes(self, state: frozenset[Hashable], op: Operation) -> bool:
        return frozenset(op.output or ()) == state
