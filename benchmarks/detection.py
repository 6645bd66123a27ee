"""How often the seed race catches the unsafe service's double booking, per window and start.

docs/benchmarks.md, section "detection", says what it measures and its targets, and records the figures.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks import cli
from benchmarks.figures import server_errors, winners_per_resource
from benchmarks.judge import CAUGHT_SHARE, Check, exit_status
from benchmarks.racer import race_seats
from benchmarks.seed import STARTS, run_one_race, start_config
from benchmarks.services import ServiceError, service
from pytest_seatrace.engine.instrument import HoldPoint

RACERS: dict[str, HoldPoint] = {"racer/headers": "headers", "racer/body": "body"}
"""The tight-loop racer's modes, and the engine start each is held against."""
MODES = tuple(STARTS)
TARGET_MODE = "last-byte/headers"
TARGET_WINDOW_MS = 1.0
QUICK_RUNS = 3
QUICK_GATE_RUNS = 10


def _parser() -> argparse.ArgumentParser:
    made = cli.parser("detection", limit_s=120.0, budget_s=1800.0)
    cli.add_options(
        made,
        ("--windows", cli.float_list, [1.0, 0.1, 0.01], "unsafe check-to-act windows in ms, comma-separated"),
        (
            "--racer-windows",
            cli.float_list,
            [0.1, 0.01],
            "windows (ms, among --windows) at which the tight-loop racer races too",
        ),
        ("--runs", cli.positive_int, None, "runs per window and mode (default: 20)"),
        (
            "--gate-runs",
            cli.positive_int,
            None,
            "runs of the acceptance-gate cell, last-byte at 1 ms (default: 100; must catch >= 99%%)",
        ),
    )
    made.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_RUNS} runs per cell, {QUICK_GATE_RUNS} in the gate cell (unless given)",
    )
    cli.add_seed_race(made)
    return made


@dataclass
class Cell:
    """One (window, mode): how many runs caught a double booking."""

    planned: int
    runs: int = 0
    caught: int = 0
    double_seats: list[int] = field(default_factory=list)
    seats: int = 0
    wins: list[int] = field(default_factory=list)
    errors: int = 0
    server_errors: int = 0
    walls: list[float] = field(default_factory=list)

    def count(self, wins: list[int], total_wins: int, errors: int, server_errors: int, wall: float) -> None:
        """One run: its winners per seat, wins, errors (5xx included), 5xx and wall time."""
        doubled = sum(1 for n in wins if n > 1)
        self.runs += 1
        self.caught += doubled > 0
        self.double_seats.append(doubled)
        self.seats += len(wins)
        self.wins.append(total_wins)
        self.errors += errors
        self.server_errors += server_errors
        self.walls.append(wall)

    def share(self) -> str:
        return f"{self.caught}/{self.runs} ({100 * self.caught / self.runs:.0f}%)" if self.runs else "-"

    def seat_share(self) -> float:
        return sum(self.double_seats) / self.seats if self.seats else math.nan

    def seat_rate(self) -> str:
        caught = sum(self.double_seats)
        return f"{caught}/{self.seats} ({100 * caught / self.seats:.0f}%)" if self.seats else "-"

    def mean_double(self) -> str:
        return f"{statistics.mean(self.double_seats):.1f}" if self.double_seats else "-"

    def mean_wins(self) -> str:
        return f"{statistics.mean(self.wins):.0f}" if self.wins else "-"

    def median_wall(self) -> str:
        return f"{statistics.median(self.walls):.2f}" if self.walls else "-"


def _plan(args: argparse.Namespace) -> tuple[int, int]:
    runs = args.runs if args.runs is not None else (QUICK_RUNS if args.quick else 20)
    gate_runs = args.gate_runs if args.gate_runs is not None else (QUICK_GATE_RUNS if args.quick else 100)
    return runs, gate_runs


def run_window(
    window_ms: float, cells: dict[str, Cell], args: argparse.Namespace, budget: cli.Budget, seed: int
) -> tuple[int, float]:
    """All runs of one window against a fresh unsafe service; returns the next seed and the time taken."""
    started = budget.elapsed()
    with service("unsafe", seats=args.resources, window_ms=window_ms) as svc:
        for index in range(max(cell.planned for cell in cells.values())):
            for mode, cell in cells.items():  # alternate the modes so both see the same noise
                if index >= cell.planned:
                    continue
                if budget.expired():
                    raise cli.BudgetExceededError(
                        f"budget of {budget.seconds:g}s used up at {window_ms} ms, {mode} run {index + 1}"
                    )
                if mode in RACERS:
                    _racer_run(svc.url, svc.port, RACERS[mode], cell, args)
                    svc.reset()
                    continue
                config = start_config(
                    mode, resources=args.resources, clients=args.clients, seed=seed, timeout=args.timeout
                )
                seed += 1
                result, wall = run_one_race(
                    svc.url, config, name=f"{window_ms}ms-{mode}-{index + 1}", limit_s=args.race_limit_s
                )
                svc.reset()
                cell.count(
                    winners_per_resource(result), result.wins, result.errors, server_errors(result), wall
                )
    return seed, budget.elapsed() - started


