"""The linearizability checker against its targets: Porcupine's histories with known verdicts,
race-shaped histories (one wave of clients on one seat), and peak memory (docs/benchmarks.md)."""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks import BENCHMARKS, cli
from pytest_seatrace.history import Operation, Verdict, check, read_edn, read_jepsen_log
from pytest_seatrace.models import CasRegister, KeyValue, Model, Seats

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "porcupine"
TIMEOUT_S = 60.0
"""Per history: a check that runs out is unknown, which counts as a wrong verdict."""


@dataclass
class Row:
    case: str
    measured: str
    target: str
    met: bool | None  # None: no target (reported only)


def porcupine(names: Sequence[str]) -> tuple[int, int, float, float, str]:
    """(right, total, seconds in all, slowest seconds, slowest name) over Porcupine's files."""
    verdicts = dict(
        line.split() for line in (DATA / "verdicts.txt").read_text().splitlines() if line[:1] != "#"
    )
    right, total, slowest, slowest_name = 0, 0.0, 0.0, ""
    for name in names:
        text = (DATA / name).read_text()
        etcd = name.startswith("jepsen/")
        ops = read_jepsen_log(text) if etcd else read_edn(text)
        model: Model = CasRegister() if etcd else KeyValue()
        started = time.perf_counter()
        verdict = check(ops, model, timeout=TIMEOUT_S)
        took = time.perf_counter() - started
        right += verdict.valid is (verdicts[name] == "linearizable")
        total += took
        if took > slowest:
            slowest, slowest_name = took, name
    return right, len(names), total, slowest, slowest_name


GO_TESTS = r"^(TestEtcdJepsen[0-9]+|TestKv(1Client|10Clients|50Clients)(Ok|Bad))$"
"""Porcupine's tests over the same files: the etcd set, and the key-value set partitioned by key."""


def porcupine_go(checkout: Path) -> dict[str, float] | None:
    """Seconds per test of Porcupine's own run (``go test -v``, offline), or None without Go."""
    go = shutil.which("go")
    if go is None or not (checkout / "porcupine_test.go").is_file():
        return None
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOPROXY": "off"}
    done = subprocess.run(
        [go, "test", "-count=1", "-v", "-run", GO_TESTS, "."],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )
    times = {m[0]: float(m[1]) for m in re.findall(r"^--- PASS: (\w+) \(([\d.]+)s\)", done.stdout, re.M)}
    return times if done.returncode == 0 and len(times) == 108 else None


def bookings(winners: int, instants: list[tuple[float, float]]) -> list[Operation]:
    """One seat booked by a client per (call, return); the first ``winners`` are told they won."""
    return [
        Operation(
            n, "book", None, "ok" if n < winners else "fail", None, call, ret, (0, "seat-1"), "POST /orders"
        )
        for n, (call, ret) in enumerate(instants)
    ]


def race(clients: int, winners: int) -> list[Operation]:
    """One wave: every client calls within 2 ms of the release, before any returns."""
    spread = [
        (0.002 * (n % 97) / 97, 0.003 + 0.05 * ((n * 7919) % clients) / clients) for n in range(clients)
    ]
    return bookings(winners, spread)


def staggered(clients: int, winners: int) -> list[Operation]:
    """Not one wave: calls spread over 5 ms, the first responses back 1 ms after their call, so
    the general search (which operations may go next changes as they return) decides it."""
    calls = [0.005 * n / clients for n in range(clients)]
    return bookings(
        winners, [(c, c + 0.001 + 0.02 * ((n * 7919) % clients) / clients) for n, c in enumerate(calls)]
    )


def timed(make: Callable[[], list[Operation]], reps: int) -> tuple[float, Verdict]:
    """Median seconds of ``reps`` fresh checks (the history built outside the clock)."""
    times, verdict = [], None
    for _ in range(reps):
        ops = make()
        started = time.perf_counter()
        verdict = check(ops, Seats(), timeout=TIMEOUT_S)
        times.append(time.perf_counter() - started)
    assert verdict is not None
    return statistics.median(times), verdict


