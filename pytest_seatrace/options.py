"""The ``--race-*`` options and their ``race_*`` ini twins: the settings table's options, each
with the parser of its text.

Every value, from the command line or the ini file, goes through the same parser, so a bad
ini value is reported with the ini name and the valid values, like a bad flag. Which layer
wins, and the rules between options, are ``core/precedence.py``'s.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_seatrace.core import settings as table
from pytest_seatrace.core.precedence import OptionError
from pytest_seatrace.core.precedence import Settings as Settings

if TYPE_CHECKING:
    import pytest


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type=`` for integers >= ``minimum`` whose errors say what is allowed."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not an integer (expected an integer >= {minimum})"
            ) from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum of {minimum}")
        return value

    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (expected a number > 0)") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number > 0")
    return value


def parallel_value(text: str) -> int | str:
    if text == "all":
        return "all"
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 1 or 'all'") from None


def base_url(text: str) -> str:
    """A URL httpx can parse, with a host: found now, not by every race (``http://[::1``)."""
    from pytest_seatrace.engine.plan import base_url_problem

    problem = base_url_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text.rstrip("/")


def choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(choices)}")
        return text

    return parse


def output_path(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (expected a file path)")
    return Path(text)


def output_dir(text: str) -> Path:
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (expected a directory)")
    return Path(text)


GATEWAY_KINDS = ("popen", "ssh", "socket", "vagrant_ssh")
TX_FORMS = "popen, N*popen, ssh=[user@]host//python=PATH//ssh_config=PATH, socket=host:port"


def tx_specs(text: str) -> tuple[str, ...]:
    """One ``--race-tx`` value expanded as pytest-xdist expands ``--tx``: ``4*popen`` is four
    ``popen`` gateways; each spec is checked by execnet's own ``XSpec`` parser."""
    import execnet

    text = text.strip()
    count, star, rest = text.partition("*")
    number = 1
    if star and count.strip().isdigit():
        number, text = int(count), rest.strip()
        if number < 1:
            raise argparse.ArgumentTypeError(f"{count}*: the gateway count must be >= 1")
    if not text:
        raise argparse.ArgumentTypeError(f"an empty gateway spec (expected {TX_FORMS})")
    try:
        spec = execnet.XSpec(text)
    except Exception as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not an execnet gateway spec ({exc})") from None
    if sum(1 for kind in GATEWAY_KINDS if getattr(spec, kind, None)) != 1:
        raise argparse.ArgumentTypeError(
            f"{text!r} names no gateway (or more than one); expected one of {TX_FORMS}"
        )
    return (text,) * number


@dataclass(frozen=True, slots=True)
class Option:
    """A setting of the table as pytest registers it: flag, ini twin, the parser of its text."""

    flag: str
    ini: str
    name: str
    parse: Callable[[str], Any]
    help: str
    metavar: str
    choices: tuple[str, ...] | None = None
    multiple: bool = False
    """Repeatable on the command line (``action="append"``); a line list in the ini file."""


PARSERS: dict[str, Callable[[str], Any]] = {
    "resources": positive_int,
    "concurrency": positive_int,
    "timeout": positive_float,
    "rounds": positive_int,
    "parallel": parallel_value,
    "shards": positive_int,
    "base_url": base_url,
    "seed": non_negative_int,
    "tx": tx_specs,
    "json": output_path,
    "html": output_path,
    "history": output_dir,
    "p95_ms": positive_float,
}
"""The parser of each option's text; an option with choices gets ``choice`` of them."""

OPTIONS: tuple[Option, ...] = tuple(
    Option(
        s.flag,
        s.ini,
        s.name,
        choice(s.choices) if s.choices else PARSERS[s.name],
        s.help,
        s.metavar or "",
        s.choices,
        s.multiple,
    )
    for s in table.OPTIONS
)


def settings_from_config(config: pytest.Config, *, inherited_seed: int | None = None) -> Settings:
    """The session's ``Settings``: each option's command-line value and its ini value, parsed;
    ``core/precedence.py`` picks between them and checks the rules between options. The ini
    value of an option the command line gives is not read (nor refused when bad)."""
    import pytest

    cli: dict[str, Any] = {}
    ini: dict[str, Any] = {}
    for opt in OPTIONS:
        given = config.getoption(opt.ini, None)
        cli[opt.name] = None if opt.multiple and not given else given  # no --race-tx: []
        if cli[opt.name] is None:
            ini[opt.name] = _ini_lines(opt, config) if opt.multiple else _ini_value(opt, config)
    try:
        return Settings.from_layers(cli, ini, inherited_seed=inherited_seed)
    except OptionError as exc:
        raise pytest.UsageError(str(exc)) from None


def _ini_value(opt: Option, config: pytest.Config) -> Any:
    import pytest

    try:
        raw = config.getini(opt.ini)
    except (TypeError, ValueError) as exc:  # e.g. an unquoted number in [tool.pytest]
        raise pytest.UsageError(
            f'{opt.ini} (ini): {exc}; ini values are strings, quote them: {opt.ini} = "..."'
        ) from None
    if raw in (None, "", []):
        return None
    text = str(raw).strip()
    try:
        return opt.parse(text)
    except argparse.ArgumentTypeError as exc:
        valid = f"; valid: {', '.join(opt.choices)}" if opt.choices else ""
        raise pytest.UsageError(f"{opt.ini} = {text!r} (ini): {exc}{valid}") from None


def _ini_lines(opt: Option, config: pytest.Config) -> list[Any] | None:
    """A repeatable option's ini lines, each parsed."""
    import pytest

    values = []
    for line in config.getini(opt.ini) or []:
        text = str(line).strip()
        if not text:
            continue
        try:
            values.append(opt.parse(text))
        except argparse.ArgumentTypeError as exc:
            raise pytest.UsageError(f"{opt.ini} = {text!r} (ini): {exc}") from None
    return values or None
