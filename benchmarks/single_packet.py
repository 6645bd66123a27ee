"""Single-packet (HTTP/2) against last-byte (HTTP/1.1, both hold points) on the hypercorn sample
service: the gate write, the spread it gives, and whether it catches a narrow window.

One run races 100 clients x 16 seats with every start, in turn, on the same services (h2c and
TLS by default): a **safe** service for the gate and spread figures, and **unsafe** services
(check, ``await sleep(window)``, book) with a 10 µs and a 0.1 ms window for the catch rate. A
seat is *caught* when it has more than one acknowledged winner; the catch rate is caught seats
over raced seats, pooled over the runs. Services are reset between races; one uncounted warm-up
race per start and transport comes first.

- **gate write**: from just before the first gate ``send()`` of a seat to the return of the
  last: one ``send()`` per connection for single-packet (the engine's own count), 100 for
  last-byte (timed from its release order to the last final write's stamp);
- **bytes**, **sends** and **segments** of the gate (Linux ``tcpi_data_segs_out`` of every
  connection before and after: segments that carried data);
- **client spread** per seat: first to last return of a gate ``send()`` (single-packet on one
  connection: 0, every stream leaves in the same write); **server spread**: first to last
  ``X-Arrival-Ns`` stamp, taken after the body was read. The service books a seat's orders one
  after another on one event loop, so on the safe service it is mostly the service's own time.

Targets (single-packet, each transport): the 10 µs window caught on >= 99 % of seats and a
median gate write under 0.1 ms. Exit status: 0 met, 1 below target (or errors, or other than
one winner per seat on the safe service), 2 incomplete (budget, race limit, service failure).
``--smoke``: toy sizes in seconds, no target, 0 when it ran.

The nginx rows of issue 15 (single-packet through a reverse proxy) are not measured here yet.
"""

from __future__ import annotations

import argparse
import ssl
import statistics
import sys
import time
from collections.abc import Callable, MutableSequence, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import anyio
from _common import (
    EXIT_BELOW_TARGET,
    EXIT_INCOMPLETE,
    EXIT_OK,
    SMOKE_VERDICT,
    Budget,
    BudgetExceededError,
    Summary,
    add_limits,
    add_smoke,
    apply_smoke,
    client_spreads,
    ms,
    order_spec,
    positive_float,
    positive_int,
    print_header,
    print_table,
    server_errors,
    server_spreads,
    stderr,
    winners_per_resource,
)

from pytest_seatrace.core.config import HoldPoint
from pytest_seatrace.core.records import RaceRun, Record
from pytest_seatrace.engine import lastbyte
from pytest_seatrace.engine.classify import Classifier
from pytest_seatrace.engine.h2 import SinglePacketFirer, data_segments_out
from pytest_seatrace.engine.lastbyte import LastByteFirer
from pytest_seatrace.engine.limits import ensure_open_files
from pytest_seatrace.engine.requests import RequestBuilder
from pytest_seatrace.marker import resolve
from pytest_seatrace.options import Settings
from pytest_seatrace.results import RaceResult
from pytest_seatrace.service import ServiceError, ServiceHandle, start_sample_service

STARTS = ("single-packet", "last-byte/headers", "last-byte/body")
TRANSPORTS = ("h2c", "tls")
TARGET_WINDOW_MS = 0.01
TARGET_SHARE = 0.99
TARGET_GATE_NS = 100_000
NS_PER_US = 1000


def _transports(text: str) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    wrong = [v for v in values if v not in TRANSPORTS]
    if wrong or not values:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(TRANSPORTS)}")
    return values


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--runs", type=positive_int, default=5, help="counted runs of every start (default: 5)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="uncounted races per start first (default: 1)")
    parser.add_argument("--clients", type=positive_int, default=100, help="clients per seat (default: 100)")
    parser.add_argument("--resources", type=positive_int, default=16, help="seats raced (default: 16)")
    parser.add_argument(
        "--windows",
        type=lambda text: [positive_float(p) for p in text.split(",") if p.strip()],
        default=[0.01, 0.1],
        help="unsafe check-to-act windows in ms, comma-separated (default: 0.01,0.1)",
    )
    parser.add_argument(
        "--transports", type=_transports, default=list(TRANSPORTS), help="h2c, tls or both (default: both)"
    )
    parser.add_argument(
        "--timeout", type=positive_float, default=10.0, help="seconds per request (default: 10)"
    )
    parser.add_argument("--seed", type=int, default=1, help="first race seed; each race adds 1 (default: 1)")
    add_limits(parser, limit="race", limit_s=120.0, budget_s=1200.0)
    add_smoke(parser)
    return parser


