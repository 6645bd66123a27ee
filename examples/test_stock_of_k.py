"""A stock of five: when 20 clients buy the same product at once, exactly five must succeed.

``expect=5`` asks for exactly five winners per resource (``expect=range(0, 6)`` would mean "at
most five"). The shop below takes 5 ms between checking the stock and taking an item, as a
database round trip would. Behind a lock it sells exactly five; without one, every buyer passes
the check before anyone takes an item, and the race catches the oversell.

Buyers may also take more than one (``{"quantity": 2}``) while others read what is left
(``GET /stock/{product}``). Counting winners says nothing then: five wins may be eight items.
``model=Stock(5, take=..., read=...)`` judges the whole history of each product instead: some
order of the takes and reads, each at one instant between its call and its return, must explain
every answer (a take wins only while enough is left, a read sees what is left then). The
oversell without a lock is then a ``not-linearizable`` violation, found by the model alone.

The app is raced in process through ``race.app`` (gate mode, no socket). Run:
``pytest examples/test_stock_of_k.py -v``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import anyio
import pytest

from examples.asgi_json import Receive, Send, read_json, send_json
from pytest_seatrace import Attempt, Race, RaceViolation
from pytest_seatrace.models import Stock

STOCK = 5


class Shop:
    """``POST /buy/{product}`` (body ``{"quantity": q}``, default 1): 201 while at least q are
    left, then 409 sold out; ``GET /stock/{product}``: ``{"left": n}``.

    ``locked=False`` is the classic check-then-act bug: the wait between the check and the
    update is an ``await``, so other buyers run in between.
    """

    def __init__(self, stock: int = STOCK, *, locked: bool = True, window_s: float = 0.005) -> None:
        self.left: defaultdict[str, int] = defaultdict(lambda: stock)
        self.locks: defaultdict[str, anyio.Lock] = defaultdict(anyio.Lock)
        self.locked = locked
        self.window_s = window_s

    async def buy(self, product: str, quantity: int) -> bool:
        if self.left[product] < quantity:
            return False
        await anyio.sleep(self.window_s)  # e.g. the round trip to the database
        self.left[product] -= quantity
        return True

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = await read_json(receive)
        product = scope["path"].rsplit("/", 1)[-1]
        if scope["method"] == "GET":
            await send_json(send, 200, {"product": product, "left": self.left[product]})
            return
        quantity = int(request.get("quantity", 1))
        if self.locked:
            async with self.locks[product]:
                sold = await self.buy(product, quantity)
        else:
            sold = await self.buy(product, quantity)
        status, body = (201, {"product": product}) if sold else (409, {"error": "sold out"})
        await send_json(send, status, body)


def product_url(attempt: Attempt) -> str:
    return f"/buy/{attempt.resource}"


def reads(attempt: Attempt) -> bool:
    return attempt.client % 5 == 4


def method(attempt: Attempt) -> str:
    return "GET" if reads(attempt) else "POST"


def url(attempt: Attempt) -> str:
    return f"/stock/{attempt.resource}" if reads(attempt) else product_url(attempt)


def quantity(attempt: Attempt) -> dict[str, int] | None:
    """Even buyers take one, odd buyers two; readers send no body."""
    return None if reads(attempt) else {"quantity": 1 + attempt.client % 2}


STOCK_MODEL = Stock(
    STOCK,
    take=("POST /buy/{resource}", lambda request: request.json["quantity"]),
    read=("GET /stock/{resource}", lambda response: response.json()["left"]),
)


@pytest.mark.race(resources=["sku-1", "sku-2"], concurrency=20, expect=STOCK)
def test_five_sold_per_product(race: Race) -> None:
    race.app = Shop()
    result = race.post(product_url)
    assert (result.wins, result.rejections) == (10, 30)
    assert {seat: len(wins) for seat, wins in result.winners.items()} == {"sku-1": 5, "sku-2": 5}


@pytest.mark.xfail(raises=RaceViolation, strict=True, reason="no lock: every buyer passes the stock check")
@pytest.mark.race(resources=["sku-1", "sku-2"], concurrency=20, expect=STOCK)
def test_oversold_without_a_lock(race: Race) -> None:
    race.app = Shop(locked=False)
    race.post(product_url)  # raises RaceViolation: too-many, 20 found where 5 are allowed


@pytest.mark.race(resources=["sku-1", "sku-2"], concurrency=20, model=STOCK_MODEL)
def test_quantities_and_reads_judged_by_the_stock_model(race: Race) -> None:
    race.app = Shop()
    result = race.request(method, url, json=quantity)
    assert not result.violations
    operations = {op["operation"] for op in result.by_operation()}
    assert operations == {"POST /buy/{resource}", "GET /stock/{resource}"}


@pytest.mark.xfail(raises=RaceViolation, strict=True, reason="no lock: more taken than the stock held")
@pytest.mark.race(resources=["sku-1", "sku-2"], concurrency=20, model=STOCK_MODEL)
def test_oversold_quantities_caught_by_the_model(race: Race) -> None:
    race.app = Shop(locked=False)
    try:
        race.request(method, url, json=quantity)
    except RaceViolation as exc:
        assert "not-linearizable" in {v.kind for v in exc.result.violations}  # noqa: PT017
        raise
