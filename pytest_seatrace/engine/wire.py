"""What last-byte mode writes: h11 events per attempt, built once where they repeat.

The first request of a race is built by httpx and serialised by h11 exactly as httpcore
would. When only a JSON body varies between attempts (``json=lambda a: ...``) and our
encoding of it matches httpx's byte for byte, later attempts reuse that request's head and
change only its ``Content-Length``: h11 validates one head per body length instead of one per
request, and no ``httpx.Request`` is built per attempt.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import h11
import httpx

from pytest_seatrace.engine.builder import RequestBuilder, origin_of
from pytest_seatrace.engine.plan import HEAD_FIELDS, Attempt
from pytest_seatrace.engine.rawhttp import Origin

END = h11.EndOfMessage()


@dataclass(frozen=True, slots=True)
class WireRequest:
    origin: Origin
    head: h11.Request
    body: bytes
    request: httpx.Request
    """The httpx request (on the fast path, the race's first one): ``response.request``."""

    def serialize(self, conn: h11.Connection) -> bytes:
        """The bytes on the wire, through the connection's own h11 state machine."""
        parts = [conn.send(self.head) or b""]
        if self.body:
            parts.append(conn.send(h11.Data(data=self.body)) or b"")
        parts.append(conn.send(END) or b"")
        return b"".join(parts)


def encode_json(value: Any) -> bytes:
    """JSON as httpx 0.28 encodes it; checked against httpx itself before it is trusted."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def from_httpx(request: httpx.Request) -> WireRequest:
    head = h11.Request(method=request.method, target=request.url.raw_path, headers=request.headers.raw)
    return WireRequest(origin_of(request), head, request.read(), request)


class WireBuilder:
    def __init__(self, builder: RequestBuilder) -> None:
        self.builder = builder
        spec = builder.spec
        self._json_only = (
            callable(spec.json)
            and spec.content is None
            and spec.data is None
            and not any(callable(getattr(spec, n)) for n in HEAD_FIELDS)
        )
        self._template: WireRequest | None = None
        self._fixed: WireRequest | None = None
        self._heads: dict[int, h11.Request] = {}
        self._length_at = -1

    def build(self, attempt: Attempt) -> WireRequest:
        if self._fixed is not None:
            return self._fixed
        if self._template is not None:
            body = encode_json(self.builder.spec.value("json", attempt))
            head = self._heads.get(len(body)) or self._head_for(self._template.head, len(body))
            return WireRequest(self._template.origin, head, body, self._template.request)
        args = self.builder.spec.resolve(attempt)
        wire = from_httpx(self.builder.build_from(args))
        if not self.builder.spec.varies:
            self._fixed = wire
        elif self._json_only and self._template is None:
            self._adopt(wire, args.get("json"))
        return wire

    def _adopt(self, wire: WireRequest, value: Any) -> None:
        """Use ``wire`` as the template if its body is our encoding and its length is framed once."""
        try:
            same = encode_json(value) == wire.body
        except (TypeError, ValueError):
            return
        lengths = [i for i, (name, _) in enumerate(wire.head.headers) if name == b"content-length"]
        if same and len(lengths) == 1:
            self._template = wire
            self._length_at = lengths[0]
            self._heads[len(wire.body)] = wire.head

    def _head_for(self, template: h11.Request, length: int) -> h11.Request:
        headers = list(template.headers.raw_items())  # original casing, as sent
        headers[self._length_at] = (headers[self._length_at][0], str(length).encode())
        head = h11.Request(method=template.method, target=template.target, headers=headers)
        self._heads[length] = head
        return head
