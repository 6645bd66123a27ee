"""A race call as a plan: what to race (resources × clients), how to judge, where to connect.

Plain data: nothing here opens a socket. The ``race`` fixture builds one ``RacePlan`` per call
and hands it to ``run_race``.
"""

from __future__ import annotations

import enum
import random
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableSequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.errors import RaceUsageError
from pytest_seatrace.core.settings import DEFAULT_SETUP_CONCURRENCY

if TYPE_CHECKING:
    import httpx

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Attempt:
    """Who is racing: ``resource`` id, ``client`` (1..concurrency), ``round`` (1..rounds).

    ``key`` is unique per request, usable as an idempotency key. In ``race.run`` attempts,
    ``http`` is the client's own ``httpx.AsyncClient`` and ``await attempt.gate()`` waits for
    every client of the resource.
    """

    __module__ = "pytest_seatrace"  # the public name: tracebacks and pickles say it

    resource: Any
    client: int
    round: int
    http: httpx.AsyncClient | None = field(default=None, compare=False, repr=False)
    setup: Any = field(default=None, compare=False, repr=False)
    """What this client's ``setup=`` returned (a token, a cart id, ...); ``None`` without one."""
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


class Variation(enum.Enum):
    """What changes from one attempt's request to the next: how much must be built per attempt."""

    CONSTANT = "constant"
    """Nothing: one request serves every attempt."""
    JSON = "json"
    """Only a ``json=`` body: the head is built once, only its Content-Length changes."""
    BODY = "body"
    """The body (``content=``/``data=``, or ``json=`` beside them): the head is built once."""
    HEAD = "head"
    """The URL, parameters, headers or cookies: each attempt's request is built whole."""


_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
"""An HTTP method is a token (RFC 9110 §9.1)."""


def check_method(value: object, where: str) -> str:
    """``value`` as an upper-case HTTP method, or a usage error naming ``where`` it came from."""
    if isinstance(value, str) and _TOKEN.fullmatch(value):
        return value.upper()
    raise RaceUsageError(f"{where}: expected an HTTP method string such as 'POST' or 'DELETE', got {value!r}")


CHECKED_FIELDS = ("url", "headers", "content")
"""Request arguments whose bad values httpx or h11 would refuse only deep in the race (or, for
a file as ``content=``, half-read): checked when given, and each time a callable returns one."""


def request_value_problem(name: str, value: object) -> str | None:
    """What is wrong with ``value`` as request argument ``name`` (one of ``CHECKED_FIELDS``),
    said as what is allowed; ``None``: nothing found here (httpx may still refuse it)."""
    if value is None:
        return "expected a URL string" if name == "url" else None
    if name == "url":
        import httpx  # a race is being made: httpx is loaded for it anyway

        if isinstance(value, (str, httpx.URL)):
            return None
        return "expected a URL string (absolute, or relative to the base URL) or an httpx.URL"
    if name == "content":
        if isinstance(value, (bytes, str)):
            return None
        return (
            "expected bytes or str (a file or an iterator would be read once, but every client "
            "sends its own copy: pass its bytes, such as f.read())"
        )
    return _headers_problem(value)


def _headers_problem(headers: object) -> str | None:
    """A header name or value that HTTP/1.1 and HTTP/2 both refuse (RFC 9110 §5.1, §5.5)."""
    if isinstance(headers, Mapping):
        items: Iterable[object] = headers.items()
    elif isinstance(headers, (list, tuple)):
        items = headers  # an iterator is left alone: checking it would use it up
    else:
        return None  # httpx says what it accepts when the request is built
    for item in items:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            return None
        name, value = item
        text = name.decode("latin-1") if isinstance(name, bytes) else name
        if not isinstance(text, str) or not _TOKEN.fullmatch(text):
            return f"{name!r} is not a header name (letters, digits and !#$%&'*+-.^_`|~ only)"
        raw = value.decode("latin-1") if isinstance(value, bytes) else value
        if not isinstance(raw, str):
            continue  # httpx says it wants str or bytes
        if "\r" in raw or "\n" in raw:
            return f"header {text!r}: CR/LF not allowed in a header value ({value!r})"
        if "\0" in raw:
            return f"header {text!r}: NUL not allowed in a header value ({value!r})"
        if raw != raw.strip(" \t"):
            return f"header {text!r}: no leading or trailing whitespace allowed in a header value ({value!r})"
    return None


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """The request every client sends; any field may be a callable of the attempt, the method
    too (one race then mixes operations under one start)."""

    method: ArgValue
    url: ArgValue
    params: ArgValue = None
    headers: ArgValue = None
    cookies: ArgValue = None
    content: ArgValue = None
    data: ArgValue = None
    json: ArgValue = None
    label: str = field(default="race.request", compare=False)
    """Which call makes this request, in which test: error messages name it."""

    def __post_init__(self) -> None:
        for name in CHECKED_FIELDS:
            value = getattr(self, name)
            if not callable(value) and (value is not None or name == "url"):
                problem = request_value_problem(name, value)
                if problem:
                    raise RaceUsageError(f"{name}={value!r}: {problem}")

    @property
    def method_varies(self) -> bool:
        """The method is a callable of the attempt: each distinct method is its own head."""
        return callable(self.method)

    def method_of(self, attempt: Attempt) -> str:
        """The attempt's method, upper-case; a callable returning no method string is a usage
        error naming the argument, the call and the test."""
        if not callable(self.method):
            return str(self.method)
        value = self.value("method", attempt)
        if value.__class__ is str and value in _METHODS:  # the hot path: a method seen before
            return _METHODS[value]
        method = check_method(value, f"{self.label}: method= callable, for attempt {attempt.key}")
        _METHODS[value] = method
        return method

    def resolve(self, attempt: Attempt, method: str | None = None) -> dict[str, Any]:
        """The httpx ``build_request`` arguments for one attempt (``method``: its method, when
        the caller has it already: a ``method=`` callable is called once per attempt)."""
        out: dict[str, Any] = {"method": method or self.method_of(attempt)}
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
            got = value(attempt)
        except Exception as exc:
            raise RaceUsageError(
                f"{name}= callable raised {type(exc).__name__}: {exc} (attempt {attempt.key})"
            ) from exc
        if name in CHECKED_FIELDS:
            problem = request_value_problem(name, got)
            if problem:
                raise RaceUsageError(
                    f"{self.label}: {name}= callable returned {got!r} for attempt {attempt.key}: {problem}"
                )
        return got

    @property
    def variation(self) -> Variation:
        """The one answer to "does this request vary, and where" that every builder reads.

        The method is left out: builders keep what they build once per distinct method."""
        varying = {name for name in REQUEST_FIELDS if callable(getattr(self, name))}
        if not varying:
            return Variation.CONSTANT
        if varying & set(HEAD_FIELDS):
            return Variation.HEAD
        if varying == {"json"} and self.content is None and self.data is None:
            return Variation.JSON
        return Variation.BODY


