"""Build each attempt's request: with httpx, and for last-byte as the bytes h11 would write.

Both start modes send the same bytes: last-byte mode serialises the ``httpx.Request`` with h11
exactly as httpcore does, so the held-back request is byte-identical to what httpx itself
would send. The first request of a race is built by httpx; when only a JSON body varies
(``json=lambda a: ...``) and our encoding of it matches httpx's byte for byte, later attempts
reuse that request's head and change only its ``Content-Length``: h11 validates one head per
body length instead of one per request, and no ``httpx.Request`` is built per attempt.
"""

from __future__ import annotations

import functools
import json
import os
import ssl
import sys
import threading
from collections import ChainMap
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import h11
import httpx

from pytest_seatrace.core.bindings import BindingError, Bindings
from pytest_seatrace.core.config import HoldPoint
from pytest_seatrace.core.errors import RaceUsageError
from pytest_seatrace.core.operations import OperationNamer
from pytest_seatrace.core.records import Record
from pytest_seatrace.engine.plan import BODY_FIELDS, REQUEST_FIELDS, Attempt, RequestSpec, Variation
from pytest_seatrace.engine.stream import Origin

BASE_URL_HINT = "set --race-base-url (ini race_base_url) or race.base_url, or pass an absolute URL"


def make_ssl_context(tls_verify: Any, alpn: tuple[str, ...] | None = None) -> ssl.SSLContext:
    """One context for every connection of a race (a fresh one per client costs ~22 ms).

    ``alpn``: the protocols the engine's own context offers (a server must never pick h2 and
    then receive HTTP/1.1); a context the user passed is used with its ALPN as set.
    """
    if isinstance(tls_verify, ssl.SSLContext):
        return tls_verify
    if isinstance(tls_verify, bool):
        return _default_context(tls_verify, alpn)
    if isinstance(tls_verify, (str, os.PathLike)):
        try:
            ctx = ssl.create_default_context(cafile=os.fspath(tls_verify))
        except (OSError, ssl.SSLError) as exc:
            raise RaceUsageError(f"tls_verify={tls_verify!r}: cannot load CA file ({exc})") from None
        if alpn is not None:
            ctx.set_alpn_protocols(list(alpn))
        return ctx
    raise RaceUsageError(
        f"tls_verify={tls_verify!r}: expected True, False, a CA bundle path (str or Path) "
        "or an ssl.SSLContext"
    )


@functools.lru_cache(maxsize=6)
def _default_context(verify: bool, alpn: tuple[str, ...] | None = None) -> ssl.SSLContext:
    """One per (verification, ALPN) and process, shared by every race; cheap to make (~2 ms):
    CA certificates are loaded at the first handshake, so a plain-http race never pays for them."""
    ctx: ssl.SSLContext
    if verify:
        ctx = TrustOnFirstUse()
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _keylog(ctx)
    if alpn is not None:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


