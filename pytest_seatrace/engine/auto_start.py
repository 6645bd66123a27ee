"""What ``sync="auto"`` starts with, and why: single-datagram where the origin offers HTTP/3, else
single-packet where TLS ALPN picks ``h2``, else last-byte.

The decision is two pure steps around the probes (``http3_offer`` before asking the origin,
``decide`` after), so every row of the table is testable without a network; ``choose_auto`` runs
the probes between them. An explicit hold point stops ``auto`` from choosing single-packet (a
shared HTTP/2 connection cannot hold a header block open) but not single-datagram, whose
independent streams hold either point.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.errors import RaceUsageError
from pytest_seatrace.engine.firers import ssl_context_for
from pytest_seatrace.engine.http3_probe import NO_AIOQUIC, Http3Offer, aioquic_installed, probe
from pytest_seatrace.engine.stream import Origin

DATAGRAM = "single-datagram"


@dataclass(frozen=True, slots=True)
class AutoStart:
    """The start ``auto`` chose, why (``None``: nothing worth saying, a plain ``http://`` race),
    and for single-datagram the host and UDP port HTTP/3 answers on."""

    mode: str
    why: str | None
    target: Origin | None = None


def http3_offer(setting: str, origin: Origin, tls_verify: Any, aioquic: bool) -> Http3Offer | None:
    """What is known without asking the origin: HTTP/3 on the URL's port (``http3="on"``), why
    there is none (``why`` empty: nothing to report), or ``None``: probe the origin."""
    if setting == "off":
        return Http3Offer(None, "http3=off")
    if origin.scheme != "https":
        return Http3Offer(None, "http3=on, but QUIC needs an https:// origin" if setting == "on" else "")
    if isinstance(tls_verify, ssl.SSLContext):
        return Http3Offer(None, "tls_verify is an ssl.SSLContext, which aioquic cannot take")
    if not aioquic:
        if setting == "on":
            raise RaceUsageError(f"http3=on (--race-http3 on): {NO_AIOQUIC}")
        return Http3Offer(None, NO_AIOQUIC)
    if setting == "on":
        return Http3Offer(origin, f"http3=on: HTTP/3 on UDP port {origin.port}, not probed")
    return None


def decide(offer: Http3Offer, *, h2: bool, hold_given: bool) -> AutoStart:
    """The start from what the probes found: HTTP/3 when offered, else single-packet over ALPN
    ``h2`` (not with an explicit hold point), else last-byte."""
    if offer.offered:
        return AutoStart(DATAGRAM, offer.why, offer.target)
    why = f"no HTTP/3: {offer.why}" if offer.why else None
    return AutoStart("single-packet" if h2 and not hold_given else "last-byte", why)


async def choose_auto(url: str, origin: Origin, config: RaceConfig, tls_verify: Any) -> AutoStart:
    """``auto`` for a race whose first request goes to ``url`` at ``origin``: the HTTP/3 probe
    (cached per origin), then, without HTTP/3, the ALPN probe for ``h2``."""
    offer = http3_offer(config.http3, origin, tls_verify, aioquic_installed())
    if offer is None:
        offer = await probe(url, origin, tls_verify, config.timeout)
    h2 = False
    if not offer.offered and not config.hold_given and origin.scheme == "https":
        from pytest_seatrace.engine.http2 import negotiate_h2

        h2 = await negotiate_h2(origin, ssl_context_for("single-packet", tls_verify), config.timeout)
    return decide(offer, h2=h2, hold_given=config.hold_given)