_METHODS: dict[str, str] = {}
"""Method strings a ``method=`` callable returned, checked, and their upper-case form."""


Verify = Callable[[Any], "int | Awaitable[int]"]
Reset = Callable[[], "object | Awaitable[object]"]
"""``reset()``: no arguments; called between rounds instead of ``POST {origin}/reset``."""
AttemptFn = Callable[[Attempt], Awaitable["httpx.Response"]]
SetupFn = Callable[[Attempt], Any]
"""``setup(a)``: sync or async, run per client before the race on ``a.http``; returns ``a.setup``."""


class Roster:
    """Who races: every client of every resource, less those whose ``setup=`` failed, and what
    each set-up returned (``attempt.setup``). Without ``setup=`` everyone races."""

    def __init__(self, config: RaceConfig) -> None:
        self.config = config
        self.values: dict[tuple[int, int], Any] = {}
        """(resource index, client) → the set-up's return value."""
        self.failed: dict[tuple[int, int], str] = {}
        """(resource index, client) → why its set-up failed: that client does not race."""

    def clients(self, index: int) -> list[int]:
        return [c for c in range(1, self.config.concurrency + 1) if (index, c) not in self.failed]

    def attempt(self, index: int, client: int, rnd: int) -> Attempt:
        value = self.values.get((index, client))
        return Attempt(self.config.resources[index], client, rnd, setup=value)


def base_url_problem(text: str) -> str | None:
    """Why ``text`` cannot be a base URL, said with what is allowed; ``None``: it can. httpx
    parses it as every race will, so a base URL accepted here never fails a race later."""
    import httpx

    expected = "expected http[s]://host[:port][/path], an IPv6 host in brackets: http://[::1]:8000"
    if not text.startswith(("http://", "https://")) or not text.split("://", 1)[1].strip("/"):
        return f"{text!r} is not an http:// or https:// URL with a host"
    if any(c.isspace() for c in text):
        return f"{text!r} contains whitespace; {expected}"
    try:
        url = httpx.URL(text)
    except httpx.InvalidURL as exc:
        return f"{text!r} is not a valid URL ({exc}); {expected}"
    if not url.host:
        return f"{text!r} has no host; {expected}"
    if url.port is not None and not 0 < url.port < 65536:
        return f"{text!r}: port {url.port} is not between 1 and 65535"
    return None


@dataclass(frozen=True)
class TargetOptions:
    """Where and how to connect: base URL, TLS verification, in-process ASGI app."""

    base_url: str | None = None
    tls_verify: Any = True
    app: Any = None
    lock_dir: str | None = None
    """Where races against one origin take their turns (pytest-xdist); ``None``: no lock."""
    shard_pool: Any = None
    """The session's ``GatewayPool`` (``engine.shards``) for sharded races; ``None``: a pool of
    this race's own, torn down when it ends."""

    def __post_init__(self) -> None:
        problem = self.base_url and base_url_problem(self.base_url)
        if problem:  # race.base_url, set by a test or fixture (the option is checked at start-up)
            raise RaceUsageError(f"race.base_url = {problem}")


@dataclass(frozen=True)
class RacePlan:
    """One race call, checked and resolved: exactly one of ``request`` and ``attempt``."""

    name: str
    config: RaceConfig
    target: TargetOptions = field(default_factory=TargetOptions)
    request: RequestSpec | None = None
    attempt: AttemptFn | None = None
    verify: Verify | None = None
    reset: Reset | None = None
    setup: SetupFn | None = None
    setup_concurrency: int = DEFAULT_SETUP_CONCURRENCY
    setup_each_round: bool = False

    def __post_init__(self) -> None:
        if (self.request is None) == (self.attempt is None):
            raise RaceUsageError("a race needs exactly one of a request or an attempt function")


async def keep_outcome(
    out: list[_T], failures: list[Exception], work: Callable[..., Awaitable[_T]], *args: Any
) -> None:
    """``await work(*args)`` inside a task group: its result goes to ``out``, its exception to
    ``failures``, to be raised once the group is done (after the wave's figures are kept, and
    without an exception group)."""
    try:
        out.append(await work(*args))
    except Exception as exc:
        failures.append(exc)


def release_order(seed: int, rnd: int, index: int, items: MutableSequence[_T]) -> MutableSequence[_T]:
    """Shuffle ``items`` in place in the order a resource's final writes go out, seeded by
    ``--race-seed`` so a run can be replayed, and so client 1 is not always first."""
    random.Random(f"{seed}-{rnd}-{index}").shuffle(items)  # noqa: S311 - an order, not a secret
    return items
