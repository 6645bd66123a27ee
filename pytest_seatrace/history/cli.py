"""``python -m pytest_seatrace.history check --model NAME FILE``: check a Jepsen history from a file.
Exit status: 0 linearizable, 1 not, 2 unknown (time budget spent), 3 bad arguments or input."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from pytest_seatrace.history.checker import check
from pytest_seatrace.history.edn import EdnError
from pytest_seatrace.history.jepsen import read_edn, read_jepsen_log
from pytest_seatrace.history.model import Model
from pytest_seatrace.history.models import CasRegister, Counter, KeyValue, Register, Seats, Set, Stock

LINEARIZABLE, NOT_LINEARIZABLE, UNKNOWN, USAGE = 0, 1, 2, 3


def _number(name: str, arg: str | None, default: int | None) -> int:
    if arg is None and default is not None:
        return default
    if arg is None or not arg.isdigit():
        raise ValueError(f"--model {name}:N needs a whole number N, got {arg!r}")
    return int(arg)


MODELS: dict[str, tuple[Callable[[str | None], Model], str]] = {
    "register": (lambda arg: Register(), ":read -> value, :write v"),
    "cas-register": (lambda arg: CasRegister(), ":read -> value, :write v, :cas [old new]"),
    "kv": (lambda arg: KeyValue(), ':get -> "s", :put "s", :append "s", each with :key'),
    "seats": (
        lambda arg: Seats(_number("seats", arg, 1)),
        ":book holder, :cancel holder, :read -> #{holders}",
    ),
    "stock": (
        lambda arg: Stock(_number("stock", arg, None)),
        ":take q, :give q, :read -> n (stock:N starts at N)",
    ),
    "counter": (lambda arg: Counter(_number("counter", arg, 0)), ":add n, :read -> n"),
    "set": (lambda arg: Set(), ":add v, :read -> #{elements}"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(USAGE, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m pytest_seatrace.history", description=__doc__)
    vocabulary = "; ".join(f"{name}: {words}" for name, (_, words) in MODELS.items())
    parser.add_argument("command", choices=("check",), help="check: is a history linearizable under a model?")
    parser.add_argument("--model", required=True, metavar="NAME[:N]", help=f"one of: {vocabulary}")
    parser.add_argument(
        "--timeout", type=float, default=None, metavar="S", help="give up (exit 2) after S seconds"
    )
    parser.add_argument(
        "--format",
        choices=("auto", "edn", "jepsen-log"),
        default="auto",
        help="auto: EDN when a line starts with {",
    )
    parser.add_argument(
        "file", metavar="FILE", help="a Jepsen history, one map per line; - reads standard input"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    name, _, arg = str(args.model).partition(":")
    if name not in MODELS:
        return _usage(f"--model {args.model!r}: expected one of {', '.join(MODELS)}")
    if args.timeout is not None and not args.timeout > 0:
        return _usage(f"--timeout {args.timeout}: expected a positive number of seconds")
    try:
        model = MODELS[name][0](arg or None)
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
        edn = args.format == "edn" or (args.format == "auto" and text.lstrip().startswith("{"))
        operations = read_edn(text) if edn else read_jepsen_log(text)
        verdict = check(operations, model, timeout=args.timeout)
    except (OSError, UnicodeDecodeError, EdnError) as error:
        return _usage(f"{args.file}: {error}")
    except (ValueError, TypeError) as error:
        return _usage(f"{args.file} under --model {args.model}: {error}")
    sys.stdout.write(f"{len(operations)} operations: {verdict.explanation()}\n")
    return {True: LINEARIZABLE, False: NOT_LINEARIZABLE, None: UNKNOWN}[verdict.valid]


def _usage(message: str) -> int:
    sys.stderr.write(f"error: {message}\n")
    return USAGE
