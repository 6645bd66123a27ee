"""Every Python block and every command line of README.md and docs/*.md runs, or says why not.

pytest-examples finds the blocks (``find_examples``: the page, the first line, the fence's info
string). It was picked over pytest-markdown-docs and pytest-codeblocks because it is a library
called from an ordinary test, not a collector: most of our blocks are pytest test modules that
need the plugin's fixtures and markers, so each must run as its own pytest session (pytester),
which neither collector does (they exec a block as a script, so a ``def test_...`` in it would
be defined and never called). Its per-block settings live in the fence's info string, after
the language, where GitHub does not show them:

- ```` ```python ````: a test module, run as its own pytest session; every test in it passes;
- ```` ```python test="fragment" ````: a piece of a larger example, on purpose not run alone;
- ```` ```python test="script" ````: a script, run where a small race wrote ``race-report.json``;
- ```` ```python file="NAME.py" ````: written as ``NAME.py`` (a ``conftest.py``, the app under test)
  beside the page's next block, which runs with it.

Command lines (``pytest ...``, ``python -m ...``, ``pip install ...``) in ``bash`` blocks and
in code spans are checked against ``--help`` of what they run, and against the package's extras.
``ini`` and ``toml`` blocks are pytest configurations: each is a session's ``pytest.ini`` or
``pyproject.toml``, which must start without a usage error. Blocks without a language are
output, shown as it was printed.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import cache
from importlib.metadata import metadata
from importlib.util import find_spec
from pathlib import Path

import pytest
from pytest_examples import CodeExample, find_examples

from pytest_seatrace.options import OPTIONS
from tests.support import INNER_INI

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
KINDS = ("module", "fragment", "script")
BLOCKS: list[CodeExample] = [block for page in PAGES for block in find_examples(page)]


def where(block: CodeExample) -> str:
    return f"{block.path.relative_to(ROOT)}:{block.start_line}"


def kind(block: CodeExample) -> str:
    return block.prefix_settings().get("test", "module")


def of_kind(name: str) -> list[object]:
    return [
        pytest.param(block, id=where(block))
        for block in BLOCKS
        if kind(block) == name and "file" not in block.prefix_settings()
    ]


def companion(block: CodeExample) -> CodeExample | None:
    """The block just before ``block`` on its page when that one is a ``file="NAME.py"``."""
    index = BLOCKS.index(block)
    before = BLOCKS[index - 1] if index else None
    if before is not None and before.path == block.path and before.prefix_settings().get("file"):
        return before
    return None


def test_every_block_says_what_it_is() -> None:
    unknown = [f"{where(b)}: test={kind(b)!r}" for b in BLOCKS if kind(b) not in KINDS]
    assert not unknown, f"known kinds: {KINDS}\n" + "\n".join(unknown)
    files = [b for b in BLOCKS if b.prefix_settings().get("file")]
    assert all(re.fullmatch(r"\w+\.py", b.prefix_settings()["file"]) for b in files)
    assert all(any(companion(n) is b for n in BLOCKS) for b in files), "a file= block with no next block"
    assert len(of_kind("module")) >= 8, "most examples should run"


# -- test modules ----------------------------------------------------------------------------------


def count_tests(source: str) -> int:
    return len(re.findall(r"^(?:async )?def test_", source, re.MULTILINE))


@pytest.mark.parametrize("block", of_kind("module"))
def test_block_runs_as_a_test_module(pytester: pytest.Pytester, block: CodeExample) -> None:
    pytester.makeini(INNER_INI)
    beside = companion(block)
    if beside is not None:
        (pytester.path / beside.prefix_settings()["file"]).write_text(beside.source, encoding="utf-8")
    tests = count_tests(block.source)
    assert tests, f'{where(block)} defines no test: mark it test="fragment" or make it one'
    name = re.sub(r"\W", "_", f"test_{block.path.stem}_{block.start_line}")
    pytester.makepyfile(**{name: block.source})
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == 0, f"{where(block)}:\n{result.stdout.str()}"
    result.assert_outcomes(passed=tests)


# -- scripts ---------------------------------------------------------------------------------------


REPORT_RACE = """
import pytest

@pytest.mark.race(resources=2, concurrency=5)
def test_small_race(race, sample_service):
    race.post(sample_service.url + "/orders", json=lambda a: {"seats": [a.resource], "user": a.key})
