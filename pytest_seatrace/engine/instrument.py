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
  (``GateWrite``: its time, bytes, sends and TCP segments) and, for single-packet, the
  connections it opened.

Nothing here changes what the engine does or reads a firer's internals: both starts keep
their ``gate_writes`` themselves, and ``fire_observed`` turns on their segment counting.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass

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
from pytest_seatrace.engine.requests import RequestBuilder, WireRequest, from_httpx
from pytest_seatrace.engine.runner import run_race
from pytest_seatrace.engine.shards import GatewayPool
from pytest_seatrace.engine.single_packet import SinglePacketFirer

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


@dataclass(frozen=True)
class Observed:
    """A race fired by ``fire_observed``: its records, and what its gates cost."""

    run: RaceRun
    gates: list[GateWrite]
    connections: int | None
    """Connections single-packet opened (kept by every wave in turn); None for last-byte."""


async def fire_observed(
    config: RaceConfig,
    spec: RequestSpec,
    url: str,
    *,
    waves: Sequence[Sequence[int]],
    ssl_context: ssl.SSLContext | None,
    h2_context: ssl.SSLContext | None = None,
    single_packet: bool = False,
) -> Observed:
    """Fire ``waves`` (resource indexes) of one round with last-byte over HTTP/1.1 or
    single-packet over HTTP/2, firers built directly as the runner builds them, and observe
    every gate write. ``ssl_context``: the trust for an https ``url``, offering no ALPN;
    ``h2_context``: the same trust offering ``h2`` first, for single-packet."""
    plain = ssl.create_default_context() if ssl_context is None else ssl_context
    builder = RequestBuilder(spec, url, plain)
    classifier = Classifier(config)
    sink: list[Record] = []
    firer: SinglePacketFirer | LastByteFirer
    if single_packet:
        firer = SinglePacketFirer(config, builder, h2_context, classifier)
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
    run = RaceRun(records=tuple(sink), duration=duration)
    gates = [GateWrite(g.ns, g.bytes, g.sends, g.segments) for g in firer.gate_writes]
    connections = firer.connections if isinstance(firer, SinglePacketFirer) else None
    return Observed(run, gates, connections)
