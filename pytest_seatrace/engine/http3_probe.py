"""Whether an origin offers HTTP/3, for ``sync="auto"``: its ``Alt-Svc`` header, then a handshake.

One ``HEAD`` of the race's first URL over HTTP/1.1 (httpx) reads ``Alt-Svc``; an ``h3`` entry names
the UDP port (and maybe another host) where the origin speaks HTTP/3, which a QUIC handshake
within ``HANDSHAKE_BUDGET_S`` then confirms: a header alone proves nothing (a CDN may advertise
HTTP/3 that a firewall drops). The answer, a failure included, is kept per origin for the rest of
the process, so a session probes each origin once. aioquic is imported only for the handshake.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx

from pytest_seatrace.engine.hooks import describe
from pytest_seatrace.engine.requests import make_ssl_context
from pytest_seatrace.engine.stream import Origin, TransportError

HANDSHAKE_BUDGET_S = 1.0
"""The QUIC handshake's bound: loopback answers in milliseconds, a far origin in one round trip."""
NO_AIOQUIC = "aioquic is not installed (pip install 'pytest-seatrace[http3]')"

_ENTRY = re.compile(r'\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*"([^"]*)"\s*((?:;[^,;]*)*)')
"""One ``Alt-Svc`` alternative (RFC 7838): ``protocol="[host]:port"`` and its ``; param=value``s."""


@dataclass(frozen=True, slots=True)
class AltService:
    """One ``Alt-Svc`` alternative: protocol id, host (``""``: the origin's own), port, ``ma=``."""

    protocol: str
    host: str
    port: int
    max_age: int | None = None

    @property
    def text(self) -> str:
        """As the summary names it: ``h3=:8443`` or ``h3=alt.example:443``."""
        return f"{self.protocol}={self.host}:{self.port}"


def parse_alt_svc(value: str) -> list[AltService] | None:
    """The alternatives an ``Alt-Svc`` value lists, in order; ``None`` for ``clear`` (the origin
    withdraws every alternative). Entries that do not parse are skipped, as clients must."""
    if value.strip() == "clear":
        return None
    found: list[AltService] = []
    for match in _ENTRY.finditer(value):
        protocol, authority, params = match.groups()
        host, _, port = authority.rpartition(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            continue
        ages = re.findall(r";\s*ma\s*=\s*\"?(\d+)", params)
        found.append(AltService(protocol, host.strip("[]"), int(port), int(ages[0]) if ages else None))
    return found


def h3_service(values: list[str]) -> AltService | None:
    """The first ``h3`` alternative of the ``Alt-Svc`` headers ``values`` (not a draft's
    ``h3-29``, nor one whose ``ma=0`` has expired it); a ``clear`` anywhere withdraws them all."""
    entries: list[AltService] = []
    for value in values:
        parsed = parse_alt_svc(value)
        if parsed is None:
            return None
        entries += parsed
    return next((e for e in entries if e.protocol == "h3" and e.max_age != 0), None)


@dataclass(frozen=True, slots=True)
class Http3Offer:
    """What the probe found: where HTTP/3 answered (``target``), or why not (``target`` None)."""

    target: Origin | None
    why: str
    """``HTTP/3 offered by Alt-Svc h3=:8443``, or ``no HTTP/3: …`` (without the prefix here)."""

    @property
    def offered(self) -> bool:
        return self.target is not None


def aioquic_installed() -> bool:
    return importlib.util.find_spec("aioquic") is not None


_OFFERS: dict[Origin, Http3Offer] = {}
"""Each origin's answer, for the rest of the process (one probe per origin per session)."""


def clear_offers() -> None:
    """Forget every origin's answer (tests; a process that wants to ask again)."""
    _OFFERS.clear()


async def probe(url: str, origin: Origin, verify: bool | str | Path, timeout: float) -> Http3Offer:  # noqa: ASYNC109
    """Whether ``origin`` offers HTTP/3, asked once per process: ``HEAD url`` (within ``timeout``)
    for its ``Alt-Svc``, then a QUIC handshake to the ``h3`` port within ``HANDSHAKE_BUDGET_S``."""
    if origin not in _OFFERS:
        _OFFERS[origin] = await _probe(url, origin, verify, timeout)
    return _OFFERS[origin]


async def _probe(url: str, origin: Origin, verify: bool | str | Path, timeout: float) -> Http3Offer:  # noqa: ASYNC109
    try:
        values = await head_alt_svc(url, verify, timeout)
    except (httpx.HTTPError, OSError) as exc:
        return Http3Offer(None, f"HEAD {origin.url} failed ({describe(exc)})")
    service = h3_service(values)
    if service is None:
        return Http3Offer(None, f"HEAD {origin.url} answered without Alt-Svc h3")
    target = Origin("https", service.host or origin.host, service.port)
    failure = await handshake(target, origin.host, verify)
    if failure is not None:
        return Http3Offer(None, f"Alt-Svc {service.text}, but the QUIC handshake {failure}")
    return Http3Offer(target, f"HTTP/3 offered by Alt-Svc {service.text}")


async def head_alt_svc(url: str, verify: bool | str | Path, timeout: float) -> list[str]:  # noqa: ASYNC109
    """The ``Alt-Svc`` headers of ``HEAD url`` over HTTP/1.1 (no redirect followed)."""
    context = make_ssl_context(verify)  # httpx sets its own ALPN on it: never the race's context
    async with httpx.AsyncClient(verify=context, trust_env=False, timeout=timeout) as client:
        response = await client.head(url)
    return response.headers.get_list("alt-svc")


async def handshake(target: Origin, server_name: str, verify: bool | str | Path) -> str | None:
    """``None`` when a QUIC handshake with ``target`` completes within the budget, else what
    happened (the connection is closed either way)."""
    from pytest_seatrace.engine.http3 import Http3Connection

    with anyio.move_on_after(HANDSHAKE_BUDGET_S):
        try:
            connection = await Http3Connection.open(target, verify=verify, server_name=server_name)
        except (TransportError, OSError) as exc:
            return f"to UDP port {target.port} failed ({describe(exc)})"
        connection.close()
        return None
    return f"to UDP port {target.port} had no answer within {HANDSHAKE_BUDGET_S:g} s"
