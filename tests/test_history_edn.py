"""Jepsen histories in and out: EDN values, pairing invokes with completions, the round trip, and errors
that name the line."""

from __future__ import annotations

import math

import pytest

from pytest_seatrace.history import EdnError, Keyword, Operation, read_edn, read_jepsen_log, write_edn
from pytest_seatrace.history.edn import dump, parse


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("nil", None),
        ("true", True),
        ("-12", -12),
        ("1.5", 1.5),
        ('"a \\"b\\"\\n\\u00e9"', 'a "b"\né'),
        (":timed-out", Keyword("timed-out")),
        ("[1 [2 3] nil]", (1, (2, 3), None)),
        ("(1 2)", (1, 2)),
        ('#{1 "x"}', frozenset({1, "x"})),
        ("{:a 1, :b [2]}", {Keyword("a"): 1, Keyword("b"): (2,)}),
    ],
)
def test_edn_values(text: str, value: object) -> None:
    assert parse(text) == value
    assert parse(dump(value)) == value


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1 2", r"'\[' is never closed by '\]'"),
        ("{:a}", "a map needs an even number of forms"),
        ("]", r"unexpected '\]'"),
        ('"ab', "a string is never closed"),
        ("#inst 1", "tagged value '#inst' is not supported"),
        ("1 2", "unexpected '2' after the value"),
        ("", "the value ends early"),
        ('"\\q"', r"unknown escape \\q"),
    ],
)
def test_edn_errors(text: str, message: str) -> None:
    with pytest.raises(EdnError, match=message):
        parse(text)


HISTORY = """\
{:process 0, :type :invoke, :f :write, :value 1}
{:process 1, :type :invoke, :f :cas, :value [1 2]}
{:process 0, :type :ok, :f :write, :value 1}
{:process :nemesis, :type :info, :f :start, :value nil}
{:process 1, :type :fail, :f :cas, :value [1 2]}
{:process 2, :type :invoke, :f :read, :value nil, :key "k"}
{:process 0, :type :invoke, :f :write, :value 3}
{:process 0, :type :info, :f :write, :value :timed-out}
{:process 2, :type :ok, :f :read, :value 3, :key "k"}
{:process 3, :type :invoke, :f :write, :value 4}
"""


def test_invokes_pair_with_the_next_completion_of_their_process() -> None:
    ops = read_edn(HISTORY)
    assert ops == [
        Operation(0, "write", 1, "ok", 1, 1.0, 3.0),
        Operation(1, "cas", (1, 2), "fail", (1, 2), 2.0, 5.0),
        Operation(2, "read", None, "ok", 3, 6.0, 9.0, key="k"),
        Operation(0, "write", 3, "info", None, 7.0, math.inf),  # info: may take effect at any later time
        Operation(3, "write", 4, "info", None, 10.0, math.inf),  # never completed: info
    ]


def test_time_in_nanoseconds_gives_the_instants_when_every_line_has_it() -> None:
    text = (
        "{:process 0, :type :invoke, :f :add, :value 1, :time 1500}\n"
        "{:process 0, :type :ok, :f :add, :value 1, :time 2000000}\n"
    )
    assert read_edn(text) == [Operation(0, "add", 1, "ok", 1, 1.5e-6, 2e-3)]


def test_write_then_read_gives_back_the_same_operations() -> None:
    ops = [
        Operation(0, "book", None, "ok", None, 0.001, 0.004, key=(0, "seat-1"), op="POST /orders"),
        Operation(1, "book", None, "fail", None, 0.001, 0.004, key=(0, "seat-1"), op="POST /orders"),
        Operation(2, "read", None, "ok", frozenset({"ann"}), 0.002, 0.003, key=(0, "seat-1"), op="GET /seat"),
        Operation(3, "cancel", "ann", "info", None, 0.003, math.inf, key=(0, "seat-1"), op="DELETE /orders"),
        Operation(4, "put", 'a "quoted"\nvalue', "ok", None, 0.004, 0.004, key="k"),
    ]
    text = write_edn(ops)
    lines = text.splitlines()
    assert len(lines) == 2 * len(ops)
    assert lines[0] == (
        '{:process 0, :type :invoke, :f :book, :value nil, :index 0, :time 1000000, :key [0 "seat-1"], '
        ':op "POST /orders"}'
    )
    assert lines[-1].startswith('{:process 3, :type :info, :f :cancel, :value "ann", :index 9, :time 4000000')
    assert sorted(read_edn(text), key=lambda o: o.process) == ops


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "{:process 0, :type :ok, :f :read, :value 1}\n",
            "line 1: :ok for process 0, which has no :invoke pending",
        ),
        (
            "{:process 0, :type :invoke, :f :read}\n\n{:process 0, :type :invoke, :f :read}\n",
            "line 3: process 0 invokes again before its :invoke on line 1 completed",
        ),
        ("{:process 0, :type :invoke, :f :read}\n[1 2]\n", r"line 2: expected a map \{:process"),
        ("{:process 0, :type :invoke}\n", "line 1: no :f"),
        (
            "{:process 0, :type :done, :f :read}\n",
            "line 1: :type :done: expected :invoke, :ok, :fail or :info",
        ),
        ("{:process 0, :type :invoke, :f :read\n", r"line 1: '\{' is never closed"),
    ],
)
def test_read_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(EdnError, match=message):
        read_edn(text)


def test_jepsen_util_log_lines() -> None:
    text = (
        "2016-01-01 INFO  jepsen.util - 3\t:invoke\t:cas\t[1 2]\n"
        "some other log line\n"
        "INFO  jepsen.util - 3\t:ok\t:cas\t[1 2]\n"
        "INFO  jepsen.util - 4\t:invoke\t:read\tnil\n"
        "INFO  jepsen.util - 4\t:fail\t:read\t:timed-out\n"
        "INFO  jepsen.util - :nemesis\t:info\t:start\tnil\n"
    )
    assert read_jepsen_log(text) == [
        Operation(3, "cas", (1, 2), "ok", (1, 2), 1.0, 3.0),
        Operation(4, "read", None, "fail", Keyword("timed-out"), 4.0, 5.0),
    ]
    with pytest.raises(EdnError, match="line 1: "):
        read_jepsen_log("INFO  jepsen.util - 3\t:invoke\t:cas\t[1 2\n")
