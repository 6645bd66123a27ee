"""Single-packet (HTTP/2) against last-byte (HTTP/1.1, both hold points) on the hypercorn sample
service, and every start through nginx: the gate write, the spread it gives, the catch rate.

docs/benchmarks.md, section "single_packet", says what it measures and its targets, and records the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import os
import ssl
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import anyio

from benchmarks import cli
from benchmarks.figures import (
    client_spreads,
    ms,
    server_errors,
    server_spreads,
    winners_per_resource,
)
from benchmarks.judge import CAUGHT_SHARE
from benchmarks.machine import cores
from benchmarks.seed import SINGLE_PACKET_START, Start, order_spec, seed_config
from benchmarks.seed import STARTS as HTTP1_STARTS
from benchmarks.services import (
    ProxyHandle,
    ProxyStartError,
    ServiceError,
    ServiceHandle,
    nginx,
    nginx_binary,
    service,
)
from pytest_seatrace.engine.instrument import (
    GateWrite,
    Percentiles,
    RaceResult,
    fire_observed,
    ssl_context_for,
)

_STARTS = {
    start.label: start
    for start in (SINGLE_PACKET_START, HTTP1_STARTS["last-byte/headers"], HTTP1_STARTS["last-byte/body"])
}
STARTS = tuple(_STARTS)
TRANSPORTS = ("h2c", "tls")
PLACEMENTS = ("pinned", "unpinned")
TARGET_WINDOW_MS = 0.01
TARGET_GATE_NS = 100_000
NS_PER_US = 1000


def _parser() -> argparse.ArgumentParser:
    made = cli.parser("single_packet", limit_s=120.0, budget_s=1800.0)
    cli.add_seed_race(made, counted=("--runs", "counted runs of every start"))
    cli.add_options(
        made,
        ("--windows", cli.float_list, [0.01, 0.1], "unsafe check-to-act windows in ms, comma-separated"),
        ("--transports", cli.subset(TRANSPORTS), list(TRANSPORTS), "h2c, tls or both"),
    )
    made.add_argument(
        "--proxy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also race through nginx in front of the uvicorn sample service (default: on)",
    )
    cli.add_options(
        made,
        (
            "--placements",
            cli.subset(PLACEMENTS),
            list(PLACEMENTS),
            "proxy rows: pinned (app on its own core), unpinned, or both",
        ),
    )
    made.add_argument(
        "--buffering",
        type=lambda text: [v == "on" for v in cli.subset(("off", "on"))(text)],
        default=[False, True],
        help="proxy rows: nginx proxy_request_buffering off, on, or both (default: both)",
    )
    cli.add_options(
        made,
        (
            "--proxy-window-ms",
            cli.positive_float,
            TARGET_WINDOW_MS,
            "proxy rows: the unsafe check-to-act window in ms",
        ),
    )
    return made


# -- one race, with the gate observed ----------------------------------------------------------


@dataclass
class Raced:
    result: RaceResult
    gates: list[GateWrite]
    connections: int | None = None


class Endpoint(Protocol):
    """What a race is aimed at: the sample service itself, or the nginx front before it."""

    @property
    def url(self) -> str: ...
    @property
    def ca_path(self) -> Path | None: ...

    def ssl_context(self) -> ssl.SSLContext | None: ...


def race(start: str, service: Endpoint, args: argparse.Namespace, seed: int) -> Raced:
    """One race of ``start`` against ``service``, firers built directly (as the runner builds them)."""
    return race_start(_STARTS[start], service, args, seed)


def race_start(
    start: Start,
    service: Endpoint,
    args: argparse.Namespace,
    seed: int,
    *,
    clients: int | None = None,
    quic_port: int | None = None,
) -> Raced:
    """One race of ``start`` (``args.clients`` per seat unless ``clients``) against ``service``;
    single-datagram's QUIC goes to ``quic_port``."""
    config = seed_config(
        resources=args.resources,
        clients=clients or args.clients,
        sync="last-byte",
        hold=start.hold,
        seed=seed,
        timeout=args.timeout,
    )
    config = dataclasses.replace(config, hold_given=True)  # as the marker resolves an explicit hold
    quic = start.sync == "single-datagram"
    if quic and quic_port is None:
        raise ValueError("a single-datagram race needs the service's quic_port")

    async def main() -> Raced:
        with anyio.fail_after(args.race_limit_s):
            observed = await fire_observed(
                config,
                order_spec(),
                service.url,
                waves=[range(i, i + 1) for i in range(args.resources)],
                ssl_context=service.ssl_context(),  # no ALPN: HTTP/1.1 for last-byte
                h2_context=_offering_h2(service),
                single_packet=start.sync == "single-packet",
                quic_port=quic_port if quic else None,
                tls_verify=service.ca_path or True,
            )
        result = RaceResult.from_run(start.label, config, observed.run)
        return Raced(result, observed.gates, observed.connections)

    try:
        return anyio.run(main)
    except TimeoutError:
        raise TimeoutError(f"{start.label} race did not finish within {args.race_limit_s:g}s") from None


