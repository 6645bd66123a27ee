"""Start spread of the seed race: last-byte at both hold points and gate, against a bare send
loop and a tight-loop racer raced in the same run.

docs/benchmarks.md, section "start_spread", says what it measures and its targets, and records the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks import cli
from benchmarks.figures import NS_PER_MS, client_spreads, ms, server_errors, server_spreads
from benchmarks.judge import INTERLEAVED_NOISE, no_wider
from benchmarks.racer import SeatRace, race_seats
from benchmarks.seed import STARTS, run_one_race, seed_config, seed_held_bytes, start_config
from benchmarks.services import ServiceError, ServiceHandle, service
from pytest_seatrace.engine.instrument import (
    REJECT_DEFAULT,
    HoldPoint,
    Percentiles,
    RaceResult,
    RequestSpec,
    make_rule,
)

HOLDS: tuple[HoldPoint, ...] = ("headers", "body")
RACERS = {f"racer/{hold}": hold for hold in HOLDS}
"""The tight-loop racer's rows, one per hold point."""
MODES = (*STARTS, *RACERS)
FLOOR_NS = 1 * NS_PER_MS
BARE_FACTOR = 1.5
BARE_PREFIX = b"GET /"
"""Each bare socket holds this partial request line; every ``x`` sent later extends its path,
so the server keeps waiting for the rest and never answers (h11 buffers up to 16 KiB)."""
BARE_SETTLE_S = 0.05
BARE_PAUSE_S = 0.002
MAX_BARE_LOOPS = 1000


def _parser() -> argparse.ArgumentParser:
    made = cli.parser("start_spread", limit_s=120.0, budget_s=900.0)
    cli.add_seed_race(made, counted=("--reps", "counted races per mode"))
    cli.add_options(
        made,
        (
            "--bare-loops",
            cli.positive_int,
            20,
            "bare send loops per block; one block before the races and one after each",
        ),
    )
    return made


# -- the bare send loop --------------------------------------------------------------------


def _one_bare_loop(socks: Sequence[socket.socket], payload: bytes) -> int:
    """One ``send(payload)`` per socket; ns from the return of the first to the return of the last."""
    first, *rest = socks
    first.send(payload)
    start = time.perf_counter_ns()
    for sock in rest:
        sock.send(payload)
    return time.perf_counter_ns() - start


def bare_block(
    port: int, sockets: int, loops: int, timeout: float, payload: bytes = b"x"
) -> tuple[list[int], int]:
    """Open ``sockets`` idle connections, time ``loops`` bare loops over them, close them.

    Returns the loop times (ns) and how many sockets the server had answered or closed by
    the end (should be 0: an answered socket means the baseline was not idle).
    """
    socks: list[socket.socket] = []
    try:
        for _ in range(sockets):
            sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            socks.append(sock)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(BARE_PREFIX)
            sock.setblocking(False)
        time.sleep(BARE_SETTLE_S)  # the server reads the partial request lines, then idles
        samples = []
        for _ in range(loops):
            samples.append(_one_bare_loop(socks, payload))
            time.sleep(BARE_PAUSE_S)
        answered = 0
        for sock in socks:
            try:
                sock.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                continue
            except OSError:
                pass
            answered += 1
        return samples, answered
    finally:
        for sock in socks:
            sock.close()


# -- the races -----------------------------------------------------------------------------


@dataclass
class ModeStats:
    results: list[RaceResult | list[SeatRace]] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)
    client: list[int] = field(default_factory=list)
    server: list[int] = field(default_factory=list)


def _race_row(mode: str, rep: str, result: RaceResult, wall: float) -> list[Any]:
    client = Percentiles.of(client_spreads(result))
    server = Percentiles.of(server_spreads(result))
    return [
        mode,
        rep,
        f"{wall:.2f}",
        f"{result.duration:.2f}",
        f"{result.rps:.0f}",
        result.wins,
        result.status_counts.get(409, 0),
        server_errors(result),
        result.errors,
        ms(result.spread.median_ns),
        ms(client.p95),
        ms(result.spread.max_ns),
        ms(result.spread.server_median_ns),
        ms(server.p95),
        ms(result.spread.server_max_ns),
    ]


def _racer_row(mode: str, rep: str, seats: list[SeatRace], wall: float) -> list[Any]:
    client = Percentiles.of(_racer_client(seats))
    server = Percentiles.of(_racer_server(seats))
    statuses = sum((seat.statuses for seat in seats), Counter[int]())
    return [
        mode,
        rep,
        f"{wall:.2f}",
        "-",
        "-",
        statuses.get(201, 0),
        statuses.get(409, 0),
        sum(n for status, n in statuses.items() if status >= 500),
        sum(seat.errors for seat in seats),
        ms(client.med),
        ms(client.p95),
        ms(client.max),
        ms(server.med),
        ms(server.p95),
        ms(server.max),
    ]


