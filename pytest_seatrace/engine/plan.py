"""A race as a plan: what to race (resources × clients), how to judge, how to start.

A plan is plain data, so it can be cut into shards (a subset of resources or clients) and
sent elsewhere later; nothing here opens a socket.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pytest_seatrace.errors import RaceUsageError
from pytest_seatrace.race_config import (
    REJECT_DEFAULT,
    SUCCESS_DEFAULT,
    SYNC_MODES,
    Predicate,
    RaceConfig,
    Rule,
    RuleSpec,
    SyncMode,
    make_rule,
)

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True, slots=True)
class Attempt:
    """Who is racing: ``resource`` id, ``client`` (1..concurrency), ``round`` (1..rounds).

    ``key`` is unique per request, usable as an idempotency key. In ``race.run`` attempts,
    ``http`` is the client's own ``httpx.AsyncClient`` and ``await attempt.gate()`` waits for
    every client of the resource.
    """

    resource: Any
    client: int
    round: int
    http: httpx.AsyncClient | None = field(default=None, compare=False, repr=False)
    _gate: Callable[[], Awaitable[None]] | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"r{self.round}-{self.resource}-{self.client}"

    async def gate(self) -> None:
        """Wait until every client of this resource is here, then go together."""
        if self._gate is None:
            raise RuntimeError("attempt.gate() is only available inside race.run/arun attempts")
        await self._gate()


HEAD_FIELDS = ("url", "params", "headers", "cookies")
BODY_FIELDS = ("content", "data", "json")
REQUEST_FIELDS = HEAD_FIELDS + BODY_FIELDS

ArgValue = Any
"""A request argument: a value, or a sync callable of the ``Attempt`` returning the value."""


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """The request every client sends; any field may be a callable of the attempt."""

    method: str
    url: ArgValue
    params: ArgValue = None
    headers: ArgValue = None
    cookies: ArgValue = None
    content: ArgValue = None
    data: ArgValue = None
    json: ArgValue = None

    def resolve(self, attempt: Attempt) -> dict[str, Any]:
        """The httpx ``build_request`` arguments for one attempt."""
        out: dict[str, Any] = {"method": self.method}
        for name in REQUEST_FIELDS:
            value = self.value(name, attempt)
            if value is not None:
                out[name] = value
        return out

    def value(self, name: str, attempt: Attempt) -> Any:
        """Field ``name`` for ``attempt``; a callable that raises becomes a clear usage error."""
        value = getattr(self, name)
        if not callable(value):
            return value
        try:
            return value(attempt)
        except Exception as exc:
            raise RaceUsageError(
                f"{name}= callable raised {type(exc).__name__}: {exc} (attempt {attempt.key})"
            ) from exc

    @property
    def varies(self) -> bool:
        return any(callable(getattr(self, n)) for n in REQUEST_FIELDS)


Verify = Callable[[Any], "int | Awaitable[int]"]
Reset = Callable[[], "object | Awaitable[object]"]
AttemptFn = Callable[[Attempt], Awaitable["httpx.Response"]]


@dataclass(frozen=True)
class TargetOptions:
    """Where and how to connect: base URL, TLS verification, in-process ASGI app."""

    base_url: str | None = None
    tls_verify: Any = True
    app: Any = None


__all__ = [
    "BODY_FIELDS",
    "HEAD_FIELDS",
    "REJECT_DEFAULT",
    "REQUEST_FIELDS",
    "SUCCESS_DEFAULT",
    "SYNC_MODES",
    "Attempt",
    "AttemptFn",
    "Predicate",
    "RaceConfig",
    "RequestSpec",
    "Reset",
    "Rule",
    "RuleSpec",
    "SyncMode",
    "TargetOptions",
    "Verify",
    "make_rule",
]
