"""Keep-alive POST throughput and client CPU: this plugin's engine against ``hey``, same service, same run.

docs/benchmarks.md, section "throughput", says what it measures and its targets, and records the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import math
import resource
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import httpx

from benchmarks import cli
from benchmarks.figures import count_5xx, fmt_or_dash, nan_median
from benchmarks.machine import load1, load_note, machine_note, process_cpu_s, rusage_cpu_s
from benchmarks.peers import Tool as AnyTool
from benchmarks.peers import parse_hey_csv, run_hey
from benchmarks.programs import RunFailedError, ToolUnavailableError, ensure_hey
from benchmarks.seed import run_one_race, seed_config
from benchmarks.services import ServiceError, ServiceHandle, service
from pytest_seatrace.engine.instrument import RequestSpec, SyncMode

BODY = '{"seats":[1],"user":"throughput"}'
"""Every timed request's body, byte for byte the same for every tool."""
SEAT = 1
HEY = "hey"
LAST_BYTE = "seatrace-last-byte"
GATE = "seatrace-gate"
TOOL_NAMES = (HEY, LAST_BYTE, GATE)


def _parser() -> argparse.ArgumentParser:
    made = cli.parser("throughput", limit_s=120.0, budget_s=900.0, tools=True)
    cli.add_options(
        made,
        ("--repeat", cli.positive_int, 3, "runs per tool, median shown"),
        ("--resources", cli.positive_int, 100, "engine waves (resources) per run"),
        (
            "--concurrency",
            cli.positive_int,
            50,
            "clients per wave for the engine, hey's -c; requests = resources x concurrency",
        ),
        ("--timeout", cli.positive_float, 10.0, "seconds per request"),
        ("--seed", int, 1, "engine race seed, +1 per race"),
        ("--warmup", cli.non_negative_int, 1, "uncounted full-size runs per tool before the first"),
    )
    made.add_argument("--no-gate", action="store_true", help="skip the gate-mode engine (information only)")
    cli.add_options(
        made,
        ("--target-ratio", cli.positive_float, 0.8, "last-byte req/s must be at least this x hey's"),
        (
            "--cpu-ratio",
            cli.positive_float,
            0.75,
            "last-byte client CPU per request must be at most this x hey's",
        ),
    )
    made.add_argument("--no-install", action="store_true", help="never install hey")
    return made


# -- what one run measured -----------------------------------------------------------------


@dataclass
class Run:
    tool: str
    wall_s: float
    planned: int
    statuses: Counter[int]
    client_cpu_s: float
    """User + system CPU of the client: hey's process, or this process around ``run_race``."""
    service_cpu_s: float = math.nan
    load1: float = math.nan
    gc_collections: tuple[int, ...] = ()
    """Collections per GC generation during an engine run (nothing for hey)."""
    loop: str = ""
    """The event loop an engine run used."""

    @property
    def answered(self) -> int:
        return sum(self.statuses.values())

    @property
    def unanswered(self) -> int:
        """Requests without a response: transport errors and timeouts."""
        return self.planned - self.answered

    @property
    def fivexx(self) -> int:
        return count_5xx(self.statuses)

    @property
    def rps(self) -> float:
        """Responses per second of wall time."""
        return self.answered / self.wall_s if self.wall_s > 0 else math.nan

    @property
    def cpu_us_per_request(self) -> float:
        """Client CPU per answered request, in microseconds."""
        return 1e6 * self.client_cpu_s / self.answered if self.answered else math.nan


@dataclass
class Load:
    url: str
    resources: int
    concurrency: int
    timeout: float
    limit_s: float

    @property
    def requests(self) -> int:
        return self.resources * self.concurrency


Tool: TypeAlias = AnyTool[Load, Run]


@dataclass
class HeyTool:
    binary: str
    name: str = HEY

    def run(self, load: Load) -> Run:
        before = rusage_cpu_s(resource.RUSAGE_CHILDREN)  # the service is not reaped yet: hey alone
        csv_text = run_hey(
            self.binary,
            load.url,
            load.concurrency,
            load.requests,
            BODY,
            timeout=load.timeout,
            limit_s=load.limit_s,
        )
        cpu = rusage_cpu_s(resource.RUSAGE_CHILDREN) - before
        samples = parse_hey_csv(csv_text, SEAT)  # answered requests only
        if not samples:
            raise RunFailedError("hey reported no responses")
        # hey's offsets count from its own start: first request sent to last response read.
        wall = max(s.end_ns for s in samples) / 1e9
        return Run(self.name, wall, load.requests, Counter(s.status for s in samples), cpu)


