"""Sharded races: 16 x 500 and 1 x 5,000 clients with 1 and 2 shards (execnet popen), same run.

docs/benchmarks.md, section "shards", says what it measures and its targets, and records the figures.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks import cli
from benchmarks.figures import NS_PER_MS, fmt_or_dash, ms, nan_median, winners_per_resource
from benchmarks.machine import (
    cores,
    cpu_times,
    load_note,
    process_cpu_s,
    runqueue_wait_s,
    rusage_cpu_s,
    steal_note,
)
from benchmarks.seed import run_one_race, seed_config
from benchmarks.services import ServiceError, service
from pytest_seatrace.engine.instrument import GatewayPool, RaceConfig, RaceResult

SPREAD_FACTOR = 1.5
SPREAD_SLACK_MS = 1.0
HEADERS = ["scenario", "shards", "repeat", "requests", "wall s", "req/s", "client spread ms",
           "server spread ms", "clock error ms", "client CPU s", "service CPU s", "service waited ms",
           "verdict"]  # fmt: skip
MEDIAN_HEADERS = ["scenario", "shards", "races", "median wall s", "client spread ms",
                  "server spread ms", "client CPU s", "service CPU s", "service waited ms",
                  "service busy"]  # fmt: skip
NICE_MAX = 19


def scenario_list(text: str) -> list[tuple[int, int]]:
    """``16x500,1x5000``: seats x clients per seat."""
    out = []
    for part in text.split(","):
        seats, _, clients = part.strip().partition("x")
        try:
            out.append((int(seats), int(clients)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected SEATSxCLIENTS[,...], not {text!r}") from None
    return out


def nice_value(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= NICE_MAX:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {NICE_MAX}, not {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    made = cli.parser("shards", limit_s=300.0, budget_s=1200.0, defaults_help=True)
    cli.add_options(
        made,
        ("--scenarios", scenario_list, [(16, 500), (1, 5000)], "SEATSxCLIENTS,..."),
        ("--shards", cli.int_list, [1, 2], "shard counts, comma-separated"),
        ("--timeout", cli.positive_float, 30.0, "seconds per request"),
        ("--seed", int, 1, "race seed"),
        ("--shard-nice", nice_value, 0, "start each shard as popen//nice=N (0-19; 0: as the test process)"),
        (
            "--repeat",
            cli.positive_int,
            5,
            "interleaved races per cell, medians judged (5: on 2 cores one race's wall swings "
            "2-3 %% from run to run, and one process and two shards are near level)",
        ),
    )
    return made


@dataclass
class Timed:
    """One race and what it cost: wall seconds, and CPU seconds of the client (this process and
    its shards, all threads) and of the service, and how long the service was runnable but
    waited for a CPU; NaN where a process could not be read."""

    result: RaceResult
    wall: float
    client_cpu: float
    service_cpu: float
    service_wait: float


def race_once(
    url: str, config: RaceConfig, pool: GatewayPool, limit_s: float, pids: tuple[int, Sequence[int]]
) -> Timed:
    """Race once. ``pids``: the service's, and the shards' as the last race of this shard count
    saw them (the pool reuses its gateways; a shard that started anew makes the client CPU NaN)."""
    service_pid, shard_pids = pids
    service_before, own_before = process_cpu_s(service_pid), rusage_cpu_s(resource.RUSAGE_SELF)
    waited_before = runqueue_wait_s(service_pid)
    shards_before = [process_cpu_s(pid) for pid in shard_pids]
    result, wall = run_one_race(url, config, name=f"shards-{config.shards}", limit_s=limit_s, shard_pool=pool)
    shards_cpu = sum(process_cpu_s(pid) for pid in shard_pids) - sum(shards_before)
    if sorted(shard_pids) != shard_pids_of(result):
        shards_cpu = math.nan
    return Timed(
        result,
        wall,
        rusage_cpu_s(resource.RUSAGE_SELF) - own_before + shards_cpu,
        process_cpu_s(service_pid) - service_before,
        runqueue_wait_s(service_pid) - waited_before,
    )


def shard_pids_of(result: RaceResult) -> list[int]:
    return sorted(doc["pid"] for doc in result.shards)


def shard_spec(args: argparse.Namespace) -> str:
    """The gateway spec of every shard: ``popen``, or ``popen//nice=N`` with ``--shard-nice``."""
    return f"popen//nice={args.shard_nice}" if args.shard_nice else "popen"


