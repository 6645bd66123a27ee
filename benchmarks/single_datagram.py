"""Single-datagram (HTTP/3) against single-packet (HTTP/2) and last-byte (HTTP/1.1, both hold
points) on one hypercorn sample service that speaks all three, on loopback and across a jittery
path: the gate write, datagrams and bytes per release, the spreads it gives, the catch rate.

docs/benchmarks.md, section "single_datagram", says what it measures and its targets, and records
the figures.
"""

from __future__ import annotations

import argparse
import os
import ssl
import statistics
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import cli
from benchmarks.figures import client_spreads, ms, server_spreads, winners_per_resource
from benchmarks.jitter import JITTER_MS, jittery_path
from benchmarks.judge import CAUGHT_SHARE, Check, exit_status
from benchmarks.machine import cores, load_note
from benchmarks.seed import SINGLE_PACKET_START, Start
from benchmarks.seed import STARTS as HTTP1_STARTS
from benchmarks.services import STARTUP_ERRORS, ServiceHandle, http3
from benchmarks.single_packet import NS_PER_US, Cell, Raced, check_safe, pin, placements, race_start
from pytest_seatrace.engine.instrument import Percentiles

SINGLE_DATAGRAM_START = Start("single-datagram", "single-datagram", "body")
"""Held at the tail of the DATA frame: the start the targets are about."""
SINGLE_DATAGRAM_HEADERS = Start("single-datagram/headers", "single-datagram", "headers")
"""Held at the tail of HEADERS (the start's default): the seed race's POST body goes at the
release too (~38 bytes a stream: 100 clients in 4 datagrams). Reported, not a target."""
_STARTS = {
    start.label: start
    for start in (
        SINGLE_DATAGRAM_START,
        SINGLE_DATAGRAM_HEADERS,
        SINGLE_PACKET_START,
        HTTP1_STARTS["last-byte/headers"],
        HTTP1_STARTS["last-byte/body"],
    )
}
STARTS = tuple(_STARTS)
PATHS = ("loopback", "jittery")
TARGET_WINDOW_MS = 0.01
TARGET_GATE_NS = 100_000
TARGET_DATAGRAM_BYTES = 1200
TARGET_CLIENTS = 100
TARGET_WIDE_CLIENTS = 200
TARGET_WIDE_DATAGRAMS = 2


def make_parser() -> argparse.ArgumentParser:
    made = cli.parser("single_datagram", limit_s=120.0, budget_s=1800.0)
    cli.add_seed_race(made, counted=("--runs", "counted runs of every start on every path"))
    cli.add_options(
        made,
        ("--paths", cli.subset(PATHS), list(PATHS), "loopback, jittery or both"),
        (
            "--wide-clients",
            cli.positive_int,
            TARGET_WIDE_CLIENTS,
            "clients per seat of the extra single-datagram race on loopback (more than a datagram holds)",
        ),
    )
    made.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="this process on the first core, the services and relays on the second, so that a "
        "woken service cannot preempt the client mid-release (default: off, all free on every core)",
    )
    return made


@dataclass(frozen=True)
class Target:
    """Where one path's races go: the service itself, or the jittery relays before it."""

    service: ServiceHandle
    url: str
    quic_port: int

    @property
    def ca_path(self) -> Path | None:
        return self.service.ca_path

    def ssl_context(self) -> ssl.SSLContext | None:
        return self.service.ssl_context()


@dataclass
class DatagramCell(Cell):
    """A start on a path, pooled over runs; for single-datagram also each release's datagrams and
    build time (the datagrams made before the gate, apart from the gate write)."""

    datagrams: list[int] = field(default_factory=list)
    build_ns: list[int] = field(default_factory=list)

    def take(self, raced: Raced, label: str, resources: int, clients: int) -> None:
        result = raced.result
        self.walls.append(result.duration)
        self.take_gates(raced.gates)
        self.datagrams += [gate.datagrams for gate in raced.gates if gate.datagrams is not None]
        self.build_ns += [release.build_ns for release in result.releases]
        self.client.extend(client_spreads(result))
        self.server.extend(server_spreads(result))
        if raced.connections is not None:
            self.connections.append(raced.connections)
        self.problems += check_safe(label, result, resources, clients)

    def take_unsafe(self, raced: Raced, label: str) -> None:
        result = raced.result
        if result.errors:
            self.problems.append(f"{label} (unsafe): {result.errors} errors {dict(result.error_reasons)}")
        self.caught.setdefault(TARGET_WINDOW_MS, []).extend(w > 1 for w in winners_per_resource(result))

    def caught_share(self) -> float:
        seats = self.caught.get(TARGET_WINDOW_MS, [])
        return sum(seats) / len(seats) if seats else float("nan")


