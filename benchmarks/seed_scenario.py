"""The seed scenario (100 clients x 16 seats, ``POST /orders``) by this plugin's engine and its peers.

Every tool races the same safe sample service (a subprocess), ``POST /reset`` between runs;
each repeat runs every tool once (the order rotates per repeat), and the table shows the
median of the repeats. The tools:

- ``seatrace-last-byte`` / ``seatrace-gate``: this plugin's engine (``run_race``) in both
  start modes;
- ``locust-barrier``: Locust headless, ``FastHttpUser``, 100 users that meet at a barrier
  before each seat (the design's "Locust with a per-seat barrier"); ``locust-free``: the
  same users booking their 16 seats without waiting (a load test, not a race);
- ``hey``: one ``hey -c 100 -n 100`` per seat, its CSV output parsed;
- ``httpx-event``: a naive ``asyncio.gather`` of httpx requests, one ``AsyncClient`` per seat
  and an ``asyncio.Event`` releasing the seat's 100 requests.

Per run it records the client's CPU (this process, plus the tool's own processes) and, for
the engine, the GC collections and the event loop; after the repeats, one more seed race
runs in a fresh interpreter (the first race in a process: time from its spawn to the imports
done, the first and the last response).

Then each tool runs once more against ``strategy="unsafe"`` (``--window-ms``, default 1) and
the seats with more than one holder (``GET /seats/{id}``) say whether it caught the bug.

Targets checked (exit 1 when missed): the last-byte engine finishes the seed in
under 1 s end to end with p95 under 100 ms, no 5xx or transport errors and 16 successes,
and beats Locust-with-barrier's wall time while its per-seat start spread at the server is
no wider. Exit 2: incomplete (a target could not be evaluated, e.g. Locust unavailable, or
the time budget ran out).

Install steps are part of the run: ``apt-get install -y hey`` (after ``apt-get update``) when
``hey`` is missing and we are root; Locust is pip-installed into its own virtualenv (see
``--locust-venv``), because it registers a pytest plugin (``pytest_locust``: a ``--host``/``-H``
option and ``session``/``fastsession`` fixtures) and gevent in whatever environment holds it.
A tool that cannot be had is skipped with a note. Traffic goes only to the loopback services
this script starts. ``--smoke``: toy sizes in seconds, never installs (absent tools skipped
with a note), no target, 0 when it ran.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gc
import importlib.util
import io
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import httpx
from _common import (
    EXIT_BELOW_TARGET,
    EXIT_INCOMPLETE,
    EXIT_OK,
    NS_PER_MS,
    SMOKE_VERDICT,
    Budget,
    BudgetExceededError,
    add_limits,
    add_smoke,
    apply_smoke,
    client_spreads,
    count_5xx,
    fmt_or_dash,
    load1,
    load_note,
    machine_note,
    ms,
    nan_median,
    positive_float,
    positive_int,
    print_header,
    print_table,
    run_one_race,
    seed_config,
    server_spreads,
    stderr,
)

from pytest_seatrace import Record, percentile
from pytest_seatrace.engine import SyncMode
from pytest_seatrace.service import ServiceError, ServiceHandle, start_sample_service

HERE = Path(__file__).resolve().parent
LOCUSTFILE = HERE / "locustfile_seed.py"
DEFAULT_LOCUST_VENV = Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / (
    "pytest-seatrace/locust-venv"
)

TARGET_WALL_S = 1.0
TARGET_P95_MS = 100.0
LAST_BYTE = "seatrace-last-byte"
LOCUST_BARRIER = "locust-barrier"
TOOL_NAMES = (LAST_BYTE, "seatrace-gate", LOCUST_BARRIER, "locust-free", "hey", "httpx-event")


def _tool_list(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in TOOL_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"tools are a comma-separated subset of {', '.join(TOOL_NAMES)}")
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=positive_int, default=5, help="runs per tool, median shown (5)")
    parser.add_argument("--clients", type=positive_int, default=100, help="clients per seat (100)")
    parser.add_argument("--resources", type=positive_int, default=16, help="seats raced (16)")
    parser.add_argument("--timeout", type=positive_float, default=10.0, help="seconds per request (10)")
    parser.add_argument("--seed", type=int, default=1, help="engine race seed, +1 per race (1)")
    parser.add_argument(
        "--tools", type=_tool_list, default=list(TOOL_NAMES), help=f"subset of {','.join(TOOL_NAMES)}"
    )
    parser.add_argument(
        "--window-ms", type=positive_float, default=1.0, help="unsafe strategy's check-to-act window (1)"
    )
    parser.add_argument("--no-unsafe", action="store_true", help="skip the runs against the unsafe strategy")
    parser.add_argument("--no-install", action="store_true", help="never install hey or Locust")
    parser.add_argument(
        "--locust-python",
        type=Path,
        default=None,
        help="an interpreter that has Locust (default: this one if it has Locust, else --locust-venv)",
    )
    parser.add_argument(
        "--locust-venv",
        type=Path,
        default=DEFAULT_LOCUST_VENV,
        help=f"virtualenv created for Locust when needed (default: {DEFAULT_LOCUST_VENV})",
    )
    add_limits(parser, limit="run", limit_s=120.0, budget_s=1800.0, what="tool run", install=True)
    add_smoke(parser)
    return parser


# -- what one run measured -----------------------------------------------------------------


class Sample(NamedTuple):
    """One request as a peer tool saw it; times are ``perf_counter_ns`` (or hey's offsets)."""

    seat: int
    status: int
    """0: no response (transport error or timeout)."""
    start_ns: int
    end_ns: int
    arrival_ns: int = 0
    """The service's ``X-Arrival-Ns``, 0 when the tool cannot read headers."""
    sent_ns: int = 0
    """The tool's own stamp of when the request was on the wire, 0 when it has none."""


@dataclass
class Run:
    """One tool's pass over the seed scenario, reduced to what the tables show."""

    tool: str
    wall_s: float
    requests: int
    statuses: Counter[int]
    transport_errors: int
    latencies_ns: list[int]
    wins_by_seat: dict[int, int]
    """2xx responses per seat (keyed by seat or by its index)."""
    server_spreads: list[int] | None
    client_spreads: list[int] | None = None
    load1: float = math.nan
    cpu_s: float = math.nan
    """Client CPU (user + system) of the run: this process, plus the tool's own processes."""
    gc_collections: tuple[int, ...] = ()
    """Collections per GC generation during the run (in-process tools)."""

    @property
    def successes(self) -> int:
        return sum(count for status, count in self.statuses.items() if 200 <= status < 300)

    @property
    def fivexx(self) -> int:
        return count_5xx(self.statuses)

    @property
    def rps(self) -> float:
        return self.requests / self.wall_s if self.wall_s > 0 else math.nan

    def latency_ms(self, pct: float) -> float:
        data = sorted(self.latencies_ns)
        return percentile(data, pct) / NS_PER_MS if data else math.nan

    def server_spread_ms(self) -> float:
        return _median_ms(self.server_spreads)

    def client_spread_ms(self) -> float:
        return _median_ms(self.client_spreads)


def _median_ms(values: list[int] | None) -> float:
    return statistics.median(values) / NS_PER_MS if values else math.nan


def _spreads(pairs: Iterable[tuple[int, int]]) -> list[int] | None:
    """Per seat, last minus first stamp; None when no stamp was taken (stamps of 0 are skipped)."""
    groups: dict[int, list[int]] = {}
    for seat, stamp in pairs:
        if stamp:
            groups.setdefault(seat, []).append(stamp)
    spreads = [max(v) - min(v) for v in groups.values() if len(v) > 1]
    return spreads or None


def run_from_samples(tool: str, samples: Sequence[Sample], wall_s: float, expected: int) -> Run:
    answered = [s for s in samples if s.status]
    statuses = Counter(s.status for s in answered)
    wins: Counter[int] = Counter(s.seat for s in answered if 200 <= s.status < 300)
    return Run(
        tool=tool,
        wall_s=wall_s,
        requests=expected,
        statuses=statuses,
        transport_errors=expected - len(answered),
        latencies_ns=[s.end_ns - s.start_ns for s in answered],
        wins_by_seat=dict(wins),
        server_spreads=_spreads((s.seat, s.arrival_ns) for s in answered),
        client_spreads=_spreads((s.seat, s.sent_ns) for s in answered),
    )


class ToolUnavailableError(RuntimeError):
    """The tool is not installed and could not be installed; the message says why."""


class RunFailedError(RuntimeError):
    """One run of a tool did not produce results (crash, time limit); the message says why."""


@dataclass
class Scenario:
    url: str
    seats: tuple[int, ...]
    clients: int
    timeout: float
    limit_s: float

    @property
    def requests(self) -> int:
        return len(self.seats) * self.clients


# -- this plugin's engine ------------------------------------------------------------------


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


# -- hey -----------------------------------------------------------------------------------


def _run_bounded(command: Sequence[str], limit_s: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # fixed argument lists, no shell
            list(command), capture_output=True, text=True, timeout=limit_s, check=False, **kwargs
        )
    except subprocess.TimeoutExpired:
        raise RunFailedError(f"{command[0]} still running after {limit_s:.0f}s") from None


def ensure_hey(install: bool, limit_s: float) -> str:
    """The ``hey`` binary, installed from Debian's package when missing and we are root."""
    found = shutil.which("hey")
    if found:
        return found
    if not install:
        raise ToolUnavailableError("hey not installed (--no-install)")
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ToolUnavailableError("hey not installed; install it with: apt-get install hey (needs root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    stderr("installing hey: apt-get update && apt-get install -y hey")
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "hey"]):
        try:
            done = _run_bounded(command, limit_s, env=env)
        except RunFailedError as exc:
            raise ToolUnavailableError(f"{' '.join(command)}: {exc}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ToolUnavailableError(f"{' '.join(command)} failed ({done.returncode}): {tail[0]}")
    found = shutil.which("hey")
    if not found:
        raise ToolUnavailableError("apt-get installed hey but it is not on PATH")
    return found


@dataclass
class HeyTool:
    binary: str
    name: str = "hey"

    def run(self, sc: Scenario) -> Run:
        samples: list[Sample] = []
        wall = 0.0
        seconds = str(max(1, math.ceil(sc.timeout)))
        for seat in sc.seats:
            body = json.dumps({"seats": [seat], "user": f"hey-{seat}"})
            command = [self.binary, "-c", str(sc.clients), "-n", str(sc.clients), "-t", seconds]
            command += ["-m", "POST", "-T", "application/json", "-d", body, "-o", "csv", sc.url + "/orders"]
            started = time.perf_counter()
            done = _run_bounded(command, sc.limit_s)
            wall += time.perf_counter() - started
            if done.returncode != 0:
                raise RunFailedError(f"hey exited {done.returncode}: {done.stderr.strip()[-300:]}")
            samples += parse_hey_csv(done.stdout, seat)
        return run_from_samples(self.name, samples, wall, sc.requests)


def parse_hey_csv(text: str, seat: int) -> list[Sample]:
    """hey's ``-o csv`` rows (answered requests only; errors are left out) as samples.

    Columns: response-time, DNS+dialup, DNS, Request-write, Response-delay, Response-read,
    status-code, offset (seconds since hey started, when the request began). "Sent" is
    offset + DNS+dialup + Request-write: hey's own estimate of when the request was on the wire.
    """
    rows = csv.DictReader(io.StringIO(text))
    samples = []
    for row in rows:
        try:
            total = float(row["response-time"])
            offset = float(row["offset"])
            sent = offset + float(row["DNS+dialup"]) + float(row["Request-write"])
            status = int(row["status-code"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RunFailedError(f"unexpected hey CSV row {row!r}: {exc}") from None
        start_ns = round(offset * 1e9)
        samples.append(Sample(seat, status, start_ns, start_ns + round(total * 1e9), 0, round(sent * 1e9)))
    return samples


# -- Locust --------------------------------------------------------------------------------


def _has_locust(python: str, limit_s: float) -> bool:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('locust') is None)"
    try:
        return _run_bounded([python, "-c", probe], limit_s).returncode == 0
    except (RunFailedError, OSError):
        return False


def ensure_locust(args: argparse.Namespace) -> str:
    """An interpreter that can run Locust: given, this one, or a virtualenv we pip-install it into."""
    limit = args.install_limit_s
    if args.locust_python is not None:
        if _has_locust(str(args.locust_python), limit):
            return str(args.locust_python)
        raise ToolUnavailableError(f"--locust-python {args.locust_python} cannot import locust")
    if importlib.util.find_spec("locust") is not None:  # found, not imported: gevent would patch us
        return sys.executable
    venv: Path = args.locust_venv
    python = venv / "bin" / "python"
    if python.exists() and _has_locust(str(python), limit):
        return str(python)
    if args.no_install:
        raise ToolUnavailableError("Locust not installed (--no-install)")
    stderr(f"installing Locust into {venv}: python -m venv, pip install locust")
    steps = [[sys.executable, "-m", "venv", str(venv)], [str(python), "-m", "pip", "install", "-q", "locust"]]
    for command in steps:
        try:
            done = _run_bounded(command, limit)
        except (RunFailedError, OSError) as exc:
            raise ToolUnavailableError(f"{' '.join(command)}: {exc}") from None
        if done.returncode != 0:
            lines = [ln for ln in (done.stderr or done.stdout).splitlines() if "WARNING" not in ln]
            raise ToolUnavailableError(
                f"{' '.join(command)} failed ({done.returncode}): {(lines or ['no output'])[-1]}"
            )
    if not _has_locust(str(python), limit):
        raise ToolUnavailableError(f"pip installed locust into {venv} but it does not import")
    return str(python)


@dataclass
class LocustTool:
    python: str
    mode: str
    name: str

    def run(self, sc: Scenario) -> Run:
        with tempfile.TemporaryDirectory(prefix="seatrace-locust-") as tmp:
            out = Path(tmp) / "records.json"
            env = {
                **os.environ,
                "SEATRACE_SEATS": str(len(sc.seats)),
                "SEATRACE_CLIENTS": str(sc.clients),
                "SEATRACE_MODE": self.mode,
                "SEATRACE_OUT": str(out),
                "SEATRACE_TIMEOUT": repr(sc.timeout),
            }
            run_time = max(10, math.ceil(sc.limit_s))
            command = [
                self.python, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
                "-u", str(sc.clients), "-r", str(min(sc.clients, 100)), "--host", sc.url,
                "--run-time", f"{run_time}s", "--stop-timeout", "5",
                "--only-summary", "--loglevel", "WARNING",
            ]  # fmt: skip
            done = _run_bounded(command, run_time + 30, env=env, cwd=tmp)
            if not out.exists():
                tail = "\n".join((done.stderr + done.stdout).strip().splitlines()[-8:])
                raise RunFailedError(f"Locust wrote no records (exit {done.returncode}):\n{tail}")
            data = json.loads(out.read_text(encoding="utf-8"))
        records: list[list[Any]] = data["records"]
        samples = [Sample(r[0], r[2], r[3], r[4], r[5]) for r in records]
        if not samples:
            raise RunFailedError("Locust recorded no requests")
        releases: list[int] = data["releases"]
        first = releases[0] if releases else min(s.start_ns for s in samples)
        wall = (max(s.end_ns for s in samples) - first) / 1e9
        return run_from_samples(self.name, samples, wall, sc.requests)


# -- httpx, naively ------------------------------------------------------------------------


@dataclass
class HttpxTool:
    name: str = "httpx-event"

    def run(self, sc: Scenario) -> Run:
        async def bounded() -> tuple[list[Sample], float]:
            return await asyncio.wait_for(httpx_gather(sc), sc.limit_s)

        try:
            samples, wall = asyncio.run(bounded())
        except (TimeoutError, asyncio.TimeoutError):  # distinct classes before Python 3.11
            raise RunFailedError(f"not finished after {sc.limit_s:.0f}s") from None
        return run_from_samples(self.name, samples, wall, sc.requests)


async def httpx_gather(sc: Scenario) -> tuple[list[Sample], float]:
    """Per seat: one ``AsyncClient`` (default pool: 100 connections), every request waiting on
    one ``asyncio.Event``, set once all are waiting, then ``asyncio.gather``."""
    samples: list[Sample] = []

    async def one(client: httpx.AsyncClient, go: asyncio.Event, seat: int, who: int) -> None:
        await go.wait()
        start = time.perf_counter_ns()
        try:
            response = await client.post("/orders", json={"seats": [seat], "user": f"vu-{who}"})
        except httpx.HTTPError:
            samples.append(Sample(seat, 0, start, time.perf_counter_ns()))
            return
        arrival = response.headers.get("x-arrival-ns", "")
        end = time.perf_counter_ns()
        samples.append(
            Sample(seat, response.status_code, start, end, int(arrival) if arrival.isdigit() else 0)
        )

    started = time.perf_counter()
    for seat in sc.seats:
        async with httpx.AsyncClient(base_url=sc.url, timeout=sc.timeout, trust_env=False) as client:
            go = asyncio.Event()
            tasks = [asyncio.create_task(one(client, go, seat, who)) for who in range(1, sc.clients + 1)]
            await asyncio.sleep(0)  # every task runs up to go.wait()
            go.set()
            await asyncio.gather(*tasks)
    return samples, time.perf_counter() - started


# -- the benchmark -------------------------------------------------------------------------


class Tool(Protocol):
    """What every tool above offers: a name for the tables and one pass over the scenario."""

    @property
    def name(self) -> str: ...

    def run(self, sc: Scenario) -> Run: ...


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
            stderr(f"{name} skipped: {exc}")
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
    svc: ServiceHandle, tools: Sequence[Tool], args: argparse.Namespace, budget: Budget
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
                raise BudgetExceededError(f"time budget of {budget.seconds:g}s used up")
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
                stderr(f"{tool.name} run {rep + 1} failed: {exc}")
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


SUMMARY_HEADERS = (
    "tool",
    "runs",
    "wall s",
    "req/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "errors/5xx",
    "successes",
    "server spread med ms",
    "server spread max ms",
    "client spread med ms",
    "client CPU µs/req",
    "unsafe (window) caught",
)
RUN_HEADERS = (
    "tool",
    "repeat",
    "wall s",
    "req/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "errors/5xx",
    "successes",
    "server spread med ms",
    "client CPU s",
    "load 1m",
)


@dataclass
class Check:
    what: str
    met: bool | None
    """None: could not be evaluated."""

    def line(self) -> str:
        verdict = {True: "MET", False: "NOT MET", None: "NOT EVALUATED"}[self.met]
        return f"target: {self.what}: {verdict}"


def targets(stats: dict[str, ToolStats], resources: int) -> list[Check]:
    lb = stats.get(LAST_BYTE)
    if lb is None or not lb.runs:
        return [Check(f"{LAST_BYTE} ran (needed for every target)", None)]
    runs = lb.runs
    wall = nan_median(r.wall_s for r in runs)
    p95 = nan_median(r.latency_ms(95) for r in runs)
    spread = nan_median(r.server_spread_ms() for r in runs)
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
        lspread = nan_median(r.server_spread_ms() for r in locust.runs)
        checks.append(
            Check(f"wall {wall:.3f} s < Locust-with-barrier {lwall:.3f} s", wall < lwall),
        )
        checks.append(
            Check(
                f"server spread per seat {spread:.2f} ms <= Locust-with-barrier {lspread:.2f} ms",
                spread <= lspread if not (math.isnan(spread) or math.isnan(lspread)) else None,
            )
        )
    return checks


FIRST_RACE = """
import sys, time
sys.path.insert(0, sys.argv[1])
from _common import run_one_race, seed_config
imported_ns = time.perf_counter_ns()
seats, clients = int(sys.argv[3]), int(sys.argv[4])
config = seed_config(resources=seats, clients=clients, sync="last-byte", seed=1, timeout=10.0)
result, _ = run_one_race(sys.argv[2], config, name="first-race", limit_s=60.0)
ends = [rec.end_ns for rec in result.history if rec.status]
print(imported_ns, min(ends), max(ends), result.wins)
"""


def first_race(svc: ServiceHandle, args: argparse.Namespace) -> list[Any]:
    """The seed race in a fresh interpreter: process start to imports done, to the first and the
    last response (``perf_counter_ns`` is CLOCK_MONOTONIC, shared by processes on one host)."""
    started = time.perf_counter_ns()
    done = _run_bounded(
        [sys.executable, "-c", FIRST_RACE, str(HERE), svc.url, str(args.resources), str(args.clients)],
        args.run_limit_s + 30,
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
    apply_smoke(args, **smoke, run_limit_s=30.0, install_limit_s=30.0, budget_s=90.0)
    budget = Budget(args.budget_s)
    notes: list[str] = []
    load_before = load_note()
    print_header(
        f"seed scenario: {args.clients} clients x {args.resources} seats (POST /orders), "
        f"safe sample service, median of {args.repeat}; unsafe window {args.window_ms:g} ms"
        + (" (--smoke)" if args.smoke else "")
    )
    tools = build_tools(args, notes)
    if not tools:
        stderr("no tool could run")
        return EXIT_INCOMPLETE
    try:
        with start_sample_service(strategy="safe", seats=args.resources) as svc:
            stats, rows = run_safe(svc, tools, args, budget)
            first = first_race(svc, args) if LAST_BYTE in args.tools else None
        if not args.no_unsafe:
            with start_sample_service(
                strategy="unsafe", seats=args.resources, window_ms=args.window_ms
            ) as svc:
                run_unsafe(svc, tools, stats, args)
    except (BudgetExceededError, TimeoutError, RunFailedError, ServiceError, OSError) as exc:
        stderr(f"incomplete: {type(exc).__name__}: {exc}")
        return EXIT_INCOMPLETE

    print_table(rows, RUN_HEADERS, "Every run (errors = transport errors and timeouts)")
    headers = list(SUMMARY_HEADERS)
    headers[-1] = f"unsafe ({args.window_ms:g} ms) caught"
    print_table(
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
        print_table(
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
    for note in notes:
        print(f"note: {note}")
    print(f"load before: {load_before}")
    print(f"load after:  {load_note()}")
    print()
    if args.smoke:
        print(SMOKE_VERDICT)
        return EXIT_OK
    checks = targets(stats, args.resources)
    for check in checks:
        print(check.line())
    print(f"total wall time {budget.elapsed():.1f}s")
    if any(c.met is False for c in checks):
        return EXIT_BELOW_TARGET
    if any(c.met is None for c in checks):
        return EXIT_INCOMPLETE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
