"""Sharded races: 16 x 500 and 1 x 5,000 clients with 1 and 2 shards (execnet popen), same run.

Per race: wall time, req/s, per-seat start spread on the client (first to last final write,
on the coordinator's clock after the shards' stamps were mapped onto it) and at the server
(``X-Arrival-Ns``), the clock mapping's error bound, and the CPU the client (this process and
its shards) and the service spent: on a box whose cores the service shares, what the shards
spend beyond one process is taken from the service. The gateways are started once, before
timing (as a session does), and reused by every race; the safe sample service runs in its own
process and is reset before each race.

Targets: with 2 shards the median per-seat client spread stays within 1.5 x the one-process
spread + 1 ms, and 16 x 500 finishes no slower than in one process; every race has exactly one
winner per seat and no error. ``--shard-nice N`` starts the shards as ``popen//nice=N``
(execnet's spec key), to see what a lower priority trades: it leaves the service more of the
cores, and the shards wake up late for their starts. Exit status:
0 targets met, 1 below target, 2 incomplete (time budget, a race that could not run).
``--smoke``: toy sizes in seconds, no target, 0 when it ran.
"""

from __future__ import annotations

import argparse
import math
import resource
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import anyio
from _common import (
    EXIT_BELOW_TARGET,
    EXIT_INCOMPLETE,
    EXIT_OK,
    NS_PER_MS,
    SMOKE_VERDICT,
    Budget,
    add_limits,
    add_smoke,
    apply_smoke,
    cores,
    cpu_times,
    fmt_or_dash,
    int_list,
    load_note,
    ms,
    nan_median,
    order_spec,
    positive_float,
    positive_int,
    print_header,
    print_table,
    process_cpu_s,
    runqueue_wait_s,
    rusage_cpu_s,
    seed_config,
    stderr,
    steal_note,
    winners_per_resource,
)

from pytest_seatrace import RaceResult
from pytest_seatrace.engine import RaceConfig, RacePlan, TargetOptions, run_race
from pytest_seatrace.engine.shards import GatewayPool
from pytest_seatrace.service import ServiceError, start_sample_service

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
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--scenarios", type=scenario_list, default=[(16, 500), (1, 5000)], help="SEATSxCLIENTS,..."
    )
    parser.add_argument("--shards", type=int_list, default=[1, 2], help="shard counts, comma-separated")
    parser.add_argument("--timeout", type=positive_float, default=30.0, help="seconds per request")
    parser.add_argument("--seed", type=int, default=1, help="race seed")
    parser.add_argument(
        "--shard-nice",
        type=nice_value,
        default=0,
        help="start each shard as popen//nice=N (0-19; 0: as the test process)",
    )
    parser.add_argument(
        "--repeat",
        type=positive_int,
        default=5,
        help="interleaved races per cell, medians judged (5: on 2 cores one race's wall swings "
        "2-3 %% from run to run, and one process and two shards are near level)",
    )
    add_limits(parser, limit="race", limit_s=300.0, budget_s=1200.0)
    add_smoke(parser)
    return parser


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
    plan = RacePlan(
        name=f"shards-{config.shards}",
        config=config,
        target=TargetOptions(base_url=url, shard_pool=pool),
        request=order_spec(),
    )
    results: list[RaceResult] = []

    async def main() -> None:
        with anyio.fail_after(limit_s):
            results.append(RaceResult.from_run(plan.name, config, await run_race(plan)))

    service_pid, shard_pids = pids
    service_before, own_before = process_cpu_s(service_pid), rusage_cpu_s(resource.RUSAGE_SELF)
    waited_before = runqueue_wait_s(service_pid)
    shards_before = [process_cpu_s(pid) for pid in shard_pids]
    started = time.perf_counter()
    anyio.run(main)
    wall = time.perf_counter() - started
    shards_cpu = sum(process_cpu_s(pid) for pid in shard_pids) - sum(shards_before)
    result = results[0]
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
    apply_smoke(args, scenarios=[(2, 10), (1, 20)], shards=[1, 2], timeout=10.0, repeat=1)
    budget = Budget(args.budget_s)
    print_header(
        f"Sharded races (execnet {shard_spec(args)} gateways), last-byte, hold=headers, safe sample service"
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
        with start_sample_service(strategy="safe", seats=seats) as service:
            for shards in args.shards:  # gateways and imports warmed before timing, as a session does
                config = sharded_config(1, max(2, shards), shards, args)
                warm = race_once(service.url, config, pool, args.race_limit_s, (service.pid, []))
                pids[shards] = shard_pids_of(warm.result)
                service.reset()
            for repeat, scenario, shards in (
                (r, sc, sh) for r in range(1, args.repeat + 1) for sc in args.scenarios for sh in args.shards
            ):  # interleaved: every cell sees the same machine
                if budget.expired():
                    stderr("time budget spent before every race ran")
                    return EXIT_INCOMPLETE
                service.reset()
                config = sharded_config(scenario[0], scenario[1], shards, args)
                run = race_once(service.url, config, pool, args.race_limit_s, (service.pid, pids[shards]))
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
        stderr(f"incomplete: {exc}")
        return EXIT_INCOMPLETE
    finally:
        pool.close()
    print_table(
        rows,
        HEADERS,
        "every race: median per-seat spreads; wall = one race, gateways already started; client CPU "
        "= this process + its shards",
    )
    print_table(
        [medians_row(scenario, shards, runs) for (scenario, shards), runs in figures.items()],
        MEDIAN_HEADERS,
        f"medians over {args.repeat} interleaved repeats; service busy = its CPU / wall (it runs one "
        "event loop: near 100 % it is the limit, and what the client spends beyond that is taken "
        "from it); service waited = runnable, but every core was taken",
    )
    print(f"load after: {load_note()}; {steal_note(times)} during the run")
    if args.smoke:
        print(SMOKE_VERDICT)
        return EXIT_OK
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
        return EXIT_BELOW_TARGET
    print(
        f"targets met: 2-shard spread within {SPREAD_FACTOR} x one process + {SPREAD_SLACK_MS:g} ms; "
        "16 x 500 no slower with 2 shards"
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
