"""The tables of docs/models.md hold: every public name exists where the page says, each signature
is the real one, and each built-in model's constructor and EDN vocabulary are the code's."""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import fields, is_dataclass
from pathlib import Path

import pytest

from pytest_seatrace.history.cli import MODELS

PAGE = Path(__file__).resolve().parent.parent / "docs" / "models.md"


def table(heading: str) -> list[list[str]]:
    """The rows (cells) of the first table under ``## heading``."""
    text = PAGE.read_text(encoding="utf-8").split(f"\n## {heading}\n", 1)[1]
    lines = [line for line in text.split("\n## ", 1)[0].splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


def resolve(dotted: str) -> object:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def shown_signature(obj: object) -> str:
    """``name(a, b=1, *, c=None)`` as the page writes it: parameter names and defaults, no types."""
    if is_dataclass(obj):
        names = [f.name for f in fields(obj)]
        params = [p for p in inspect.signature(obj).parameters.values() if p.name in names]  # type: ignore[arg-type]
    else:
        params = list(inspect.signature(obj).parameters.values())  # type: ignore[arg-type]
    out, star = [], False
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            out.append(f"*{p.name}")
            star = True
            continue
        if p.kind is p.VAR_KEYWORD:
            out.append(f"**{p.name}")
            continue
        if p.kind is p.KEYWORD_ONLY and not star:
            out.append("*")
            star = True
        out.append(p.name if p.default is p.empty else f"{p.name}={p.default!r}".replace("'", '"'))
    return f"{obj.__name__}({', '.join(out)})"  # type: ignore[attr-defined]


PUBLIC = table("Public names")


def listed(cell: str, what: str) -> set[str]:
    """The names after ``fields``, ``attributes`` or ``methods`` in a signature cell."""
    part = re.search(rf"{what} ((?:`\w+`(?:, )?)+)", cell)
    return set(re.findall(r"`(\w+)`", part.group(1))) if part else set()


@pytest.mark.parametrize("row", PUBLIC, ids=[row[0] for row in PUBLIC])
def test_every_public_name_exists_with_its_documented_signature(row: list[str]) -> None:
    names = re.findall(r"`([\w.]+)`", row[0])
    first = resolve(names[0])
    prefix = names[0].rpartition(".")[0]
    for name in names[1:]:
        resolve(f"{prefix}.{name}")
    signature = re.match(r"`(\w+\(.*?\))( -> [^`]*)?`", row[1])
    if signature:
        assert signature.group(1) == shown_signature(first)
    if is_dataclass(first):
        assert listed(row[1], "fields") == {f.name for f in fields(first)}, "every field, none more"
    members = listed(row[1], "attributes") | listed(row[1], "methods")
    if members and not all(hasattr(first, name) for name in members):
        first = first()  # type: ignore[operator]  # attributes set on the instance (Model's names)
    for name in members:
        assert hasattr(first, name), name


def test_the_model_interface_row_lists_every_public_member() -> None:
    from pytest_seatrace.history.model import Model

    (row,) = [r for r in PUBLIC if r[0] == "`pytest_seatrace.models.Model`"]
    documented = listed(row[1], "attributes") | listed(row[1], "methods")
    members = {n for n in vars(Model) if not n.startswith("_")} | {"names", "functions"}
    assert documented == members
    assert listed(row[1], "methods") == {n for n in members if callable(getattr(Model, n, None))}


def test_every_public_name_of_the_packages_is_in_the_table() -> None:
    documented = {n.rpartition(".")[2] for row in PUBLIC for n in re.findall(r"`([\w.]+)`", row[0])}
    for module in ("pytest_seatrace.history", "pytest_seatrace.models"):
        assert set(importlib.import_module(module).__all__) <= documented, module


MODEL_ROWS = table("Built-in models")


@pytest.mark.parametrize("row", MODEL_ROWS, ids=[row[0].split("(")[0].strip("`") for row in MODEL_ROWS])
def test_each_built_in_model_row_is_its_constructor_and_cli_name(row: list[str]) -> None:
    signature = row[0].strip("`").replace("=,", "=None,").replace("=)", "=None)")
    model = resolve("pytest_seatrace.models." + signature.split("(")[0])
    assert signature == shown_signature(model)
    name = re.match(r"`([\w-]+)", row[3])
    assert name is not None
    assert name.group(1) in MODELS
    assert type(MODELS[name.group(1)][0]("3")) is model


def test_every_built_in_model_has_a_row() -> None:
    from pytest_seatrace.models import Model

    models = importlib.import_module("pytest_seatrace.models")
    built_in = {
        name
        for name in models.__all__
        if isinstance(getattr(models, name), type) and issubclass(getattr(models, name), Model)
    } - {"Model"}
    assert {row[0].split("(")[0].strip("`") for row in MODEL_ROWS} == built_in


@pytest.mark.parametrize("row", MODEL_ROWS, ids=[row[0].split("(")[0].strip("`") for row in MODEL_ROWS])
def test_each_edn_vocabulary_is_the_models_functions(row: list[str]) -> None:
    """The keywords the page lists are the model's functions (and ``:key``), and the CLI's help says
    the same ones."""
    name = re.match(r"`([\w-]+)", row[3])
    assert name is not None
    make, cli_vocabulary = MODELS[name.group(1)]
    keywords = set(re.findall(r":([a-z]+)", row[3])) - {"key"}
    assert keywords == set(make("3").names)
    assert set(re.findall(r":([a-z]+)", cli_vocabulary)) - {"key"} == keywords
