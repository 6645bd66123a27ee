"""Each attempt's request as an HTTP/2 stream: its fields (pseudo-headers first, hop-by-hop
fields left out), its body, and the record its answer fills.

Converted once where they repeat: a constant request once (once per method when a ``method=``
callable mixes operations); when only a ``json=`` body varies and our encoding of the first
body matches httpx's byte for byte (as last-byte's ``WireBuilder`` checks), later attempts
reuse the first head with their own ``content-length``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anyio.lowlevel
import httpx

from pytest_seatrace.core.records import Outcome, Record
from pytest_seatrace.engine.plan import Attempt, Roster, Variation
from pytest_seatrace.engine.requests import RequestBuilder, encode_json, origin_of
from pytest_seatrace.engine.stream import Origin

_HOP_BY_HOP = frozenset(
    {b"host", b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
"""Headers HTTP/2 forbids (RFC 9113 §8.2.2); ``host`` becomes ``:authority``."""


class H2Stream:
    """One client's request: its record, its frames, its response as it comes in."""

    __slots__ = (
        "body",
        "chunks",
        "done",
        "gated",
        "headers",
        "origin",
        "prefix_ns",
        "record",
        "renewed",
        "request",
        "requests",
        "resolved",
        "response_headers",
        "sid",
        "status",
        "unprocessed",
    )

    def __init__(
        self,
        record: Record,
        origin: Origin,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        requests: H2Requests,
        request: httpx.Request | None = None,
        resolved: dict[str, Any] | None = None,
    ) -> None:
        self.record = record
        self.origin = origin
        self.requests = requests
        self.request = request
        self.resolved = resolved
        """The attempt's arguments, each callable called once: its ``httpx.Request``, when a
        predicate asks for one, is built from them."""
        self.headers = headers
        self.body = body
        self.sid = 0
        self.status = 0
        self.response_headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.prefix_ns = 0
        """When its prefix was written: an early answer's latency counts from here."""
        self.gated = False
        """Its final frame has left: anything the server says from now on is no early answer."""
        self.done = False
        self.unprocessed = False
        """Ended before the gate by a server that says it never processed it (GOAWAY, refused)."""
        self.renewed = False
        """Written again once on a fresh connection: a second failure is final."""

    @property
    def whole_at_gate(self) -> bool:
        """A bodyless request: nothing of it leaves before the gate, where its whole HEADERS go
        (``HTTP2Connection.write_prefixes`` says why), so a server never saw it if the gate never came."""
        return not self.body

    def renew(self) -> None:
        """Back to unsent, to be written again on another connection."""
        rec = self.record
        rec.outcome, rec.reason, rec.end_ns, rec.timed_out, rec.early = Outcome.ERROR, None, 0, False, False
        rec.call_ns = 0  # the server never processed it: its call is the next write's
        self.sid = self.status = self.prefix_ns = 0
        self.response_headers, self.chunks = [], []
        self.gated = self.done = self.unprocessed = False
        self.renewed = True

    def httpx_request(self) -> httpx.Request:
        """Its own ``httpx.Request`` (for a predicate's ``response.request``), built at most once."""
        if self.request is None:
            self.request = self.requests.builder.build_from(self.resolved or {})
        return self.request


class _Head:
    """One method's request head as HTTP/2 fields, converted once, and per body length."""

    __slots__ = ("by_length", "fields", "length_at", "operation", "origin", "request")

    def __init__(self, request: httpx.Request, operation: str) -> None:
        self.request = request
        self.fields = h2_fields(request)
        self.origin = origin_of(request)
        self.operation = operation
        self.length_at = -1
        self.by_length: dict[int, list[tuple[bytes, bytes]]] = {}

    def adopt(self, value: Any) -> None:
        """Reuse this head for later bodies if our JSON is httpx's and its length is framed once."""
        body = self.request.read()
        try:
            same = encode_json(value) == body
        except (TypeError, ValueError):
            return
        lengths = [i for i, (name, _) in enumerate(self.fields) if name == b"content-length"]
        if same and len(lengths) == 1:
            self.length_at = lengths[0]
            self.by_length[len(body)] = self.fields

    def for_length(self, length: int) -> list[tuple[bytes, bytes]]:
        fields = self.by_length.get(length)
        if fields is None:
            fields = list(self.fields)
            fields[self.length_at] = (b"content-length", str(length).encode())
            self.by_length[length] = fields
        return fields


