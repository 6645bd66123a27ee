"""The seed scenario (100 clients x 16 seats, ``POST /orders``) by this plugin's engine and its peers.

docs/benchmarks.md, section "seed_scenario", says what it measures and its targets, and records the figures.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import httpx

from benchmarks import cli
from benchmarks.figures import NS_PER_MS, client_spreads, fmt_or_dash, ms, nan_median, server_spreads
from benchmarks.judge import INTERLEAVED_NOISE, Check, exit_status, no_wider, run_to_run_band
from benchmarks.machine import load1, load_note, machine_note
from benchmarks.peers import (
    DEFAULT_LOCUST_VENV,
    HeyTool,
    HttpxTool,
    LocustTool,
    Run,
    Scenario,
    ensure_locust,
)
from benchmarks.peers import Tool as AnyTool
from benchmarks.programs import RunFailedError, ToolUnavailableError, ensure_hey, run_bounded
from benchmarks.seed import run_one_race, seed_config
from benchmarks.services import ServiceError, ServiceHandle, service
from pytest_seatrace.engine.instrument import Record, SyncMode

Tool: TypeAlias = AnyTool[Scenario, Run]
ROOT = Path(__file__).resolve().parent.parent
TARGET_WALL_S = 1.0
TARGET_P95_MS = 100.0
LAST_BYTE = "seatrace-last-byte"
LOCUST_BARRIER = "locust-barrier"
TOOL_NAMES = (LAST_BYTE, "seatrace-gate", LOCUST_BARRIER, "locust-free", "hey", "httpx-event")


def _parser() -> argparse.ArgumentParser:
    made = cli.parser("seed_scenario", limit_s=120.0, budget_s=1800.0, tools=True)
    cli.add_options(made, ("--repeat", cli.positive_int, 5, "runs per tool, median shown"))
    cli.add_seed_race(made)
    cli.add_options(
        made,
        ("--tools", cli.subset(TOOL_NAMES), list(TOOL_NAMES), "a comma-separated subset"),
        ("--window-ms", cli.positive_float, 1.0, "unsafe strategy's check-to-act window"),
    )
    made.add_argument("--no-unsafe", action="store_true", help="skip the runs against the unsafe strategy")
    made.add_argument("--no-install", action="store_true", help="never install hey or Locust")
    made.add_argument(
        "--locust-python",
        type=Path,
        default=None,
        help="an interpreter that has Locust (default: this one if it has Locust, else --locust-venv)",
    )
    made.add_argument(
        "--locust-venv",
        type=Path,
        default=DEFAULT_LOCUST_VENV,
        help=f"virtualenv created for Locust when needed (default: {DEFAULT_LOCUST_VENV})",
    )
    return made


@dataclass
class EngineTool:
    name: str
    mode: SyncMode
    seed: int = 1
    loops: list[str] = field(default_factory=list)
    """The event loop of every run."""

    def run(self, sc: Scenario) -> Run:
        config = seed_config(
            resources=len(sc.seats), clients=sc.clients, sync=self.mode, seed=self.seed, timeout=sc.timeout
        )
        self.seed += 1
        try:
            result, wall = run_one_race(sc.url, config, name=self.name, limit_s=sc.limit_s, loops=self.loops)
        except TimeoutError:
            raise RunFailedError(f"race not finished after {sc.limit_s:.0f}s") from None
        history: tuple[Record, ...] = result.history
        answered = [rec for rec in history if rec.status]
        wins: Counter[int] = Counter(rec.resource for rec in answered if 200 <= rec.status < 300)
        return Run(
            tool=self.name,
            wall_s=wall,
            requests=len(history),
            statuses=Counter(rec.status for rec in answered),
            transport_errors=len(history) - len(answered),
            latencies_ns=[rec.latency_ns for rec in answered],
            wins_by_seat=dict(wins),
            server_spreads=server_spreads(result) or None,
            client_spreads=client_spreads(result) or None,
        )


# -- the benchmark -------------------------------------------------------------------------


def build_tools(args: argparse.Namespace, notes: list[str]) -> list[Tool]:
    tools: list[Tool] = []
    locust_python: str | None = None
    locust_reason = ""
    for name in args.tools:
        try:
            if name == LAST_BYTE:
                tools.append(EngineTool(name, "last-byte", args.seed))
            elif name == "seatrace-gate":
                tools.append(EngineTool(name, "gate", args.seed + 10_000))
            elif name == "hey":
                tools.append(HeyTool(ensure_hey(not args.no_install, args.install_limit_s)))
            elif name.startswith("locust-"):
                if locust_python is None and not locust_reason:
                    try:
                        locust_python = ensure_locust(args)
                    except ToolUnavailableError as exc:
                        locust_reason = str(exc)
                if locust_python is None:
                    raise ToolUnavailableError(locust_reason)
                tools.append(LocustTool(locust_python, name.removeprefix("locust-"), name))
            else:
                tools.append(HttpxTool())
        except ToolUnavailableError as exc:
            notes.append(f"{name} skipped: {exc}")
            cli.stderr(f"{name} skipped: {exc}")
    return tools


@dataclass
class ToolStats:
    runs: list[Run] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    unsafe: str = "-"
    unsafe_caught: bool | None = None


def client_cpu_s() -> float:
    """User + system CPU of this process and of its children that ended (hey, Locust; the
    service still runs, so it is never counted)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def _gc_and_loop(stats: dict[str, ToolStats], tools: Sequence[Tool]) -> list[str]:
    """What the engine's runs collected, and the event loop they used."""
    lines = []
    for tool in tools:
        runs = stats[tool.name].runs
        if isinstance(tool, EngineTool) and runs:
            per_run = " / ".join("-".join(map(str, r.gc_collections)) for r in runs)
            loops = ", ".join(sorted(set(tool.loops)))
            lines.append(f"{tool.name}: event loop {loops}; GC collections per run (gen 0-1-2): {per_run}")
    return lines


