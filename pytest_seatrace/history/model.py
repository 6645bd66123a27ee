"""The model interface the checker needs, and how a model names the raced requests it judges."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_seatrace.history.operation import Operation, freeze

REFUSED: Any = type("Refused", (), {"__repr__": lambda self: "REFUSED"})()
"""What ``effect`` returns for an update the state does not allow (a booking when the seat is taken)."""

Extract = Callable[[Any], Any]
Binding = str | tuple[str, Extract] | None
"""How a model function is raced: an operation name (``"POST /orders"``), or the name and a function
pulling the input out of the request (updates) or the output out of the response (reads)."""


@dataclass(frozen=True, slots=True)
class RacedRequest:
    """A raced request as an update's input function sees it (``take=("POST /buy/{resource}",
    lambda req: req.json["quantity"])``): the request arguments as resolved for this attempt, the
    URL as sent, and who sent it. In a ``race.run`` attempt, the request the response answers:
    ``json`` is its body parsed when it is JSON, ``headers`` and ``params`` are httpx's own."""

    method: str
    url: str
    """The absolute URL, query included."""
    json: Any = None
    content: Any = None
    data: Any = None
    headers: Any = None
    params: Any = None
    resource: Hashable = None
    client: int = 0
    round: int = 0
    setup: Any = None
    """What this client's ``setup=`` returned; ``None`` without one."""


@dataclass(frozen=True, slots=True)
class Function:
    """One of a model's functions as bound to an HTTP operation; ``operation=None`` covers every request."""

    name: str
    operation: str | None
    extract: Extract | None
    reads: bool


class Model:
    """A sequential specification: ``step`` says whether an operation is legal from a state and what
    state follows. States must be hashable and compare by value (the checker memoises on them), and
    ``step`` may look only at an operation's ``key``, ``f``, ``input``, ``type`` and ``output``: the
    checker tries one of several operations identical in those.

    ``fail`` is an observation to check (a booking refused is legal only when the seat is full);
    ``info`` may or may not have happened (the checker may leave it out), so its step applies the effect
    it would have had.
    """

    initial: Hashable = None
    main: str = ""
    """The function every raced request is when the model is given no binding."""
    reads: frozenset[str] = frozenset()
    """Functions whose output comes from the response; the others take their input from the request."""
    conditional: frozenset[str] = frozenset()
    """Updates a service refuses depending on the state: their ``fail`` is legal only when refused."""
    default_inputs: Mapping[str, Any] = {}

    def __init__(self, **bindings: Binding) -> None:
        self.names: tuple[str, ...] = tuple(bindings)
        """Every function of the model (those it may be bound to); empty: not declared."""
        self.functions: tuple[Function, ...] = tuple(
            _function(name, binding, name in self.reads)
            for name, binding in bindings.items()
            if binding is not None
        ) or (Function(self.main, None, None, self.main in self.reads),)

    def step(self, state: Any, op: Operation) -> tuple[bool, Any]:
        """Built-in models split this into ``observes`` (reads) and ``effect`` (updates); a user's model
        may override it whole."""
        if op.f in self.reads:
            return op.type != "ok" or self.observes(state, op), state
        after = self.effect(state, op)
        possible = after is not REFUSED
        if op.type == "ok":
            return possible, after if possible else state
        if op.type == "fail":
            return not possible or op.f not in self.conditional, state
        return True, after if possible else state

    def observes_only(self, op: Operation) -> bool:
        """True for an operation that changes no state whatever the state (a read): the checker places
        such an operation as soon as the state allows it, without trying alternatives."""
        return op.f in self.reads

    def observes(self, state: Any, op: Operation) -> bool:
        """Whether a read's output can be seen in ``state``."""
        raise ValueError(f"{type(self).__name__} has no read function {op.f!r}")

    def effect(self, state: Any, op: Operation) -> Any:
        """The state after an update, or REFUSED when the update cannot happen in ``state``."""
        raise ValueError(f"{type(self).__name__} has no function {op.f!r}")

    def partition(self, op: Operation) -> Hashable:
        """Operations in different partitions are checked apart (P-compositionality)."""
        return op.key

    def describe(self, op: Operation) -> str:
        """One line for an explanation: ``book('ann') -> fail``, ``read() -> ok {'bob'}``."""
        args = ", ".join(map(_shown, op.input)) if isinstance(op.input, tuple) else _shown(op.input)
        call = f"{op.f}({'' if op.input is None else args})"
        if op.type == "info":
            return f"{call} -> ? (info)"
        return f"{call} -> {op.type}" + ("" if op.output is None else f" {_shown(op.output)}")

    def function_for(self, operation: str) -> Function | None:
        """The function a raced request of this operation name is, or None: a usage error."""
        for function in self.functions:
            if function.operation in (operation, None):
                return function
        return None

    def translate(self, operation: str, request: Any, response: Any) -> tuple[str, Hashable, Hashable]:
        """(f, input, output) of one raced request; raises LookupError for an operation no function covers."""
        function = self.function_for(operation)
        if function is None:
            covered = ", ".join(str(f.operation) for f in self.functions)
            raise LookupError(
                f"{type(self).__name__} has no function for {operation!r} (it covers {covered})"
            )
        value = self.default_inputs.get(function.name)
        output: Any = None
        if function.extract is not None and function.reads:
            output = function.extract(response)
        elif function.extract is not None:
            value = function.extract(request)
        return function.name, freeze(value), freeze(output)


def _shown(value: Any) -> str:
    """A value as a reader expects it: a set as ``{'a', 'b'}``, not ``frozenset({...})``."""
    if isinstance(value, frozenset):
        return "{" + ", ".join(sorted(map(_shown, value))) + "}"
    return repr(value)


def _function(name: str, binding: object, reads: bool) -> Function:
    if isinstance(binding, str):
        return Function(name, binding, None, reads)
    if (
        isinstance(binding, tuple)
        and len(binding) == 2
        and isinstance(binding[0], str)
        and callable(binding[1])
    ):
        return Function(name, binding[0], binding[1], reads)
    raise TypeError(f"{name}=: expected an operation name or (operation name, function), got {binding!r}")