def _racer_client(seats: list[SeatRace]) -> list[int]:
    return [s for s in (seat.client_spread_ns for seat in seats) if s is not None]


def _racer_server(seats: list[SeatRace]) -> list[int]:
    return [s for s in (seat.server_spread_ns for seat in seats) if s is not None]


def _racer_problems(mode: str, seats: list[SeatRace]) -> list[str]:
    wins = [seat.statuses.get(201, 0) for seat in seats]
    errors = sum(seat.errors for seat in seats)
    if errors or any(count != 1 for count in wins):
        return [f"{mode}: {errors} errors, wins per seat {wins}"]
    return []


RACE_HEADERS = (
    "mode",
    "rep",
    "wall s",
    "race s",
    "req/s",
    "wins",
    "409",
    "5xx",
    "errors",
    "client med ms",
    "client p95 ms",
    "client max ms",
    "server med ms",
    "server p95 ms",
    "server max ms",
)


def _problems(result: RaceResult, resources: int) -> list[str]:
    """What makes a race against the safe service unusable as a spread measurement."""
    found = []
    if result.violations:
        kinds = sorted({v.kind for v in result.violations})
        found.append(f"{result.name}: violations {', '.join(kinds)}")
    if result.errors or server_errors(result):
        found.append(f"{result.name}: {result.errors} errors, {server_errors(result)} 5xx")
    if result.wins != resources:
        found.append(f"{result.name}: {result.wins} wins for {resources} seats")
    history_median = statistics.median(client_spreads(result)) if result.history else float("nan")
    if history_median != result.spread.median_ns:
        found.append(
            f"{result.name}: Spread.median_ns {result.spread.median_ns} != history median {history_median}"
        )
    return found