def _offering_h2(service: Endpoint) -> ssl.SSLContext | None:
    """What the runner passes for single-packet: the same trust, ALPN offering h2 first."""
    return None if service.ca_path is None else ssl_context_for("single-packet", service.ca_path)


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

    def take_gates(self, gates: Sequence[GateWrite]) -> None:
        for gate in gates:
            self.gate_ns.append(gate.ns)
            self.bytes.append(gate.bytes)
            self.sends.append(gate.sends)
            if gate.segments is None:
                self.unmeasured_segments += 1
            else:
                self.segments.append(gate.segments)


def check_safe(label: str, result: RaceResult, resources: int, clients: int) -> list[str]:
    found = []
    if result.errors or server_errors(result):
        found.append(f"{label}: {result.errors} errors {dict(result.error_reasons)}")
    if winners_per_resource(result) != [1] * resources:
        found.append(f"{label}: winners per seat {winners_per_resource(result)}, expected one each")
    if result.requests != resources * clients:
        found.append(f"{label}: {result.requests} requests, expected {resources * clients}")
    return found


def measure(
    services: dict[tuple[str, float | None], ServiceHandle], args: argparse.Namespace, budget: cli.Budget
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
                        raise cli.BudgetExceededError(
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
                        cell.problems += check_safe(
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
        gate = Percentiles.of(cell.gate_ns)
        client = Percentiles.of(cell.client)
        server = Percentiles.of(cell.server)
        segments = f"{statistics.median(cell.segments):g}" if cell.segments else "n/a"
        rows.append(
            [
                start,
                transport,
                str(len(cell.walls)),
                f"{statistics.median(cell.walls):.2f}" if cell.walls else "-",
                _us(gate.med),
                _us(gate.max),
                f"{statistics.median(cell.bytes):g}" if cell.bytes else "-",
                f"{statistics.median(cell.sends):g}" if cell.sends else "-",
                segments,
                ms(client.med),
                ms(client.p95),
                ms(server.med),
                ms(server.p95),
            ]
        )
    cli.print_table(
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
    cli.print_table(
        catch_rows,
        ("window ms", "start", "transport", "seats caught", "catch rate"),
        "Unsafe service (check, await sleep(window), book): seats with more than one winner",
    )
    for (transport, start), cell in cells.items():
        if cell.connections:
            print(
                f"note: {start} over {transport} opened {max(cell.connections)} connection(s) per race "
                "(kept by every wave in turn); last-byte opens one per client"
            )


def _verdict(cells: dict[tuple[str, str], Cell], args: argparse.Namespace) -> int:
    problems = [p for cell in cells.values() for p in cell.problems]
    if args.smoke:
        for problem in problems:
            print(f"note: {problem}")
        print(cli.SMOKE_VERDICT)
        return cli.EXIT_OK
    met = True
    for transport in args.transports:
        cell = cells[(transport, "single-packet")]
        seats = cell.caught.get(TARGET_WINDOW_MS)
        if seats is None:
            print(f"target: the {TARGET_WINDOW_MS:g} ms window was not part of the run (--windows)")
            return cli.EXIT_INCOMPLETE
        share = sum(seats) / len(seats)
        gate = Percentiles.of(cell.gate_ns).med
        catch_ok, gate_ok = share >= CAUGHT_SHARE, gate < TARGET_GATE_NS
        met = met and catch_ok and gate_ok
        print(
            f"target ({transport}): single-packet catches the 10 µs window on {share:.1%} of seats "
            f"(>= {CAUGHT_SHARE:.0%}): {'MET' if catch_ok else 'NOT MET'}; median gate write "
            f"{_us(gate)} µs (< 100 µs): {'MET' if gate_ok else 'NOT MET'}"
        )
    for problem in problems:
        print(f"problem: {problem}")
    return cli.EXIT_OK if met and not problems else cli.EXIT_BELOW_TARGET


# -- through a reverse proxy: nginx (HTTP/2 TLS) in front of the uvicorn sample service ---------


@dataclass(frozen=True)
class Placement:
    """Which cores the client, nginx and the app may run on for a block of rows."""

    name: str
    client: frozenset[int]
    proxy: frozenset[int]
    app: frozenset[int]

    def describe(self) -> str:
        if self.client == self.proxy == self.app:
            return f"unpinned: client, nginx and app free on cores {_cpus(self.app)}"
        return (
            f"pinned: app on core {_cpus(self.app)}, client on {_cpus(self.client)}, "
            f"nginx on {_cpus(self.proxy)}"
        )


def _cpus(cpus: frozenset[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def placements(names: Sequence[str]) -> tuple[list[Placement], list[str]]:
    """The placements the box allows, and a note for each it does not."""
    if not hasattr(os, "sched_setaffinity"):
        return [], [f"{name}: no sched_setaffinity on {sys.platform}, proxy rows skipped" for name in names]
    allowed = frozenset(os.sched_getaffinity(0))
    out, notes = [], []
    for name in names:
        if name == "unpinned":
            out.append(Placement(name, allowed, allowed, allowed))
        elif len(allowed) < 2:
            notes.append(f"pinned: needs 2 cores, this process may use {len(allowed)}; rows skipped")
        else:
            first, second = sorted(allowed)[:2]
            out.append(Placement(name, frozenset({first}), frozenset({first}), frozenset({second})))
    return out, notes


def pin(pid: int, cpus: frozenset[int]) -> None:
    """Every thread of ``pid`` (Linux affinity is per thread; new threads inherit their creator's)."""
    tasks = Path(f"/proc/{pid}/task")
    tids = [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [pid]
    for tid in tids:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(tid, cpus)


def place(placement: Placement, apps: Sequence[ServiceHandle], proxies: Sequence[ProxyHandle]) -> None:
    pin(os.getpid(), placement.client)
    for app in apps:
        pin(app.pid, placement.app)
    for front in proxies:
        for pid in (front.pid, *front.worker_pids()):
            pin(pid, placement.proxy)


ProxyKey = tuple[str, bool, str]
"""(placement, request buffering, start)."""


def measure_proxy(
    fronts: dict[tuple[bool, float | None], tuple[ServiceHandle, ProxyHandle]],
    chosen: Sequence[Placement],
    args: argparse.Namespace,
    budget: cli.Budget,
) -> dict[ProxyKey, Cell]:
    """Every start through nginx, buffering on and off, in every placement; the safe service for
    spreads, the unsafe one (``--proxy-window-ms``) for the catch rate."""
    cells = {(p.name, b, s): Cell() for p in chosen for b in args.buffering for s in STARTS}
    apps = [app for app, _ in fronts.values()]
    proxies = [front for _, front in fronts.values()]
    seed = args.seed + 100_000
    try:
        for run in range(-args.warmup, args.runs):
            for placement in chosen:
                place(placement, apps, proxies)
                rotated = STARTS[run % len(STARTS) :] + STARTS[: run % len(STARTS)]
                for buffering, start, window in itertools.product(
                    args.buffering, rotated, (None, args.proxy_window_ms)
                ):
                    if budget.expired():
                        raise cli.BudgetExceededError(
                            f"time budget of {args.budget_s:g}s ran out in proxy run {run + 1}"
                        )
                    app, front = fronts[(buffering, window)]
                    app.reset()
                    seed += 1
                    raced = race(start, front, args, seed)
                    if run >= 0:
                        label = f"nginx {placement.name} buffering {'on' if buffering else 'off'} {start}"
                        _take(
                            cells[(placement.name, buffering, start)],
                            raced,
                            window,
                            f"{label} run {run + 1}",
                            args,
                        )
    finally:
        everywhere = frozenset().union(*(p.client | p.proxy | p.app for p in chosen))
        place(Placement("reset", everywhere, everywhere, everywhere), apps, proxies)
    return cells


def _take(cell: Cell, raced: Raced, window: float | None, label: str, args: argparse.Namespace) -> None:
    """One counted proxy race into its cell: spreads from the safe service, catches from the unsafe."""
    result = raced.result
    if window is None:
        cell.walls.append(result.duration)
        cell.take_gates(raced.gates)
        cell.client.extend(client_spreads(result))
        cell.server.extend(server_spreads(result))
        cell.problems += check_safe(label, result, args.resources, args.clients)
        return
    if result.errors:
        cell.problems.append(f"{label} (unsafe): {result.errors} errors {dict(result.error_reasons)}")
    cell.caught.setdefault(window, []).extend(w > 1 for w in winners_per_resource(result))


def _report_proxy(
    cells: dict[ProxyKey, Cell], chosen: Sequence[Placement], args: argparse.Namespace, version: str
) -> None:
    rows = []
    for (placement, buffering, start), cell in cells.items():
        client, server = Percentiles.of(cell.client), Percentiles.of(cell.server)
        seats = cell.caught.get(args.proxy_window_ms, [])
        rows.append(
            [
                start,
                placement,
                "on" if buffering else "off",
                str(len(cell.walls)),
                ms(client.med),
                ms(client.p95),
                ms(server.med),
                ms(server.p95),
                _us(Percentiles.of(cell.gate_ns).med),
                f"{sum(seats)}/{len(seats)}",
                f"{sum(seats) / len(seats):.1%}" if seats else "-",
            ]
        )
    cli.print_table(
        rows,
        (
            "start",
            "placement",
            "request buffering",
            "runs",
            "client spread med ms",
            "client spread p95 ms",
            "app spread med ms",
            "app spread p95 ms",
            "gate write med µs",
            f"seats caught {args.proxy_window_ms:g} ms",
            "catch rate",
        ),
        f"Through nginx {version} (HTTP/2 TLS front, HTTP/1.1 keep-alive upstream pool) in front of the "
        f"uvicorn sample service, {args.clients} clients x {args.resources} seats, pooled over "
        f"{args.runs} run(s); app spread: first to last X-Arrival-Ns at the app, per seat",
    )
    for chosen_one in chosen:
        print(f"placement {chosen_one.describe()}")
    print(
        f"client, proxy and app share this machine's {cores()} cores "
        "(the app and nginx in their own processes)"
    )


@contextlib.contextmanager
def proxy_fronts(
    args: argparse.Namespace,
) -> Iterator[dict[tuple[bool, float | None], tuple[ServiceHandle, ProxyHandle]]]:
    """A safe and an unsafe uvicorn sample service, each behind nginx with buffering on and off."""
    with ExitStack() as stack:
        fronts = {}
        for window in (None, args.proxy_window_ms):
            strategy = "safe" if window is None else "unsafe"
            app = stack.enter_context(service(strategy, window_ms=window or 5.0, seats=args.resources))
            for buffering in args.buffering:
                front = stack.enter_context(
                    nginx(app, request_buffering=buffering, keepalive=max(256, 2 * args.clients))
                )
                fronts[(buffering, window)] = (app, front)
        yield fronts


def _proxy_rows(args: argparse.Namespace, budget: cli.Budget) -> dict[ProxyKey, Cell]:
    """The nginx rows, printed; empty (with the reason said) when they cannot run here."""
    if not args.proxy:
        print("nginx rows: skipped (--no-proxy)")
        return {}
    found = nginx_binary()
    if found is None:
        print("nginx rows: skipped, nginx is not installed (apt-get install nginx)")
        return {}
    chosen, notes = placements(args.placements)
    for note in notes:
        print(f"nginx rows: {note}")
    if not chosen:
        return {}
    with proxy_fronts(args) as fronts:
        cells = measure_proxy(fronts, chosen, args, budget)
    _report_proxy(cells, chosen, args, found[1])
    return cells


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cli.apply_smoke(
        args,
        runs=1,
        warmup=0,
        clients=10,
        resources=2,
        transports=list(TRANSPORTS),
        race_limit_s=30.0,
        budget_s=90.0,
    )
    budget = cli.begin(
        args,
        f"single-packet vs last-byte: {args.clients} clients x {args.resources} seats on the hypercorn "
        f"sample service ({', '.join(args.transports)}), {args.runs} run(s) of every start, "
        f"{args.warmup} warm-up run(s) uncounted, windows {', '.join(f'{w:g}' for w in args.windows)} ms",
    )
    try:
        with ExitStack() as stack:
            services: dict[tuple[str, float | None], ServiceHandle] = {}
            for transport in args.transports:
                tls = transport == "tls"
                common = {"server": "hypercorn", "tls": tls, "seats": args.resources}
                services[(transport, None)] = stack.enter_context(service("safe", **common))
                for window in args.windows:
                    services[(transport, window)] = stack.enter_context(
                        service("unsafe", window_ms=window, **common)
                    )
            cells = measure(services, args, budget)
        _report(cells, args)
        proxy_cells = _proxy_rows(args, budget)
    except (cli.BudgetExceededError, TimeoutError, ServiceError, ProxyStartError, OSError) as exc:
        return cli.incomplete(exc)
    cells.update({(f"nginx {k[0]} buffering {k[1]}", k[2]): cell for k, cell in proxy_cells.items()})
    print(f"total wall time {budget.elapsed():.1f}s")
    return _verdict(cells, args)


if __name__ == "__main__":
    sys.exit(main())