@dataclass
class EngineTool:
    name: str
    mode: SyncMode
    seed: int

    def run(self, load: Load) -> Run:
        config = seed_config(
            resources=load.resources,
            clients=load.concurrency,
            sync=self.mode,
            seed=self.seed,
            timeout=load.timeout,
        )
        # Every request books seat 1, already taken: no winner is expected anywhere.
        config = dataclasses.replace(config, expect=range(0, load.concurrency + 1))
        self.seed += 1
        spec = RequestSpec(
            "POST", "/orders", content=BODY.encode(), headers={"content-type": "application/json"}
        )
        loops: list[str] = []
        gc_before = [gen["collections"] for gen in gc.get_stats()]
        cpu = rusage_cpu_s(resource.RUSAGE_SELF)
        try:  # wall and CPU: anyio.run around run_race, the result handed out by reference
            result, wall = run_one_race(
                load.url, config, name=self.name, limit_s=load.limit_s, request=spec, loops=loops
            )
        except TimeoutError:
            raise RunFailedError(f"race not finished after {load.limit_s:g}s") from None
        cpu = rusage_cpu_s(resource.RUSAGE_SELF) - cpu
        collections = tuple(g["collections"] - b for g, b in zip(gc.get_stats(), gc_before, strict=True))
        statuses = Counter(rec.status for rec in result.history if rec.status)
        return Run(
            self.name, wall, len(result.history), statuses, cpu, gc_collections=collections, loop=loops[0]
        )


# -- the benchmark -------------------------------------------------------------------------


@dataclass
class ToolStats:
    runs: list[Run] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def median_rps(self) -> float:
        return nan_median(r.rps for r in self.runs)

    def median_cpu_us(self) -> float:
        return nan_median(r.cpu_us_per_request for r in self.runs)


def _statuses(counts: Counter[int]) -> str:
    return " ".join(f"{status}x{count}" for status, count in sorted(counts.items())) or "-"


def build_tools(args: argparse.Namespace, notes: list[str]) -> tuple[list[Tool], bool]:
    """The tools to run, and whether hey is among them."""
    tools: list[Tool] = []
    have_hey = True
    try:
        tools.append(HeyTool(ensure_hey(not args.no_install, args.install_limit_s)))
    except ToolUnavailableError as exc:
        have_hey = False
        notes.append(f"hey skipped: {exc}")
        cli.stderr(f"hey skipped: {exc}")
    tools.append(EngineTool(LAST_BYTE, "last-byte", args.seed))
    if not args.no_gate:
        tools.append(EngineTool(GATE, "gate", args.seed + 10_000))
    return tools, have_hey