def _racer_run(url: str, port: int, hold: HoldPoint, cell: Cell, args: argparse.Namespace) -> None:
    """One seed race by the tight-loop racer, counted into ``cell``."""
    started = time.perf_counter()
    seats = race_seats(url, port, args.resources, args.clients, hold, args.timeout)
    wall = time.perf_counter() - started
    wins = [seat.statuses.get(201, 0) for seat in seats]
    server = sum(n for seat in seats for status, n in seat.statuses.items() if status >= 500)
    cell.count(wins, sum(wins), sum(seat.errors for seat in seats) + server, server, wall)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    smoke = {
        "windows": [TARGET_WINDOW_MS],
        "racer_windows": [TARGET_WINDOW_MS],
        "runs": 1,
        "gate_runs": 1,
        "clients": 5,
        "resources": 2,
    }
    cli.apply_smoke(args, **smoke, race_limit_s=30.0, budget_s=60.0)
    runs, gate_runs = _plan(args)
    budget = cli.begin(
        args,
        f"detection: unsafe sample service, seed race {args.clients} clients x {args.resources} seats, "
        f"{runs} runs per window and mode, {gate_runs} for {TARGET_MODE} at {TARGET_WINDOW_MS:g} ms"
        + (" (--quick)" if args.quick else ""),
    )
    table: list[list[Any]] = []
    target: Cell | None = None
    versus: dict[float, dict[str, Cell]] = {}
    seed = args.seed
    incomplete = ""
    for window in args.windows:
        modes = (*MODES, *RACERS) if window in args.racer_windows else MODES
        cells = {
            mode: Cell(gate_runs if (mode == TARGET_MODE and window == TARGET_WINDOW_MS) else runs)
            for mode in modes
        }
        if window in args.racer_windows:
            versus[window] = cells
        if window == TARGET_WINDOW_MS:
            target = cells[TARGET_MODE]
        try:
            seed, took = run_window(window, cells, args, budget, seed)
        except (cli.BudgetExceededError, TimeoutError, ServiceError, OSError) as exc:
            incomplete = f"{type(exc).__name__}: {exc}"
            took = math.nan
        for mode, cell in cells.items():
            table.append(
                [
                    f"{window:g}",
                    mode,
                    cell.share(),
                    cell.seat_rate(),
                    cell.mean_double(),
                    cell.mean_wins(),
                    cell.median_wall(),
                    f"{cell.errors} ({cell.server_errors})",
                    f"{took:.0f}",
                ]
            )
        if incomplete:
            break
    cli.print_table(
        table,
        (
            "window ms",
            "start",
            "runs caught",
            "seats caught",
            "seats doubled (mean)",
            "wins (mean)",
            "wall s",
            "errors (5xx)",
            "window s",
        ),
        f"Runs that caught a double booking (any seat with > 1 winner; {args.resources} seats per run)",
    )
    print(f"total wall time {budget.elapsed():.1f}s")
    unjudged = cli.unjudged(args, incomplete)
    if unjudged is not None:
        return unjudged
    if target is None:
        cli.stderr(f"the target cell ({TARGET_MODE} at {TARGET_WINDOW_MS:g} ms) was not in --windows")
        return cli.EXIT_INCOMPLETE
    needed = math.ceil(CAUGHT_SHARE * target.planned)
    checks = [
        Check(
            f"{TARGET_MODE} catches the {TARGET_WINDOW_MS:g} ms window in >= {needed} of {target.planned}"
            f" runs: {target.caught} of {target.runs}",
            target.caught >= needed,
        )
    ]
    for window, cells in versus.items():
        for racer, hold in RACERS.items():
            engine, baseline = cells[f"last-byte/{hold}"], cells[racer]
            checks.append(
                Check(
                    f"last-byte/{hold} at {window:g} ms catches per seat {engine.seat_rate()}"
                    f" >= the tight-loop racer's {baseline.seat_rate()}",
                    engine.seat_share() >= baseline.seat_share(),
                )
            )
    for check in checks:
        print(check.line())
    return exit_status(checks)


if __name__ == "__main__":
    sys.exit(main())
