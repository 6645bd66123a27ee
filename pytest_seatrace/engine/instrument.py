"""What the benchmarks measure inside the engine, exported from one place.

The benchmarks (``python -m benchmarks``) reach the engine only through this module, so a
change inside the engine is answered here once, not in every benchmark. It offers:

- the race as the plugin runs it: ``run_race`` over a ``RacePlan`` (``RaceConfig``,
  ``RequestSpec``, ``TargetOptions``), read back as a ``RaceResult`` whose ``history`` holds
  every ``Record`` with its start instants (``sent_ns``), its call instants (``call_ns``: the
  earliest the server could act on it) and the service's arrival stamp (``server_ns``, from
  ``X-Arrival-Ns``);
- ``GatewayPool``: shard gateways kept from one race to the next, as a session keeps them;
- ``ssl_context_for``: the context the runner gives a start mode (its ALPN offer);
- ``wire_request``: the exact bytes the engine sends for an ``httpx.Request``, and where its
  held bytes begin at a hold point (``WireRequest.held_from``);
- ``fire_observed``: one race fired wave by wave with each seat's gate write observed
  (``GateWrite``: its time, bytes, sends and TCP segments, or an HTTP/3 release's datagrams)
  and, for single-packet and single-datagram, the connections it opened.

Nothing here changes what the engine does or reads a firer's internals: both starts keep
their ``gate_writes`` themselves, and ``fire_observed`` turns on their segment counting.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from pytest_seatrace.core.config import REJECT_DEFAULT, HoldPoint, RaceConfig, SyncMode, make_rule
from pytest_seatrace.core.records import Outcome, RaceRun, Record
from pytest_seatrace.core.result import RaceResult
from pytest_seatrace.core.stats import Percentiles, percentile
from pytest_seatrace.engine.classify import Classifier
from pytest_seatrace.engine.firers import ssl_context_for
from pytest_seatrace.engine.lastbyte import LastByteFirer
from pytest_seatrace.engine.limits import ensure_open_files
from pytest_seatrace.engine.plan import AttemptFn, RacePlan, RequestSpec, SetupFn, TargetOptions
from pytest_seatrace.engine.requests import RequestBuilder, WireRequest, check_url, from_httpx
from pytest_seatrace.engine.runner import run_race
from pytest_seatrace.engine.shards import GatewayPool
from pytest_seatrace.engine.single_packet import SinglePacketFirer
from pytest_seatrace.engine.stream import Origin

if TYPE_CHECKING:
    from pytest_seatrace.engine.single_datagram import SingleDatagramFirer

__all__ = [
    "REJECT_DEFAULT",
    "AttemptFn",
    "GateWrite",
    "GatewayPool",
    "HoldPoint",
    "Observed",
    "Outcome",
    "Percentiles",
    "RaceConfig",
    "RacePlan",
    "RaceResult",
    "RaceRun",
    "Record",
    "RequestSpec",
    "SetupFn",
    "SyncMode",
    "TargetOptions",
    "WireRequest",
    "fire_observed",
    "make_rule",
    "percentile",
    "run_race",
    "ssl_context_for",
    "wire_request",
]


def wire_request(request: httpx.Request) -> WireRequest:
    """The bytes the engine would send for ``request`` (``.data``; ``.held_from(hold)``)."""
    return from_httpx(request)


@dataclass(frozen=True)
class GateWrite:
    """One seat's gate: how long its writes took, what they carried."""

    ns: int
    """From just before the first gate ``send()`` to the return of the last."""
    bytes: int
    sends: int
    segments: int | None
    """TCP segments with data those sends made (Linux), else None."""
    datagrams: int | None = None
    """UDP datagrams of a single-datagram release (its ``sendto`` calls); None over TCP."""


@dataclass(frozen=True)
class Observed:
    """A race fired by ``fire_observed``: its records, and what its gates cost."""

    run: RaceRun
    """Its records; for single-datagram also each release (``releases``: build and write time)."""
    gates: list[GateWrite]
    connections: int | None
    """Connections single-packet or single-datagram opened (kept by every wave in turn); None
    for last-byte."""


async def fire_observed(
    config: RaceConfig,
    spec: RequestSpec,
    url: str,
    *,
    waves: Sequence[Sequence[int]],
    ssl_context: ssl.SSLContext | None,
    h2_context: ssl.SSLContext | None = None,
    single_packet: bool = False,
    quic_port: int | None = None,
    tls_verify: bool | str | Path = True,
) -> Observed:
    """Fire ``waves`` (resource indexes) of one round with last-byte over HTTP/1.1,
    single-packet over HTTP/2 or, given ``quic_port`` (where the origin answers HTTP/3, as its
    ``Alt-Svc`` would say), single-datagram, firers built directly as the runner builds them,
    and observe every gate write. ``ssl_context``: the trust for an https ``url``, offering no
    ALPN; ``h2_context``: the same trust offering ``h2`` first, for single-packet;
    ``tls_verify``: single-datagram's certificate check (a CA file, say)."""
    plain = ssl.create_default_context() if ssl_context is None else ssl_context
    builder = RequestBuilder(spec, url, plain)
    classifier = Classifier(config)
    sink: list[Record] = []
    firer: SinglePacketFirer | LastByteFirer | SingleDatagramFirer
    quic: SingleDatagramFirer | None = None
    if quic_port is not None:
        from pytest_seatrace.engine.single_datagram import SingleDatagramFirer  # aioquic: only here

        origin = check_url(httpx.URL(url), url)
        h3_at = {origin: Origin(origin.scheme, origin.host, quic_port)}
        firer = quic = SingleDatagramFirer(config, builder, None, classifier).aimed(tls_verify, h3_at)
    elif single_packet:
        firer = SinglePacketFirer(config, builder, h2_context, classifier)
        firer.count_segments = True
    else:
        ensure_open_files(2 * config.concurrency)
        firer = LastByteFirer(config, builder, plain, classifier)
        firer.count_segments = True
    try:
        began = time.perf_counter()
        await firer.fire_waves(1, waves, sink)
        duration = time.perf_counter() - began
    finally:
        await firer.aclose()
        await builder.aclose()
    releases = () if quic is None else tuple(quic.datagram_releases)
    run = RaceRun(records=tuple(sink), duration=duration, releases=releases)
    gates = [GateWrite(g.ns, g.bytes, g.sends, g.segments, g.datagrams) for g in firer.gate_writes]
    connections = None if isinstance(firer, LastByteFirer) else firer.connections
    return Observed(run, gates, connections)
