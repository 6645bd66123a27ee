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


def test_the_wheel_packages_the_history_and_not_its_test_data() -> None:
    pyproject = (PACKAGE.parent / "pyproject.toml").read_text()
    packages = re.search(r"^packages = \[(.*)\]$", pyproject, re.MULTILINE)
    assert packages is not None
    assert '"pytest_seatrace.history"' in packages.group(1)
    assert "tests" not in packages.group(1)
    assert "porcupine" not in pyproject
