"""Every benchmark runs in ``--smoke`` mode (toy sizes, no targets), so none can rot unnoticed.

Each runs as its users run it, ``python -m benchmarks NAME --smoke``, in a subprocess with a
time bound; it must exit 0, print its table's header row and say that client and server share
the cores. The benchmarks reach the engine only through its instrumentation surface.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import BENCHMARKS

ROOT = Path(__file__).resolve().parent.parent
SMOKE_LIMIT_S = 180
"""A smoke run takes a few seconds; the bound only stops a hung one."""

HEADERS = {
    "start_spread": "| mode ",
    "detection": "| window ms ",
    "throughput": "| tool ",
    "seed_scenario": "| tool ",
    "scale": "| seats ",
    "single_packet": "| start ",
    "single_datagram": "| start ",
    "shards": "| scenario ",
    "history": "| case ",
    "model_cost": "| pair ",
}

ROWS = {
    "start_spread": ("| racer/headers ", "| racer/body "),
    "detection": ("| racer/headers ", "| racer/body "),
    "single_packet": ("| single-packet ", "| last-byte/headers ", "| last-byte/body "),
    "single_datagram": (
        "| single-datagram ",
        "| single-packet ",
        "| last-byte/headers ",
        "| last-byte/body ",
    ),
}
"""Rows a smoke run must print too: the baselines a target is held against, every start."""

ALLOWED = {
    "pytest_seatrace.engine.instrument": None,
    "pytest_seatrace.history": None,  # public API, as users import it
    "pytest_seatrace.models": None,
    "pytest_seatrace.service": "services.py",
    "tests.nginx": "services.py",  # test support, reached from the root by python -m benchmarks
    "tests.http3_service": "services.py",
    "pytest_seatrace.options": "cli.py",
}
"""What of the project a benchmark module may import, and the one module allowed (None: any)."""


def run_benchmarks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SMOKE_LIMIT_S,
        check=False,
    )


@pytest.mark.parametrize("name", sorted(HEADERS))
def test_benchmark_smoke_runs(name: str) -> None:
    done = run_benchmarks(name, "--smoke")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith(HEADERS[name]) for line in lines), done.stdout[-3000:]
    assert "targets not evaluated" in done.stdout
    assert (
        "no server: this process alone" if name == "history" else "client and server share this machine's"
    ) in (done.stdout)
    for row in ROWS.get(name, ()):
        assert any(row in line for line in lines), f"no {row!r} row:\n{done.stdout[-3000:]}"
    if name == "single_packet":  # the instrumentation surface observed every start's gate write
        cells = [line.split("|") for line in lines if line.startswith(ROWS[name])]
        gate_writes = [row[5].strip() for row in cells if row[2].strip() in ("h2c", "tls")]
        assert gate_writes, done.stdout[-3000:]
        assert all(float(cell) > 0 for cell in gate_writes), gate_writes


def test_every_benchmark_is_listed_and_smoked() -> None:
    """A new scenario module is listed by ``python -m benchmarks`` and gets a smoke run."""
    done = run_benchmarks()
    assert done.returncode == 0, done.stderr
    for name, purpose in BENCHMARKS.items():
        assert f"  {name}  " in done.stdout
        assert purpose in done.stdout
    scenarios = {
        path.stem
        for path in (ROOT / "benchmarks").glob("*.py")
        if "\ndef main(" in path.read_text(encoding="utf-8") and path.stem != "__main__"
    }
    assert scenarios == set(BENCHMARKS) == set(HEADERS)


def test_an_unknown_benchmark_is_refused_with_the_list() -> None:
    done = run_benchmarks("nope", "--smoke")
    assert done.returncode == 2
    assert "no benchmark 'nope'" in done.stderr
    assert "start_spread" in done.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks").glob("*.py")), ids=lambda p: p.name)
def test_benchmarks_reach_the_project_through_one_door_each(path: Path) -> None:
    """The engine only through ``pytest_seatrace.engine.instrument``; services only in
    ``services.py``, so a move inside the engine or of the nginx launcher is fixed in one place."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = list(ast.walk(tree))
    imported = {node.module for node in nodes if isinstance(node, ast.ImportFrom) and node.module}
    imported |= {alias.name for node in nodes if isinstance(node, ast.Import) for alias in node.names}
    ours = {name for name in imported if name.split(".")[0] in ("pytest_seatrace", "sample_service", "tests")}
    wrong = sorted(name for name in ours if name not in ALLOWED or ALLOWED[name] not in (None, path.name))
    assert not wrong, f"{path.name} imports {wrong}"