def sharded_config(seats: int, clients: int, shards: int, args: argparse.Namespace) -> RaceConfig:
    base = seed_config(
        resources=seats, clients=clients, sync="last-byte", seed=args.seed, timeout=args.timeout
    )
    tx = (shard_spec(args),) * shards if shards > 1 else ()
    return RaceConfig(**{**_fields(base), "shards": max(1, shards), "tx": tx})


def _fields(config: RaceConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def verdict(result: RaceResult) -> str:
    wins = winners_per_resource(result)
    if result.errors or result.unknown or any(count != 1 for count in wins):
        return f"BAD ({result.errors} errors, {result.unknown} unknown, wins {sorted(set(wins))})"
    return "one winner per seat"


Figures = dict[tuple[tuple[int, int], int], list[Timed]]


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cli.apply_smoke(args, scenarios=[(2, 10), (1, 20)], shards=[1, 2], timeout=10.0, repeat=1)
    budget = cli.begin(
        args,
        f"Sharded races (execnet {shard_spec(args)} gateways), last-byte, hold=headers, safe sample service",
    )
    print(
        f"this machine has {cores()} cores: the gain from shards is capped at two processes here, and "
        "client and server share the same cores (the service's process competes with every shard)"
    )
    print(f"load before: {load_note()}")
    times = cpu_times()
    print()
    seats = max(s for s, _ in args.scenarios)
    rows: list[list[str]] = []
    figures: Figures = {}
    pool = GatewayPool()
    pids: dict[int, list[int]] = {}
    try:
        with service("safe", seats=seats) as svc:
            for shards in args.shards:  # gateways and imports warmed before timing, as a session does
                config = sharded_config(1, max(2, shards), shards, args)
                warm = race_once(svc.url, config, pool, args.race_limit_s, (svc.pid, []))
                pids[shards] = shard_pids_of(warm.result)
                svc.reset()
            for repeat, scenario, shards in (
                (r, sc, sh) for r in range(1, args.repeat + 1) for sc in args.scenarios for sh in args.shards
            ):  # interleaved: every cell sees the same machine
                if budget.expired():
                    cli.stderr("time budget spent before every race ran")
                    return cli.EXIT_INCOMPLETE
                svc.reset()
                config = sharded_config(scenario[0], scenario[1], shards, args)
                run = race_once(svc.url, config, pool, args.race_limit_s, (svc.pid, pids[shards]))
                pids[shards] = shard_pids_of(run.result)
                figures.setdefault((scenario, shards), []).append(run)
                result = run.result
                rows.append(
                    [
                        f"{scenario[0]} x {scenario[1]}",
                        str(shards),
                        str(repeat),
                        str(result.requests),
                        f"{run.wall:.3f}",
                        f"{result.requests / run.wall:.0f}",
                        ms(result.spread.median_ns),
                        ms(result.spread.server_median_ns),
                        ms(result.clock_error_ns) if shards > 1 else "-",
                        fmt_or_dash(run.client_cpu, 2),
                        fmt_or_dash(run.service_cpu, 2),
                        fmt_or_dash(1000 * run.service_wait, 0),
                        verdict(result),
                    ]
                )
    except (ServiceError, TimeoutError) as exc:
        cli.stderr(f"incomplete: {exc}")
        return cli.EXIT_INCOMPLETE
    finally:
        pool.close()
    cli.print_table(
        rows,
        HEADERS,
        "every race: median per-seat spreads; wall = one race, gateways already started; client CPU "
        "= this process + its shards",
    )
    cli.print_table(
        [medians_row(scenario, shards, runs) for (scenario, shards), runs in figures.items()],
        MEDIAN_HEADERS,
        f"medians over {args.repeat} interleaved repeats; service busy = its CPU / wall (it runs one "
        "event loop: near 100 % it is the limit, and what the client spends beyond that is taken "
        "from it); service waited = runnable, but every core was taken",
    )
    print(f"load after: {load_note()}; {steal_note(times)} during the run")
    if args.smoke:
        print(cli.SMOKE_VERDICT)
        return cli.EXIT_OK
    return _targets(figures, args)


def medians_row(scenario: tuple[int, int], shards: int, runs: Sequence[Timed]) -> list[str]:
    busy = nan_median(r.service_cpu / r.wall for r in runs)
    return [
        f"{scenario[0]} x {scenario[1]}",
        str(shards),
        str(len(runs)),
        f"{nan_median(r.wall for r in runs):.3f}",
        ms(nan_median(r.result.spread.median_ns for r in runs)),
        ms(nan_median(r.result.spread.server_median_ns or 0 for r in runs)),
        fmt_or_dash(nan_median(r.client_cpu for r in runs), 2),
        fmt_or_dash(nan_median(r.service_cpu for r in runs), 2),
        fmt_or_dash(1000 * nan_median(r.service_wait for r in runs), 0),
        "-" if math.isnan(busy) else f"{100 * busy:.0f} %",
    ]


def _targets(figures: Figures, args: argparse.Namespace) -> int:
    failures = [
        f"{scenario} with {shards} shard(s): {verdict(run.result)}"
        for (scenario, shards), runs in figures.items()
        for run in runs
        if verdict(run.result) != "one winner per seat"
    ]

    def spread(runs: Sequence[Timed]) -> float:
        return nan_median(r.result.spread.median_ns for r in runs)

    def wall(runs: Sequence[Timed]) -> float:
        return nan_median(r.wall for r in runs)

    for scenario in args.scenarios:
        one, two = figures.get((scenario, 1)), figures.get((scenario, 2))
        if one is None or two is None:
            continue
        bound = SPREAD_FACTOR * spread(one) + SPREAD_SLACK_MS * NS_PER_MS
        ratios = sorted(b.wall / a.wall for a, b in zip(one, two, strict=True))
        print(
            f"{scenario[0]} x {scenario[1]}: 2 shards spread {ms(spread(two))} ms vs bound {ms(bound)} ms"
            f" ({SPREAD_FACTOR} x {ms(spread(one))} + {SPREAD_SLACK_MS:g}); wall {wall(two):.3f} s vs"
            f" one process {wall(one):.3f} s (medians of {len(two)}); 2 shards faster in"
            f" {sum(r < 1 for r in ratios)} of {len(ratios)} interleaved pairs, wall ratios"
            f" {ratios[0]:.3f}-{ratios[-1]:.3f}"
        )
        if not spread(two) <= bound:
            failures.append(
                f"{scenario[0]} x {scenario[1]}: 2 shards spread {ms(spread(two))} ms > "
                f"{SPREAD_FACTOR} x {ms(spread(one))} + {SPREAD_SLACK_MS:g} ms"
            )
        if scenario == (16, 500) and wall(two) > wall(one):
            failures.append(f"16 x 500: 2 shards took {wall(two):.3f} s > one process's {wall(one):.3f} s")
    if failures:
        print("BELOW TARGET:")
        for failure in failures:
            print(f"  {failure}")
        return cli.EXIT_BELOW_TARGET
    print(
        f"targets met: 2-shard spread within {SPREAD_FACTOR} x one process + {SPREAD_SLACK_MS:g} ms; "
        "16 x 500 no slower with 2 shards"
    )
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