def measure(
    svc: ServiceHandle, tools: Sequence[Tool], args: argparse.Namespace, budget: cli.Budget
) -> tuple[dict[str, ToolStats], list[list[Any]]]:
    load = Load(svc.url, args.resources, args.concurrency, args.timeout, args.run_limit_s)
    status, _ = svc.request("POST", "/orders", {"seats": [SEAT], "user": "setup"})
    if status not in (200, 201, 409):
        raise ServiceError(f"booking seat {SEAT} before the runs answered {status}")
    for _ in range(args.warmup):  # SQLite pages, uvicorn, imports, hey's page cache
        for tool in tools:
            if budget.expired():
                raise cli.BudgetExceededError(f"time budget of {budget.seconds:g}s used up in the warm-up")
            try:
                tool.run(load)
            except (RunFailedError, OSError, httpx.HTTPError) as exc:
                cli.stderr(f"{tool.name} warm-up failed: {exc}")
    stats = {tool.name: ToolStats() for tool in tools}
    rows: list[list[Any]] = []
    for rep in range(args.repeat):
        shift = rep % len(tools)
        order = [*tools[shift:], *tools[:shift]]  # rotate: each tool in each position once per cycle
        done: list[tuple[str, int, Run | None]] = []
        for position, tool in enumerate(order, start=1):
            if budget.expired():
                raise cli.BudgetExceededError(f"time budget of {budget.seconds:g}s used up")
            service_before = process_cpu_s(svc.pid)
            try:
                run = tool.run(load)
            except (RunFailedError, OSError, httpx.HTTPError) as exc:
                stats[tool.name].failures.append(f"run {rep + 1}: {type(exc).__name__}: {exc}")
                cli.stderr(f"{tool.name} run {rep + 1} failed: {exc}")
                done.append((tool.name, position, None))
                continue
            run.service_cpu_s = process_cpu_s(svc.pid) - service_before
            run.load1 = load1()
            stats[tool.name].runs.append(run)
            done.append((tool.name, position, run))
        hey_rps = next((r.rps for name, _, r in done if name == HEY and r is not None), math.nan)
        for name, position, maybe in done:
            if maybe is None:
                rows.append([name, rep + 1, position, "failed", *["-"] * 7])
                continue
            responses = _statuses(maybe.statuses)
            if maybe.unanswered:
                responses += f" +{maybe.unanswered} no response"
            rows.append(
                [
                    name,
                    rep + 1,
                    position,
                    f"{maybe.wall_s:.3f}",
                    f"{maybe.rps:.0f}",
                    fmt_or_dash(maybe.rps / hey_rps, 2),
                    f"{maybe.client_cpu_s:.2f}",
                    fmt_or_dash(maybe.cpu_us_per_request, 1),
                    fmt_or_dash(maybe.service_cpu_s, 2),
                    responses,
                    fmt_or_dash(maybe.load1, 2),
                ]
            )
    return stats, rows


RUN_HEADERS = (
    "tool",
    "repeat",
    "position",
    "wall s",
    "req/s",
    "ratio to hey (same repeat)",
    "client CPU s",
    "client CPU µs/request",
    "service CPU s",
    "responses",
    "load 1m",
)
SUMMARY_HEADERS = (
    "tool",
    "runs",
    "wall s",
    "req/s",
    "ratio to hey",
    "req/s per run",
    "client CPU s",
    "client CPU µs/request",
    "CPU ratio to hey",
    "service CPU s",
    "no response / 5xx",
)


def summary_rows(stats: dict[str, ToolStats]) -> list[list[Any]]:
    hey = stats.get(HEY)
    hey_rps = hey.median_rps() if hey else math.nan
    hey_cpu = hey.median_cpu_us() if hey and hey.runs else math.nan
    rows: list[list[Any]] = []
    for name, st in stats.items():
        if not st.runs:
            rows.append([name, f"0 of {len(st.failures)}", *["-"] * 9])
            continue
        rps = st.median_rps()
        rows.append(
            [
                name,
                str(len(st.runs)) + (f" ({len(st.failures)} failed)" if st.failures else ""),
                f"{nan_median(r.wall_s for r in st.runs):.3f}",
                f"{rps:.0f}",
                fmt_or_dash(rps / hey_rps, 2),
                " / ".join(f"{r.rps:.0f}" for r in st.runs),
                f"{nan_median(r.client_cpu_s for r in st.runs):.2f}",
                fmt_or_dash(st.median_cpu_us(), 1),
                fmt_or_dash(st.median_cpu_us() / hey_cpu, 2),
                fmt_or_dash(nan_median(r.service_cpu_s for r in st.runs), 2),
                f"{sum(r.unanswered for r in st.runs)} / {sum(r.fivexx for r in st.runs)}",
            ]
        )
    return rows


