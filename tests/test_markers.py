"""The ``nginx``, ``sshd`` and ``chromium`` markers: registered, and on exactly the tests that start
the program, so ``-m "not chromium"`` (and the others) deselects what a developer cannot run.

The check reads the test modules' syntax: a test needs a program when it, a fixture it names or a
module-level helper it reaches names one of the program's entry points."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The names through which a test starts each program (a bare name, or ``module.attribute``).
PROGRAMS: dict[str, frozenset[str]] = {
    "nginx": frozenset({"start_nginx_proxy"}),
    "sshd": frozenset({"sshd_server", "sshd.start", "sshd.find_binaries"}),
    "chromium": frozenset({"chromium", "run_chromium"}),
}

Function = ast.FunctionDef | ast.AsyncFunctionDef


def references(node: ast.AST) -> set[str]:
    """Names, ``name.attribute`` pairs and parameters (fixtures) used anywhere under ``node``."""
    found: set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            found.add(child.id)
        elif isinstance(child, ast.Attribute) and isinstance(child.value, ast.Name):
            found.add(f"{child.value.id}.{child.attr}")
        elif isinstance(child, ast.arg):
            found.add(child.arg)
    return found


def marks(decorators: list[ast.expr]) -> set[str]:
    """The ``pytest.mark.X`` names in decorators (or a ``pytestmark`` value), called or not."""
    found: set[str] = set()
    for decorator in decorators:
        for child in ast.walk(decorator):
            if (
                isinstance(child, ast.Attribute)
                and isinstance(child.value, ast.Attribute)
                and child.value.attr == "mark"
                and isinstance(child.value.value, ast.Name)
                and child.value.value.id == "pytest"
            ):
                found.add(child.attr)
    return found


def module_marks(tree: ast.Module) -> set[str]:
    values = [
        statement.value
        for statement in tree.body
        if isinstance(statement, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in statement.targets)
    ]
    return marks(values)


def collected_tests(tree: ast.Module) -> Iterator[tuple[str, Function, set[str]]]:
    """Each test function or ``Test*`` method with the marks it carries from its decorators and class."""
    for statement in tree.body:
        if isinstance(statement, Function) and statement.name.startswith("test"):
            yield statement.name, statement, marks(statement.decorator_list)
        elif isinstance(statement, ast.ClassDef) and statement.name.startswith("Test"):
            outer = marks(statement.decorator_list)
            for method in statement.body:
                if isinstance(method, Function) and method.name.startswith("test"):
                    yield f"{statement.name}::{method.name}", method, outer | marks(method.decorator_list)


def needs(tree: ast.Module) -> dict[str, tuple[set[str], set[str]]]:
    """For each test: the programs it reaches (through module-level helpers and fixtures too) and
    the markers it carries."""
    helpers = {s.name: s for s in tree.body if isinstance(s, Function)}
    reached: dict[str, set[str]] = {}

    def programs(node: Function, seen: frozenset[str]) -> set[str]:
        names = references(node)
        found = {program for program, entry in PROGRAMS.items() if names & entry}
        for name in names & helpers.keys() - seen:
            if name not in reached:
                reached[name] = programs(helpers[name], seen | {name})
            found |= reached[name]
        return found

    carried = module_marks(tree)
    return {
        name: (programs(node, frozenset({node.name})), carried | own)
        for name, node, own in collected_tests(tree)
    }


def scanned_modules() -> list[Path]:
    return sorted(p for top in ("tests", "examples") for p in (ROOT / top).rglob("test_*.py"))


def mismatches(path_name: str, source: str) -> tuple[list[str], list[str], set[str]]:
    """Tests that start a program without its marker, tests with a marker whose program they never
    start, and the programs started at all."""
    missing: list[str] = []
    extra: list[str] = []
    started: set[str] = set()
    for name, (programs, carried) in needs(ast.parse(source, path_name)).items():
        started |= programs
        missing += [f"{path_name}::{name} needs {p}" for p in sorted(programs - carried)]
        extra += [f"{path_name}::{name} marked {p}" for p in sorted((carried & PROGRAMS.keys()) - programs)]
    return missing, extra, started


def test_program_markers_are_registered_with_a_description(pytestconfig: pytest.Config) -> None:
    lines = [str(line) for line in pytestconfig.getini("markers")]
    for program in PROGRAMS:
        described = [line for line in lines if line.split(":", 1)[0].strip() == program]
        assert len(described) == 1, (program, lines)
        assert len(described[0].split(":", 1)[1].strip()) > 20, described


def test_every_test_that_starts_nginx_sshd_or_chromium_carries_its_marker_and_no_other_does() -> None:
    missing: list[str] = []
    extra: list[str] = []
    started: set[str] = set()
    for path in scanned_modules():
        found = mismatches(str(path.relative_to(ROOT)), path.read_text(encoding="utf-8"))
        missing += found[0]
        extra += found[1]
        started |= found[2]
    assert missing == []
    assert extra == []
    assert started == PROGRAMS.keys()  # each entry-point list still names what the tests call


SAMPLE = """
import pytest
from tests.nginx import start_nginx_proxy

@pytest.fixture
def front():
    with start_nginx_proxy(1) as handle:
        yield handle

def helper():
    return run_chromium()

def test_through_the_fixture(front):
    pass

@pytest.mark.chromium
def test_through_a_helper():
    helper()

@pytest.mark.sshd
def test_marked_for_nothing():
    pass

class TestGroup:
    @pytest.mark.nginx
    def test_method(self, front):
        pass
"""


def test_the_scan_follows_fixtures_and_helpers_and_flags_both_directions() -> None:
    missing, extra, started = mismatches("sample.py", SAMPLE)
    assert missing == ["sample.py::test_through_the_fixture needs nginx"]
    assert extra == ["sample.py::test_marked_for_nothing marked sshd"]
    assert started == {"nginx", "chromium"}
    marked = SAMPLE.replace("\nimport pytest\n", "\nimport pytest\npytestmark = [pytest.mark.nginx]\n")
    assert mismatches("sample.py", marked)[0] == []
