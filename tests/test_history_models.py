"""Each built-in model's step rules: ``ok`` applies, ``fail`` is an observation the model checks,
``info`` applies what it would have done; and how a model maps raced HTTP requests to its functions."""

from __future__ import annotations

import math
from collections.abc import Hashable
from types import SimpleNamespace

import pytest

from pytest_seatrace.history import Operation, OpType
from pytest_seatrace.models import REFUSED, CasRegister, Counter, KeyValue, Model, Register, Seats, Set, Stock


def op(
    f: str, value: Hashable = None, kind: OpType = "ok", output: Hashable = None, key: Hashable = None
) -> Operation:
    return Operation(1, f, value, kind, output, 0.0, math.inf if kind == "info" else 1.0, key)


STEPS: list[tuple[Model, object, Operation, tuple[bool, object]]] = [
    # Seats: anonymous holders by count, named holders by name
    (Seats(), (), op("book"), (True, (None,))),
    (Seats(), (None,), op("book"), (False, (None,))),
    (Seats(), (None,), op("book", kind="fail"), (True, (None,))),
    (Seats(), (), op("book", kind="fail"), (False, ())),
    (Seats(), (), op("book", kind="info"), (True, (None,))),
    (Seats(), (None,), op("book", kind="info"), (True, (None,))),
    (Seats(), (None,), op("cancel"), (True, ())),
    (Seats(), (), op("cancel"), (False, ())),
    (Seats(), (), op("cancel", kind="fail"), (True, ())),
    (Seats(), (None,), op("cancel", kind="fail"), (False, (None,))),
    (Seats(2), ("a",), op("book", "b"), (True, ("a", "b"))),
    (Seats(2), ("a", "b"), op("cancel", "b"), (True, ("a",))),
    (Seats(2), ("a",), op("cancel", "b"), (False, ("a",))),
    (Seats(2), ("a", "b"), op("read", output=2), (True, ("a", "b"))),
    (Seats(2), ("a", "b"), op("read", output=frozenset({"b", "a"})), (True, ("a", "b"))),
    (Seats(2), ("a",), op("read", output=("b",)), (False, ("a",))),
    (Seats(), (), op("read", output=None), (True, ())),
    (Seats(), (None,), op("read", kind="fail", output=0), (True, (None,))),
    # Stock: take is refused when fewer are left
    (Stock(3), 3, op("take", 2), (True, 1)),
    (Stock(3), 1, op("take", 2), (False, 1)),
    (Stock(3), 1, op("take", 2, "fail"), (True, 1)),
    (Stock(3), 3, op("take", 2, "fail"), (False, 3)),
    (Stock(3), 1, op("take", 2, "info"), (True, 1)),
    (Stock(3), 3, op("take", 2, "info"), (True, 1)),
    (Stock(3), 1, op("give", 2), (True, 3)),
    (Stock(3), 1, op("give", 2, "fail"), (True, 1)),
    (Stock(3), 1, op("read", output=1), (True, 1)),
    (Stock(3), 1, op("read", output=2), (False, 1)),
    # Counter
    (Counter(), 0, op("add", 2), (True, 2)),
    (Counter(), 0, op("add", 2, "fail"), (True, 0)),
    (Counter(), 0, op("add", 2, "info"), (True, 2)),
    (Counter(), 2, op("read", output=2), (True, 2)),
    (Counter(), 2, op("read", output=1), (False, 2)),
    # Register and CasRegister
    (Register(), None, op("read", output=None), (True, None)),
    (Register(), 1, op("write", 2), (True, 2)),
    (Register(), 1, op("write", 2, "fail"), (True, 1)),
    (Register(), 1, op("read", output=2), (False, 1)),
    (Register(), 1, op("read", kind="info"), (True, 1)),
    (CasRegister(), 1, op("cas", (1, 2)), (True, 2)),
    (CasRegister(), 3, op("cas", (1, 2)), (False, 3)),
    (CasRegister(), 3, op("cas", (1, 2), "fail"), (True, 3)),
    (CasRegister(), 1, op("cas", (1, 2), "fail"), (False, 1)),
    (CasRegister(), 1, op("cas", (1, 2), "info"), (True, 2)),
    (CasRegister(), 3, op("cas", (1, 2), "info"), (True, 3)),
    (CasRegister(), 3, op("write", 4), (True, 4)),
    # KeyValue: per the operation's key
    (KeyValue(), (), op("get", key="k", output=""), (True, ())),
    (KeyValue(), (), op("get", key="k", output=None), (True, ())),
    (KeyValue(), (), op("put", "x", key="k"), (True, (("k", "x"),))),
    (KeyValue(), (("k", "x"),), op("append", "y", key="k"), (True, (("k", "xy"),))),
    (KeyValue(), (("k", "x"),), op("append", "y", key="j"), (True, (("j", "y"), ("k", "x")))),
    (KeyValue(), (("k", "x"),), op("get", key="k", output="x"), (True, (("k", "x"),))),
    (KeyValue(), (("k", "x"),), op("get", key="j", output="x"), (False, (("k", "x"),))),
    # Set
    (Set(), frozenset(), op("add", 1), (True, frozenset({1}))),
    (Set(), frozenset({1}), op("add", 1, "fail"), (True, frozenset({1}))),
    (Set(), frozenset({1}), op("read", output=(1,)), (True, frozenset({1}))),
    (Set(), frozenset({1}), op("read", output=frozenset()), (False, frozenset({1}))),
]


