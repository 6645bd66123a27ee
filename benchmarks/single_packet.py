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

**Through a reverse proxy** (``--proxy``, on by default; skipped with a note when nginx is not
installed): Debian's nginx started as its own process (``tests/nginx.py``) as an HTTP/2 TLS
front with a keep-alive HTTP/1.1 upstream pool, in front of the uvicorn sample service — what most
staging looks like. Every start races through it with ``proxy_request_buffering`` off and on, in
each placement: **pinned** (the app on the second core, the client and nginx on the first) and
**unpinned** (all three free on both). Rows give the client spread, the app-side spread per seat
(``X-Arrival-Ns`` at the app, behind nginx) and the catch rate of the ``--proxy-window-ms``
window (10 µs). No target: they say what a proxy does to each start.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import ssl
import statistics
import sys
import time
from collections.abc import Callable, Iterator, MutableSequence, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio
from _common import (
    EXIT_BELOW_TARGET,
    EXIT_INCOMPLETE,
    EXIT_OK,
    SINGLE_PACKET_START,
    SMOKE_VERDICT,
    Budget,
    BudgetExceededError,
    Summary,
    add_limits,
    add_smoke,
    apply_smoke,
    client_spreads,
    cores,
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
from _common import (
    STARTS as HTTP1_STARTS,
)

from pytest_seatrace import RaceResult
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
from pytest_seatrace.service import ServiceError, ServiceHandle, start_sample_service

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests/nginx.py (python benchmarks/x.py)
from tests.nginx import ProxyHandle, ProxyStartError, find_nginx, nginx_version, start_nginx_proxy

_STARTS = {
    start.label: start
    for start in (SINGLE_PACKET_START, HTTP1_STARTS["last-byte/headers"], HTTP1_STARTS["last-byte/body"])
}
STARTS = tuple(_STARTS)
TRANSPORTS = ("h2c", "tls")
PLACEMENTS = ("pinned", "unpinned")
TARGET_WINDOW_MS = 0.01
TARGET_SHARE = 0.99
TARGET_GATE_NS = 100_000
NS_PER_US = 1000


def _subset(text: str, allowed: Sequence[str]) -> list[str]:
    values = [part.strip() for part in text.split(",") if part.strip()]
    wrong = [v for v in values if v not in allowed]
    if wrong or not values:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(allowed)}")
    return values


def _transports(text: str) -> list[str]:
    return _subset(text, TRANSPORTS)


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
    parser.add_argument(
        "--proxy",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also race through nginx in front of the uvicorn sample service (default: on)",
    )
    parser.add_argument(
        "--placements",
        type=lambda text: _subset(text, PLACEMENTS),
        default=list(PLACEMENTS),
        help="proxy rows: pinned (app on its own core), unpinned, or both (default: both)",
    )
    parser.add_argument(
        "--buffering",
        type=lambda text: [v == "on" for v in _subset(text, ("off", "on"))],
        default=[False, True],
        help="proxy rows: nginx proxy_request_buffering off, on, or both (default: both)",
    )
    parser.add_argument(
        "--proxy-window-ms",
        type=positive_float,
        default=TARGET_WINDOW_MS,
        help="proxy rows: the unsafe check-to-act window in ms (default: 0.01)",
    )
    add_limits(parser, limit="race", limit_s=120.0, budget_s=1800.0)
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


class Endpoint(Protocol):
    """What a race is aimed at: the sample service itself, or the nginx front before it."""

    @property
    def url(self) -> str: ...

    def ssl_context(self) -> ssl.SSLContext | None: ...


def race(start: str, service: Endpoint, args: argparse.Namespace, seed: int) -> Raced:
    """One race of ``start`` against ``service``, firers built directly (as the runner will)."""
    hold: HoldPoint = _STARTS[start].hold
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
        if _STARTS[start].sync == "single-packet":
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


def _offering_h2(service: Endpoint) -> ssl.SSLContext | None:
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
                "(kept by every wave in turn); last-byte opens one per client"
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


