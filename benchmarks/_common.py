"""Shared helpers of the benchmark scripts: the seed race, spreads, budgets, tables.

The scripts run as ``python benchmarks/<name>.py``, so this module is imported by its bare
name (the script's directory is first on ``sys.path``). Nothing here talks to anything but
the loopback service a script started itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from tabulate import tabulate

from pytest_seatrace import Outcome, RaceResult, Record, percentile
from pytest_seatrace.core.config import HoldPoint
from pytest_seatrace.engine import RaceConfig, RacePlan, RequestSpec, SyncMode, TargetOptions, run_race
from pytest_seatrace.options import positive_float as positive_float
from pytest_seatrace.options import positive_int as positive_int

EXIT_OK = 0
EXIT_BELOW_TARGET = 1
EXIT_INCOMPLETE = 2
"""A budget ran out or a race could not run: no verdict on the target either way."""

NS_PER_MS = 1_000_000


def cores() -> int:
    """CPUs this process may run on (the affinity mask, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def rusage_cpu_s(who: int) -> float:
    """User + system CPU so far of this process (``resource.RUSAGE_SELF``) or of its children
    that ended (``RUSAGE_CHILDREN``)."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def process_cpu_s(pid: int) -> float:
    """User + system CPU of another process so far, all its threads (Linux ``/proc``; NaN
    elsewhere, or once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return math.nan
    fields = text.rsplit(")", 1)[1].split()  # after "pid (comm)": field 3 (state) onwards
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def machine_note() -> str:
    return f"client and server share this machine's {cores()} cores (service in a separate process)"


def load1() -> float:
    """The 1-minute load average (NaN where the platform has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan


def nan_median(values: Iterable[float]) -> float:
    """The median of the values that are not NaN (NaN when none is)."""
    data = [v for v in values if not math.isnan(v)]
    return statistics.median(data) if data else math.nan


def fmt_or_dash(value: float, digits: int = 1) -> str:
    """``value`` with ``digits`` decimals, or ``-`` for NaN (a figure that could not be read)."""
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def load_note() -> str:
    """The load average at the time of printing: the machine may be shared and noisy."""
    if not hasattr(os, "getloadavg"):
        return ""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} (1/5/15 min)"


def runqueue_wait_s(pid: int) -> float:
    """Seconds the threads of a process have so far spent runnable but waiting for a CPU
    (Linux ``/proc/PID/task/*/schedstat``, the second field; NaN elsewhere). A process that
    shares the cores waits there while others hold them."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        waits = [int(task.joinpath("schedstat").read_text(encoding="ascii").split()[1]) for task in tasks]
    except (OSError, IndexError, ValueError):
        return math.nan
    return sum(waits) / 1e9


def cpu_times() -> list[int]:
    """The machine's CPU time so far by kind (Linux ``/proc/stat``: user, nice, system, idle,
    iowait, irq, softirq, steal), in clock ticks; empty elsewhere."""
    try:
        line = Path("/proc/stat").read_text(encoding="ascii").splitlines()[0]
    except (OSError, IndexError):
        return []
    return [int(field) for field in line.split()[1:9]]


def steal_note(before: Sequence[int]) -> str:
    """How much of the machine's CPU time since ``before`` (``cpu_times()``) the hypervisor
    gave to other guests: on a shared host it is what makes one run differ from the next."""
    after = cpu_times()
    if len(before) < 8 or len(after) < 8:
        return "steal: unknown"
    spent = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(spent)
    return f"hypervisor steal {100 * spent[7] / total:.1f} % of CPU time" if total else "steal: none"


def print_header(title: str) -> None:
    print(title)
    print(machine_note())
    note = load_note()
    if note:
        print(note)
    print()


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], title: str = "") -> None:
    if title:
        print(title)
    print(tabulate(rows, headers=list(headers), tablefmt="github", floatfmt=".3f", disable_numparse=True))
    print()


# -- arguments -----------------------------------------------------------------------------


def add_limits(
    parser: argparse.ArgumentParser,
    *,
    limit: str,
    limit_s: float,
    budget_s: float,
    what: str = "race",
    install: bool = False,
) -> None:
    """The bounds every benchmark takes: one run (``--race-limit-s`` or ``--run-limit-s``),
    each install step (optional), and the whole script (``--budget-s``)."""
    parser.add_argument(
        f"--{limit}-limit-s",
        type=positive_float,
        default=limit_s,
        help=f"cancel one {what} after this ({limit_s:g})",
    )
    if install:
        parser.add_argument(
            "--install-limit-s", type=positive_float, default=600.0, help="bound on each install step (600)"
        )
    parser.add_argument(
        "--budget-s",
        type=positive_float,
        default=budget_s,
        help=f"stop starting {what}s after this ({budget_s:g})",
    )


def add_smoke(parser: argparse.ArgumentParser) -> None:
    """``--smoke``: toy sizes, no warm-up, no installs, no targets, so the test suite can run
    every benchmark in seconds and a benchmark cannot rot between issues."""
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a few seconds at toy sizes, never installs, evaluates no target: exit 0 when it ran",
    )


def apply_smoke(args: argparse.Namespace, **sizes: Any) -> None:
    """Under ``--smoke``, replace the run's sizes (and never install a tool)."""
    if args.smoke:
        for name, value in sizes.items():
            setattr(args, name, value)


SMOKE_VERDICT = "smoke run: figures at toy sizes, targets not evaluated"


def float_list(text: str) -> list[float]:
    try:
        values = [positive_float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers > 0, not {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def int_list(text: str) -> list[int]:
    try:
        values = [positive_int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, not {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one integer")
    return values


# -- time bounds ---------------------------------------------------------------------------


@dataclass
class Budget:
    """A wall-clock allowance for a whole script; loops check it before each step."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def expired(self) -> bool:
        return self.left() <= 0


class BudgetExceededError(RuntimeError):
    """The script's time budget ran out before every planned measurement was taken."""


# -- the seed race -------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """How a benchmark race starts: the mode, and for last-byte the hold point."""

    label: str
    sync: SyncMode
    hold: HoldPoint = "headers"


STARTS = {
    "last-byte/headers": Start("last-byte/headers", "last-byte", "headers"),
    "last-byte/body": Start("last-byte/body", "last-byte", "body"),
    "gate": Start("gate", "gate"),
}
SINGLE_PACKET_START = Start("single-packet", "single-packet")
"""HTTP/2 only, so not among the HTTP/1.1 benchmarks' ``STARTS``; single_packet.py races it beside them."""


def seed_config(
    *,
    resources: int,
    clients: int,
    sync: SyncMode,
    seed: int,
    timeout: float,
    parallel: int = 1,
    hold: HoldPoint = "headers",
) -> RaceConfig:
    """The seed scenario: ``clients`` per seat, seats ``1..resources``, exactly one winner each."""
    return RaceConfig(
        resources=tuple(range(1, resources + 1)),
        concurrency=clients,
        timeout=timeout,
        sync=sync,
        hold=hold,
        parallel=parallel,
        seed=seed,
    )


def seed_order(seat: int, client: int) -> dict[str, Any]:
    """The seed's ``POST /orders`` body: ``seat`` booked by user ``vu-<client>``."""
    return {"seats": [seat], "user": f"vu-{client}"}


def seed_held_bytes(resources: int, clients: int, hold: HoldPoint) -> int:
    """How many bytes a seed request holds back until the gate at ``hold`` (the longest one):
    the header block's last byte and the JSON body, or the body's last byte."""
    if hold == "body":
        return 1
    body = json.dumps(seed_order(resources, clients), separators=(",", ":"))
    return 1 + len(body.encode())


def order_spec() -> RequestSpec:
    """``POST /orders`` for the attempt's seat, one user per client."""
    return RequestSpec("POST", "/orders", json=lambda a: seed_order(a.resource, a.client))


def run_one_race(
    url: str,
    config: RaceConfig,
    *,
    name: str,
    limit_s: float,
    request: RequestSpec | None = None,
    setup: Any = None,
    attempt: Any = None,
    loops: list[str] | None = None,
) -> tuple[RaceResult, float]:
    """One race against ``url``, cancelled after ``limit_s``; returns the result and its wall time.

    The seed's ``POST /orders`` by default; or ``request`` (with a ``setup``), or an ``attempt``
    function (gate mode); ``loops`` hears the event loop's class. Raises ``TimeoutError`` when
    the race did not finish within ``limit_s``.
    """
    target = TargetOptions(base_url=url)
    if attempt is not None:
        plan = RacePlan(name=name, config=config, target=target, attempt=attempt)
    else:
        plan = RacePlan(name=name, config=config, target=target, request=request or order_spec(), setup=setup)

    results: list[RaceResult] = []

    async def main() -> None:  # returns nothing: Python 3.11 repr's a task's result as the run ends
        if loops is not None:
            loops.append(loop_name())
        with anyio.fail_after(limit_s):
            results.append(RaceResult.from_run(name, config, await run_race(plan)))

    started = time.perf_counter()
    try:
        anyio.run(main)
    except TimeoutError:
        raise TimeoutError(f"race {name} did not finish within {limit_s:g}s") from None
    return results[0], time.perf_counter() - started


def loop_name() -> str:
    """The running event loop's class (asyncio's default, uvloop, ...)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return "-"
    return f"{type(loop).__module__}.{type(loop).__qualname__}"


# -- statistics over a race's history ------------------------------------------------------


def spreads_by_resource(history: Iterable[Record], stamp: Callable[[Record], int]) -> list[int]:
    """Per (round, resource): last minus first non-zero ``stamp`` (ns); groups of one are skipped."""
    groups: dict[tuple[int, int], tuple[int, int, int]] = {}
    for rec in history:
        value = stamp(rec)
        if not value:
            continue
        key = (rec.round, rec.resource)
        low, high, count = groups.get(key, (value, value, 0))
        groups[key] = (min(low, value), max(high, value), count + 1)
    return [high - low for low, high, count in groups.values() if count > 1]


def client_spreads(result: RaceResult) -> list[int]:
    """Client side: from the return of the first final write to the return of the last."""
    return spreads_by_resource(result.history, lambda rec: rec.sent_ns)


def server_spreads(result: RaceResult) -> list[int]:
    """Server side: first to last ``X-Arrival-Ns`` stamp (taken after the body was read)."""
    return spreads_by_resource(result.history, lambda rec: rec.server_ns)


@dataclass(frozen=True)
class Summary:
    """median / p95 / max of nanosecond samples."""

    count: int
    median: float
    p95: float
    max: float

    @classmethod
    def of(cls, samples: Iterable[int]) -> Summary:
        data = sorted(samples)
        if not data:
            return cls(0, math.nan, math.nan, math.nan)
        return cls(len(data), float(statistics.median(data)), percentile(data, 95), float(data[-1]))


def ms(ns: float | None) -> str:
    """Nanoseconds as milliseconds for a table cell."""
    if ns is None or math.isnan(ns):
        return "-"
    return f"{ns / NS_PER_MS:.3f}"


def count_5xx(status_counts: Mapping[int, int]) -> int:
    """Responses with a 5xx status, from status → count."""
    return sum(count for status, count in status_counts.items() if status >= 500)


def server_errors(result: RaceResult) -> int:
    """Responses with a 5xx status."""
    return count_5xx(result.status_counts)


def winners_per_resource(result: RaceResult) -> list[int]:
    """Acknowledged wins of each resource, in resource order (rounds summed)."""
    wins = [0] * len(result.resources)
    for rec in result.history:
        if rec.outcome is Outcome.WIN:
            wins[rec.resource] += 1
    return wins


def stderr(message: str) -> None:
    print(message, file=sys.stderr)
