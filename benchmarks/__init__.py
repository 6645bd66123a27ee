"""The benchmarks, one scenario module each: ``python -m benchmarks NAME [--smoke]``.

``python -m benchmarks`` lists them. What each measures, its targets and its last recorded
figures are in ``docs/benchmarks.md``. They reach the engine only through
``pytest_seatrace.engine.instrument`` and start their services only through ``services``.
"""

from __future__ import annotations

BENCHMARKS = {
    "seed_scenario": "the seed race (100 clients x 16 seats) by the engine, Locust, hey and naive httpx",
    "start_spread": "how tightly a seat's clients start, against a bare send loop and a tight-loop racer",
    "detection": "how often the seed race catches the unsafe service's double booking, per window",
    "throughput": "keep-alive POST throughput and client CPU per request against hey",
    "scale": "10k, 25k and 50k requests: peak memory and time per request",
    "shards": "one race over 1 and 2 execnet shards: wall, spreads, clock error",
    "single_packet": "HTTP/2 single-packet against last-byte: gate write, spreads, catch rate, via nginx",
    "single_datagram": "HTTP/3 single-datagram against single-packet and last-byte, loopback and jittery",
    "history": "the linearizability checker: Porcupine's known verdicts, one-wave races, memory",
    "model_cost": "the seed race with model=Seats() against without, interleaved pairs: what a model costs",
}
"""Every benchmark module and its one-line purpose (docs/benchmarks.md has one section each)."""
