"""Your own model in a race: an account that never goes below zero under concurrent debits and credits.

``Balance`` is the model the guide writes out (docs/models.md, "Your own model"): a debit of n is
refused when the balance is below n, a credit always lands, a read sees the balance. Bound to
the bank's three operations, it judges every account's whole history: some order of the
operations, each taking effect between its call and its return, must explain every answer.

The bank below is raced in process (``race.app``). Behind a lock per account it refuses the
debits the balance cannot cover; without one, every debit passes the check before any is taken,
the account is overdrawn, and the model says so (``not-linearizable``) with no ``verify=``.

Run: ``pytest examples/test_balance_model.py -v``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable
from typing import Any

import anyio
import httpx
import pytest

from examples.asgi_json import Receive, Send, read_json, send_json
from pytest_seatrace import Attempt, Race, RaceViolation
from pytest_seatrace.history import Operation
from pytest_seatrace.models import REFUSED, Model

OPENING = 100


class Balance(Model):
    """debit n (refused when the balance is below n), credit n, balance -> n."""

    main = "debit"
    reads = frozenset({"balance"})
    conditional = frozenset({"debit"})  # a refused debit is an observation to check

    def __init__(self, opening: int, *, debit: Any = None, credit: Any = None, balance: Any = None) -> None:
        self.initial = opening
        super().__init__(debit=debit, credit=credit, balance=balance)

    def effect(self, state: int, op: Operation) -> Any:
        if op.f == "credit":
            return state + op.input
        if op.f == "debit":
            return REFUSED if op.input > state else state - op.input
        return super().effect(state, op)

    def observes(self, state: int, op: Operation) -> bool:
        return bool(op.output == state)

    def partition(self, op: Operation) -> Hashable:
        return op.key  # one account per partition (the default); a transfer would span two

    def describe(self, op: Operation) -> str:
        shown = "" if op.input is None else f" {op.input}"
        seen = "" if op.output is None else f" {op.output}"
        return f"{op.f}{shown} -> {op.type}{seen}"


class Bank:
    """``POST /accounts/{id}/debit`` and ``/credit`` with ``{"amount": n}`` (201, or 409 when a
    debit is not covered); ``GET /accounts/{id}``: ``{"balance": n}``.

    ``locked=False`` checks the balance, waits (an ``await``, as a database round trip), then
    debits: other debits pass the same check in between.
    """

    def __init__(self, *, locked: bool = True, window_s: float = 0.005) -> None:
        self.balance: defaultdict[str, int] = defaultdict(lambda: OPENING)
        self.locks: defaultdict[str, anyio.Lock] = defaultdict(anyio.Lock)
        self.locked = locked
        self.window_s = window_s

    async def debit(self, account: str, amount: int) -> bool:
        if self.balance[account] < amount:
            return False
        await anyio.sleep(self.window_s)
        self.balance[account] -= amount
        return True

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = await read_json(receive)
        parts = scope["path"].strip("/").split("/")  # accounts, id[, action]
        account = parts[1]
        if scope["method"] == "GET":
            await send_json(send, 200, {"account": account, "balance": self.balance[account]})
            return
        amount = int(request["amount"])
        if parts[2] == "credit":
            self.balance[account] += amount
            await send_json(send, 201, {"account": account})
            return
        if self.locked:
            async with self.locks[account]:
                done = await self.debit(account, amount)
        else:
            done = await self.debit(account, amount)
        status, body = (201, {"account": account}) if done else (409, {"error": "insufficient funds"})
        await send_json(send, status, body)


ACTIONS = ("debit", "debit", "credit", "read")
"""Client n's action is ACTIONS[n % 4]: half the clients debit, a quarter credit, a quarter read."""


def action(a: Attempt) -> str:
    return ACTIONS[a.client % len(ACTIONS)]


def method(a: Attempt) -> str:
    return "GET" if action(a) == "read" else "POST"


def url(a: Attempt) -> str:
    account = f"/accounts/{a.resource}"
    return account if action(a) == "read" else f"{account}/{action(a)}"


def amount(a: Attempt) -> dict[str, int] | None:
    return {"debit": {"amount": 30}, "credit": {"amount": 20}}.get(action(a))


def balance_read(response: httpx.Response) -> int:
    return int(response.json()["balance"])


BALANCE = Balance(
    OPENING,
    debit=("POST /accounts/{resource}/debit", lambda request: request.json["amount"]),
    credit=("POST /accounts/{resource}/credit", lambda request: request.json["amount"]),
    balance=("GET /accounts/{resource}", balance_read),
)


@pytest.mark.race(resources=["acct-1", "acct-2"], concurrency=20, model=BALANCE)
def test_never_overdrawn(race: Race) -> None:
    race.app = Bank()
    result = race.request(method, url, json=amount)
    assert not result.violations


@pytest.mark.xfail(raises=RaceViolation, strict=True, reason="no lock: the account is overdrawn")
@pytest.mark.race(resources=["acct-1", "acct-2"], concurrency=20, model=BALANCE)
def test_overdrawn_without_a_lock(race: Race) -> None:
    race.app = Bank(locked=False)
    try:
        race.request(method, url, json=amount)
    except RaceViolation as exc:
        assert "not-linearizable" in {v.kind for v in exc.result.violations}  # noqa: PT017
        raise
