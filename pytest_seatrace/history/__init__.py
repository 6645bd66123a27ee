"""Histories of concurrent operations and a linearizability checker for them, pytest-free.

A history is a list of :class:`Operation`; :func:`check` says whether some order of them, each taking
effect at one instant between its call and its return, is one a model accepts (see
``pytest_seatrace.models``). :func:`read_edn` and :func:`write_edn` speak Jepsen's history format.
"""

from __future__ import annotations

from pytest_seatrace.history.checker import Verdict, check
from pytest_seatrace.history.edn import EdnError, Keyword
from pytest_seatrace.history.jepsen import read_edn, read_jepsen_log, write_edn
from pytest_seatrace.history.model import REFUSED, Function, Model
from pytest_seatrace.history.operation import Operation, OpType, freeze

__all__ = [
    "REFUSED",
    "EdnError",
    "Function",
    "Keyword",
    "Model",
    "OpType",
    "Operation",
    "Verdict",
    "check",
    "freeze",
    "read_edn",
    "read_jepsen_log",
    "write_edn",
]
