"""The history package stands alone: standard library only, no pytest, no engine, no core, so it can be
used (and run as ``python -m pytest_seatrace.history``) without the plugin."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_seatrace"
MODULES = [*sorted((PACKAGE / "history").glob("*.py")), PACKAGE / "models.py"]


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_imports_only_the_standard_library_and_the_history_package(path: Path) -> None:
    for name in imported(path):
        top = name.split(".")[0]
        assert name.startswith("pytest_seatrace.history") or top in sys.stdlib_module_names, (
            f"{path.name} imports {name}"
        )


def test_the_package_loads_no_pytest_and_no_http_library() -> None:
    code = (
        "import sys, pytest_seatrace.history, pytest_seatrace.models; "
        "print(sorted(m for m in ('pytest', 'httpx', 'anyio', 'h11') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_wheel_packages_every_package_and_no_test_data() -> None:
    """pyproject's package search finds every package of ours (history and engine/shards
    included) and nothing of tests/ (Porcupine's data stays out of the wheel)."""
    from setuptools import find_packages  # type: ignore[import-untyped]

    root = PACKAGE.parent
    section = (root / "pyproject.toml").read_text().split("[tool.setuptools.packages.find]")[1]
    include = re.search(r"^include = \[(.*)\]$", section, re.MULTILINE)
    assert include is not None
    found = set(find_packages(where=str(root), include=re.findall(r'"([^"]+)"', include.group(1))))
    ours = {
        ".".join(path.parent.relative_to(root).parts)
        for top in ("pytest_seatrace", "sample_service")
        for path in (root / top).rglob("__init__.py")
    }
    assert {"pytest_seatrace.history", "pytest_seatrace.engine.shards", "pytest_seatrace.report.html"} <= ours
    assert found == ours
    assert not any(name.startswith("tests") for name in found)