def measure(svc: ServiceHandle, args: argparse.Namespace, budget: cli.Budget) -> int:
    stats = {mode: ModeStats() for mode in MODES}
    rows: list[list[Any]] = []
    bare: dict[HoldPoint, list[int]] = {hold: [] for hold in HOLDS}
    payloads = {hold: b"x" * seed_held_bytes(args.resources, args.clients, hold) for hold in HOLDS}
    answered = 0
    problems: list[str] = []
    seed = args.seed

    def block() -> None:
        nonlocal answered
        for hold in HOLDS:
            samples, late = bare_block(svc.port, args.clients, args.bare_loops, args.timeout, payloads[hold])
            bare[hold].extend(samples)
            answered += late

    def one(mode: str, rep: str) -> tuple[RaceResult | list[SeatRace], float]:
        nonlocal seed
        if budget.expired():
            raise cli.BudgetExceededError(
                f"time budget of {budget.seconds:g}s used up before race {mode} {rep}"
            )
        if mode in RACERS:
            started = time.perf_counter()
            seats = race_seats(svc.url, svc.port, args.resources, args.clients, RACERS[mode], args.timeout)
            took = time.perf_counter() - started
            svc.reset()
            rows.append(_racer_row(mode, rep, seats, took))
            return seats, took
        config = start_config(
            mode, resources=args.resources, clients=args.clients, seed=seed, timeout=args.timeout
        )
        seed += 1
        result, wall = run_one_race(svc.url, config, name=f"{mode}#{rep}", limit_s=args.race_limit_s)
        svc.reset()
        rows.append(_race_row(mode, rep, result, wall))
        return result, wall

    for warm in range(args.warmup):
        for mode in MODES:
            one(mode, f"warm-up {warm + 1}")
    block()
    for rep in range(1, args.reps + 1):
        for mode in MODES:  # alternate the modes so both see the same noise
            result, wall = one(mode, str(rep))
            mode_stats = stats[mode]
            mode_stats.results.append(result)
            mode_stats.walls.append(wall)
            if isinstance(result, RaceResult):
                problems += _problems(result, args.resources)
                mode_stats.client += client_spreads(result)
                mode_stats.server += server_spreads(result)
            else:
                problems += _racer_problems(mode, result)
                mode_stats.client += _racer_client(result)
                mode_stats.server += _racer_server(result)
            block()

    cli.print_table(
        rows,
        RACE_HEADERS,
        "Races (spread per resource: median/max from RaceResult.spread, p95 from history; "
        "racer rows from its own stamps)",
    )

    summary_rows: list[list[Any]] = []
    for mode in MODES:
        mode_stats = stats[mode]
        client = Percentiles.of(mode_stats.client)
        server = Percentiles.of(mode_stats.server)
        race_medians = [r.spread.median_ns for r in mode_stats.results if isinstance(r, RaceResult)]
        per_race = statistics.median(race_medians) if race_medians else None
        summary_rows.append(
            [
                mode,
                len(mode_stats.results),
                f"{statistics.median(mode_stats.walls):.2f}",
                client.count,
                ms(client.med),
                ms(per_race),
                ms(client.p95),
                ms(client.max),
                ms(server.med),
                ms(server.p95),
                ms(server.max),
            ]
        )
    for hold in HOLDS:
        bare_summary = Percentiles.of(bare[hold])
        summary_rows.append(
            [
                f"bare {args.clients}-send loop, {len(payloads[hold])} B ({hold})",
                f"{len(bare[hold])} loops",
                "-",
                bare_summary.count,
                ms(bare_summary.med),
                "-",
                ms(bare_summary.p95),
                ms(bare_summary.max),
                "-",
                "-",
                "-",
            ]
        )
    cli.print_table(
        summary_rows,
        (
            "mode",
            "races",
            "median wall s",
            "samples",
            "client med ms",
            "med of race meds ms",
            "client p95 ms",
            "client max ms",
            "server med ms",
            "server p95 ms",
            "server max ms",
        ),
        f"Summary over {args.reps} races per mode (samples: one per resource per race, pooled)",
    )

    if args.smoke:
        for problem in problems:
            print(f"note: {problem}")
        print(cli.SMOKE_VERDICT)
        return cli.EXIT_OK
    met = True
    for hold in HOLDS:
        bare_median = Percentiles.of(bare[hold]).med
        bound = max(FLOOR_NS, BARE_FACTOR * bare_median)
        measured = Percentiles.of(stats[f"last-byte/{hold}"].client).med
        met = met and measured < bound
        print(
            f"target: last-byte/{hold} client-side median spread {ms(measured)} ms"
            f" < max(1 ms, {BARE_FACTOR} x bare loop of {len(payloads[hold])} B "
            f"median {ms(bare_median)} ms) = {ms(bound)} ms: {'MET' if measured < bound else 'NOT MET'}"
        )
    for hold in HOLDS:
        engine = Percentiles.of(stats[f"last-byte/{hold}"].server).med
        racer = Percentiles.of(stats[f"racer/{hold}"].server).med
        ok = no_wider(engine, racer, INTERLEAVED_NOISE) is True
        met = met and ok
        print(
            f"target: last-byte/{hold} server-side median spread per seat {ms(engine)} ms"
            f" no wider than the tight-loop racer's {ms(racer)} ms at the same hold point"
            f" (<= {INTERLEAVED_NOISE:g} x, the noise of interleaved runs): {'MET' if ok else 'NOT MET'}"
        )
    if answered:
        problems.append(
            f"{answered} bare-loop sockets were answered or closed by the service (baseline not idle)"
        )
    for problem in problems:
        print(f"problem: {problem}")
    print(f"total wall time {budget.elapsed():.1f}s")
    return cli.EXIT_OK if met and not problems else cli.EXIT_BELOW_TARGET


# -- log in first, then race -----------------------------------------------------------------


async def _log_in(a: Any) -> str:
    response = await a.http.post("/login", json={"user": f"vu-{a.client}"})
    response.raise_for_status()
    token: str = response.json()["token"]
    return token


async def _login_then_book(a: Any) -> Any:
    token = await _log_in(a)
    await a.gate()
    return await a.http.post(
        "/orders",
        json={"seats": [a.resource], "user": f"vu-{a.client}"},
        headers={"Authorization": f"Bearer {token}"},
    )


BOOK_WITH_TOKEN = RequestSpec(
    "POST",
    "/orders",
    headers=lambda a: {"Authorization": f"Bearer {a.setup}"},
    json=lambda a: {"seats": [a.resource], "user": f"vu-{a.client}"},
)
LOGIN_TARGET_FACTOR = 1.5


