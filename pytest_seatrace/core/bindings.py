"""How a race's model reads its requests and responses (design §7): which of its functions each
raced operation is, an update's input from the request as built, a read's output from its
winning response.

The engine names each request's operation as it builds it and asks here before the wave's
release, so a race whose first request no function covers sends nothing; it words a
``BindingError`` as a usage error naming the test. A model bound to nothing covers every request
and takes nothing from it: a race with ``model=Seats()`` pays for none of this (``active``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

from pytest_seatrace.core.histories import function_of
from pytest_seatrace.core.operations import readings
from pytest_seatrace.history.model import Function, Model, RacedRequest
from pytest_seatrace.history.operation import freeze


class BindingError(Exception):
    """A raced request the model cannot take: no function covers it, or its input function failed."""


class Bindings:
    """One race's model, as its engine asks it about each operation name (each name looked up once)."""

    def __init__(self, model: Model) -> None:
        self.model = model
        functions = model.functions
        self.takes_inputs = any(f.extract is not None and not f.reads for f in functions)
        """Some update takes its input from the request: every request's view is built."""
        self.reads = any(f.extract is not None and f.reads for f in functions)
        """Some read takes its output from the response: responses keep their bodies."""
        self.active = self.takes_inputs or self.reads or not any(f.operation is None for f in functions)
        """Anything to do per request: check its name, or take an input or an output."""
        self._known: dict[str, Function | None] = {}

    @property
    def name(self) -> str:
        return type(self.model).__name__

    def covering(self, operation: str) -> Function | None:
        """The function ``operation`` is; an ambiguous name (``{resource|client}``) is the first
        of its readings the model covers."""
        if operation not in self._known:
            self._known[operation] = function_of(self.model, operation)
        return self._known[operation]

    def function(self, operation: str) -> Function:
        """The function ``operation`` is, else a ``BindingError`` naming what the model covers."""
        found = self.covering(operation)
        if found is None:
            raise BindingError(self.uncovered(operation))
        return found

    def uncovered(self, operation: str) -> str:
        """What to tell the user (an ambiguous name as its first reading: ``{resource}``)."""
        covered = ", ".join(f"{f.name}={f.operation!r}" for f in self.model.functions)
        return f"model {self.name} has no function for {readings(operation)[0]!r} (it covers {covered})"

    def input(
        self, operation: str, method: str, url: str, fields: Mapping[str, Any], attempt: Any
    ) -> Hashable:
        """What the update ``operation`` takes from its request (``None``: a read, or no input
        function); ``fields``: the request arguments as resolved, ``attempt``: who sends it."""
        function = self.function(operation)
        if function.extract is None or function.reads:
            return None
        request = RacedRequest(
            method,
            url,
            fields.get("json"),
            fields.get("content"),
            fields.get("data"),
            fields.get("headers"),
            fields.get("params"),
            attempt.resource,
            attempt.client,
            attempt.round,
            getattr(attempt, "setup", None),
        )
        try:
            return freeze(function.extract(request))
        except Exception as exc:
            raise BindingError(
                f"model {self.name}, function {function.name!r} ({function.operation}): its input function "
                f"raised {type(exc).__name__}: {exc} (attempt {attempt.key})"
            ) from exc

    def output(self, operation: str, response: Callable[[], Any]) -> tuple[Hashable, str | None]:
        """A winning response's output for the read ``operation`` (``None`` for anything else),
        and why there is none when the read function raised (the record is then fatal)."""
        function = self.covering(operation)
        if function is None or function.extract is None or not function.reads:
            return None, None
        try:
            return freeze(function.extract(response())), None
        except Exception as exc:
            return None, f"model read raised {type(exc).__name__}: {exc}"
