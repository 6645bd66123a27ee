"""The layout's promises: the engine and the sample service run without pytest."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("pytest_seatrace.engine", ("pytest", "_pytest")),
        ("pytest_seatrace.core.result", ("pytest", "_pytest")),
        ("pytest_seatrace.report.files", ("pytest", "_pytest")),
        ("sample_service.__main__", ("pytest", "_pytest", "pytest_seatrace")),
    ],
)
def test_module_imports_without(module: str, forbidden: tuple[str, ...]) -> None:
    code = (
        f"import sys, {module}\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {forbidden!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == ""


def test_plugin_imports_heavy_libraries_lazily() -> None:
    """Loading the plugin (every pytest run) must not pay for the engine's libraries."""
    heavy = ("tabulate", "uvicorn", "starlette", "httpx", "httpcore", "h11", "anyio")
    code = f"import sys, pytest_seatrace.plugin\nprint(','.join(m for m in {heavy!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == ""