# -- one race, with the gate observed ----------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    """One seat's gate: how long its writes took, what they carried."""

    ns: int
    bytes: int
    sends: int
    segments: int | None


class _LastByteProbe:
    """Times last-byte's release loop from outside: its seeded release order is the last step
    before the loop, so the loop runs from there to the last final write's stamp. Segment
    counters are read before the order's timestamp and after the release, never inside it."""

    def __init__(self) -> None:
        self.gates: list[Gate] = []
        self._start = 0
        self._bytes = 0
        self._sends = 0
        self._socks: list[Any] = []
        self._before: list[int | None] = []

    def order(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def wrapped(seed: int, rnd: int, index: int, items: MutableSequence[Any]) -> Any:
            out = real(seed, rnd, index, items)
            conns = [item[1] for item in items]
            self._socks = [conn.sock for conn in conns]
            self._bytes = sum(len(conn.final) for conn in conns)
            self._sends = len(conns)
            self._before = [data_segments_out(sock) for sock in self._socks]
            self._start = time.perf_counter_ns()
            return out

        return wrapped

    def release(self, real: Callable[..., None]) -> Callable[..., None]:
        def wrapped(rnd: int, index: int, slots: list[Any]) -> None:
            self._start = 0
            real(rnd, index, slots)
            if not self._start:
                return
            after = [data_segments_out(sock) for sock in self._socks]
            pairs = [
                (a, b) for a, b in zip(self._before, after, strict=True) if a is not None and b is not None
            ]
            segments = sum(b - a for a, b in pairs) if len(pairs) == len(after) else None
            stamps = [s.record.sent_ns for s in slots if s.record.sent_ns >= self._start]
            if stamps:
                self.gates.append(Gate(max(stamps) - self._start, self._bytes, self._sends, segments))

        return wrapped


@dataclass
class Raced:
    result: RaceResult
    gates: list[Gate]
    connections: int | None = None


def race(start: str, service: ServiceHandle, args: argparse.Namespace, seed: int) -> Raced:
    """One race of ``start`` against ``service``, firers built directly (as the runner will)."""
    hold: HoldPoint = "body" if start.endswith("/body") else "headers"
    marker = {
        "resources": range(1, args.resources + 1),
        "concurrency": args.clients,
        "timeout": args.timeout,
        "sync": "last-byte",
        "hold": hold,
    }
    config = resolve({}, marker, Settings(seed=seed), flexible=False)
    context = service.ssl_context()  # no ALPN: HTTP/1.1 for last-byte
    plain = ssl.create_default_context() if context is None else context

    async def main() -> Raced:
        builder = RequestBuilder(order_spec(), service.url, plain)
        classifier = Classifier(config)
        sink: list[Record] = []
        probe = _LastByteProbe()
        single: SinglePacketFirer | None = None
        firer: SinglePacketFirer | LastByteFirer
        if start == "single-packet":
            single = firer = SinglePacketFirer(config, builder, _offering_h2(service), classifier)
            single.count_segments = True
        else:
            ensure_open_files(2 * args.clients)
            firer = LastByteFirer(config, builder, plain, classifier)
            firer._release = probe.release(firer._release)  # type: ignore[method-assign]
        module = vars(lastbyte)  # the release loop looks its order function up here at each call
        real_order = module["release_order"]
        module["release_order"] = probe.order(real_order)
        try:
            with anyio.fail_after(args.race_limit_s):
                began = time.perf_counter()
                await firer.fire_waves(1, [range(i, i + 1) for i in range(args.resources)], sink)
                duration = time.perf_counter() - began
        finally:
            module["release_order"] = real_order
            await firer.aclose()
            await builder.aclose()
        result = RaceResult.from_run(start, config, RaceRun(records=tuple(sink), duration=duration))
        if single is None:
            return Raced(result, probe.gates)
        gates = [Gate(g.ns, g.bytes, g.sends, g.segments) for g in single.gate_writes]
        return Raced(result, gates, single.connections)

    try:
        return anyio.run(main)
    except TimeoutError:
        raise TimeoutError(f"{start} race did not finish within {args.race_limit_s:g}s") from None


def _offering_h2(service: ServiceHandle) -> ssl.SSLContext | None:
    """What the runner passes for single-packet: the same trust, ALPN offering h2 first."""
    context = service.ssl_context()
    if context is not None:
        context.set_alpn_protocols(["h2", "http/1.1"])
    return context


# -- the measurement ---------------------------------------------------------------------------


@dataclass
class Cell:
    """Everything measured for one start over one transport, pooled over runs."""

    gate_ns: list[int] = field(default_factory=list)
    bytes: list[int] = field(default_factory=list)
    sends: list[int] = field(default_factory=list)
    segments: list[int] = field(default_factory=list)
    unmeasured_segments: int = 0
    client: list[int] = field(default_factory=list)
    server: list[int] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)
    caught: dict[float, list[bool]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def take_gates(self, gates: Sequence[Gate]) -> None:
        for gate in gates:
            self.gate_ns.append(gate.ns)
            self.bytes.append(gate.bytes)
            self.sends.append(gate.sends)
            if gate.segments is None:
                self.unmeasured_segments += 1
            else:
                self.segments.append(gate.segments)


def _check_safe(label: str, result: RaceResult, resources: int, clients: int) -> list[str]:
    found = []
    if result.errors or server_errors(result):
        found.append(f"{label}: {result.errors} errors {dict(result.error_reasons)}")
    if winners_per_resource(result) != [1] * resources:
        found.append(f"{label}: winners per seat {winners_per_resource(result)}, expected one each")
    if result.requests != resources * clients:
        found.append(f"{label}: {result.requests} requests, expected {resources * clients}")
    return found


def measure(
    services: dict[tuple[str, float | None], ServiceHandle], args: argparse.Namespace, budget: Budget
) -> dict[tuple[str, str], Cell]:
    cells = {(t, s): Cell() for t in args.transports for s in STARTS}
    seed = args.seed
    for run in range(-args.warmup, args.runs):
        counted = run >= 0
        for transport in args.transports:
            starts = (
                STARTS[run % len(STARTS) :] + STARTS[: run % len(STARTS)]
            )  # each start goes first in turn
            for start in starts:
                cell = cells[(transport, start)]
                for window in (None, *args.windows):
                    if budget.expired():
                        raise BudgetExceededError(
                            f"time budget of {args.budget_s:g}s ran out in run {run + 1}"
                        )
                    service = services[(transport, window)]
                    service.reset()
                    seed += 1
                    began = time.perf_counter()
                    raced = race(start, service, args, seed)
                    wall = time.perf_counter() - began
                    if not counted:
                        continue
                    result = raced.result
                    if window is None:
                        cell.walls.append(wall)
                        cell.take_gates(raced.gates)
                        cell.client.extend(client_spreads(result))
                        cell.server.extend(server_spreads(result))
                        if raced.connections is not None:
                            cell.connections.append(raced.connections)
                        cell.problems += _check_safe(
                            f"{transport} {start} run {run + 1}", result, args.resources, args.clients
                        )
                    else:
                        if result.errors:
                            cell.problems.append(
                                f"{transport} {start} {window} ms run {run + 1}: {result.errors} errors"
                            )
                        cell.caught.setdefault(window, []).extend(w > 1 for w in winners_per_resource(result))
    return cells


def _us(ns: float) -> str:
    return "-" if ns != ns else f"{ns / NS_PER_US:.1f}"


def _report(cells: dict[tuple[str, str], Cell], args: argparse.Namespace) -> None:
    rows = []
    for (transport, start), cell in cells.items():
        gate = Summary.of(cell.gate_ns)
        client = Summary.of(cell.client)
        server = Summary.of(cell.server)
        segments = f"{statistics.median(cell.segments):g}" if cell.segments else "n/a"
        rows.append(
            [
                start,
                transport,
                str(len(cell.walls)),
                f"{statistics.median(cell.walls):.2f}" if cell.walls else "-",
                _us(gate.median),
                _us(gate.max),
                f"{statistics.median(cell.bytes):g}" if cell.bytes else "-",
                f"{statistics.median(cell.sends):g}" if cell.sends else "-",
                segments,
                ms(client.median),
                ms(client.p95),
                ms(server.median),
                ms(server.p95),
            ]
        )
    print_table(
        rows,
        (
            "start",
            "transport",
            "runs",
            "race wall s",
            "gate write med µs",
            "gate write max µs",
            "gate bytes",
            "gate sends",
            "gate segments",
            "client spread med ms",
            "client spread p95 ms",
            "server spread med ms",
            "server spread p95 ms",
        ),
        f"Safe service, {args.clients} clients x {args.resources} seats: per seat, pooled over "
        f"{args.runs} run(s) (gate: one sample per seat; segments: TCP segments with data)",
    )
    catch_rows = []
    for window in args.windows:
        for (transport, start), cell in cells.items():
            seats = cell.caught.get(window, [])
            share = sum(seats) / len(seats) if seats else float("nan")
            catch_rows.append(
                [
                    f"{window:g}",
                    start,
                    transport,
                    f"{sum(seats)}/{len(seats)}",
                    "-" if share != share else f"{share:.1%}",
                ]
            )
    print_table(
        catch_rows,
        ("window ms", "start", "transport", "seats caught", "catch rate"),
        "Unsafe service (check, await sleep(window), book): seats with more than one winner",
    )
    for (transport, start), cell in cells.items():
        if cell.connections:
            print(
                f"note: {start} over {transport} opened {max(cell.connections)} connection(s) per race "
                "(two sets, waves alternate between them); last-byte opens two per client"
            )
    print(
        "nginx rows (single-packet through a reverse proxy, issue 15) are skipped: "
        "not measured by this script yet"
    )


def _verdict(cells: dict[tuple[str, str], Cell], args: argparse.Namespace) -> int:
    problems = [p for cell in cells.values() for p in cell.problems]
    if args.smoke:
        for problem in problems:
            print(f"note: {problem}")
        print(SMOKE_VERDICT)
        return EXIT_OK
    met = True
    for transport in args.transports:
        cell = cells[(transport, "single-packet")]
        seats = cell.caught.get(TARGET_WINDOW_MS)
        if seats is None:
            print(f"target: the {TARGET_WINDOW_MS:g} ms window was not part of the run (--windows)")
            return EXIT_INCOMPLETE
        share = sum(seats) / len(seats)
        gate = Summary.of(cell.gate_ns).median
        catch_ok, gate_ok = share >= TARGET_SHARE, gate < TARGET_GATE_NS
        met = met and catch_ok and gate_ok
        print(
            f"target ({transport}): single-packet catches the 10 µs window on {share:.1%} of seats "
            f"(>= {TARGET_SHARE:.0%}): {'MET' if catch_ok else 'NOT MET'}; median gate write "
            f"{_us(gate)} µs (< 100 µs): {'MET' if gate_ok else 'NOT MET'}"
        )
    for problem in problems:
        print(f"problem: {problem}")
    return EXIT_OK if met and not problems else EXIT_BELOW_TARGET


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    apply_smoke(
        args,
        runs=1,
        warmup=0,
        clients=10,
        resources=2,
        transports=list(TRANSPORTS),
        race_limit_s=30.0,
        budget_s=90.0,
    )
    if args.warmup < 0:
        stderr("--warmup must be >= 0")
        return EXIT_INCOMPLETE
    budget = Budget(args.budget_s)
    print_header(
        f"single-packet vs last-byte: {args.clients} clients x {args.resources} seats on the hypercorn "
        f"sample service ({', '.join(args.transports)}), {args.runs} run(s) of every start, "
        f"{args.warmup} warm-up run(s) uncounted, windows {', '.join(f'{w:g}' for w in args.windows)} ms"
        + (" (--smoke)" if args.smoke else "")
    )
    try:
        with ExitStack() as stack:
            services: dict[tuple[str, float | None], ServiceHandle] = {}
            for transport in args.transports:
                tls = transport == "tls"
                common = {"server": "hypercorn", "tls": tls, "seats": args.resources}
                services[(transport, None)] = stack.enter_context(
                    start_sample_service(strategy="safe", **common)
                )
                for window in args.windows:
                    services[(transport, window)] = stack.enter_context(
                        start_sample_service(strategy="unsafe", window_ms=window, **common)
                    )
            cells = measure(services, args, budget)
    except (BudgetExceededError, TimeoutError, ServiceError, OSError) as exc:
        stderr(f"incomplete: {type(exc).__name__}: {exc}")
        return EXIT_INCOMPLETE
    _report(cells, args)
    print(f"total wall time {budget.elapsed():.1f}s")
    return _verdict(cells, args)


if __name__ == "__main__":
    sys.exit(main())
