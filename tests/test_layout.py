"""The layout's promises: layers with one-way arrows and no import cycle (``TYPE_CHECKING`` imports
included), an engine and a core without pytest."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "pytest_seatrace"


def modules_of(layer: str) -> list[str]:
    return sorted(module_name(path) for path in (PACKAGE / layer).rglob("*.py"))


def imports_of(path: Path, *, typing: bool = True) -> set[str]:
    """Modules a file imports, at any depth (function-level imports too); with ``typing=False``
    only those it imports when it runs (not the ones under ``if TYPE_CHECKING:``). A name
    imported from a package that is a module of ours counts as that module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only: set[int] = set()
    if not typing:
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                typing_only.update(id(n) for child in node.body for n in ast.walk(child))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's own package up
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if module_path(sub).exists() else base)
    return found


def runtime_imports(path: Path) -> set[str]:
    """Modules a file imports when it runs: imports under ``if TYPE_CHECKING:`` are for mypy only."""
    return imports_of(path, typing=False)


def module_name(path: Path) -> str:
    return ".".join(("pytest_seatrace", *path.relative_to(PACKAGE).with_suffix("").parts)).removesuffix(
        ".__init__"
    )


def module_path(name: str) -> Path:
    """Where module ``name`` of ours lives (a path that does not exist for anything else)."""
    parts = name.split(".")
    if parts[0] != "pytest_seatrace":
        return PACKAGE / "-not-ours-"
    base = PACKAGE.joinpath(*parts[1:])
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def import_graph() -> dict[str, set[str]]:
    """Every module of the package and the modules of ours it imports, ``TYPE_CHECKING`` and
    function-level imports included: mypy and a later call follow those arrows too."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {
        name: {m for m in imports_of(path) if m in modules and m != name} for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``[]`` when it has none."""
    state: dict[str, int] = {}  # 1: on the path being walked, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (cycle := walk(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (cycle := walk(start)):
            return cycle
    return []


def test_find_cycle_names_a_cycle_and_only_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) == []
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"x": {"x"}}) == ["x", "x"]


def test_imports_of_sees_type_checking_and_function_level_imports() -> None:
    found = imports_of(PACKAGE / "core" / "errors.py")
    assert "pytest_seatrace.core.result" in found  # under TYPE_CHECKING
    assert "pytest_seatrace.core.result" not in runtime_imports(PACKAGE / "core" / "errors.py")
    assert "pytest_seatrace.engine.runner" in imports_of(PACKAGE / "engine" / "__init__.py")


def test_the_package_import_graph_has_no_cycle() -> None:
    graph = import_graph()
    assert "pytest_seatrace.core.result" in graph["pytest_seatrace.core.errors"]  # the graph is real
    cycle = find_cycle(graph)
    assert cycle == [], "import cycle: " + " -> ".join(cycle)


CORE_ORDER = (
    "document",  # the document's shapes (TypedDicts)
    "redact",
    "operations",
    "records",  # what the engine writes down, and the facts of a run
    "reasons",
    "histories",  # records as a history of operations (the checker is the history package)
    "bindings",  # how a race's model reads its requests and responses
    "history_edn",  # that history as a Jepsen EDN file (--race-history)
    "stats",
    "contention",
    "figures",  # what the records add up to
    "thresholds",  # measured on the figures
    "arguments",  # one marker or call argument checked
    "settings",  # every setting once: defaults, arguments, options
    "config",
    "precedence",  # call > marker > CLI > ini > default, and the rules between settings
    "violations",
    "linearizability",  # a model's verdicts on the histories, under one time budget
    "notes",
    "judge",  # records, figures and config in, violations out
    "history_document",  # the checked histories as document entries
    "race_document",
    "result",  # assembles the parts: RaceResult
    "errors",  # the exceptions carry a result
)
"""Left to right: each module of ``core`` imports only modules to its left (``TYPE_CHECKING``
imports too)."""


def test_core_order_keeps_the_layers_of_the_design() -> None:
    layers = ("records", "histories", "figures", "thresholds", "config", "judge", "result")
    assert [m for m in CORE_ORDER if m in layers] == list(layers)


@pytest.mark.parametrize("path", sorted((PACKAGE / "core").glob("*.py")), ids=lambda p: p.name)
def test_core_modules_import_only_to_their_left(path: Path) -> None:
    if path.name == "__init__.py":
        return
    assert path.stem in CORE_ORDER, f"core/{path.name}: place it in CORE_ORDER"
    left = set(CORE_ORDER[: CORE_ORDER.index(path.stem)])
    ours = {
        n.removeprefix("pytest_seatrace.core.")
        for n in imports_of(path)
        if n.startswith("pytest_seatrace.core.")
    }
    assert ours <= left, f"core/{path.name} imports {sorted(ours - left)}, not to its left"


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
    """No I/O library when it runs (a predicate's ``httpx.Response`` may be named for mypy), and
    no other layer of ours but the history package beside it (stdlib only), ``TYPE_CHECKING``
    imports included."""
    bad = sorted(
        {name for name in runtime_imports(path) if name.split(".")[0] in CORE_FORBIDDEN}
        | {
            n
            for n in imports_of(path)
            if n.startswith("pytest_seatrace.")
            and not n.startswith(("pytest_seatrace.core", "pytest_seatrace.history"))
        }
    )
    assert bad == [], f"{path.name} imports {bad}"


@pytest.mark.parametrize(
    "path", sorted((PACKAGE / "engine").rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_engine_imports_only_core_and_itself(path: Path) -> None:
    ours = {name for name in imports_of(path) if name.split(".")[0] == "pytest_seatrace"}
    bad = sorted(n for n in ours if not n.startswith(("pytest_seatrace.core", "pytest_seatrace.engine")))
    assert bad == [], f"{path.name} imports {bad}"
    assert "pytest" not in {name.split(".")[0] for name in runtime_imports(path)}


@pytest.mark.parametrize(
    "path", sorted((PACKAGE / "report").rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_report_reads_documents_not_the_engine_or_the_plugin(path: Path) -> None:
    ours = {name for name in imports_of(path) if name.split(".")[0] == "pytest_seatrace"}
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
    # ours: the result, its judge and figures, the engine, the reports, the version lookup
    # (importlib.metadata scanning every installed distribution), the fixture's object, the
    # sample-service runner
    "pytest_seatrace.core.result",
    "pytest_seatrace.core.judge",
    "pytest_seatrace.core.stats",
    "pytest_seatrace.core.figures",
    "pytest_seatrace.core.records",
    "pytest_seatrace.engine",
    "pytest_seatrace.report",
    "pytest_seatrace.version",
    "pytest_seatrace.race",
    "pytest_seatrace.service",
    "pytest_seatrace.progress",
    "pytest_seatrace.history",
    "pytest_seatrace.models",
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


def test_the_engine_reports_facts_and_only_the_judge_makes_violations() -> None:
    """A hung wave, a failed hook, a ``verify=`` with no count travel as ``core.records``
    problems; ``core.judge`` words them."""
    makers = sorted(
        module_name(path)
        for path in PACKAGE.rglob("*.py")
        if "pytest_seatrace.core.violations" in imports_of(path) and "Violation(" in path.read_text("utf-8")
    )
    assert makers == ["pytest_seatrace.core.judge"]