def _pin(pid: int, cpus: frozenset[int]) -> None:
    """Every thread of ``pid`` (Linux affinity is per thread; new threads inherit their creator's)."""
    tasks = Path(f"/proc/{pid}/task")
    tids = [int(t.name) for t in tasks.iterdir()] if tasks.is_dir() else [pid]
    for tid in tids:
        with contextlib.suppress(ProcessLookupError):
            os.sched_setaffinity(tid, cpus)


def place(placement: Placement, apps: Sequence[ServiceHandle], proxies: Sequence[ProxyHandle]) -> None:
    _pin(os.getpid(), placement.client)
    for app in apps:
        _pin(app.pid, placement.app)
    for front in proxies:
        for pid in (front.pid, *front.worker_pids()):
            _pin(pid, placement.proxy)


ProxyKey = tuple[str, bool, str]
"""(placement, request buffering, start)."""


def measure_proxy(
    fronts: dict[tuple[bool, float | None], tuple[ServiceHandle, ProxyHandle]],
    chosen: Sequence[Placement],
    args: argparse.Namespace,
    budget: Budget,
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
                        raise BudgetExceededError(
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
        cell.problems += _check_safe(label, result, args.resources, args.clients)
        return
    if result.errors:
        cell.problems.append(f"{label} (unsafe): {result.errors} errors {dict(result.error_reasons)}")
    cell.caught.setdefault(window, []).extend(w > 1 for w in winners_per_resource(result))


def _report_proxy(
    cells: dict[ProxyKey, Cell], chosen: Sequence[Placement], args: argparse.Namespace, version: str
) -> None:
    rows = []
    for (placement, buffering, start), cell in cells.items():
        client, server = Summary.of(cell.client), Summary.of(cell.server)
        seats = cell.caught.get(args.proxy_window_ms, [])
        rows.append(
            [
                start,
                placement,
                "on" if buffering else "off",
                str(len(cell.walls)),
                ms(client.median),
                ms(client.p95),
                ms(server.median),
                ms(server.p95),
                _us(Summary.of(cell.gate_ns).median),
                f"{sum(seats)}/{len(seats)}",
                f"{sum(seats) / len(seats):.1%}" if seats else "-",
            ]
        )
    print_table(
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
            app = stack.enter_context(
                start_sample_service(strategy=strategy, window_ms=window or 5.0, seats=args.resources)
            )
            for buffering in args.buffering:
                front = stack.enter_context(
                    start_nginx_proxy(
                        app.port, request_buffering=buffering, keepalive=max(256, 2 * args.clients)
                    )
                )
                fronts[(buffering, window)] = (app, front)
        yield fronts


def _proxy_rows(args: argparse.Namespace, budget: Budget) -> dict[ProxyKey, Cell]:
    """The nginx rows, printed; empty (with the reason said) when they cannot run here."""
    if not args.proxy:
        print("nginx rows: skipped (--no-proxy)")
        return {}
    binary = find_nginx()
    if binary is None:
        print("nginx rows: skipped, nginx is not installed (apt-get install nginx)")
        return {}
    chosen, notes = placements(args.placements)
    for note in notes:
        print(f"nginx rows: {note}")
    if not chosen:
        return {}
    with proxy_fronts(args) as fronts:
        cells = measure_proxy(fronts, chosen, args, budget)
    version = ".".join(str(part) for part in nginx_version(binary))
    _report_proxy(cells, chosen, args, version)
    return cells


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
        _report(cells, args)
        proxy_cells = _proxy_rows(args, budget)
    except (BudgetExceededError, TimeoutError, ServiceError, ProxyStartError, OSError) as exc:
        stderr(f"incomplete: {type(exc).__name__}: {exc}")
        return EXIT_INCOMPLETE
    cells.update({(f"nginx {k[0]} buffering {k[1]}", k[2]): cell for k, cell in proxy_cells.items()})
    print(f"total wall time {budget.elapsed():.1f}s")
    return _verdict(cells, args)


if __name__ == "__main__":
    sys.exit(main())
