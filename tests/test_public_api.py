"""The public face: names come from ``pytest_seatrace``, say so in tracebacks and pickles, and the
unreleased 0.1.0 shims are gone from the package and from everything of ours that imported them."""

from __future__ import annotations

import fnmatch
import inspect
import pickle
import re
from pathlib import Path
from typing import Any

import pytest

import pytest_seatrace
from pytest_seatrace import Outcome, RaceResult, RaceUsageError, RaceViolation, Record
from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.records import RaceRun

ROOT = Path(__file__).resolve().parent.parent
MS = 1_000_000
PUBLIC_OBJECTS = sorted(
    name
    for name in pytest_seatrace.__all__
    if inspect.isclass(getattr(pytest_seatrace, name)) or inspect.isfunction(getattr(pytest_seatrace, name))
)


def round_trip(obj: Any) -> Any:
    return pickle.loads(pickle.dumps(obj))  # noqa: S301 - bytes this test just made


def test_the_results_component_types_are_exported_from_the_root() -> None:
    """What ``pytest_seatrace.results`` exported for users, besides the internals it leaked."""
    wanted = {"Latency", "Spread", "Percentiles", "RoundSummary", "Record", "percentile", "RaceResult", "Win"}
    assert wanted <= set(pytest_seatrace.__all__)
    assert set(pytest_seatrace.__all__) <= set(dir(pytest_seatrace))


def test_a_star_import_gives_every_public_name() -> None:
    namespace: dict[str, Any] = {}
    exec("from pytest_seatrace import *", namespace)  # noqa: S102 - a fixed statement
    assert set(pytest_seatrace.__all__) <= namespace.keys()
    assert namespace["RaceViolation"] is RaceViolation


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'Nothing'"):
        _ = pytest_seatrace.Nothing  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", PUBLIC_OBJECTS)
def test_each_public_class_and_function_names_the_root_as_its_module(name: str) -> None:
    obj = getattr(pytest_seatrace, name)
    assert obj.__module__ == "pytest_seatrace"
    assert getattr(pytest_seatrace, obj.__qualname__) is obj
    assert round_trip(obj) is obj  # pickle finds it by that name


def test_every_class_and_function_in_all_is_checked() -> None:
    assert len(PUBLIC_OBJECTS) == len(pytest_seatrace.__all__) - 1  # all but __version__


def _result() -> RaceResult:
    records = tuple(
        Record(0, client, 0, sent_ns=MS, end_ns=2 * MS, status=201, outcome=Outcome.WIN) for client in (1, 2)
    )
    config = RaceConfig(resources=("A",), concurrency=2)
    return RaceResult.from_run("t.py::test_x", config, RaceRun(records=records, duration=0.5))


def test_a_race_violation_pickles_with_its_result() -> None:
    result = _result()
    assert result.violations  # two winners where one is allowed
    error = RaceViolation("race broke its invariant", result)
    assert b"pytest_seatrace.errors" not in pickle.dumps(error)
    back = round_trip(error)
    assert type(back) is RaceViolation
    assert str(back) == "race broke its invariant"
    assert back.result.requests == 2
    assert back.result.violations == result.violations


@pytest.mark.parametrize("with_result", [False, True])
def test_a_race_usage_error_pickles_with_or_without_a_result(with_result: bool) -> None:
    error = RaceUsageError("set --race-base-url", _result() if with_result else None)
    back = round_trip(error)
    assert type(back) is RaceUsageError
    assert str(back) == "set --race-base-url"
    assert (back.result is None) is not with_result


@pytest.mark.parametrize("module", ["fixtures", "results", "errors"])
def test_the_unreleased_shims_are_gone(module: str) -> None:
    package = Path(pytest_seatrace.__file__).parent
    assert (package / "race.py").is_file()
    assert not (package / f"{module}.py").exists()


GONE = re.compile(
    r"pytest_seatrace\.(fixtures|results|errors)\b"
    r"|from pytest_seatrace import (fixtures|results|errors)\b"
    r"|sample_service\.proxy|sample_service import proxy"
    r'|files\("pytest_seatrace"\)\.joinpath\("report\.schema\.json"\)'
)


def test_nothing_of_ours_names_a_removed_module() -> None:
    """Code, docs and examples; the CHANGELOG names them to say they went."""
    paths = [p for p in ROOT.glob("**/*") if p.suffix in {".py", ".md", ".toml", ".cfg", ".ini"}]
    paths = [
        p
        for p in paths
        if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)
        and p.name != "CHANGELOG.md"
        and p != Path(__file__)
    ]
    assert len(paths) > 50
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in paths
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if GONE.search(line)
    ]
    assert found == []


def test_every_data_file_of_the_package_is_package_data() -> None:
    """What setuptools ships: the schema moved into ``report/`` with its package-data entry."""
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    files = [
        p
        for p in (ROOT / "pytest_seatrace").rglob("*")
        if p.is_file() and p.suffix not in {".py", ".pyc"} and "__pycache__" not in p.parts
    ]
    assert ROOT / "pytest_seatrace" / "report" / "report.schema.json" in files
    for path in files:
        package = ".".join(path.parent.relative_to(ROOT).parts)
        assert (path.parent / "__init__.py").is_file(), path  # the wheel's packages: test_history_layout
        patterns = setuptools["package-data"].get(package, [])
        assert any(fnmatch.fnmatch(path.name, pattern) for pattern in patterns), path
