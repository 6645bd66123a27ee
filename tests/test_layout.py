"""The layout's promises: layers with one-way arrows, an engine and a core without pytest."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_seatrace"


def modules_of(layer: str) -> list[str]:
    return sorted(
        "pytest_seatrace."
        + ".".join(path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        for path in (PACKAGE / layer).glob("*.py")
    )


def runtime_imports(path: Path) -> set[str]:
    """Modules a file imports when it runs: imports under ``if TYPE_CHECKING:`` are for mypy only."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for child in node.body for n in ast.walk(child))
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_every_core_and_engine_module_imports_without_pytest() -> None:
    """Each module, not just the package (``engine/__init__`` loads the rest lazily)."""
    modules = modules_of("core") + modules_of("engine")
    assert "pytest_seatrace.engine.lastbyte" in modules
    assert "pytest_seatrace.core.judge" in modules
    code = (
        f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
        "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('pytest', '_pytest'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == ""


CORE_FORBIDDEN = ("pytest", "_pytest", "anyio", "httpx", "httpcore", "h11", "h2", "socket", "ssl")


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").glob("*.py")), ids=lambda p: p.name)
def test_core_imports_no_io_and_no_other_layer(path: Path) -> None:
    bad = sorted(
        name
        for name in runtime_imports(path)
        if name.split(".")[0] in CORE_FORBIDDEN
        or (name.startswith("pytest_seatrace.") and not name.startswith("pytest_seatrace.core"))
    )
    assert bad == [], f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", sorted((PACKAGE / "engine").glob("*.py")), ids=lambda p: p.name)
def test_engine_imports_only_core_and_itself(path: Path) -> None:
    ours = {name for name in runtime_imports(path) if name.split(".")[0] == "pytest_seatrace"}
    bad = sorted(n for n in ours if not n.startswith(("pytest_seatrace.core", "pytest_seatrace.engine")))
    assert bad == [], f"{path.name} imports {bad}"
    assert "pytest" not in {name.split(".")[0] for name in runtime_imports(path)}


@pytest.mark.parametrize("path", sorted((PACKAGE / "report").glob("*.py")), ids=lambda p: p.name)
def test_report_reads_documents_not_the_engine_or_the_plugin(path: Path) -> None:
    ours = {name for name in runtime_imports(path) if name.split(".")[0] == "pytest_seatrace"}
    allowed = ("pytest_seatrace.core", "pytest_seatrace.report", "pytest_seatrace.version")
    bad = sorted(n for n in ours if not n.startswith(allowed))
    assert bad == [], f"{path.name} imports {bad}"


def test_only_the_session_reads_xdist_worker_data() -> None:
    """The xdist role is chosen in one place: no other module touches workerinput/workeroutput."""
    readers = sorted(
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if "workerinput" in path.read_text(encoding="utf-8")
        or "workeroutput" in path.read_text(encoding="utf-8")
    )
    assert readers == ["session.py"]


def test_plugin_is_hooks_and_fixtures_only() -> None:
    """Every top-level function of plugin.py is a pytest hook or a fixture."""
    tree = ast.parse((PACKAGE / "plugin.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            decorators = [ast.unparse(d) for d in node.decorator_list]
            assert node.name.startswith("pytest_") or "pytest.fixture" in decorators, node.name
        assert not isinstance(node, ast.ClassDef), node.name


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


NOT_LOADED_WITHOUT_A_RACE = (
    # ours: the result, its judge, figures and documents, the engine, the reports, the version lookup
    # (importlib.metadata scanning every installed distribution), the fixture's object, the
    # sample-service runner
    "pytest_seatrace.core.result",
    "pytest_seatrace.core.judge",
    "pytest_seatrace.core.document",
    "pytest_seatrace.core.stats",
    "pytest_seatrace.core.records",
    "pytest_seatrace.engine",
    "pytest_seatrace.report",
    "pytest_seatrace.version",
    "pytest_seatrace.race",
    "pytest_seatrace.service",
    "pytest_seatrace.progress",
    # theirs, and the standard library's slower modules that only a race or a service needs
    "anyio",
    "httpx",
    "httpcore",
    "h11",
    "h2",
    "hpack",
    "httptools",
    "tabulate",
    "uvicorn",
    "starlette",
    "filelock",
    "execnet",
    "ssl",
    "http.client",
    "statistics",
)
"""What a pytest session that runs no race must not import: the cost moves to the first race."""

SESSION_WITHOUT_RACES = """
import sys, pytest
code = pytest.main([*sys.argv[1:], "-p", "pytest_seatrace.plugin", "-p", "no:cacheprovider"])
print("LOADED", ",".join(sorted(sys.modules)))
sys.exit(code)
"""


@pytest.mark.parametrize("args", [["--co", "-q"], ["-q"]], ids=["collect-only", "run"])
def test_a_session_without_races_loads_only_what_registration_needs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """Only pytest and our plugin (autoload off, so another installed plugin's imports do not
    count); the session collects, or runs, two plain tests and a marker-free fixture user."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(
        test_plain="""
        import pytest

        @pytest.fixture
        def number():
            return 2

        def test_one(number):
            assert number == 2

        def test_two():
            assert "a".upper() == "A"
        """
    )
    ours = [m for m in NOT_LOADED_WITHOUT_A_RACE if m.startswith("pytest_seatrace.")]
    assert all(importlib.util.find_spec(m) is not None for m in ours)  # a renamed module renames here
    result = pytester.run(sys.executable, "-c", SESSION_WITHOUT_RACES, *args, timeout=120)
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    out = result.stdout.str()
    assert ("2 tests collected" if "--co" in args else "2 passed") in out
    loaded = next(line for line in result.stdout.lines if line.startswith("LOADED ")).split(" ", 1)[1]
    modules = set(loaded.split(","))
    assert "pytest_seatrace.plugin" in modules
    bad = sorted(
        m for m in modules if any(m == n or m.startswith(n + ".") for n in NOT_LOADED_WITHOUT_A_RACE)
    )
    assert bad == []


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("pytest_seatrace.service", "ServiceHandle"),
        ("pytest_seatrace", "Race"),
        ("pytest_seatrace", "ServiceHandle"),
        ("pytest_seatrace", "ViolationKind"),
        ("pytest_seatrace", "RaceViolation"),
        ("pytest_seatrace", "RaceResult"),
        ("pytest_seatrace", "Record"),
    ],
)
def test_public_import_paths_work_without_warnings(path: str, name: str) -> None:
    code = (
        f"import warnings; warnings.simplefilter('error'); from {path} import {name}; print({name}.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == name


def test_violation_kind_compares_as_a_string() -> None:
    from pytest_seatrace import ViolationKind

    kind: str = ViolationKind.TOO_MANY
    assert kind == "too-many"
    assert f"{ViolationKind.DOUBLE}" == "double"
    assert str(ViolationKind.LOST) == "lost"
