"""A race as a plan: what to race (resources × clients), how to judge, how to start.

A plan is plain data, so it can be cut into shards (a subset of resources or clients) and
sent elsewhere later; nothing here opens a socket.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Union

from pytest_seatrace.errors import RaceUsageError

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

    def describe(self) -> str:
        return self.text


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
            "success": self.success.describe(),
            "reject": self.reject.describe(),
            "timeout_s": self.timeout,
            "thresholds": [t.text for t in self.thresholds],
            "allow_errors": self.allow_errors,
            "rounds": self.rounds,
            "sync": self.sync,
            "parallel": self.parallel,
            "seed": self.seed,
        }


Verify = Callable[[Any], "int | Awaitable[int]"]
Reset = Callable[[], "object | Awaitable[object]"]
AttemptFn = Callable[[Attempt], Awaitable["httpx.Response"]]


@dataclass(frozen=True)
class TargetOptions:
    """Where and how to connect: base URL, TLS verification, in-process ASGI app."""

    base_url: str | None = None
    tls_verify: Any = True
    app: Any = None
    extra: Mapping[str, Any] = field(default_factory=dict)
