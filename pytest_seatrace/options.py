"""The ``--race-*`` options and their ``race_*`` ini twins: one table, one parser per option.

Every value, from the command line or the ini file, goes through the same parser, so a bad
ini value is reported with the ini name and the valid values, like a bad flag.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_seatrace.core.config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_HOLD,
    DEFAULT_RESOURCES,
    DEFAULT_SYNC,
    DEFAULT_TIMEOUT,
    DEFAULT_XDIST,
    HOLD_POINTS,
    SYNC_MODES,
    XDIST_MODES,
)

if TYPE_CHECKING:
    import pytest

SUMMARY_CHOICES = ("auto", "full", "off")

HOLDLESS = {
    "single-packet": "holds each stream's final DATA frame",
    "gate": "sends each whole request when the gate opens",
}
"""Start modes without a hold point, and what they hold back instead."""


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
    flag: str
    ini: str
    parse: Callable[[str], Any]
    help: str
    metavar: str
    choices: tuple[str, ...] | None = None
    multiple: bool = False
    """Repeatable on the command line (``action="append"``); a line list in the ini file."""


OPTIONS: tuple[Option, ...] = (
    Option(
        "--race-concurrency",
        "race_concurrency",
        positive_int,
        f"clients racing per resource (default {DEFAULT_CONCURRENCY})",
        "N",
    ),
    Option(
        "--race-resources",
        "race_resources",
        positive_int,
        f"resources per race when the marker gives none (default {DEFAULT_RESOURCES})",
        "N",
    ),
    Option(
        "--race-timeout",
        "race_timeout",
        positive_float,
        f"seconds per request; later is an unknown outcome (default {DEFAULT_TIMEOUT:g})",
        "S",
    ),
    Option(
        "--race-base-url",
        "race_base_url",
        base_url,
        "base URL that relative race URLs resolve against",
        "URL",
    ),
    Option(
        "--race-sync",
        "race_sync",
        choice(SYNC_MODES),
        f"start mode for race.request calls (default {DEFAULT_SYNC})",
        "MODE",
        SYNC_MODES,
    ),
    Option(
        "--race-hold",
        "race_hold",
        choice(HOLD_POINTS),
        f"where a last-byte request is held until the start: before the last byte of its headers "
        f"or of its body (default {DEFAULT_HOLD})",
        "POINT",
        HOLD_POINTS,
    ),
    Option(
        "--race-parallel",
        "race_parallel",
        parallel_value,
        "resources raced at once: N or all (default 1)",
        "N|all",
    ),
    Option(
        "--race-rounds",
        "race_rounds",
        positive_int,
        "repeat every race N times, resetting between (default 1)",
        "N",
    ),
    Option(
        "--race-seed",
        "race_seed",
        non_negative_int,
        "seed of the final-write order (default: random, shown in the header)",
        "N",
    ),
    Option(
        "--race-shards",
        "race_shards",
        positive_int,
        "processes (execnet gateways) that share one race's clients; 1: the test process (default 1)",
        "N",
    ),
    Option(
        "--race-tx",
        "race_tx",
        tx_specs,
        "where shards run: an execnet gateway spec as in pytest-xdist's --tx (popen, 4*popen, "
        "ssh=user@host//python=PATH); repeatable",
        "SPEC",
        multiple=True,
    ),
    Option(
        "--race-xdist",
        "race_xdist",
        choice(XDIST_MODES),
        f"under pytest-xdist, races against one origin take turns (serial) or may overlap "
        f"(default {DEFAULT_XDIST})",
        "MODE",
        XDIST_MODES,
    ),
    Option(
        "--race-json",
        "race_json",
        output_path,
        "write every race, with its request history, as JSON to PATH",
        "PATH",
    ),
    Option("--race-html", "race_html", output_path, "write a self-contained HTML report to PATH", "PATH"),
    Option(
        "--race-summary",
        "race_summary",
        choice(SUMMARY_CHOICES),
        "race summary after the run (default auto: by -q/-v)",
        "MODE",
        SUMMARY_CHOICES,
    ),
    Option(
        "--race-p95-ms",
        "race_p95_ms",
        positive_float,
        "fail any race whose p95 latency is not below MS",
        "MS",
    ),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """CLI and ini resolved once per session (CLI beats ini beats the built-in default)."""

    concurrency: int = DEFAULT_CONCURRENCY
    resources: int = DEFAULT_RESOURCES
    timeout: float = DEFAULT_TIMEOUT
    base_url: str | None = None
    sync: str | None = None
    hold: str | None = None
    """``None`` unless given: an explicit hold point is a choice, the default is not."""
    parallel: int | str = 1
    rounds: int = 1
    seed: int = 0
    json: Path | None = None
    html: Path | None = None
    summary: str = "auto"
    xdist: str = DEFAULT_XDIST
    p95_ms: float | None = None
    shards: int | None = None
    """``None`` unless given (``--race-tx`` then decides the count)."""
    tx: tuple[str, ...] = ()
    """``--race-tx`` expanded: one gateway spec per shard."""

    @classmethod
    def from_config(cls, config: pytest.Config, *, inherited_seed: int | None = None) -> Settings:
        """Every option from the command line, else the ini file; ``inherited_seed`` (an xdist
        worker's controller's) replaces the random seed of a run that names none."""
        import pytest

        values: dict[str, Any] = {}
        for opt in OPTIONS:
            value = config.getoption(opt.ini, None)
            if opt.multiple:
                value = _many(opt, value, config)
            elif value is None:
                try:
                    raw = config.getini(opt.ini)
                except (TypeError, ValueError) as exc:  # e.g. an unquoted number in [tool.pytest]
                    raise pytest.UsageError(
                        f'{opt.ini} (ini): {exc}; ini values are strings, quote them: {opt.ini} = "..."'
                    ) from None
                if raw not in (None, "", []):
                    text = str(raw).strip()
                    try:
                        value = opt.parse(text)
                    except argparse.ArgumentTypeError as exc:
                        valid = f"; valid: {', '.join(opt.choices)}" if opt.choices else ""
                        raise pytest.UsageError(f"{opt.ini} = {text!r} (ini): {exc}{valid}") from None
            if value is not None:
                values[opt.ini.removeprefix("race_")] = value
        if "tx" in values:
            values["tx"] = tuple(spec for specs in values["tx"] for spec in specs)
            shards = values.get("shards")
            if shards is not None and shards != len(values["tx"]):
                raise pytest.UsageError(
                    f"--race-shards {shards} (race_shards) disagrees with --race-tx (race_tx), which "
                    f"gives {len(values['tx'])} gateway(s): {', '.join(values['tx'])}; drop one or make "
                    "them agree"
                )
        _check_sync_and_hold(values)
        if "seed" not in values:  # one seed covers the whole run, xdist workers included
            seed = inherited_seed
            values["seed"] = seed if seed is not None else random.Random().randrange(2**32)  # noqa: S311
        return cls(**values)

    @property
    def shard_count(self) -> int:
        return len(self.tx) if self.tx else self.shards or 1

    def header(self) -> str:
        parts = [
            f"concurrency={self.concurrency}",
            f"timeout={self.timeout:g}s",
            f"sync={self.sync or DEFAULT_SYNC}",
            f"parallel={self.parallel}",
            f"seed={self.seed}",
            f"hold={self.hold or DEFAULT_HOLD}",
            f"xdist={self.xdist}",
        ]
        if self.base_url:
            parts.append(f"base_url={self.base_url}")
        if self.tx or (self.shards or 1) > 1:
            parts.append(f"shards={self.shard_count} ({', '.join(self.tx) or 'popen'})")
        # Printed before any race: each race's own values are in the summary and the reports.
        return f"seatrace: {', '.join(parts)} (defaults: a marker or call argument overrides them per race)"


def _check_sync_and_hold(values: dict[str, Any]) -> None:
    """``--race-hold`` with a session start mode that has no hold point would be ignored by
    every race: refused at start-up (a marker's or call's own ``sync=`` is checked per race)."""
    import pytest

    sync, hold = values.get("sync"), values.get("hold")
    if hold is not None and sync in HOLDLESS:
        raise pytest.UsageError(
            f"--race-hold {hold} (race_hold) with --race-sync {sync} (race_sync): a hold point is "
            f"for last-byte starts, and {sync} {HOLDLESS[sync]}; drop --race-hold or use "
            "--race-sync last-byte"
        )


def _many(opt: Option, given: list[Any] | None, config: pytest.Config) -> list[Any] | None:
    """A repeatable option: its command-line values (already parsed), else its ini lines."""
    import pytest

    if given:
        return given
    lines = config.getini(opt.ini) or []
    values = []
    for line in lines:
        text = str(line).strip()
        if not text:
            continue
        try:
            values.append(opt.parse(text))
        except argparse.ArgumentTypeError as exc:
            raise pytest.UsageError(f"{opt.ini} = {text!r} (ini): {exc}") from None
    return values or None
