"""What ``model=Seats()`` costs the seed race: the same race with and without it, side by side.

docs/benchmarks.md, section "model_cost", says what it measures and its target. Each pair races
the seed scenario once without a model and once with ``model=Seats()`` against one safe
service, reset before each race, the order alternating from pair to pair so drift in the
machine's load falls on both sides. A side's wall is the race's (the engine stamps each
request and translates it for the model) plus its verdict (``result.violations``: the
linearizability check with the model, the winner count without): what a test pays.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, replace

from benchmarks import cli
from benchmarks.judge import Check, exit_status
from benchmarks.machine import load_note
from benchmarks.seed import run_one_race, seed_config
from benchmarks.services import ServiceError, ServiceHandle, service
from pytest_seatrace.engine.instrument import RaceConfig
from pytest_seatrace.models import Seats

TARGET_RATIO = 1.25
"""The seed scenario with ``model=Seats()`` costs at most this many times its wall without a model."""
SIDES = ("without", "with Seats()")


def _parser() -> argparse.ArgumentParser:
    made = cli.parser("model_cost", limit_s=60.0, budget_s=900.0)
    cli.add_options(
        made,
        ("--pairs", cli.positive_int, 10, "counted pairs (one race without a model, one with)"),
        ("--warmup", cli.non_negative_int, 1, "uncounted pairs first"),
    )
    cli.add_seed_race(made)
    return made


@dataclass(frozen=True)
class Side:
    """One race of a pair: its wall (race and verdict), the verdict's share, and what went wrong."""

    wall: float
    judge: float
    problem: str


def race_side(svc: ServiceHandle, config: RaceConfig, *, name: str, limit_s: float) -> Side:
    """The seed race on a freshly reset service, its verdict computed as a test would."""
    svc.reset()
    result, wall = run_one_race(svc.url, config, name=name, limit_s=limit_s)
    started = time.perf_counter()
    violations = result.violations
    judged = time.perf_counter() - started
    seats = len(config.resources)
    problem = ""
    if violations:
        problem = f"{name}: {len(violations)} violation(s) on the safe service: {violations[0].kind}"
    elif result.wins != seats or result.errors:
        problem = f"{name}: {result.wins} wins and {result.errors} errors over {seats} seats"
    return Side(wall + judged, judged, problem)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cli.apply_smoke(args, pairs=1, warmup=0, clients=5, resources=2)
    budget = cli.begin(
        args,
        f"The seed race ({args.clients} clients x {args.resources} seats, last-byte, safe sample service) "
        "without a model and with model=Seats(), in interleaved pairs",
    )
    load_before = load_note()
    plain = seed_config(
        resources=args.resources, clients=args.clients, sync="last-byte", seed=args.seed, timeout=args.timeout
    )
    configs = {SIDES[0]: plain, SIDES[1]: replace(plain, model=Seats())}
    rows: list[list[str]] = []
    ratios: list[float] = []
    walls: dict[str, list[float]] = {side: [] for side in SIDES}
    try:
        with service("safe", seats=args.resources) as svc:
            for pair in range(-args.warmup, args.pairs):
                if budget.expired():
                    cli.stderr("incomplete: time budget spent before every pair ran")
                    return cli.EXIT_INCOMPLETE
                order = SIDES if pair % 2 == 0 else SIDES[::-1]
                sides = {
                    side: race_side(svc, configs[side], name=f"{side} #{pair}", limit_s=args.race_limit_s)
                    for side in order
                }
                problems = [s.problem for s in sides.values() if s.problem]
                if problems:
                    cli.stderr("incomplete: " + "; ".join(problems))
                    return cli.EXIT_INCOMPLETE
                if pair < 0:
                    continue
                ratio = sides[SIDES[1]].wall / sides[SIDES[0]].wall
                ratios.append(ratio)
                for side in SIDES:
                    walls[side].append(sides[side].wall)
                rows.append(
                    [
                        str(pair + 1),
                        " then ".join("model" if side == SIDES[1] else "plain" for side in order),
                        f"{sides[SIDES[0]].wall:.3f}",
                        f"{sides[SIDES[1]].wall:.3f}",
                        f"{1000 * sides[SIDES[1]].judge:.1f}",
                        f"{ratio:.3f}",
                    ]
                )
    except (ServiceError, TimeoutError) as exc:
        return cli.incomplete(exc)
    headers = ["pair", "order", "without s", "with Seats() s", "check ms", "ratio"]
    cli.print_table(rows, headers, "per pair (wall = race + verdict; check: the verdict with the model)")
    median = statistics.median(ratios)
    print(
        f"median wall: {statistics.median(walls[SIDES[0]]):.3f} s without, "
        f"{statistics.median(walls[SIDES[1]]):.3f} s with Seats(); median ratio {median:.3f}"
    )
    cli.print_notes([], load_before)
    status = cli.unjudged(args, "")
    if status is not None:
        return status
    what = f"seed with model=Seats() <= {TARGET_RATIO:g} x its wall without (median of {len(ratios)} pairs)"
    check = Check(what, median <= TARGET_RATIO)
    print(check.line())
    return exit_status([check])


if __name__ == "__main__":
    raise SystemExit(main())
