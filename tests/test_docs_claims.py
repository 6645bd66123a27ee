"""What the docs say ``pytest --help`` shows, checked against ``pytest --help`` itself.

The README and the option reference name the group the options are listed under, and every
page names options; a renamed group or a dropped flag would leave them wrong with nothing else
noticing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.support import INNER_INI

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK_TARGET = re.compile(r"\]\([^)]*\)")  # "(reports.md#json---race-json-path)" is not a flag
FLAG = re.compile(r"--race-[a-z0-9]+(?:-[a-z0-9]+)*")
INI = re.compile(r"`(race_[a-z0-9_]+)`")
GROUP_CLAIM = re.compile(r"`pytest --help` lists them under `([^`]+)`")


def text_of(path: Path) -> str:
    """A page's text with link targets removed and line breaks folded into spaces."""
    return " ".join(LINK_TARGET.sub("]", path.read_text(encoding="utf-8")).split())


@pytest.fixture
def help_text(pytester: pytest.Pytester) -> str:
    """``pytest --help`` of a session with the plugin."""
    pytester.makeini(INNER_INI)
    result = pytester.runpytest("--help", "-p", "no:cacheprovider")
    assert result.ret == 0, result.stderr.str()
    return result.stdout.str()


@pytest.mark.parametrize("page", ["README.md", "docs/options.md"])
def test_the_group_named_in_the_docs_is_the_one_help_shows(help_text: str, page: str) -> None:
    claims = GROUP_CLAIM.findall(text_of(ROOT / page))
    assert claims, f"{page} no longer says which group `pytest --help` lists the options under"
    for group in claims:
        assert f"\n{group}:\n" in help_text, f"{page}: no group {group!r} in pytest --help"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_flag_the_docs_name_is_in_help(help_text: str, page: Path) -> None:
    shown = set(FLAG.findall(help_text))
    named = set(FLAG.findall(text_of(page)))
    assert named <= shown, f"{page.name} names flags pytest --help does not show: {sorted(named - shown)}"


def test_every_ini_name_in_the_option_reference_is_in_help(help_text: str) -> None:
    named = set(INI.findall(text_of(ROOT / "docs" / "options.md")))
    assert len(named) >= 10
    for ini in sorted(named):
        assert re.search(rf"^\s+{ini} \((string|linelist)\):", help_text, re.MULTILINE), ini


def test_help_shows_the_docs_flags_in_the_group(help_text: str) -> None:
    """The flags are listed under the group the docs name, not elsewhere in --help."""
    (group,) = set(GROUP_CLAIM.findall(text_of(ROOT / "docs" / "options.md")))
    section = help_text.split(f"\n{group}:\n", 1)[1].split("\n\n", 1)[0]
    named = set(FLAG.findall(text_of(ROOT / "docs" / "options.md")))
    assert named
    assert named <= set(FLAG.findall(section))
