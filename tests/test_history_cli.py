"""``python -m pytest_seatrace.history check``: its verdict and exit status, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pytest_seatrace.history import Operation, write_edn

DATA = Path(__file__).parent / "data" / "porcupine"


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest_seatrace.history", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def race(winners: int) -> str:
    """One seat, four clients, all overlapping."""
    return write_edn(
        Operation(n, "book", None, "ok" if n < winners else "fail", None, 0.0, 1.0 + n, key="seat-1")
        for n in range(4)
    )


def test_a_linearizable_history_exits_0(tmp_path: Path) -> None:
    history = tmp_path / "race.edn"
    history.write_text(race(1))
    done = run("check", "--model", "seats", str(history))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "4 operations: linearizable (1 partition(s), " + done.stdout.split(", ", 1)[1]


def test_a_double_booking_exits_1_with_the_explanation() -> None:
    done = run("check", "--model", "seats", "-", stdin=race(2))
    assert done.returncode == 1
    assert "not linearizable: partition 'seat-1'" in done.stdout
    assert "cannot follow it:\n  process 1: book() -> ok" in done.stdout


def test_a_capacity_after_the_model_name() -> None:
    assert run("check", "--model", "seats:2", "-", stdin=race(2)).returncode == 0


def test_porcupine_jepsen_log_and_kv_files() -> None:
    assert run("check", "--model", "cas-register", str(DATA / "jepsen" / "etcd_002.log")).returncode == 0
    assert run("check", "--model", "cas-register", str(DATA / "jepsen" / "etcd_000.log")).returncode == 1
    assert run("check", "--model", "kv", str(DATA / "kv" / "c01-bad.txt")).returncode == 1


def test_a_spent_budget_exits_2() -> None:
    # 13 concurrent writes and a read of a value never written: exponential, cut by the budget
    ops = [Operation(n, "write", n, "ok", None, 0.0, 10.0 + n) for n in range(13)]
    ops.append(Operation(99, "read", None, "ok", 99, 1.0, 30.0))
    done = run("check", "--model", "register", "--timeout", "0.2", "-", stdin=write_edn(ops))
    assert done.returncode == 2
    assert "unknown: the time budget ran out" in done.stdout


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (("check", "--model", "nope", "-"), "", "--model 'nope': expected one of register, cas-register, kv"),
        (("check", "--model", "stock", "-"), "", "--model stock:N needs a whole number N"),
        (("check", "--model", "seats", "/no/such/file"), "", "/no/such/file: "),
        (
            ("check", "--model", "seats", "-"),
            "{:process 0, :type :ok, :f :book}\n",
            "-: line 1: :ok for process 0",
        ),
        (("check", "--model", "seats", "--timeout", "0", "-"), "", "--timeout 0.0: expected a positive"),
        (
            ("check", "--model", "seats", "-"),
            "{:process 0, :type :invoke, :f :take, :value 1}\n",
            "Seats has no function 'take'",
        ),
        (("check", "-"), "", "the following arguments are required: --model"),
        (("verify",), "", "invalid choice: 'verify'"),
    ],
)
def test_bad_arguments_or_input_exit_3(args: tuple[str, ...], stdin: str, message: str) -> None:
    done = run(*args, stdin=stdin)
    assert done.returncode == 3
    assert message in done.stderr
    assert done.stdout == ""