def peak_memory(ops: int) -> float:
    """Peak MiB traced while checking a one-wave race of ``ops`` bookings with a double booking
    (the search goes deepest there)."""
    history = race(ops, 2)
    tracemalloc.start()
    check(history, Seats(), timeout=TIMEOUT_S)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def rows(smoke: bool, go: dict[str, float] | None) -> list[Row]:
    etcd = sorted(p.relative_to(DATA).as_posix() for p in (DATA / "jepsen").glob("*.log"))
    kv = [f"kv/c{n}-{v}.txt" for n in ("01", "10", "50") for v in ("ok", "bad")]
    if smoke:
        etcd, kv = etcd[:3], kv[:2]
    out = []
    whole = 0.0
    for label, names in (("Porcupine etcd (CAS register)", etcd), ("Porcupine key-value", kv)):
        right, total, took, slowest, slowest_name = porcupine(names)
        whole += took
        out.append(Row(f"{label}: verdicts", f"{right}/{total}", f"{total}/{total}", right == total))
        out.append(Row(f"{label}: total", f"{took:.2f} s", "reported", None))
        out.append(Row(f"{label}: slowest ({slowest_name})", f"{slowest:.2f} s", "≤ 10 s", slowest <= 10))
        if go is not None:
            theirs = sum(
                t for test, t in go.items() if test.startswith("TestEtcd" if "etcd" in label else "TestKv")
            )
            ratio = took / max(theirs, 0.01)
            out.append(
                Row(
                    f"{label}: Porcupine (Go), same run",
                    f"{theirs:.2f} s; ours {ratio:.1f}×",
                    "≤ 20×",
                    ratio <= 20,
                )
            )
    measured = "" if go is not None else " (Porcupine not run: give --porcupine DIR with Go installed)"
    out.append(Row("Porcupine, whole set", f"{whole:.2f} s", "≤ 30 s" + measured, whole <= 30))
    sizes = [(100, 1, 0.005, 9), (100, 2, 0.050, 9)] + (
        [] if smoke else [(1000, 1, 1.0, 3), (1000, 2, 1.0, 3)]
    )
    for shape, make in (("one wave", race), ("staggered, not one wave", staggered)):
        for clients, winners, limit, reps in sizes:
            seconds, verdict = timed(functools.partial(make, clients, winners), reps)
            expected = winners == 1
            right = verdict.valid is expected
            what = "correct" if expected else "double booking"
            held = make is race  # the targets are for one wave; the other shape is reported
            out.append(
                Row(
                    f"{shape}, {clients} clients, {what}",
                    f"{seconds * 1000:.1f} ms, {'right' if right else 'WRONG'} verdict",
                    f"≤ {limit * 1000:g} ms" if held else "reported",
                    (right and seconds <= limit) if held else (None if right else False),
                )
            )
    out += [
        Row(f"peak memory, {ops} operations", f"{peak_memory(ops):.2f} MiB", "reported", None)
        for ops in ((100,) if smoke else (100, 1000, 10000))
    ]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    made = argparse.ArgumentParser(prog="python -m benchmarks history", description=BENCHMARKS["history"])
    made.add_argument("--smoke", action="store_true", help="toy sizes, no targets (exit 0 when it ran)")
    made.add_argument(
        "--porcupine", type=Path, metavar="DIR", help="a Porcupine checkout: time its own tests (needs Go)"
    )
    args = made.parse_args(argv)
    go = porcupine_go(args.porcupine) if args.porcupine and not args.smoke else None
    if args.porcupine and not args.smoke and go is None:
        cli.stderr(f"--porcupine {args.porcupine}: no Go, not a Porcupine checkout, or its tests failed")
        return cli.EXIT_INCOMPLETE
    cli.print_header(
        "history: the linearizability checker on Porcupine's histories and on race-shaped ones "
        "(no service: the checker alone, in this process)",
        smoke=args.smoke,
        shared=False,
    )
    table = rows(args.smoke, go)
    verdicts = [
        (r.case, r.measured, r.target, "-" if r.met is None else "MET" if r.met else "NOT MET") for r in table
    ]
    cli.print_table(verdicts, ("case", "measured", "target", "verdict"))
    if args.smoke:
        wrong = [r.case for r in table if "verdict" in r.measured and "WRONG" in r.measured]
        wrong += [r.case for r in table if r.case.endswith("verdicts") and not r.met]
        print(cli.SMOKE_VERDICT)
        return cli.EXIT_BELOW_TARGET if wrong else cli.EXIT_OK
    missed = [r.case for r in table if r.met is False]
    if missed:
        print("NOT MET: " + "; ".join(missed))
        return cli.EXIT_BELOW_TARGET
    print("every target MET")
    return cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