def targets(args: argparse.Namespace, stack: ExitStack) -> dict[tuple[str, bool], Target]:
    """Per path, the safe (False) and unsafe (True) service: hypercorn with h2 over TLS and HTTP/3,
    started (and the relays before them) until ``stack`` closes; with ``--pin``, placed."""
    out: dict[tuple[str, bool], Target] = {}
    helpers: list[int] = []
    for unsafe in (False, True):
        strategy = "unsafe" if unsafe else "safe"
        h3 = stack.enter_context(http3(strategy, seats=args.resources, window_ms=TARGET_WINDOW_MS))
        helpers.append(h3.tcp.pid)
        if "loopback" in args.paths:
            out[("loopback", unsafe)] = Target(h3.tcp, h3.tcp.url, h3.udp_port)
        if "jittery" in args.paths:
            path = stack.enter_context(jittery_path(h3.tcp.port, h3.udp_port, seed=args.seed + unsafe))
            helpers.append(path.pid)
            out[("jittery", unsafe)] = Target(h3.tcp, f"https://127.0.0.1:{path.tcp_port}", path.udp_port)
    print(_pinned(helpers) if args.pin else "unpinned: client, services and relays free on every core")
    return out


def _pinned(helpers: Sequence[int]) -> str:
    """This process on the first allowed core, ``helpers`` on the second; what was done."""
    chosen, notes = placements(["pinned"])
    if not chosen:
        return f"--pin: {'; '.join(notes)}; nothing pinned"
    placement = chosen[0]
    pin(os.getpid(), placement.client)
    for pid in helpers:
        pin(pid, placement.app)
    return f"--pin: client on core {min(placement.client)}, services and relays on core {min(placement.app)}"


def measure(
    places: dict[tuple[str, bool], Target], args: argparse.Namespace, budget: cli.Budget
) -> tuple[dict[tuple[str, str], DatagramCell], DatagramCell]:
    """Every start on every path, safe and unsafe, each start first in turn; and on loopback the
    wide single-datagram race."""
    cells = {(p, s): DatagramCell() for p in args.paths for s in STARTS}
    wide = DatagramCell()
    seed = args.seed
    for run in range(-args.warmup, args.runs):
        rotated = STARTS[run % len(STARTS) :] + STARTS[: run % len(STARTS)]
        for path in args.paths:
            for start in rotated:
                for unsafe in (False, True):
                    _check_budget(budget, args, run)
                    place = places[(path, unsafe)]
                    place.service.reset()
                    seed += 1
                    raced = race_start(_STARTS[start], place, args, seed, quic_port=place.quic_port)
                    if run < 0:
                        continue
                    label = f"{path} {start} run {run + 1}"
                    cell = cells[(path, start)]
                    if unsafe:
                        cell.take_unsafe(raced, label)
                    else:
                        cell.take(raced, label, args.resources, args.clients)
        if "loopback" in args.paths:
            _check_budget(budget, args, run)
            place = places[("loopback", False)]
            place.service.reset()
            seed += 1
            raced = race_start(
                SINGLE_DATAGRAM_START, place, args, seed, clients=args.wide_clients, quic_port=place.quic_port
            )
            if run >= 0:
                label = f"loopback single-datagram {args.wide_clients} clients run {run + 1}"
                wide.take(raced, label, args.resources, args.wide_clients)
    return cells, wide


def _check_budget(budget: cli.Budget, args: argparse.Namespace, run: int) -> None:
    if budget.expired():
        raise cli.BudgetExceededError(f"time budget of {args.budget_s:g}s ran out in run {run + 1}")


def _us(ns: float) -> str:
    return "-" if ns != ns else f"{ns / NS_PER_US:.1f}"


def _median(values: Sequence[float], fmt: str = "{:g}") -> str:
    return fmt.format(statistics.median(values)) if values else "-"


def _row(start: str, path: str, clients: int, cell: DatagramCell) -> list[str]:
    gate = Percentiles.of(cell.gate_ns)
    client, server = Percentiles.of(cell.client), Percentiles.of(cell.server)
    seats = cell.caught.get(TARGET_WINDOW_MS, [])
    share = cell.caught_share()
    return [
        start,
        path,
        str(clients),
        str(len(cell.walls)),
        _us(gate.med),
        _us(gate.p95),
        _us(Percentiles.of(cell.build_ns).med),
        f"{_median(cell.datagrams)} / {max(cell.datagrams)}" if cell.datagrams else "-",
        _median(cell.bytes),
        str(max(cell.connections)) if cell.connections else "-",
        ms(client.med),
        ms(client.p95),
        ms(server.med),
        ms(server.p95),
        f"{sum(seats)}/{len(seats)}" if seats else "-",
        "-" if share != share else f"{share:.1%}",
    ]