def _same_or_list(values: Sequence[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else "/".join(str(v) for v in values)


def run_safe(
    svc: ServiceHandle, tools: Sequence[Tool], args: argparse.Namespace, budget: cli.Budget
) -> tuple[dict[str, ToolStats], list[list[Any]]]:
    sc = Scenario(svc.url, tuple(range(1, args.resources + 1)), args.clients, args.timeout, args.run_limit_s)
    stats = {tool.name: ToolStats() for tool in tools}
    rows: list[list[Any]] = []
    # Warm the service (SQLite pages, uvicorn, imports) with one uncounted engine race.
    warm = EngineTool("warm-up", "last-byte", args.seed - 1)
    try:
        warm.run(sc)
    finally:
        svc.reset()
    for rep in range(args.repeat):
        shift = rep % len(tools)
        for tool in [*tools[shift:], *tools[:shift]]:  # rotate: no tool always first
            if budget.expired():
                raise cli.BudgetExceededError(f"time budget of {budget.seconds:g}s used up")
            gc_before = [gen["collections"] for gen in gc.get_stats()]
            cpu_before = client_cpu_s()
            try:
                run = tool.run(sc)
                run.cpu_s = client_cpu_s() - cpu_before
                run.gc_collections = tuple(
                    gen["collections"] - before for gen, before in zip(gc.get_stats(), gc_before, strict=True)
                )
            except (RunFailedError, OSError, httpx.HTTPError) as exc:
                stats[tool.name].failures.append(f"run {rep + 1}: {type(exc).__name__}: {exc}")
                cli.stderr(f"{tool.name} run {rep + 1} failed: {exc}")
                rows.append([tool.name, rep + 1, "failed", *["-"] * 9])
                continue
            finally:
                svc.reset()
            run.load1 = load1()
            stats[tool.name].runs.append(run)
            rows.append(
                [
                    tool.name,
                    rep + 1,
                    f"{run.wall_s:.3f}",
                    f"{run.rps:.0f}",
                    fmt_or_dash(run.latency_ms(50)),
                    fmt_or_dash(run.latency_ms(95)),
                    fmt_or_dash(run.latency_ms(99)),
                    f"{run.transport_errors}/{run.fivexx}",
                    run.successes,
                    fmt_or_dash(run.server_spread_ms(), 2),
                    fmt_or_dash(run.cpu_s, 2),
                    fmt_or_dash(run.load1, 2),
                ]
            )
    return stats, rows


def run_unsafe(
    svc: ServiceHandle, tools: Sequence[Tool], stats: dict[str, ToolStats], args: argparse.Namespace
) -> None:
    """Each tool once against the unsafe strategy; a seat with two or more holders is a catch."""
    sc = Scenario(svc.url, tuple(range(1, args.resources + 1)), args.clients, args.timeout, args.run_limit_s)
    for tool in tools:
        try:
            run = tool.run(sc)
            doubled = sum(1 for seat in sc.seats if len(svc.holders(seat)) > 1)
        except (RunFailedError, OSError, httpx.HTTPError, ServiceError) as exc:
            stats[tool.name].unsafe = f"failed: {exc}"
            continue
        finally:
            svc.reset()
        acked = sum(1 for wins in run.wins_by_seat.values() if wins > 1)
        caught = doubled > 0
        stats[tool.name].unsafe_caught = caught
        stats[tool.name].unsafe = f"{'yes' if caught else 'no'} {doubled}/{len(sc.seats)} (>1 2xx: {acked})"


def summary_rows(stats: dict[str, ToolStats], expected_wins: int) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for name, st in stats.items():
        runs = st.runs
        if not runs:
            rows.append([name, f"0 of {len(st.failures)}", *["-"] * 11, st.unsafe])
            continue
        runs_cell = str(len(runs)) + (f" ({len(st.failures)} failed)" if st.failures else "")
        server = nan_median(r.server_spread_ms() for r in runs)
        server_max = max((max(r.server_spreads) for r in runs if r.server_spreads), default=None)
        rows.append(
            [
                name,
                runs_cell,
                f"{nan_median(r.wall_s for r in runs):.3f}",
                f"{nan_median(r.rps for r in runs):.0f}",
                fmt_or_dash(nan_median(r.latency_ms(50) for r in runs)),
                fmt_or_dash(nan_median(r.latency_ms(95) for r in runs)),
                fmt_or_dash(nan_median(r.latency_ms(99) for r in runs)),
                f"{sum(r.transport_errors for r in runs)}/{sum(r.fivexx for r in runs)}",
                _same_or_list([r.successes for r in runs])
                + ("" if all(r.successes == expected_wins for r in runs) else " (!)"),
                fmt_or_dash(server, 2),
                ms(server_max),
                fmt_or_dash(nan_median(r.client_spread_ms() for r in runs), 2),
                fmt_or_dash(nan_median(r.cpu_s * 1e6 / r.requests for r in runs), 0),
                st.unsafe,
            ]
        )
    return rows


_MEASURED = (
    "wall s",
    "req/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "errors/5xx",
    "successes",
    "server spread med ms",
)
"""The columns both tables share, in the order both show them."""
SUMMARY_HEADERS = (
    "tool",
    "runs",
    *_MEASURED,
    "server spread max ms",
    "client spread med ms",
    "client CPU µs/req",
    "unsafe (window) caught",
)
RUN_HEADERS = ("tool", "repeat", *_MEASURED, "client CPU s", "load 1m")


def targets(stats: dict[str, ToolStats], resources: int) -> list[Check]:
    lb = stats.get(LAST_BYTE)
    if lb is None or not lb.runs:
        return [Check(f"{LAST_BYTE} ran (needed for every target)", None)]
    runs = lb.runs
    wall = nan_median(r.wall_s for r in runs)
    p95 = nan_median(r.latency_ms(95) for r in runs)
    bad = sum(r.fivexx + r.transport_errors for r in runs)
    wins = [r.successes for r in runs]
    checks = [
        Check(f"seed (last-byte) end to end {wall:.3f} s < {TARGET_WALL_S:.0f} s", wall < TARGET_WALL_S),
        Check(f"p95 {p95:.1f} ms < {TARGET_P95_MS:.0f} ms", p95 < TARGET_P95_MS),
        Check(f"5xx + transport errors over {len(runs)} runs: {bad} == 0", bad == 0),
        Check(
            f"successes {_same_or_list(wins)} == {resources} in every run",
            all(w == resources for w in wins),
        ),
    ]
    locust = stats.get(LOCUST_BARRIER)
    if locust is None or not locust.runs:
        checks.append(Check("ahead of Locust-with-barrier (Locust did not run)", None))
    else:
        lwall = nan_median(r.wall_s for r in locust.runs)
        checks.append(
            Check(f"wall {wall:.3f} s < Locust-with-barrier {lwall:.3f} s", wall < lwall),
        )
        checks.append(server_spread_check(runs, locust.runs))
    return checks


def server_spread_check(engine: Sequence[Run], locust: Sequence[Run]) -> Check:
    """The last-byte engine's server spread per seat no wider than Locust-with-barrier's: both
    sides measure the service's own queue, so it is judged as start_spread judges its racer
    target, on every seat of the interleaved repeats pooled, within a stated noise band (the
    wider of the two sides' own run-to-run bands, at least ``INTERLEAVED_NOISE``)."""
    pooled = [_pooled_ms(engine), _pooled_ms(locust)]
    bands = (
        run_to_run_band([r.server_spread_ms() for r in side], INTERLEAVED_NOISE) for side in (engine, locust)
    )
    band = max(bands)
    return Check(
        f"server spread per seat {pooled[0]:.2f} ms <= Locust-with-barrier {pooled[1]:.2f} ms"
        f" within the noise band {band:.2f} x (every seat of {len(engine)} interleaved repeats pooled;"
        " band: the wider side's largest repeat median over its median)",
        no_wider(pooled[0], pooled[1], band),
    )


def _pooled_ms(runs: Sequence[Run]) -> float:
    """The median over every seat of every run, in ms (NaN without a stamp)."""
    return nan_median([spread / NS_PER_MS for r in runs for spread in r.server_spreads or ()])


FIRST_RACE = """
import sys, time
from benchmarks.seed import run_one_race, seed_config
imported_ns = time.perf_counter_ns()
seats, clients = int(sys.argv[2]), int(sys.argv[3])
config = seed_config(resources=seats, clients=clients, sync="last-byte", seed=1, timeout=10.0)
result, _ = run_one_race(sys.argv[1], config, name="first-race", limit_s=60.0)
ends = [rec.end_ns for rec in result.history if rec.status]
print(imported_ns, min(ends), max(ends), result.wins)
"""


def first_race(svc: ServiceHandle, args: argparse.Namespace) -> list[Any]:
    """The seed race in a fresh interpreter: process start to imports done, to the first and the
    last response (``perf_counter_ns`` is CLOCK_MONOTONIC, shared by processes on one host)."""
    started = time.perf_counter_ns()
    done = run_bounded(
        [sys.executable, "-c", FIRST_RACE, svc.url, str(args.resources), str(args.clients)],
        args.run_limit_s + 30,
        cwd=ROOT,
    )
    svc.reset()
    if done.returncode != 0:
        raise RunFailedError(f"first race exited {done.returncode}: {done.stderr.strip()[-300:]}")
    imported, first, last, wins = (int(v) for v in done.stdout.split()[-4:])
    return [
        f"{LAST_BYTE}, fresh process",
        ms(imported - started),
        ms(first - started),
        ms(last - started),
        wins,
    ]


FIRST_RACE_HEADERS = ("run", "to imports done ms", "to first response ms", "to last response ms", "wins")


NOTES = (
    "wall s: the 1,600 requests end to end. Engine: run_race inside anyio.run (connects, "
    "warms, fires, judges). hey: the 16 hey processes back to back. Locust: first barrier "
    "release to last response (interpreter start and user spawning not counted). httpx: "
    "first client opened to last response.",
    "latency: engine from the final write to the complete response; hey its response-time "
    "(dial included: one new connection per request); Locust and httpx around the call "
    "(the first call per connection includes the connect).",
    "server spread: per seat, first to last X-Arrival-Ns stamp (taken by the service after "
    "reading the body); median over seats, then over repeats; max over every seat of every "
    "repeat. hey cannot read response headers: '-'.",
    "client spread: the tool's own stamp of a request on the wire - engine: return of the "
    "final send(); hey: offset + dial + request-write from its CSV (0.1 ms resolution); "
    "Locust and httpx have no such stamp: '-'.",
    "client CPU: user + system CPU of this process over the run plus that of the tool's own "
    "processes that ended in it (hey's 16, Locust's one: its interpreter and gevent start-up "
    "included, ~1 s, so Locust's figure is an upper bound); per request over the 1,600.",
    "unsafe: one more run per tool against strategy=unsafe: 'yes N/16' = N seats with more "
    "than one holder in GET /seats/{id}; '>1 2xx' = seats where the tool itself saw more than "
    "one success.",
)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    smoke = {"repeat": 1, "clients": 5, "resources": 2, "no_install": True}
    cli.apply_smoke(args, **smoke, run_limit_s=30.0, install_limit_s=30.0, budget_s=90.0)
    budget = cli.Budget(args.budget_s)
    notes: list[str] = []
    load_before = load_note()
    cli.print_header(
        f"seed scenario: {args.clients} clients x {args.resources} seats (POST /orders), "
        f"safe sample service, median of {args.repeat}; unsafe window {args.window_ms:g} ms",
        smoke=args.smoke,
    )
    tools = build_tools(args, notes)
    if not tools:
        cli.stderr("no tool could run")
        return cli.EXIT_INCOMPLETE
    try:
        with service("safe", seats=args.resources) as svc:
            stats, rows = run_safe(svc, tools, args, budget)
            first = first_race(svc, args) if LAST_BYTE in args.tools else None
        if not args.no_unsafe:
            with service("unsafe", seats=args.resources, window_ms=args.window_ms) as svc:
                run_unsafe(svc, tools, stats, args)
    except (cli.BudgetExceededError, TimeoutError, RunFailedError, ServiceError, OSError) as exc:
        return cli.incomplete(exc)

    cli.print_table(rows, RUN_HEADERS, "Every run (errors = transport errors and timeouts)")
    headers = list(SUMMARY_HEADERS)
    headers[-1] = f"unsafe ({args.window_ms:g} ms) caught"
    cli.print_table(
        summary_rows(stats, args.resources),
        headers,
        f"Seed scenario, median of {args.repeat}\n{machine_note()}",
    )
    for note in NOTES:
        print(f"- {note}")
    for line in _gc_and_loop(stats, tools):
        print(f"- {line}")
    if first is not None:
        warm = stats[LAST_BYTE].runs
        cli.print_table(
            [
                first,
                [
                    f"{LAST_BYTE}, warm (median above)",
                    "-",
                    "-",
                    f"{nan_median(r.wall_s for r in warm) * 1e3:.1f}",
                    "-",
                ],
            ],
            FIRST_RACE_HEADERS,
            "The first race in a process: a fresh interpreter that imports the engine and races the seed "
            "(times from its spawn)",
        )
    notes += [f"{name} {failure}" for name, st in stats.items() for failure in st.failures]
    cli.print_notes(notes, load_before)
    if args.smoke:
        print(cli.SMOKE_VERDICT)
        return cli.EXIT_OK
    checks = targets(stats, args.resources)
    for check in checks:
        print(check.line())
    print(f"total wall time {budget.elapsed():.1f}s")
    return exit_status(checks)


if __name__ == "__main__":
    sys.exit(main())