def verdict(
    stats: dict[str, ToolStats], have_hey: bool, ratio: float, cpu_ratio: float
) -> tuple[int, list[str]]:
    lines: list[str] = []
    lb = stats.get(LAST_BYTE)
    hey = stats.get(HEY)
    if lb is None or not lb.runs:
        return cli.EXIT_INCOMPLETE, ["target: NOT EVALUATED (the last-byte engine did not complete a run)"]
    bad_lb = sum(r.unanswered + r.fivexx for r in lb.runs)
    if not have_hey or hey is None or not hey.runs:
        why = "hey unavailable" if not have_hey else "no hey run completed"
        return cli.EXIT_INCOMPLETE, [f"target: NOT EVALUATED ({why})"]
    bad_hey = sum(r.unanswered + r.fivexx for r in hey.runs)
    lb_rps, hey_rps = lb.median_rps(), hey.median_rps()
    met = lb_rps >= ratio * hey_rps
    lines.append(
        f"target: last-byte {lb_rps:.0f} req/s >= {ratio:g} x hey {hey_rps:.0f} req/s "
        f"(= {ratio * hey_rps:.0f}; ratio {lb_rps / hey_rps:.2f}): {'MET' if met else 'NOT MET'}"
    )
    lb_cpu, hey_cpu = lb.median_cpu_us(), hey.median_cpu_us()
    cheap = lb_cpu <= cpu_ratio * hey_cpu
    lines.append(
        f"target: last-byte client CPU {lb_cpu:.1f} µs/request <= {cpu_ratio:g} x hey {hey_cpu:.1f} "
        f"µs/request (= {cpu_ratio * hey_cpu:.1f}; ratio {lb_cpu / hey_cpu:.2f}): "
        f"{'MET' if cheap else 'NOT MET'}"
    )
    lines.append(
        f"target: last-byte 5xx + unanswered requests {bad_lb} == 0: {'MET' if not bad_lb else 'NOT MET'}"
    )
    if not met or not cheap or bad_lb:
        return cli.EXIT_BELOW_TARGET, lines
    if bad_hey or lb.failures or hey.failures:
        lines.append(
            f"incomplete: hey 5xx/unanswered {bad_hey}, failed runs {len(lb.failures) + len(hey.failures)}"
        )
        return cli.EXIT_INCOMPLETE, lines
    return cli.EXIT_OK, lines


def main(argv: Sequence[str] | None = None) -> int:
    made = _parser()
    args = made.parse_args(argv)
    smoke = {"repeat": 1, "warmup": 0, "resources": 3, "concurrency": 5, "no_install": True}
    cli.apply_smoke(args, **smoke, run_limit_s=30.0, budget_s=60.0)
    budget = cli.Budget(args.budget_s)
    notes: list[str] = []
    load_before = load_note()
    requests = args.resources * args.concurrency
    cli.print_header(
        f"keep-alive POST /orders throughput: {requests} requests per run ({args.resources} waves x "
        f"{args.concurrency} clients; hey -c {args.concurrency} -n {requests}), all for seat {SEAT} "
        f"(already booked: 409), safe sample service, median of {args.repeat}",
        smoke=args.smoke,
    )
    tools, have_hey = build_tools(args, notes)
    try:
        with service("safe", seats=1) as svc:
            stats, rows = measure(svc, tools, args, budget)
    except (cli.BudgetExceededError, RunFailedError, ServiceError, OSError, httpx.HTTPError) as exc:
        return cli.incomplete(exc)

    cli.print_table(rows, RUN_HEADERS, "Every run (position: order within the repeat)")
    cli.print_table(
        summary_rows(stats),
        SUMMARY_HEADERS,
        f"Keep-alive POST throughput, median of {args.repeat}\n{machine_note()}",
    )
    print(
        "- wall s: hey, its own span from its start to its last response (CSV offsets; process "
        "start-up not counted); engine, anyio.run around run_race (connects, R waves with a "
        "start gate each, reads, judges). req/s = responses / wall s."
    )
    print(
        "- client CPU s: user + system CPU of hey's process (getrusage of children), or of this "
        "process around run_race; service CPU s: the service process over the same run (/proc). "
        "The service uses about one core at most (one event loop, SQLite in a worker thread): "
        "service CPU s close to wall s means the service, not the client, set the pace. "
        "client CPU µs/request = client CPU s / responses; CPU ratio to hey = that over hey's "
        "(medians over the repeats)."
    )
    for name, st in stats.items():
        engine = [r for r in st.runs if r.loop]
        if engine:
            loops = sorted({r.loop for r in engine})
            collected = " / ".join("-".join(str(n) for n in r.gc_collections) for r in engine)
            print(f"- {name}: event loop {', '.join(loops)}; GC collections per run (gen 0-1-2): {collected}")
    notes += [f"{name} {failure}" for name, st in stats.items() for failure in st.failures]
    cli.print_notes(notes, load_before)
    if args.smoke:
        print(cli.SMOKE_VERDICT)
        return cli.EXIT_OK
    code, lines = verdict(stats, have_hey, args.target_ratio, args.cpu_ratio)
    for line in lines:
        print(line)
    print(f"total wall time {budget.elapsed():.1f}s")
    return code


if __name__ == "__main__":
    sys.exit(main())
