"""Each setting once: the table, the order in which its layers win, and what reads the table.

A call argument beats the marker, which beats the command line, which beats the ini file,
which beats the built-in default (``core/precedence.py``); the marker's signature, the options
and ``docs/options.md`` agree with the table (``core/settings.py``).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path
from typing import Any

import pytest

from pytest_seatrace.core import settings as table
from pytest_seatrace.core.arguments import MarkerError
from pytest_seatrace.core.precedence import OptionError, Settings, check_arguments, resolve
from pytest_seatrace.marker import race as marker_schema
from pytest_seatrace.options import OPTIONS, PARSERS
from tests.support import INNER_INI, SEATS_CONFTEST

ROOT = Path(__file__).resolve().parent.parent

# One value per layer for each setting under test; each layer above "default" sets its own.
LAYERS = ("default", "ini", "cli", "marker", "call")
VALUES: dict[str, dict[str, Any]] = {
    "concurrency": {"default": 100, "ini": 2, "cli": 3, "marker": 4, "call": 5},
    "resources": {"default": 1, "ini": 2, "cli": 3, "marker": 4, "call": 5},
    "timeout": {"default": 10.0, "ini": 2.0, "cli": 3.0, "marker": 4.0, "call": 5.0},
    "rounds": {"default": 1, "ini": 2, "cli": 3, "marker": 4, "call": 5},
    "parallel": {"default": 1, "ini": 2, "cli": 3, "marker": 4, "call": 5},
}


def given_up_to(level: str, layer: str) -> dict[str, Any]:
    """The values ``layer`` gives when the run sets every layer up to ``level``."""
    if LAYERS.index(layer) > LAYERS.index(level):
        return {}
    return {name: values[layer] for name, values in VALUES.items()}


@pytest.mark.parametrize("level", LAYERS)
def test_each_layer_beats_the_one_below(pytester: pytest.Pytester, level: str) -> None:
    """Every layer up to ``level`` gives a different value for five settings; the race gets the
    highest layer's value of each, and the built-in default where no layer gives one."""
    ini = "".join(f"race_{name} = {value:g}\n" for name, value in given_up_to(level, "ini").items())
    cli = [f"--race-{name}={value:g}" for name, value in given_up_to(level, "cli").items()]
    expected = {name: values[level] for name, values in VALUES.items()}
    pytester.makeini(INNER_INI + ini)
    pytester.makeconftest(SEATS_CONFTEST)
    pytester.makepyfile(
        f"""
        import pytest

        @pytest.mark.race(**{given_up_to(level, "marker")!r})
        def test_layers(seats):
            r = seats.post(lambda a: f"/seat/{{a.resource}}", **{given_up_to(level, "call")!r})
            got = {{
                "concurrency": r.concurrency,
                "resources": len(r.resources),
                "timeout": r.settings["timeout_s"],
                "rounds": r.rounds,
                "parallel": r.settings["parallel"],
            }}
            assert got == {expected!r}
        """
    )
    result = pytester.runpytest(*cli)
    result.assert_outcomes(passed=1)


def layered(**layers: dict[str, Any]) -> Settings:
    return Settings.from_layers(layers.get("cli", {}), layers.get("ini", {}), inherited_seed=7)


def test_precedence_of_the_start_mode_hold_point_and_shards() -> None:
    """The same order for the settings the pytester run above cannot show on an in-process app."""
    session = layered(cli={"sync": "last-byte", "shards": 2}, ini={"sync": "gate", "hold": "body"})
    assert (session.sync, session.hold, session.shards) == ("last-byte", "body", 2)
    config = resolve({}, {}, session, flexible=False)
    assert (config.sync, config.hold, config.hold_given, config.tx) == (
        "last-byte",
        "body",
        True,
        ("popen",) * 2,
    )
    config = resolve({"hold": "headers", "shards": 3}, {}, session, flexible=False)
    assert (config.hold, config.shards) == ("headers", 3)
    config = resolve(
        {"hold": "headers", "shards": 3}, {"shards": 1, "sync": "last-byte"}, session, flexible=False
    )
    assert (config.hold, config.shards, config.tx) == ("headers", 1, ())
    default = resolve({}, {}, layered(), flexible=False)
    assert (default.sync, default.hold, default.hold_given, default.shards) == ("auto", "headers", False, 1)
    assert layered().seed == 7  # an xdist worker's controller's seed


def test_rules_between_settings_are_checked_once_with_their_messages() -> None:
    with pytest.raises(OptionError, match=r"--race-shards 3 \(race_shards\) disagrees with --race-tx"):
        layered(cli={"shards": 3, "tx": [("popen",), ("popen",)]})
    with pytest.raises(OptionError, match=r"--race-hold body \(race_hold\) with --race-sync gate"):
        layered(cli={"hold": "body"}, ini={"sync": "gate"})
    with pytest.raises(MarkerError, match=r"race.run/arun attempts and race.app cannot be sharded"):
        resolve({"shards": 2, "concurrency": 2}, {}, layered(), flexible=True)
    with pytest.raises(MarkerError, match=r"shards=3: --race-tx \(race_tx\) gives 2 gateway\(s\)"):
        resolve({"shards": 3}, {}, layered(cli={"tx": [("popen",) * 2]}), flexible=False)


