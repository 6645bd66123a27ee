"""The checker against a brute force written from the definition, on thousands of random small
histories: some order of the completed operations (and of any subset of the ``info`` ones), each placed
after every operation that returned before it was called, must be one the model accepts."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence

import pytest

from pytest_seatrace.history import Operation, OpType, check
from pytest_seatrace.history.search import one_wave
from pytest_seatrace.models import CasRegister, Counter, KeyValue, Model, Register, Seats, Set, Stock


def brute_force(ops: Sequence[Operation], model: Model) -> bool:
    """Every order, tried one operation at a time, with no memo and no reduction."""

    def returns(op: Operation) -> float:
        return op.ret if op.completed else math.inf

    def extend(state: object, left: list[Operation]) -> bool:
        if all(not op.completed for op in left):
            return True
        for op in left:
            if any(returns(other) < op.call for other in left if other is not op):
                continue  # some unplaced operation returned before this one was called
            legal, after = model.step(state, op)
            if legal and extend(after, [other for other in left if other is not op]):
                return True
        return False

    parts: dict[object, list[Operation]] = {}
    for op in ops:
        parts.setdefault(model.partition(op), []).append(op)
    return all(extend(model.initial, part) for part in parts.values())


Vocabulary = Callable[[random.Random], tuple[str, object, object]]


def _pick(
    *choices: tuple[str, Callable[[random.Random], object], Callable[[random.Random], object]],
) -> Vocabulary:
    def draw(rng: random.Random) -> tuple[str, object, object]:
        f, make_input, make_output = rng.choice(choices)
        return f, make_input(rng), make_output(rng)

    return draw


def _small(rng: random.Random) -> int:
    return rng.randint(0, 2)


def _none(rng: random.Random) -> None:
    return None


MODELS: dict[str, tuple[Callable[[], Model], Vocabulary]] = {
    "register": (Register, _pick(("write", _small, _none), ("read", _none, _small))),
    "cas-register": (
        lambda: CasRegister(0),
        _pick(
            ("write", _small, _none),
            ("read", _none, _small),
            ("cas", lambda r: (_small(r), _small(r)), _none),
        ),
    ),
    "seats": (
        lambda: Seats(1),
        _pick(("book", _none, _none), ("cancel", _none, _none), ("read", _none, lambda r: r.randint(0, 1))),
    ),
    "seats-2-named": (
        lambda: Seats(2),
        _pick(
            ("book", lambda r: r.choice("ab"), _none),
            ("cancel", lambda r: r.choice("ab"), _none),
            ("read", _none, lambda r: frozenset(r.sample("ab", r.randint(0, 2)))),
        ),
    ),
    "stock": (
        lambda: Stock(3),
        _pick(
            ("take", lambda r: r.randint(1, 2), _none), ("give", lambda r: 1, _none), ("read", _none, _small)
        ),
    ),
    "counter": (Counter, _pick(("add", lambda r: 1, _none), ("read", _none, _small))),
    "set": (
        Set,
        _pick(
            ("add", lambda r: r.randint(1, 2), _none),
            ("read", _none, lambda r: frozenset(r.sample((1, 2), r.randint(0, 2)))),
        ),
    ),
    "kv": (
        KeyValue,
        _pick(
            ("put", lambda r: r.choice("xy"), _none),
            ("append", lambda r: r.choice("xy"), _none),
            ("get", _none, lambda r: r.choice(["", "x", "y", "xy"])),
        ),
    ),
}


def random_history(rng: random.Random, vocabulary: Vocabulary, wave: bool) -> list[Operation]:
    """≤ 9 operations on small instants (so ties and overlaps are common) and small values (so identical
    operations are common); in a wave every call comes before every return."""
    ops = []
    for n in range(rng.randint(1, 9)):
        f, value, output = vocabulary(rng)
        kind: OpType = rng.choices(("ok", "fail", "info"), weights=(6, 2, 1))[0]
        call = float(rng.randint(0, 3) if wave else rng.randint(0, 12))
        ret = call + rng.randint(0, 4) if not wave else float(rng.randint(3, 6))
        key = rng.choice("kkj") if f in ("put", "append", "get") else None
        ops.append(Operation(n, f, value, kind, output, call, math.inf if kind == "info" else ret, key))
    return ops


@pytest.mark.parametrize("name", sorted(MODELS))
def test_checker_agrees_with_brute_force_on_random_small_histories(name: str) -> None:
    make, vocabulary = MODELS[name]
    rng = random.Random(f"seatrace-{name}")  # noqa: S311 - test data
    verdicts = {True: 0, False: 0}
    waves = 0
    started = time.monotonic()
    for n in range(600):
        ops = random_history(rng, vocabulary, wave=n % 3 == 0)
        waves += one_wave(ops)
        expected = brute_force(ops, make())
        verdict = check(ops, make(), timeout=5)
        assert verdict.valid is expected, (n, ops, verdict.explanation())
        verdicts[expected] += 1
        assert time.monotonic() - started < 20, "the brute force is meant for small histories"
    assert min(verdicts.values()) >= 60, verdicts  # both verdicts well represented
    assert waves >= 200


def test_a_failure_names_the_longest_prefix_and_what_cannot_follow() -> None:
    # two clients both win the one seat, while a third is refused
    ops = [
        Operation(1, "book", None, "ok", None, 0.0, 5.0, "seat"),
        Operation(2, "book", None, "fail", None, 0.0, 5.0, "seat"),
        Operation(3, "book", None, "ok", None, 0.0, 5.0, "seat"),
    ]
    verdict = check(ops, Seats())
    assert verdict.valid is False
    assert verdict.partition == "seat"
    assert [op.type for op in verdict.prefix] == ["ok", "fail"]
    assert [op.process for op in verdict.cannot_follow] == [3]
    text = verdict.explanation()
    assert "1. process 1: book() -> ok" in text
    assert "cannot follow it:\n  process 3: book() -> ok" in text


def test_a_longest_prefix_is_itself_accepted_by_the_model() -> None:
    rng = random.Random(7)  # noqa: S311 - test data
    make, vocabulary = MODELS["cas-register"]
    checked = 0
    for _ in range(300):
        ops = random_history(rng, vocabulary, wave=False)
        verdict = check(ops, make())
        if verdict.valid is not False:
            continue
        checked += 1
        model, state = make(), make().initial
        for op in verdict.prefix:
            legal, state = model.step(state, op)
            assert legal
        for op in verdict.cannot_follow:
            assert not model.step(state, op)[0]
            assert op not in verdict.prefix
    assert checked >= 30


def test_a_spent_time_budget_is_unknown_never_a_pass() -> None:
    # 14 concurrent writes of distinct values and reads nothing explains: exponential without the budget
    ops = [Operation(n, "write", n, "ok", None, 0.0, 10.0 + n) for n in range(14)]
    ops += [Operation(100 + n, "read", None, "ok", 99, 1.0, 30.0) for n in range(1)]
    verdict = check(ops, Register(), timeout=0.05)
    assert verdict.valid is None
    assert "unknown" in verdict.explanation()


def test_one_wave_of_a_thousand_identical_bookings_is_decided_at_once() -> None:
    def race(winners: int) -> list[Operation]:
        return [
            Operation(
                n, "book", None, "ok" if n < winners else "fail", None, 0.001 * (n % 7), 1.0 + n / 1000, 0
            )
            for n in range(1000)
        ]

    assert check(race(1), Seats(), timeout=30).valid is True
    double = check(race(2), Seats(), timeout=30)
    assert double.valid is False
    assert len(double.prefix) == 999  # the first winner and every rejection; the second winner cannot follow
    assert [op.type for op in double.cannot_follow] == ["ok"]


def test_an_info_may_or_may_not_have_taken_effect() -> None:
    write = Operation(1, "write", 1, "info", None, 0.0, math.inf)
    seen = Operation(2, "read", None, "ok", 1, 5.0, 6.0)
    unseen = Operation(3, "read", None, "ok", None, 1.0, 2.0)
    assert check([write, seen], Register()).valid is True
    assert check([write, unseen, seen], Register()).valid is True
    assert check([write, seen, Operation(3, "read", None, "ok", None, 7.0, 8.0)], Register()).valid is False


def test_partitions_are_checked_apart_and_any_failing_one_fails() -> None:
    ops = [Operation(n, "book", None, "ok", None, 0.0, 1.0, key=n // 2) for n in range(6)]
    verdict = check(ops, Seats(2))
    assert (verdict.valid, verdict.partitions) == (True, 3)
    ops.append(Operation(9, "book", None, "ok", None, 0.0, 1.0, key=1))
    verdict = check(ops, Seats(2))
    assert (verdict.valid, verdict.partition) == (False, 1)


def test_a_partition_that_fails_fast_is_not_kept_waiting_behind_a_slow_one() -> None:
    # partition "slow": 14 concurrent writes and a read nothing explains, beyond any small budget alone;
    # partition "fast", checked after it: a read of a value never written
    slow = [Operation(n, "write", n, "ok", None, 0.0, 10.0 + n, key="slow") for n in range(14)]
    slow.append(Operation(99, "read", None, "ok", 99, 1.0, 30.0, key="slow"))
    fast = [Operation(200, "read", None, "ok", 7, 0.0, 1.0, key="fast")]
    assert check(slow, Register(), timeout=0.2).valid is None
    verdict = check(slow + fast, Register(), timeout=5)
    assert (verdict.valid, verdict.partition) == (False, "fast")
    assert verdict.elapsed < 1


def test_an_explanation_folds_identical_operations_into_one_line() -> None:
    ops = [Operation(n, "book", None, "ok" if n < 2 else "fail", None, 0.0, 1.0 + n, 0) for n in range(500)]
    text = check(ops, Seats()).explanation()
    assert text.splitlines() == [
        "not linearizable: partition 0",
        "longest linearizable prefix:",
        "  1. process 0: book() -> ok",
        "  2-499. process 2 (and 497 identical): book() -> fail",
        "cannot follow it:",
        "  process 1: book() -> ok",
    ]
