"""Models a race's history is checked against (``model=`` in a race; ``check`` standalone)."""

from __future__ import annotations

from pytest_seatrace.history.model import REFUSED, Function, Model, RacedRequest
from pytest_seatrace.history.models import CasRegister, Counter, KeyValue, Register, Seats, Set, Stock

__all__ = [
    "REFUSED",
    "CasRegister",
    "Counter",
    "Function",
    "KeyValue",
    "Model",
    "RacedRequest",
    "Register",
    "Seats",
    "Set",
    "Stock",
]