@pytest.mark.parametrize(("model", "state", "operation", "expected"), STEPS)
def test_step(model: Model, state: object, operation: Operation, expected: tuple[bool, object]) -> None:
    legal, after = model.step(state, operation)
    assert legal is expected[0]
    if legal:
        assert after == expected[1]


@pytest.mark.parametrize(
    ("model", "initial"),
    [
        (Seats(), ()),
        (Stock(5), 5),
        (Counter(), 0),
        (Register(), None),
        (CasRegister(0), 0),
        (KeyValue(), ()),
        (Set(), frozenset()),
    ],
)
def test_initial_states_are_hashable_values(model: Model, initial: object) -> None:
    assert model.initial == initial
    hash(model.initial)


def test_a_function_the_model_lacks_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="Seats has no function 'take'"):
        Seats().step((), op("take", 1))
    with pytest.raises(ValueError, match="Stock has no function 'book'"):
        Stock(1).step(1, op("book"))


def test_bad_constructor_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match=r"Seats\(capacity=0\)"):
        Seats(0)
    with pytest.raises(ValueError, match=r"Stock\(-1\)"):
        Stock(-1)
    with pytest.raises(TypeError, match="book=: expected an operation name"):
        Seats(book=("POST /orders",))  # type: ignore[arg-type]


def test_with_no_binding_every_raced_request_is_the_main_function() -> None:
    assert Seats().translate("POST /orders", object(), object()) == ("book", None, None)
    assert Stock(3).translate("POST /buy/{resource}", object(), object()) == ("take", 1, None)
    assert Counter().translate("POST /hits", object(), object()) == ("add", 1, None)


def test_bindings_map_operation_names_to_functions_and_extract_inputs_and_outputs() -> None:
    seats = Seats(
        book="POST /orders",
        cancel="DELETE /orders/{resource}",
        read=("GET /seats/{resource}", lambda r: len(r.json()["holders"])),
    )
    response = SimpleNamespace(json=lambda: {"holders": ["ann", "bob"]})
    assert seats.translate("GET /seats/{resource}", object(), response) == ("read", None, 2)
    assert seats.translate("DELETE /orders/{resource}", object(), response) == ("cancel", None, None)
    assert seats.function_for("POST /orders") is not None
    assert seats.function_for("PUT /elsewhere") is None
    with pytest.raises(LookupError, match="Seats has no function for 'PUT /elsewhere'"):
        seats.translate("PUT /elsewhere", object(), object())
    stock = Stock(10, take=("POST /buy/{resource}", lambda req: req.json["quantity"]))
    request = SimpleNamespace(json={"quantity": 3})
    assert stock.translate("POST /buy/{resource}", request, object()) == ("take", 3, None)


def test_extracted_values_are_frozen_to_be_hashable() -> None:
    model = Set(read=("GET /set", lambda r: r["items"]))
    assert model.translate("GET /set", None, {"items": [1, [2, 3]]}) == ("read", None, (1, (2, 3)))


def test_a_user_model_subclasses_model_with_effect_and_observes() -> None:
    class Balance(Model):
        main = "debit"
        reads = frozenset({"balance"})
        conditional = frozenset({"debit"})

        def __init__(self, opening: int) -> None:
            self.initial = opening
            super().__init__()

        def effect(self, state: int, operation: Operation) -> object:
            if operation.f == "credit":
                return state + operation.input
            if operation.f == "debit":
                return REFUSED if operation.input > state else state - operation.input
            return super().effect(state, operation)

        def observes(self, state: int, operation: Operation) -> bool:
            return bool(operation.output == state)

    account = Balance(10)
    assert account.step(10, op("debit", 15)) == (False, 10)
    assert account.step(10, op("debit", 15, "fail")) == (True, 10)
    assert account.step(10, op("credit", 5)) == (True, 15)
    assert account.step(10, op("balance", output=10)) == (True, 10)
    assert account.observes_only(op("balance"))
    assert not account.observes_only(op("debit", 1))


def test_describe_shows_an_operation_as_a_call_and_its_outcome() -> None:
    seats = Seats(2)
    assert seats.describe(op("book", "ann")) == "book('ann') -> ok"
    assert seats.describe(op("book", kind="fail")) == "book() -> fail"
    assert seats.describe(op("read", output=frozenset({"bob", "ann"}))) == "read() -> ok {'ann', 'bob'}"
    assert seats.describe(op("cancel", "ann", "info")) == "cancel('ann') -> ? (info)"
    assert CasRegister().describe(op("cas", (1, 2), "fail")) == "cas(1, 2) -> fail"


def test_an_operation_refuses_unhashable_values_and_a_return_before_its_call() -> None:
    with pytest.raises(TypeError, match="must be hashable"):
        Operation(1, "read", None, "ok", [1, 2], 0.0, 1.0)
    with pytest.raises(ValueError, match=r"returns at 1\.0 before its call 2\.0"):
        Operation(1, "read", None, "ok", None, 2.0, 1.0)
    with pytest.raises(ValueError, match="type 'done'"):
        Operation(1, "read", None, "done", None, 0.0, 1.0)  # type: ignore[arg-type]
