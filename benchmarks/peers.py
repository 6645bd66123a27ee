"""The seed race by other tools (hey, Locust, naive httpx), each reduced to the same ``Run``."""

from __future__ import annotations

import argparse
import asyncio
import csv
import importlib.util
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import httpx

from benchmarks.cli import stderr
from benchmarks.figures import NS_PER_MS, count_5xx
from benchmarks.programs import RunFailedError, ToolUnavailableError, run_bounded
from pytest_seatrace.engine.instrument import percentile

LOCUSTFILE = Path(__file__).resolve().parent / "locustfile_seed.py"
DEFAULT_LOCUST_VENV = Path(os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache"))) / (
    "pytest-seatrace/locust-venv"
)


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


_Work = TypeVar("_Work", contravariant=True)
_Ran = TypeVar("_Ran", covariant=True)


class Tool(Protocol[_Work, _Ran]):
    """What every tool offers: a name for the tables and one pass over a workload (the seed
    scenario's ``Scenario``, throughput's ``Load``)."""

    @property
    def name(self) -> str: ...

    def run(self, work: _Work, /) -> _Ran: ...


@dataclass
class HeyTool:
    binary: str
    name: str = "hey"

    def run(self, sc: Scenario) -> Run:
        samples: list[Sample] = []
        wall = 0.0
        for seat in sc.seats:
            body = json.dumps({"seats": [seat], "user": f"hey-{seat}"})
            started = time.perf_counter()
            csv_text = run_hey(
                self.binary, sc.url, sc.clients, sc.clients, body, timeout=sc.timeout, limit_s=sc.limit_s
            )
            wall += time.perf_counter() - started
            samples += parse_hey_csv(csv_text, seat)
        return run_from_samples(self.name, samples, wall, sc.requests)


def run_hey(
    binary: str, url: str, clients: int, requests: int, body: str, *, timeout: float, limit_s: float
) -> str:
    """hey POSTing ``body`` to ``url/orders``, ``clients`` at a time, ``requests`` in all; its
    ``-o csv`` output (``parse_hey_csv``)."""
    seconds = str(max(1, math.ceil(timeout)))
    command = [binary, "-c", str(clients), "-n", str(requests), "-t", seconds]
    command += ["-m", "POST", "-T", "application/json", "-d", body, "-o", "csv", url + "/orders"]
    done = run_bounded(command, limit_s)
    if done.returncode != 0:
        raise RunFailedError(f"hey exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return done.stdout


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
        return run_bounded([python, "-c", probe], limit_s).returncode == 0
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
            done = run_bounded(command, limit)
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
            done = run_bounded(command, run_time + 30, env=env, cwd=tmp)
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