class H2Requests:
    """Each attempt's request as HTTP/2 fields and a body, converted once where they repeat.

    A constant request is converted once (once per method when a ``method=`` callable mixes
    operations). When only a ``json=`` body varies and our encoding of the first body matches
    httpx's byte for byte (as last-byte's ``WireBuilder`` checks), later attempts reuse the first
    head with their own ``content-length`` and build no ``httpx.Request`` unless a predicate
    asks for it.
    """

    def __init__(self, builder: RequestBuilder) -> None:
        self.builder = builder
        spec = builder.spec
        self._json = spec.variation is Variation.JSON
        self._resolves = spec.variation is not Variation.CONSTANT
        """Each attempt's arguments are resolved here (and kept for the model's input)."""
        self._varies = spec.method_varies
        self._heads: dict[str, _Head] = {}

    def stream(self, record: Record, attempt: Attempt) -> H2Stream:
        builder, spec = self.builder, self.builder.spec
        method = spec.method_of(attempt) if self._varies else str(spec.method)
        head = self._heads.get(method)
        if head is not None and head.length_at >= 0:
            args = spec.resolve(attempt, method)  # the json= callable, called once
            try:
                body = encode_json(args.get("json"))
            except (TypeError, ValueError):
                body = None  # httpx says what is wrong with it, below
            if body is not None:
                self._name(record, head, args, attempt)
                return H2Stream(record, head.origin, head.for_length(len(body)), body, self, resolved=args)
            request = builder.build_from(args)
        elif self._resolves:
            args = spec.resolve(attempt, method)
            request = builder.build_from(args)
        else:
            args = {}
            request = builder.build(attempt, method)
        if head is None or request is not head.request:  # a constant request is converted once
            target = request.url.raw_path.decode("ascii")
            head = self._heads[method] = _Head(request, builder.operation(method, target, attempt))
            if self._json:
                head.adopt(args.get("json"))
        self._name(record, head, args, attempt)
        return H2Stream(record, head.origin, head.fields, request.read(), self, request)

    def _name(self, record: Record, head: _Head, args: dict[str, Any], attempt: Attempt) -> None:
        """The stream's operation, and the input the race's model takes from it (if any)."""
        record.operation = head.operation
        if self.builder.takes_inputs:
            record.input = self.builder.input_of(head.operation, head.request, args, attempt)


StreamGroups = dict[tuple[int, Origin], list[H2Stream]]
"""A wave's streams by (resource index, origin): each group gets its own connections."""


async def group_streams(
    requests: H2Requests, roster: Roster, rnd: int, indices: Sequence[int]
) -> StreamGroups:
    """Every request of a wave, grouped by resource and origin (the HTTP/2 and HTTP/3 starts)."""
    groups: StreamGroups = {}
    for index in indices:
        for client in roster.clients(index):  # not those whose set-up failed
            if client % 25 == 0:  # let the previous wave's responses be read on time
                await anyio.lowlevel.checkpoint()
            record = Record(resource=index, client=client, round=rnd)
            stream = requests.stream(record, roster.attempt(index, client, rnd))
            groups.setdefault((index, stream.origin), []).append(stream)
    return groups


def h2_fields(request: httpx.Request) -> list[tuple[bytes, bytes]]:
    """The request head as HTTP/2 fields: pseudo-headers first, hop-by-hop fields left out."""
    raw = request.headers.raw
    authority = next((v for k, v in raw if k.lower() == b"host"), None) or request.url.netloc
    fields = [
        (b":method", request.method.encode()),
        (b":scheme", request.url.raw_scheme),
        (b":authority", authority),
        (b":path", request.url.raw_path),
    ]
    for name, value in raw:
        lower = name.lower()
        if lower in _HOP_BY_HOP or (lower == b"te" and value.lower() != b"trailers"):
            continue
        fields.append((lower, value))
    return fields
