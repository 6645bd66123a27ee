"""The one command line every benchmark shares: its parser, bounds, ``--smoke``, exit codes, output.

Scenario modules build their parser with ``parser()`` and add only their own options; the
header every benchmark prints (``print_header``) says that client and server share the cores.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tabulate import tabulate

from benchmarks import BENCHMARKS
from benchmarks.machine import cores, load_note, machine_note
from pytest_seatrace.options import positive_float as positive_float
from pytest_seatrace.options import positive_int as positive_int

EXIT_OK = 0
EXIT_BELOW_TARGET = 1
EXIT_INCOMPLETE = 2
"""A budget ran out or a race could not run: no verdict on the target either way."""

SMOKE_VERDICT = "smoke run: figures at toy sizes, targets not evaluated"

_Number = TypeVar("_Number", int, float)


def parser(
    name: str, *, limit_s: float, budget_s: float, tools: bool = False, defaults_help: bool = False
) -> argparse.ArgumentParser:
    """Benchmark ``name``'s parser with the options every benchmark takes: a bound on one race
    (``--race-limit-s``), or with ``tools`` on one tool run (``--run-limit-s``) and on each
    install step, a bound on the whole benchmark (``--budget-s``), and ``--smoke``."""
    limit, what = ("run", "tool run") if tools else ("race", "race")
    formatter = argparse.ArgumentDefaultsHelpFormatter if defaults_help else argparse.HelpFormatter
    made = argparse.ArgumentParser(
        prog=f"python -m benchmarks {name}", description=BENCHMARKS[name], formatter_class=formatter
    )
    made.add_argument(
        f"--{limit}-limit-s",
        type=positive_float,
        default=limit_s,
        help=f"cancel one {what} after this ({limit_s:g})",
    )
    if tools:
        made.add_argument(
            "--install-limit-s", type=positive_float, default=600.0, help="bound on each install step (600)"
        )
    made.add_argument(
        "--budget-s",
        type=positive_float,
        default=budget_s,
        help=f"stop starting {what}s after this ({budget_s:g})",
    )
    made.add_argument(
        "--smoke",
        action="store_true",
        help="a few seconds at toy sizes, never installs, evaluates no target: exit 0 when it ran",
    )
    return made


Option = tuple[str, Callable[[str], Any], Any, str]
"""One option as a table row: ``--flag``, its argument type, its default and its help."""


def add_options(made: argparse.ArgumentParser, *rows: Option) -> None:
    """Add each row's option; its help ends with the default, written from the value itself
    (a parser made with ``defaults_help`` appends it already; a default of None, decided later,
    is for the help text to state)."""
    shows_defaults = made.formatter_class is argparse.ArgumentDefaultsHelpFormatter
    for flag, kind, default, text in rows:
        stated = shows_defaults or default is None
        made.add_argument(
            flag, type=kind, default=default, help=text if stated else f"{text} ({_shown(default)})"
        )


def _shown(default: Any) -> str:
    if isinstance(default, list):
        return ",".join(_shown(value) for value in default)
    return f"{default:g}" if isinstance(default, float) else str(default)


def add_seed_race(made: argparse.ArgumentParser, *, counted: tuple[str, str] | None = None) -> None:
    """The seed race's sizes: ``--clients`` per seat, ``--resources`` seats, ``--timeout``, ``--seed``;
    with ``counted`` (a flag and its help), races repeated per mode: 5 counted after ``--warmup``."""
    if counted is not None:
        flag, text = counted
        add_options(
            made,
            (flag, positive_int, 5, text),
            ("--warmup", non_negative_int, 1, "uncounted races per mode before the counted ones"),
        )
    add_options(
        made,
        ("--clients", positive_int, 100, "clients per seat"),
        ("--resources", positive_int, 16, "seats raced"),
        ("--timeout", positive_float, 10.0, "seconds per request"),
        ("--seed", int, 1, "first race seed; each race adds 1"),
    )


def non_negative_int(text: str) -> int:
    """An argument type: an integer >= 0 (a count of uncounted warm-up runs, say)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, not {text!r}")
    return value


def apply_smoke(args: argparse.Namespace, **sizes: Any) -> None:
    """Under ``--smoke``, replace the run's sizes (and never install a tool)."""
    if args.smoke:
        for name, value in sizes.items():
            setattr(args, name, value)


def _number_list(convert: Callable[[str], _Number], what: str) -> Callable[[str], list[_Number]]:
    def parse(text: str) -> list[_Number]:
        try:
            values = [convert(part) for part in text.split(",") if part.strip()]
        except (ValueError, argparse.ArgumentTypeError):
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}, not {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one of the {what}")
        return values

    return parse


float_list = _number_list(positive_float, "numbers > 0")
int_list = _number_list(positive_int, "integers >= 1")


def subset(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """An argument type: a comma-separated subset of ``allowed``."""

    def parse(text: str) -> list[str]:
        values = [part.strip() for part in text.split(",") if part.strip()]
        if not values or any(v not in allowed for v in values):
            raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(allowed)}")
        return values

    return parse


# -- time bounds ---------------------------------------------------------------------------


@dataclass
class Budget:
    """A wall-clock allowance for a whole benchmark; loops check it before each step."""

    seconds: float
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def left(self) -> float:
        return self.seconds - self.elapsed()

    def expired(self) -> bool:
        return self.left() <= 0


class BudgetExceededError(RuntimeError):
    """The time budget ran out before every planned measurement was taken."""


# -- output --------------------------------------------------------------------------------


def print_header(title: str, *, smoke: bool, shared: bool = True) -> None:
    """The title, the cores client and server share (``shared``: a benchmark that runs both), and
    the load average."""
    print(title + (" (--smoke)" if smoke else ""))
    print(machine_note() if shared else f"no server: this process alone, on this machine's {cores()} cores")
    note = load_note()
    if note:
        print(note)
    print()


def print_table(rows: Sequence[Sequence[Any]], headers: Sequence[str], title: str = "") -> None:
    if title:
        print(title)
    print(tabulate(rows, headers=list(headers), tablefmt="github", floatfmt=".3f", disable_numparse=True))
    print()


def print_notes(notes: Sequence[str], load_before: str) -> None:
    """What was skipped or failed, and the load average before the run and now."""
    for note in notes:
        print(f"note: {note}")
    print(f"load before: {load_before}")
    print(f"load after:  {load_note()}")
    print()


def begin(args: argparse.Namespace, title: str) -> Budget:
    """Print the header and start the clock on ``--budget-s``: the budget of the run it heads."""
    print_header(title, smoke=args.smoke)
    return Budget(args.budget_s)


def unjudged(args: argparse.Namespace, incomplete: str) -> int | None:
    """The exit status of a run whose targets are not judged (``incomplete`` says why a run
    could not finish, or this is a smoke run), saying so; None when they are to be judged."""
    if incomplete:
        stderr(f"incomplete: {incomplete}")
        return EXIT_INCOMPLETE
    if args.smoke:
        print(SMOKE_VERDICT)
        return EXIT_OK
    return None


def stderr(message: str) -> None:
    print(message, file=sys.stderr)


def incomplete(exc: BaseException) -> int:
    """Say why the benchmark could not finish; its exit status."""
    stderr(f"incomplete: {type(exc).__name__}: {exc}")
    return EXIT_INCOMPLETE