def _report(cells: dict[tuple[str, str], DatagramCell], wide: DatagramCell, args: argparse.Namespace) -> None:
    rows = [_row(start, path, args.clients, cell) for (path, start), cell in cells.items()]
    if wide.walls:
        rows.append(_row("single-datagram", "loopback", args.wide_clients, wide))
    cli.print_table(
        rows,
        (
            "start",
            "path",
            "clients",
            "runs",
            "gate write med µs",
            "gate write p95 µs",
            "build med µs",
            "datagrams med / max",
            "release bytes",
            "connections",
            "client spread med ms",
            "client spread p95 ms",
            "server spread med ms",
            "server spread p95 ms",
            f"seats caught {TARGET_WINDOW_MS:g} ms",
            "catch rate",
        ),
        f"Hypercorn sample service (h2 over TLS, HTTP/1.1 over TLS, HTTP/3), {args.resources} seats, "
        f"pooled over {args.runs} run(s); per seat: gate write (sendto calls for single-datagram, "
        "send calls otherwise), server spread first to last X-Arrival-Ns; caught: unsafe service "
        f"(check, await sleep({TARGET_WINDOW_MS:g} ms), book), seats with more than one winner",
    )
    low, high = JITTER_MS
    print(
        f"jittery path: TCP and UDP relays in a helper process delay each forwarded chunk or datagram "
        f"by its own random {low:g}-{high:g} ms, order kept per flow"
    )
    print(
        f"client, relays and service share this machine's {cores()} cores "
        "(service and relays in their own processes)"
    )


def target_checks(
    cells: dict[tuple[str, str], DatagramCell], wide: DatagramCell, args: argparse.Namespace
) -> list[Check]:
    """The targets, each on the single-datagram cells; the other starts are only reported."""
    ours = [cell for (_, start), cell in cells.items() if start == "single-datagram"]
    datagrams = [d for cell in ours for d in cell.datagrams]
    sizes = [b for cell in ours for b in cell.bytes]
    one = (
        None
        if args.clients != TARGET_CLIENTS or not datagrams
        else max(datagrams) == 1 and max(sizes) <= TARGET_DATAGRAM_BYTES
    )
    shown = f"max {max(datagrams)} datagram(s), {max(sizes)} bytes" if datagrams else "not run"
    checks = [Check(f"{TARGET_CLIENTS} clients: one datagram per release of <= 1,200 bytes ({shown})", one)]
    wide_ok = (
        None
        if args.wide_clients != TARGET_WIDE_CLIENTS or not wide.datagrams
        else max(wide.datagrams) <= TARGET_WIDE_DATAGRAMS
    )
    wide_shown = f"max {max(wide.datagrams)}" if wide.datagrams else "not run"
    checks.append(Check(f"{TARGET_WIDE_CLIENTS} clients: <= 2 datagrams per release ({wide_shown})", wide_ok))
    for path in args.paths:
        cell = cells[(path, "single-datagram")]
        gate = Percentiles.of(cell.gate_ns).med
        checks.append(
            Check(
                f"{path}: gate write median {_us(gate)} µs <= 100 µs",
                None if gate != gate else gate <= TARGET_GATE_NS,
            )
        )
        share = cell.caught_share()
        checks.append(
            Check(
                f"{path}: the 10 µs window caught on {share:.1%} of seats (>= {CAUGHT_SHARE:.0%})",
                None if share != share else share >= CAUGHT_SHARE,
            )
        )
    problems = [p for cell in (*cells.values(), wide) for p in cell.problems]
    checks += [Check(f"clean race: {problem}", False) for problem in problems]
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    cli.apply_smoke(
        args, runs=1, warmup=0, clients=10, resources=2, wide_clients=20, race_limit_s=30.0, budget_s=120.0
    )
    load_before = load_note()
    budget = cli.begin(
        args,
        f"single-datagram vs single-packet vs last-byte: {args.clients} clients x {args.resources} seats "
        f"on one hypercorn sample service ({', '.join(args.paths)}), {args.runs} run(s) of every start, "
        f"{args.warmup} warm-up run(s) uncounted, window {TARGET_WINDOW_MS:g} ms; "
        f"single-datagram also at {args.wide_clients} clients",
    )
    try:
        with ExitStack() as stack:
            cells, wide = measure(targets(args, stack), args, budget)
    except (cli.BudgetExceededError, TimeoutError, OSError, *STARTUP_ERRORS) as exc:
        return cli.incomplete(exc)
    _report(cells, wide, args)
    print(f"total wall time {budget.elapsed():.1f}s")
    cli.print_notes([], load_before)
    if args.smoke:
        for problem in (p for cell in (*cells.values(), wide) for p in cell.problems):
            print(f"note: {problem}")
        print(cli.SMOKE_VERDICT)
        return cli.EXIT_OK
    checks = target_checks(cells, wide, args)
    for check in checks:
        print(check.line())
    return exit_status(checks)


if __name__ == "__main__":
    sys.exit(main())