class TrustOnFirstUse(ssl.SSLContext):
    """``ssl.create_default_context()`` plus certifi's bundle (httpx's own CA bundle, so both
    start modes trust the same roots), the certificates loaded at the first ``wrap_bio`` or
    ``wrap_socket`` instead of at creation: loading them costs ~55 ms, which a race over
    ``http://`` should not pay. asyncio, anyio, trio and httpcore all start TLS through these
    two methods."""

    def __new__(cls) -> TrustOnFirstUse:
        return super().__new__(cls, ssl.PROTOCOL_TLS_CLIENT)

    def __init__(self) -> None:
        self.verify_mode = ssl.CERT_REQUIRED
        self.check_hostname = True
        if sys.version_info >= (3, 13):  # what create_default_context adds there
            self.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | ssl.VERIFY_X509_STRICT
        _keylog(self)
        self._trusted = False
        self._lock = threading.Lock()

    def trust(self) -> None:
        """Load the CA certificates now (once)."""
        with self._lock:
            if not self._trusted:
                import certifi

                self.load_default_certs(ssl.Purpose.SERVER_AUTH)
                self.load_verify_locations(certifi.where())
                self._trusted = True

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        if not self._trusted:
            self.trust()
        return super().wrap_bio(*args, **kwargs)

    def wrap_socket(self, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        if not self._trusted:
            self.trust()
        return super().wrap_socket(*args, **kwargs)

    def get_ca_certs(self, binary_form: bool = False) -> Any:
        self.trust()
        return super().get_ca_certs(binary_form)

    def cert_store_stats(self) -> dict[str, int]:
        self.trust()
        return super().cert_store_stats()


def _keylog(ctx: ssl.SSLContext) -> None:
    """``SSLKEYLOGFILE``, as ``ssl.create_default_context`` honours it."""
    path = os.environ.get("SSLKEYLOGFILE")
    if path and not sys.flags.ignore_environment and hasattr(ctx, "keylog_filename"):
        ctx.keylog_filename = path


def check_url(url: httpx.URL, given: object) -> Origin:
    """Refuse relative or schemeless URLs with a message that says what to do."""
    if url.scheme not in ("http", "https") or not url.host:
        looks_relative = not isinstance(given, str) or given.startswith(("/", ".")) or ":" not in given
        if not url.scheme and not url.host and looks_relative:
            raise RaceUsageError(f"relative URL {given!r} needs a base URL: {BASE_URL_HINT}")
        raise RaceUsageError(f"URL {given!r} needs an http:// or https:// scheme and a host")
    port = url.port or (443 if url.scheme == "https" else 80)
    return Origin(url.scheme, url.host, port)


class _NeverSends(httpx.BaseTransport):
    """The transport of the client that only builds requests: given one, ``httpx.Client`` makes
    none of its own (a default transport imports httpcore and trio: ~200 ms of the first race)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        raise RuntimeError("the request builder's client builds requests; it never sends one")


class RequestBuilder:
    """Resolves a ``RequestSpec`` per attempt into an ``httpx.Request``.

    A constant request is built once. When only the body varies (the common
    ``json=lambda a: ...``), the URL and headers are merged once and each attempt builds just
    an ``httpx.Request`` from them: what ``AsyncClient.build_request`` would do, at a third of
    the cost. Requests are merged by a public ``httpx.Client`` over a transport that never
    sends (``build_request`` is the same method in ``Client`` and ``AsyncClient``).

    With a model (``bindings``), each operation named here is checked against it, and an
    update's input is taken from its request as built (``core.bindings``).
    """

    def __init__(
        self,
        spec: RequestSpec,
        base_url: str | None,
        ssl_context: ssl.SSLContext | None = None,
        bindings: Bindings | None = None,
    ) -> None:
        self.spec = spec
        self.bindings = bindings if bindings is not None and bindings.active else None
        """The race's model, when it has anything to check or take per request."""
        self.takes_inputs = self.bindings is not None and self.bindings.takes_inputs
        """Each request's input is taken for the model (``input_of``) as it is built."""
        self._constants = {
            name: value for name in REQUEST_FIELDS if not callable(value := getattr(spec, name))
        }
        self._client = httpx.Client(base_url=base_url or "", trust_env=False, transport=_NeverSends())
        self._fixed: dict[str, httpx.Request] = {}
        """Method → its request, for a request that varies in nothing but (maybe) its method."""
        self._fixed_one: httpx.Request | None = None
        """The one request of a race that never varies, once it is built."""
        self._heads: dict[str, tuple[httpx.URL, list[tuple[bytes, bytes]]]] = {}
        """Method → its merged URL and headers, for a request whose body alone varies."""
        self._variation = spec.variation
        self.operations = OperationNamer(templated=callable(spec.url))
        self.first_url: str | None = None
        """The first URL built: its origin's ``POST /reset`` runs between rounds."""

    def build(self, attempt: Attempt, method: str | None = None) -> httpx.Request:
        """``attempt``'s request (``method``: its method, if the caller has it already)."""
        if self._fixed_one is not None:
            return self._fixed_one
        if self._fixed:  # constant but for its method
            fixed = self._fixed.get(method or self.spec.method_of(attempt))
            if fixed is not None:
                return fixed
        return self.build_from(self.spec.resolve(attempt, method))

    def build_from(self, args: dict[str, Any]) -> httpx.Request:
        """The request for already resolved arguments (each user callable is called once)."""
        args = dict(args)
        url = args.pop("url")
        method: str = args["method"]
        try:
            head = self._heads.get(method)
            if head is not None:
                body = {name: args[name] for name in BODY_FIELDS if name in args}
                return httpx.Request(method, head[0], headers=head[1], **body)
            request = self._client.build_request(url=url, **args)
        except (TypeError, ValueError, httpx.InvalidURL) as exc:
            raise RaceUsageError(f"cannot build the request for {url!r}: {exc}") from None
        check_url(request.url, url)
        if self.first_url is None:
            self.first_url = str(request.url)
        if self._variation is Variation.CONSTANT:
            self._fixed[method] = request
            if not self.spec.method_varies:
                self._fixed_one = request
        elif self._variation is not Variation.HEAD:
            self._heads[method] = self._merged_head(method, url, args)
        return request

    def build_for(self, rec: Record, attempt: Attempt) -> httpx.Request:
        """``attempt``'s request, its operation (and its input, for a model's update) written
        into ``rec``."""
        method = self.spec.method_of(attempt)
        args: dict[str, Any] = {}
        if self.takes_inputs:  # the arguments are kept for the input: each callable called once
            args = self.spec.resolve(attempt, method)
            request = self._fixed_one or self._fixed.get(method)
            if request is None:
                request = self.build_from(args)
        else:
            request = self.build(attempt, method)
        rec.operation = self.operation(method, request.url.raw_path.decode("ascii"), attempt)
        if self.takes_inputs:
            rec.input = self.input_of(rec.operation, request, args, attempt)
        return request

    def operation(self, method: str, target: str, attempt: Attempt) -> str:
        """The operation ``attempt``'s request is (``POST /seats/{resource}/book``); with a model,
        one none of its functions covers is a usage error, before the request is sent."""
        name = self.operations.name(method, target, attempt)
        if self.bindings is not None and self.bindings.covering(name) is None:
            raise RaceUsageError(f"{self.spec.label}: {self.bindings.uncovered(name)}")
        return name

    def check_operation(self) -> None:
        """With a model, a request of one method and URL is checked once, before anything of the
        race is sent (set-ups included); one that varies is checked as each is built."""
        spec = self.spec
        if self.bindings is None or callable(spec.method) or callable(spec.url):
            return
        try:
            url = self._client.build_request(str(spec.method), spec.url).url
        except (TypeError, ValueError, httpx.InvalidURL):
            return  # the first build says what is wrong with it
        self.operation(str(spec.method), url.raw_path.decode("ascii"), None)  # type: ignore[arg-type]

    def input_of(
        self, operation: str, request: httpx.Request, args: Mapping[str, Any], attempt: Attempt
    ) -> Hashable:
        """What the model takes from an update's request (``request``: this one, or one with its
        method and URL); ``args``: the attempt's resolved arguments (the constant ones may be left
        out). An input function that fails is a usage error, before the request is sent."""
        if self.bindings is None:
            return None
        fields = ChainMap(dict(args), self._constants)
        try:
            return self.bindings.input(operation, request.method, str(request.url), fields, attempt)
        except BindingError as exc:
            raise RaceUsageError(f"{self.spec.label}: {exc}") from exc.__cause__

    def _merged_head(
        self, method: str, url: Any, args: dict[str, Any]
    ) -> tuple[httpx.URL, list[tuple[bytes, bytes]]]:
        """URL and headers as the client merges them, less what ``httpx.Request`` adds itself."""
        head_args = {name: args[name] for name in ("params", "headers", "cookies") if name in args}
        head = self._client.build_request(method, url, **head_args)
        given = {k.lower() for k in httpx.Headers(args.get("headers") or {})}
        auto = set()
        if "host" not in given:
            auto.add(b"host")
        if method in ("POST", "PUT", "PATCH") and not given & {
            "content-length",
            "transfer-encoding",
        }:
            auto.add(b"content-length")
        raw = []
        for name, value in head.headers.raw:
            if name.lower() in auto:
                auto.discard(name.lower())
                continue
            raw.append((name, value))
        return head.url, raw

    async def aclose(self) -> None:
        self._client.close()  # nothing to wait for: its transport holds no connection


def origin_of(request: httpx.Request) -> Origin:
    return check_url(request.url, str(request.url))


END = h11.EndOfMessage()


@dataclass(frozen=True, slots=True)
class WireRequest:
    origin: Origin
    head: h11.Request
    body: bytes
    request: httpx.Request
    """The httpx request this one was built from: this very request when ``own``, else (on the
    fast path) the first request with the same method and URL."""
    data: bytes
    """The request as it goes on the wire, head and body: serialised by h11 once."""
    head_len: int
    """Bytes of the head, up to and including its blank line."""
    closes: bool
    """The request asks the server to close the connection afterwards (h11's own verdict)."""
    operation: str = ""
    """What it does: ``POST /seats/{resource}/book`` (``core.operations``)."""
    own: bool = True
    """``request`` is this request itself (not the fast path's first one with its head)."""
    input: Hashable = None
    """What the race's model took from it (``RequestBuilder.input_of``); ``None`` without one."""

    @property
    def method(self) -> bytes:
        return self.head.method

    def httpx_request(self) -> httpx.Request:
        """This request as an ``httpx.Request`` (a predicate's ``response.request``): its own
        method, URL, headers and body, built only when a predicate asks."""
        if self.own:
            return self.request
        headers = list(self.head.headers.raw_items())
        return httpx.Request(self.head.method.decode(), self.request.url, headers=headers, content=self.body)

    def held_from(self, hold: HoldPoint) -> int:
        """Where the held bytes start: the last byte of the header block (``headers``: no server
        can route the request before it, so the body goes out at the gate too), or the last
        byte of the request (``body``: the classic last-byte sync)."""
        if hold == "headers":
            return self.head_len - 1
        return len(self.data) - 1


def serialize(head: h11.Request, body: bytes) -> tuple[bytes, int, bool]:
    """``(bytes, head length, closes)`` exactly as httpcore would write them, through a fresh h11
    state machine: once per distinct request, never per connection."""
    conn = h11.Connection(our_role=h11.CLIENT)
    start = conn.send(head) or b""
    parts = [start]
    if body:
        parts.append(conn.send(h11.Data(data=body)) or b"")
    parts.append(conn.send(END) or b"")
    return b"".join(parts), len(start), conn.our_state is h11.MUST_CLOSE


def wire_request(
    origin: Origin, head: h11.Request, body: bytes, request: httpx.Request, operation: str = ""
) -> WireRequest:
    data, head_len, closes = serialize(head, body)
    return WireRequest(origin, head, body, request, data, head_len, closes, operation)


def encode_json(value: Any) -> bytes:
    """JSON as httpx 0.28 encodes it; checked against httpx itself before it is trusted."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def from_httpx(request: httpx.Request, operation: str = "") -> WireRequest:
    head = h11.Request(method=request.method, target=request.url.raw_path, headers=request.headers.raw)
    return wire_request(origin_of(request), head, request.read(), request, operation)


class _Template:
    """A JSON-varying request's head for one method: serialised once per body length."""

    __slots__ = ("heads", "length_at", "wire")

    def __init__(self, wire: WireRequest, length_at: int) -> None:
        self.wire = wire
        self.length_at = length_at
        self.heads: dict[int, tuple[h11.Request, bytes]] = {
            len(wire.body): (wire.head, wire.data[: wire.head_len])
        }
        """Body length → the template's head with that Content-Length, and its bytes."""

    def head_for(self, length: int) -> tuple[h11.Request, bytes]:
        known = self.heads.get(length)
        if known is not None:
            return known
        template = self.wire.head
        headers = list(template.headers.raw_items())  # original casing, as sent
        headers[self.length_at] = (headers[self.length_at][0], str(length).encode())
        head = h11.Request(method=template.method, target=template.target, headers=headers)
        start = h11.Connection(our_role=h11.CLIENT).send(head) or b""  # the head alone
        self.heads[length] = (head, start)
        return head, start


class WireBuilder:
    """Last-byte mode's requests as bytes, serialised once where they repeat: a constant request
    once; a JSON-varying one once per body length (its head with that ``Content-Length``), each
    request then being that head's bytes and its own body. A ``method=`` callable makes one such
    head per distinct method."""

    def __init__(self, builder: RequestBuilder) -> None:
        self.builder = builder
        spec = builder.spec
        self._variation = spec.variation
        self._varies = spec.method_varies
        self._method: str = "" if self._varies else str(spec.method)
        self._templates: dict[str, _Template] = {}
        self._fixed: dict[str, WireRequest] = {}
        self._fixed_one: WireRequest | None = None
        self._takes = builder.takes_inputs
        """A model takes each request's input: a request built once still gets its own."""

    @property
    def fixed(self) -> WireRequest | None:
        """The one request of a race whose request never varies, once it is built (never when a
        model takes each request's input: that varies with the attempt)."""
        return None if self._takes else self._fixed_one

    def build(self, attempt: Attempt) -> WireRequest:
        if self._fixed_one is not None:
            return self._taken(self._fixed_one, {}, attempt) if self._takes else self._fixed_one
        spec = self.builder.spec
        method = spec.method_of(attempt) if self._varies else self._method
        if self._fixed:
            fixed = self._fixed.get(method)
            if fixed is not None:
                return self._taken(fixed, {}, attempt) if self._takes else fixed
        template = self._templates.get(method)
        if template is not None:
            wire = template.wire
            value = spec.value("json", attempt)
            body = encode_json(value)
            head, start = template.head_for(len(body))
            taken = None
            if self._takes:
                taken = self.builder.input_of(wire.operation, wire.request, {"json": value}, attempt)
            return WireRequest(
                wire.origin,
                head,
                body,
                wire.request,
                start + body,
                len(start),
                wire.closes,
                wire.operation,
                False,
                taken,
            )
        args = spec.resolve(attempt, method)
        request = self.builder.build_from(args)
        operation = self.builder.operation(method, request.url.raw_path.decode("ascii"), attempt)
        wire = from_httpx(request, operation)
        if self._variation is Variation.CONSTANT:
            self._fixed[method] = wire
            if not self._varies:
                self._fixed_one = wire
        elif self._variation is Variation.JSON:
            self._adopt(method, wire, args.get("json"))
        return self._taken(wire, args, attempt) if self._takes else wire

    def _taken(self, wire: WireRequest, args: Mapping[str, Any], attempt: Attempt) -> WireRequest:
        """``wire`` with the input the model takes from it for ``attempt`` (a copy: ``wire`` may
        serve every attempt)."""
        return replace(wire, input=self.builder.input_of(wire.operation, wire.request, args, attempt))

    def _adopt(self, method: str, wire: WireRequest, value: Any) -> None:
        """Use ``wire`` as the template if its body is our encoding and its length is framed once."""
        try:
            same = encode_json(value) == wire.body
        except (TypeError, ValueError):
            return
        lengths = [i for i, (name, _) in enumerate(wire.head.headers) if name == b"content-length"]
        chunked = any(name == b"transfer-encoding" for name, _ in wire.head.headers)
        if same and len(lengths) == 1 and not chunked:
            self._templates[method] = _Template(wire, lengths[0])
