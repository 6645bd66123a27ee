"""The firer for a start mode, chosen in one place: the runner and a shard's worker both ask here.

Each start mode has its firer and the SSL context it needs (the ALPN its connections offer);
the firers' modules are imported only when their mode races (the ``gate`` mode's loads httpcore,
single-packet's loads h2, single-datagram's aioquic).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.engine.classify import ResponseRecorder
from pytest_seatrace.engine.plan import AttemptFn, Roster
from pytest_seatrace.engine.requests import RequestBuilder, check_url, make_ssl_context
from pytest_seatrace.engine.stream import H1_ALPN, H2_ALPN, Origin
from pytest_seatrace.engine.waves import ReleaseAtOnce, WaveHooks

if TYPE_CHECKING:
    from pytest_seatrace.engine.httpx_start import HttpxFirer
    from pytest_seatrace.engine.lastbyte import LastByteFirer
    from pytest_seatrace.engine.single_datagram import SingleDatagramFirer
    from pytest_seatrace.engine.single_packet import SinglePacketFirer


def ssl_context_for(mode: str, tls_verify: Any) -> ssl.SSLContext:
    """The context a start mode's connections use: single-packet offers ``h2``, last-byte
    ``http/1.1`` only; the ``gate`` mode's httpx sets its own ALPN (single-datagram's QUIC takes
    ``tls_verify`` itself: this context serves its ``setup=`` requests)."""
    if mode in ("gate", "single-datagram"):
        return make_ssl_context(tls_verify)
    return make_ssl_context(tls_verify, H2_ALPN if mode == "single-packet" else H1_ALPN)


def make_firer(
    mode: str,
    config: RaceConfig,
    classifier: ResponseRecorder,
    ssl_context: ssl.SSLContext,
    *,
    builder: RequestBuilder | None,
    roster: Roster,
    base_url: str | None,
    attempt_fn: AttemptFn | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    hooks: WaveHooks | None = None,
    tls_verify: bool | str | Path = True,
    h3_at: Mapping[Origin, Origin] | None = None,
) -> HttpxFirer | LastByteFirer | SinglePacketFirer | SingleDatagramFirer:
    """The firer of ``mode`` (``gate``, ``last-byte``, ``single-packet`` or ``single-datagram``,
    already decided: ``auto`` is the runner's to resolve). ``attempt_fn`` and ``transport``
    (``race.app``) race only in the ``gate`` mode. ``hooks``: what the firer tells its owner of
    each wave (a shard paces its release by them); none, every wave is released as soon as it is
    ready. ``tls_verify``: single-datagram's certificate check (a bool or a CA file); ``h3_at``:
    where HTTP/3 answers for an origin when not on its URL's port (the ``Alt-Svc`` ``auto`` found)."""
    if mode in ("single-packet", "last-byte", "single-datagram"):
        if builder is None or attempt_fn is not None or transport is not None:
            raise ValueError(f"the {mode} start races a request over the network: it needs a builder")
        if mode == "single-datagram":
            from pytest_seatrace.engine.single_datagram import SingleDatagramFirer

            firer = SingleDatagramFirer(config, builder, None, classifier, roster, hooks=hooks)
            return firer.aimed(tls_verify, h3_at or {})
        if mode == "single-packet":
            from pytest_seatrace.engine.single_packet import SinglePacketFirer

            return SinglePacketFirer(config, builder, ssl_context, classifier, roster, hooks=hooks)
        from pytest_seatrace.engine.lastbyte import LastByteFirer

        return LastByteFirer(config, builder, ssl_context, classifier, roster, hooks=hooks)
    if base_url and transport is None:
        check_url(httpx.URL(base_url), base_url)
    from pytest_seatrace.engine.httpx_start import HttpxFirer  # httpx's transport: only here

    return HttpxFirer(
        config,
        classifier,
        ssl_context,
        base_url=base_url,
        builder=builder,
        attempt_fn=attempt_fn,
        transport=transport,
        roster=roster,
        hooks=hooks or ReleaseAtOnce(),
    )
