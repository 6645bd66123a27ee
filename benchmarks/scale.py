"""Scale: 500 clients per seat at 20, 50 and 100 seats (10k, 25k, 50k requests), last-byte.

docs/benchmarks.md, section "scale", says what it measures and its targets, and records the figures.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx

from benchmarks import cli
from benchmarks.figures import NS_PER_MS, server_errors, winners_per_resource
from benchmarks.seed import run_one_race, seed_config
from benchmarks.services import ServiceError, service

ROOT = Path(__file__).resolve().parent.parent
MARKER = "SCALE-RESULT "
MAX_RSS_MB = 200.0
MAX_RATIO = 1.3
CHILD_STARTUP_S = 60.0
"""Allowance on top of the race limit for the child's interpreter start and imports."""


def _parser() -> argparse.ArgumentParser:
    made = cli.parser("scale", limit_s=600.0, budget_s=1800.0, defaults_help=True)
    cli.add_options(
        made,
        ("--clients", cli.positive_int, 500, "clients per seat"),
        ("--sizes", cli.int_list, [20, 50, 100], "seat counts, comma-separated"),
        ("--seats", cli.positive_int, 100, "seats of the service"),
        ("--timeout", cli.positive_float, 30.0, "seconds per request"),
        ("--seed", int, 1, "race seed"),
    )
    made.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    made.add_argument("--url", help=argparse.SUPPRESS)
    made.add_argument("--resources", type=cli.positive_int, default=1, help=argparse.SUPPRESS)
    return made