@pytest.mark.parametrize(
    ("written", "word"),
    [(None, "auto"), ("auto", "auto"), (True, "on"), ("on", "on"), (False, "off"), ("off", "off")],
)
def test_http3_is_normalised_to_the_options_words(written: bool | str | None, word: str) -> None:
    """``http3=`` as a marker and as a call argument; ``None`` leaves the option to decide."""
    assert resolve(marker_schema(http3=written), {}, layered(), flexible=False).http3 == word
    call = check_arguments({"http3": written})
    expected = "off" if written is None else word
    assert resolve({}, call, layered(cli={"http3": "off"}), flexible=False).http3 == expected


def test_http3_refuses_what_is_not_a_switch() -> None:
    bad: Any
    for bad in (1, 0, "yes", "h3"):
        with pytest.raises(MarkerError, match=r": expected None or 'auto', True or 'on', False or 'off'"):
            marker_schema(http3=bad)


def test_http3_option_beats_ini_and_the_call_beats_both() -> None:
    session = layered(cli={"http3": "on"}, ini={"http3": "off"})
    assert resolve({}, {}, session, flexible=False).http3 == "on"
    assert resolve({}, {}, layered(ini={"http3": "off"}), flexible=False).http3 == "off"
    assert resolve({"http3": "off"}, {"http3": "on"}, session, flexible=False).http3 == "on"
    assert resolve({}, {}, layered(), flexible=False).http3 == "auto"


def test_the_marker_signature_is_the_tables_arguments() -> None:
    parameters = inspect.signature(marker_schema).parameters
    assert list(parameters) == [s.name for s in table.ARGUMENTS]
    for setting in table.ARGUMENTS:
        assert parameters[setting.name].default == setting.argument_default, setting.name


def test_every_option_of_the_table_has_a_parser() -> None:
    assert set(PARSERS) == {s.name for s in table.OPTIONS if not s.choices}
    assert [opt.flag for opt in OPTIONS] == [s.flag for s in table.OPTIONS]


def test_the_parsers_accept_the_tables_defaults() -> None:
    """A default an option could not be set to would be a second, hidden rule."""
    for opt in OPTIONS:
        default = table.BY_NAME[opt.name].default
        if default not in (None, ()):
            assert opt.parse(shown(default)) == default, opt.flag


def backticked(part: str) -> list[str]:
    """The names written in backticks in ``part``, sorted."""
    return sorted(re.findall(r"`([a-z_0-9]+)`", part))


def shown(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def test_docs_options_table_shows_the_tables_defaults() -> None:
    text = (ROOT / "docs" / "options.md").read_text(encoding="utf-8")
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(--race-[a-z0-9-]+) [^\n]*$", text, re.M)}
    for setting in table.OPTIONS:
        default_cell = re.split(r"(?<!\\)\|", rows[setting.flag])[4].strip()
        if setting.default in (None, ()):
            assert "`" not in default_cell, f"{setting.flag}: {default_cell}"
        else:
            assert default_cell == f"`{shown(setting.default)}`", f"{setting.flag}: {default_cell}"


def test_guide_marker_table_shows_the_tables_defaults() -> None:
    text = (ROOT / "docs" / "guide.md").read_text(encoding="utf-8")
    for setting in table.ARGUMENTS:
        row = re.search(rf"^\| `{setting.name}` \|.*$", text, re.M)
        assert row, setting.name
        default_cell = re.split(r"(?<!\\)\|", row.group(0))[3]
        if setting.is_option:
            written = f'"{setting.default}"' if isinstance(setting.default, str) else shown(setting.default)
            assert f"`{setting.flag}` / `{setting.ini}`" in default_cell, setting.name
            assert f"else `{written}`" in default_cell, f"{setting.name}: {default_cell}"
        elif setting.default not in (None, ()):
            assert default_cell.strip().startswith(f"`{setting.default}`"), f"{setting.name}: {default_cell}"


def test_docs_name_the_arguments_without_an_option() -> None:
    text = (ROOT / "docs" / "options.md").read_text(encoding="utf-8")
    sentence = text.split("Options that only have a call or marker form:", 1)[1].split("(see", 1)[0]
    assert re.findall(r"`([a-z_]+)`", sentence) == [s.name for s in table.ARGUMENTS if not s.is_option]


def test_guide_says_which_arguments_have_an_option_twin() -> None:
    text = (ROOT / "docs" / "guide.md").read_text(encoding="utf-8")
    paragraph = text.split("Only ", 1)[1].split("come from the call", 1)[0]
    twins, _, alone = paragraph.partition("have a\ncommand-line and ini twin")
    assert backticked(twins) == sorted(s.name for s in table.ARGUMENTS if s.is_option)
    assert backticked(alone.split("form);", 1)[1]) == sorted(
        s.name for s in table.ARGUMENTS if not s.is_option
    )