"""


@pytest.mark.parametrize("block", of_kind("script"))
def test_script_reads_a_real_report(pytester: pytest.Pytester, block: CodeExample) -> None:
    pytester.makeini(INNER_INI)
    pytester.makepyfile(test_small=REPORT_RACE)
    pytester.runpytest("-p", "no:cacheprovider", "--race-json=race-report.json").assert_outcomes(passed=1)
    script = pytester.path / "block.py"
    script.write_text(block.source, encoding="utf-8")
    result = pytester.run(sys.executable, str(script), timeout=60)
    assert result.ret == 0, f"{where(block)}:\n{result.stdout.str()}\n{result.stderr.str()}"


# -- configuration files ---------------------------------------------------------------------------

CONFIG_FENCE = re.compile(r"^```(ini|toml)\s*\n(.*?)^```", re.MULTILINE | re.DOTALL)
CONFIGS = [
    pytest.param(lang, body, id=f"{page.relative_to(ROOT)}:{lang}{i}")
    for page in PAGES
    for i, (lang, body) in enumerate(CONFIG_FENCE.findall(page.read_text(encoding="utf-8")))
]


@pytest.mark.parametrize(("lang", "body"), CONFIGS)
def test_config_block_is_accepted(pytester: pytest.Pytester, lang: str, body: str) -> None:
    name = "pytest.ini" if lang == "ini" else "pyproject.toml"
    (pytester.path / name).write_text(body, encoding="utf-8")
    settings = dict(re.findall(r"^(race_\w+) = \"?([^\"\n]*)\"?$", body, re.MULTILINE))
    asyncio = "asyncio_default_fixture_loop_scope" in body
    assert settings or asyncio, f"{name}: neither a race_* setting nor pytest-asyncio's loop scope"
    plugins = () if asyncio else ("-p", "no:asyncio")
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:benchmark", "--strict-config", *plugins)
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED, result.stderr.str()
    header = result.stdout.str()
    for key in ("concurrency", "base_url"):
        if f"race_{key}" in settings:
            assert f"{key}={settings[f'race_{key}']}" in header
    if asyncio:
        assert "asyncio_default_fixture_loop_scope=function" in header


def test_config_check_refuses_a_quoted_ini_value(pytester: pytest.Pytester) -> None:
    """What the config blocks guard against: in an ini file the quotes are part of the value."""
    pytester.makeini('[pytest]\nrace_sync = "last-byte"\n')
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:asyncio")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "race_sync = '\"last-byte\"' (ini): '\"last-byte\"' is not one of" in result.stderr.str()


# -- command lines ---------------------------------------------------------------------------------

SHELL_FENCE = re.compile(r"^```(?:bash|sh|shell|console)\s*\n(.*?)^```", re.MULTILINE | re.DOTALL)
ANY_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`((?:pytest|python -m|pip install) [^`]+)`")
RUNS = ("pytest", "python", "pip")


def commands(page: Path) -> list[list[str]]:
    """Each ``pytest``/``python -m``/``pip install`` command of a page, as argv."""
    text = page.read_text(encoding="utf-8")
    shell = [block.replace("\\\n", " ") for block in SHELL_FENCE.findall(text)]
    spans = CODE_SPAN.findall(" ".join(ANY_FENCE.sub("", text).split()))
    out = []
    for line in [*(ln for block in shell for ln in block.splitlines()), *spans]:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token not in (";", "&&", "||", "|", "&"):
                words.append(token)
                continue
            while words and words[0] in ("do", "then", "for"):
                words = [] if words[0] == "for" else words[1:]
            if (
                words
                and words[0] in RUNS
                and (words[0] != "python" or words[1] == "-m" or words[1].endswith(".py"))
            ):
                out.append(words)
            words = []
    return out


def help_options(text: str) -> dict[str, tuple[str, ...] | None]:
    """Every option ``--help`` shows, with its choices when it has a closed set (argparse's
    ``{a,b}`` or the plugin's "one of a, b")."""
    entries: list[str] = []
    for line in text.splitlines():
        if re.match(r"^ {2}\S", line):
            entries.append(line.strip())
        elif entries and line.startswith("   "):
            entries[-1] += " " + line.strip()
    options: dict[str, tuple[str, ...] | None] = {}
    for entry in entries:
        if not entry.startswith("-"):
            continue
        names, _, says = entry.partition("  ")
        listed = re.search(r"\{([^}]*)\}", names) or re.search(r"one of ([\w-]+(?:, [\w-]+)*) \(ini:", says)
        choices = tuple(v.strip() for v in listed.group(1).split(",")) if listed else None
        for flag in re.findall(r"(?<![\w-])--?[A-Za-z][\w-]*", names):
            options[flag] = choices
    return options


@cache
def program_help(*program: str) -> str:
    """``python PROGRAM --help``: ``("-m", "sample_service")`` or ``("-m", "benchmarks", "scale")``."""
    done = subprocess.run(
        [sys.executable, *program, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, f"python {' '.join(program)} --help: {done.stderr}"
    return done.stdout


def check_options(argv: list[str], known: dict[str, tuple[str, ...] | None]) -> list[str]:
    """What is wrong with ``argv``'s options against the options ``--help`` showed."""
    parse = {opt.flag: opt.parse for opt in OPTIONS if opt.flag not in ("--race-json", "--race-html")}
    problems = []
    for i, word in enumerate(argv):
        if not word.startswith("-") or word == "-":
            continue
        flag, joined, value = word.partition("=")
        if flag not in known:
            problems.append(f"{flag}: not in --help")
            continue
        choices = known[flag]
        if not joined and (choices or flag.startswith("--race-")):
            value = argv[i + 1] if i + 1 < len(argv) else ""
            if value.startswith("/") and flag.startswith("--race-"):
                problems.append(
                    f"{flag} {value}: write {flag}={value} (pytest reads a separate /path as a rootdir)"
                )
        if choices and value not in choices:
            problems.append(f"{flag} {value!r}: not one of {choices}")
        if flag in parse:
            try:
                parse[flag](value)
            except Exception as exc:  # the option's own parser says what is wrong
                problems.append(f"{flag} {value!r}: {exc}")
    return problems


def check_pip(argv: list[str]) -> list[str]:
    meta = metadata("pytest-seatrace")
    extras = set(meta.get_all("Provides-Extra") or [])
    problems = []
    for word in argv[2:]:
        if word.startswith("-"):
            continue
        name, _, rest = word.partition("[")
        wanted = set(rest.rstrip("]").split(",")) - {""}
        if name not in (".", meta["Name"]) and not name.startswith("/path/to/"):  # or a checkout
            problems.append(f"{word}: not this project")
        problems += [f"{word}: no extra {extra!r}" for extra in sorted(wanted - extras)]
    return problems


def check_paths(argv: list[str]) -> list[str]:
    """Paths into this repository's examples and benchmarks exist."""
    return [
        f"{word}: no such path"
        for word in argv[1:]
        if word.split("/")[0] in ("examples", "benchmarks") and not (ROOT / word).exists()
    ]


def check(argv: list[str], pytest_options: dict[str, tuple[str, ...] | None]) -> list[str]:
    """What is wrong with one command line: ``pytest``, ``pip install``, ``python -m`` or a script."""
    if argv[0] == "pytest":
        return check_options(argv[1:], pytest_options) + check_paths(argv)
    if argv[0] == "pip":
        return check_pip(argv)
    if argv[1] != "-m":
        script, args = argv[1], argv[2:]
        if not (ROOT / script).is_file():
            return [f"no such script {script}"]
        return check_options(args, help_options(program_help(script))) if args else []
    words = argv[2:]  # the module, its subcommand if any (python -m benchmarks NAME), the rest
    program = words[:2] if len(words) > 1 and words[1].isidentifier() else words[:1]
    rest = words[len(program) :]
    if not find_spec(program[0]):
        return [f"no module {program[0]}"]
    if len(program) > 1 or any(word.startswith("-") for word in rest):
        return check_options(rest, help_options(program_help("-m", *program)))
    return []


def test_every_command_line_matches_its_help(pytester: pytest.Pytester) -> None:
    pytester.makeini(INNER_INI)
    result = pytester.runpytest("--help", "-p", "no:cacheprovider")
    assert result.ret == 0, result.stderr.str()
    pytest_options = help_options(result.stdout.str())
    pytest_options["--junitxml"] = pytest_options["--junit-xml"]  # pytest 9 lists only the second spelling
    assert pytest_options["--race-sync"] == ("auto", "gate", "last-byte", "single-packet", "single-datagram")
    seen = 0
    problems = []
    for page in PAGES:
        for argv in commands(page):
            seen += 1
            problems += [
                f"{page.relative_to(ROOT)}: {shlex.join(argv)}: {p}" for p in check(argv, pytest_options)
            ]
    assert seen >= 25, "the docs' command lines were not found"
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("pytest --race-sync fast", "not one of"),
        ("pytest --race-json /dev/stdout", "write --race-json=/dev/stdout"),
        ("pytest --race-concurrency 0", "below the minimum"),
        ("pytest --race-nope 1", "not in --help"),
        ('pip install -e ".[nope]"', "no extra 'nope'"),
        ("pytest examples/nope.py", "no such path"),
        ("python benchmarks/nope.py", "no such script"),
        ("python -m benchmarks scale --nope", "--nope: not in --help"),
        ("python -m sample_service --strategy risky", "not one of ('safe', 'unsafe')"),
        ("python -m no_such_module_here", "no module"),
    ],
)
def test_the_command_check_catches(line: str, problem: str, tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(f"```bash\n{line}   # comment\n```\n", encoding="utf-8")
    (argv,) = commands(page)
    known: dict[str, tuple[str, ...] | None] = {"--race-sync": ("auto", "gate"), "--race-json": None}
    known["--race-concurrency"] = None
    found = check(argv, known)
    assert any(problem in p for p in found), found