def peak_rss_mb() -> float:
    """This process's peak resident set size (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


# -- one size, in a fresh process ----------------------------------------------------------


async def _warm_imports() -> None:
    """Import what the engine imports lazily (httpx, httpcore, anyio's backend) before timing.

    The first race of a process pays ~0.4 s of imports; that is not a per-request cost.
    """
    async with httpx.AsyncClient(trust_env=False):
        pass


def child(args: argparse.Namespace) -> int:
    """Race one size against ``--url`` and print one JSON line of figures."""
    anyio.run(_warm_imports)
    rss_before = peak_rss_mb()
    config = seed_config(
        resources=args.resources, clients=args.clients, sync="last-byte", seed=args.seed, timeout=args.timeout
    )
    result, wall = run_one_race(args.url, config, name=f"scale-{args.resources}", limit_s=args.race_limit_s)
    wins = winners_per_resource(result)
    figures: dict[str, Any] = {
        "resources": args.resources,
        "clients": args.clients,
        "requests": result.requests,
        "wall_s": wall,
        "race_s": result.duration,
        "rps": result.rps,
        "wins": result.wins,
        "rejections": result.rejections,
        "errors": result.errors,
        "unknown": result.unknown,
        "server_errors": server_errors(result),
        "double_bookings": result.double_bookings,
        "seats_not_one_winner": sum(1 for count in wins if count != 1),
        "violations": sorted({v.kind for v in result.violations}),
        "error_reasons": dict(result.error_reasons.most_common(3)),
        "p95_ms": result.latency.all.p95 / NS_PER_MS,
        "spread_median_ms": result.spread.median_ns / NS_PER_MS,
        "rss_before_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
    }
    print(MARKER + json.dumps(figures))
    return cli.EXIT_OK


def run_child(url: str, size: int, args: argparse.Namespace, limit_s: float) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "benchmarks", "scale", "--child",
        "--url", url,
        "--resources", str(size),
        "--clients", str(args.clients),
        "--timeout", str(args.timeout),
        "--seed", str(args.seed),
        "--race-limit-s", str(args.race_limit_s),
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=limit_s, check=False, cwd=ROOT)
    for line in done.stdout.splitlines():
        if line.startswith(MARKER):
            figures: dict[str, Any] = json.loads(line[len(MARKER) :])
            figures["process_s"] = time.perf_counter() - started
            return figures
    raise RuntimeError(
        f"child for {size} seats exited {done.returncode} without figures:\n{done.stderr[-2000:]}"
    )


# -- the parent ----------------------------------------------------------------------------


def measure(args: argparse.Namespace, budget: cli.Budget) -> tuple[list[dict[str, Any]], str]:
    runs: list[dict[str, Any]] = []
    with service("safe", seats=args.seats) as svc:
        for size in args.sizes:
            if budget.expired():
                return runs, f"budget of {budget.seconds:g}s used up before {size} seats"
            svc.reset()
            limit = min(args.race_limit_s + CHILD_STARTUP_S, max(budget.left(), 1.0) + CHILD_STARTUP_S)
            try:
                runs.append(run_child(svc.url, size, args, limit))
            except subprocess.TimeoutExpired:
                return runs, f"child for {size} seats did not finish within {limit:.0f}s"
            except RuntimeError as exc:
                return runs, str(exc)
    return runs, ""


def verdict(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Every target missed, as sentences; empty when all are met."""
    misses = []
    for run in runs:
        seats = run["resources"]
        if run["errors"] or run["server_errors"] or run["unknown"]:
            misses.append(
                f"{seats} seats: {run['errors']} errors ({run['server_errors']} 5xx),"
                f" {run['unknown']} unknown"
                f" {run['error_reasons']}"
            )
        if run["double_bookings"] or run["wins"] != seats or run["seats_not_one_winner"]:
            misses.append(
                f"{seats} seats: {run['wins']} wins, {run['double_bookings']} double bookings,"
                f" {run['seats_not_one_winner']} seats without exactly one winner"
            )
    smallest = min(runs, key=lambda run: run["requests"])
    largest = max(runs, key=lambda run: run["requests"])
    if largest["peak_rss_mb"] > MAX_RSS_MB:
        misses.append(
            f"peak RSS {largest['peak_rss_mb']:.1f} MB at {largest['requests']} requests > {MAX_RSS_MB} MB"
        )
    if largest is not smallest:
        ratio = _per_request(largest) / _per_request(smallest)
        if ratio > MAX_RATIO:
            misses.append(
                f"time per request at {largest['requests']} is {ratio:.2f} x that at {smallest['requests']}"
                f" (> {MAX_RATIO})"
            )
    return misses


def _per_request(run: dict[str, Any]) -> float:
    return float(run["wall_s"]) / int(run["requests"])


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.child:
        cli.apply_smoke(args, clients=5, sizes=[1, 2], seats=2, race_limit_s=30.0, budget_s=90.0)
    if args.child:
        if not args.url:
            cli.stderr("--child needs --url")
            return cli.EXIT_INCOMPLETE
        return child(args)
    if max(args.sizes) > args.seats:
        cli.stderr(f"--sizes up to {max(args.sizes)} need --seats >= that (got {args.seats})")
        return cli.EXIT_INCOMPLETE
    budget = cli.begin(
        args,
        f"scale: {args.clients} clients per seat at {', '.join(map(str, args.sizes))} seats, last-byte, "
        f"safe sample service ({args.seats} seats), one fresh process per size",
    )
    try:
        runs, incomplete = measure(args, budget)
    except (ServiceError, OSError) as exc:
        runs, incomplete = [], f"{type(exc).__name__}: {exc}"
    rows = [
        [
            run["resources"],
            run["requests"],
            f"{run['wall_s']:.2f}",
            f"{run['race_s']:.2f}",
            f"{1e6 * _per_request(run):.1f}",
            f"{run['rps']:.0f}",
            f"{run['p95_ms']:.1f}",
            f"{run['spread_median_ms']:.3f}",
            f"{run['rss_before_mb']:.1f}",
            f"{run['peak_rss_mb']:.1f}",
            run["server_errors"],
            run["errors"],
            run["double_bookings"],
            f"{run['wins']}/{run['resources']}",
            f"{run['process_s']:.1f}",
        ]
        for run in runs
    ]
    cli.print_table(
        rows,
        (
            "seats",
            "requests",
            "wall s",
            "race s",
            "µs/request",
            "req/s",
            "p95 ms",
            "spread med ms",
            "RSS at start MB",
            "peak RSS MB",
            "5xx",
            "errors",
            "double bookings",
            "wins/seats",
            "process s",
        ),
        "One race per size (wall: run_race end to end in the child; µs/request = wall / requests)",
    )
    if len(runs) > 1:
        base = _per_request(min(runs, key=lambda run: run["requests"]))
        print("time per request relative to the smallest size: " + ", ".join(
            f"{run['requests']}: {_per_request(run) / base:.2f}x" for run in runs
        ))  # fmt: skip
    print(f"total wall time {budget.elapsed():.1f}s")
    unjudged = cli.unjudged(args, incomplete)
    if unjudged is not None:
        return unjudged
    misses = verdict(runs)
    for miss in misses:
        print(f"target NOT MET: {miss}")
    if not misses:
        print(
            f"targets MET: peak RSS <= {MAX_RSS_MB:.0f} MB at the largest size, time per request within "
            f"{MAX_RATIO} x of the smallest size, no 5xx, no errors, exactly one winner per seat"
        )
    return cli.EXIT_BELOW_TARGET if misses else cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
