"""Every benchmark runs in ``--smoke`` mode (toy sizes, no targets), so none can rot unnoticed.

Each script runs as its users run it, ``python benchmarks/<name>.py``, in a subprocess with a
time bound; it must exit 0 and print its table's header row.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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
    "shards": "| scenario ",
    "history": "| case ",
}

ROWS = {
    "start_spread": ("| racer/headers ", "| racer/body "),
    "detection": ("| racer/headers ", "| racer/body "),
}
"""Rows a smoke run must print too: the baselines a target is held against."""


@pytest.mark.parametrize("name", sorted(HEADERS))
def test_benchmark_smoke_runs(name: str) -> None:
    script = ROOT / "benchmarks" / f"{name}.py"
    done = subprocess.run(
        [sys.executable, str(script), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SMOKE_LIMIT_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert any(line.startswith(HEADERS[name]) for line in done.stdout.splitlines()), done.stdout[-3000:]
    assert "targets not evaluated" in done.stdout
    lines = done.stdout.splitlines()
    for row in ROWS.get(name, ()):
        assert any(row in line for line in lines), f"no {row!r} row:\n{done.stdout[-3000:]}"


def test_every_benchmark_is_smoked() -> None:
    """A new benchmark script gets a smoke run too."""
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_")}
    assert scripts - {"locustfile_seed"} == set(HEADERS)
