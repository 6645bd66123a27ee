"""The documentation keeps up with the code: links resolve, option and marker tables match.

The docs are plain GitHub Markdown with no build step, so nothing else would notice a renamed
heading, a moved example, a new ``--race-*`` option or a new marker argument.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from pytest_seatrace.marker import race as race_signature
from pytest_seatrace.options import OPTIONS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MARKDOWN = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")
INLINE_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, code spans blanked (links there are not links)."""
    out: list[str] = []
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def links(path: Path) -> list[str]:
    targets: list[str] = []
    for line in prose_lines(path.read_text(encoding="utf-8")):
        ref = REFERENCE_LINK.match(line)
        if ref:
            targets.append(ref.group(1))
            continue
        targets.extend(INLINE_LINK.findall(CODE_SPAN.sub(lambda m: "x" * len(m.group(0)), line)))
    return targets


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's ``-1``, ``-2`` for repeats."""
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        out.add(base if count == 0 else f"{base}-{count}")
    return out


def cells(row: str) -> list[str]:
    parts = re.split(r"(?<!\\)\|", row.strip())
    return [cell.strip().replace(r"\|", "|") for cell in parts[1:-1]]


def table_under(path: Path, heading: str) -> list[list[str]]:
    """The body rows of the first table after the heading ``heading`` (its text, no hashes)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    starts = [i for i, line in enumerate(lines) if (m := HEADING.match(line)) and m.group(2) == heading]
    assert starts, f"{path.name}: no heading {heading!r}"
    rows: list[list[str]] = []
    for line in lines[starts[0] + 1 :]:
        if line.lstrip().startswith("|"):
            rows.append(cells(line))
        elif rows or HEADING.match(line):
            break
    assert len(rows) > 2, f"{path.name}: no table under {heading!r}"
    return rows[2:]  # past the header and the --- row


def backticked(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


# -- links ---------------------------------------------------------------------------------


def test_the_docs_exist() -> None:
    names = {p.name for p in MARKDOWN}
    assert {"README.md", "guide.md", "options.md", "how-it-works.md", "from-k6.md"} <= names


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path: Path) -> None:
    broken = []
    for target in links(path):
        if EXTERNAL.match(target) or target.startswith("//"):
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target}: no such file {dest}")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(ROOT)}")
    assert not broken, f"{path.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_slugs_follow_github() -> None:
    assert slug("JSON: `--race-json PATH`") == "json---race-json-path"
    assert slug("A race (`races[i]`)") == "a-race-racesi"
    assert slug("The `race` marker") == "the-race-marker"
    assert slug("Waves and `parallel`") == "waves-and-parallel"
    assert slug("Unknowns make a race indeterminate") == "unknowns-make-a-race-indeterminate"


# -- the option reference --------------------------------------------------------------------


def option_rows() -> list[list[str]]:
    return table_under(DOCS / "options.md", "Options and ini reference")


def test_options_table_lists_exactly_the_options() -> None:
    documented = []
    for row in option_rows():
        flags = re.findall(r"--race-[a-z0-9-]+", row[0])
        inis = re.findall(r"race_[a-z0-9_]+", row[1])
        assert len(flags) == 1, f"one flag per row: {row}"
        assert len(inis) == 1, f"one ini name per row: {row}"
        documented.append((flags[0], inis[0]))
    assert len(documented) == len(set(documented)), "an option is documented twice"
    assert sorted(documented) == sorted((opt.flag, opt.ini) for opt in OPTIONS)


def test_options_table_lists_the_choices() -> None:
    rows = {re.findall(r"--race-[a-z0-9-]+", row[0])[0]: row for row in option_rows()}
    for opt in OPTIONS:
        if opt.choices is None:
            continue
        value = rows[opt.flag][2]
        assert set(backticked(value)) == set(opt.choices), f"{opt.flag}: {value!r} vs {opt.choices}"


def test_options_table_shows_the_metavars() -> None:
    rows = {re.findall(r"--race-[a-z0-9-]+", row[0])[0]: row for row in option_rows()}
    for opt in OPTIONS:
        assert backticked(rows[opt.flag][0]) == [f"{opt.flag} {opt.metavar}"]


# -- the marker ------------------------------------------------------------------------------


def marker_rows() -> list[list[str]]:
    return table_under(DOCS / "guide.md", "Marker arguments")


def test_guide_documents_exactly_the_marker_arguments() -> None:
    documented = [backticked(row[0]) for row in marker_rows()]
    assert all(len(names) == 1 for names in documented), documented
    names = [n[0] for n in documented]
    parameters = inspect.signature(race_signature).parameters
    assert names == list(parameters), "the guide's marker table: same arguments, same order"
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())


def test_marker_defaults_name_real_options() -> None:
    known = {opt.flag for opt in OPTIONS} | {opt.ini for opt in OPTIONS}
    for row in marker_rows():
        named = re.findall(r"--race-[a-z0-9-]+|race_[a-z0-9_]+", row[2])
        assert set(named) <= known, f"{row[0]}: {named}"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    """CI's test step is the README's second fresh-machine command, so what CI proves is what a user runs."""
    readme = (ROOT / "README.md").read_text().splitlines()
    fence = next(i for i, line in enumerate(readme) if line.startswith("```bash"))
    install_and_test = readme[fence + 2].split("#")[0].strip()
    install, _, test_command = install_and_test.partition(" && ")
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert install in ci
    assert ci[-1] == test_command
    assert "--durations=15" in test_command.split()