def measure_login(svc: ServiceHandle, args: argparse.Namespace, budget: cli.Budget) -> int:
    """The login-then-book seed race (``--auth`` service): ``setup=`` with a last-byte start
    against ``race.run`` with ``a.gate()`` (gate), beside a plain last-byte race of the same size
    without a login (every answer a 401) whose spread is the reference of the target."""
    kinds = ("setup= + last-byte", "race.run + gate")
    spreads: dict[str, list[int]] = {kind: [] for kind in kinds}
    walls: dict[str, list[float]] = {kind: [] for kind in kinds}
    cpus: dict[str, list[float]] = {kind: [] for kind in kinds}
    reference: list[int] = []
    seed = args.seed
    for rep in range(args.reps + args.warmup):
        for kind in (*kinds, "plain last-byte (no login check)"):
            if budget.expired():
                raise cli.BudgetExceededError(
                    f"time budget of {budget.seconds:g}s used up in the login races"
                )
            config = seed_config(
                resources=args.resources,
                clients=args.clients,
                sync="gate" if kind == "race.run + gate" else "last-byte",
                seed=seed,
                timeout=args.timeout,
            )
            seed += 1
            cpu = time.process_time()
            if kind == "race.run + gate":
                result, wall = run_one_race(
                    svc.url, config, name=kind, limit_s=args.race_limit_s, attempt=_login_then_book
                )
            elif kind == "setup= + last-byte":
                result, wall = run_one_race(
                    svc.url,
                    config,
                    name=kind,
                    limit_s=args.race_limit_s,
                    request=BOOK_WITH_TOKEN,
                    setup=_log_in,
                )
            else:  # the same service without a token: every request is a 401, a plain spread reference
                config = dataclasses.replace(
                    config, expect=range(0, 1), reject=make_rule(401, REJECT_DEFAULT)
                )
                result, wall = run_one_race(svc.url, config, name=kind, limit_s=args.race_limit_s)
            cpu = time.process_time() - cpu
            svc.reset()
            if rep < args.warmup:
                continue
            if kind == "plain last-byte (no login check)":
                reference += client_spreads(result)
                continue
            spreads[kind] += client_spreads(result)
            walls[kind].append(wall)
            cpus[kind].append(cpu)
    rows = []
    for kind in kinds:
        summary = Percentiles.of(spreads[kind])
        rows.append(
            [
                kind,
                len(walls[kind]),
                f"{statistics.median(walls[kind]):.2f}" if walls[kind] else "-",
                f"{statistics.median(cpus[kind]):.2f}" if cpus[kind] else "-",
                ms(summary.med),
                ms(summary.p95),
                ms(summary.max),
            ]
        )
    plain = Percentiles.of(reference)
    rows.append(
        ["plain last-byte (reference)", args.reps, "-", "-", ms(plain.med), ms(plain.p95), ms(plain.max)]
    )
    cli.print_table(
        rows,
        (
            "start",
            "races",
            "median wall s",
            "client CPU s",
            "client med ms",
            "client p95 ms",
            "client max ms",
        ),
        f"Log in, then book ({args.clients} clients x {args.resources} seats, --auth sample service; "
        "spreads in ms; wall and CPU include the logins)",
    )
    measured = Percentiles.of(spreads["setup= + last-byte"]).med
    bound = LOGIN_TARGET_FACTOR * plain.med
    met = measured <= bound or args.smoke
    print(
        f"target: setup= + last-byte client median spread {ms(measured)} ms <= {LOGIN_TARGET_FACTOR} x "
        f"a plain last-byte race's {ms(plain.med)} ms = {ms(bound)} ms: "
        + ("(smoke: not checked)" if args.smoke else "MET" if met else "NOT MET")
    )
    return cli.EXIT_OK if met else cli.EXIT_BELOW_TARGET


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cli.apply_smoke(
        args, reps=1, warmup=0, clients=5, resources=2, bare_loops=2, race_limit_s=30.0, budget_s=60.0
    )
    if args.bare_loops > MAX_BARE_LOOPS:
        cli.stderr(
            f"--bare-loops at most {MAX_BARE_LOOPS}: each loop lengthens the sockets' partial request line"
        )
        return cli.EXIT_INCOMPLETE
    budget = cli.begin(
        args,
        f"start spread: {args.clients} clients x {args.resources} seats, safe sample service, "
        f"{args.reps} races per mode ({', '.join(MODES)}), {args.warmup} warm-up race(s) per mode uncounted",
    )
    try:
        with service("safe", seats=args.resources) as svc:
            status = measure(svc, args, budget)
        with service("safe", seats=args.resources, auth=True) as svc:
            login_status = measure_login(svc, args, budget)
        return max(status, login_status)
    except (cli.BudgetExceededError, TimeoutError, ServiceError, OSError) as exc:
        return cli.incomplete(exc)


if __name__ == "__main__":
    sys.exit(main())
