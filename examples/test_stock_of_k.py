"""A stock of five: when 20 clients buy the same product at once, exactly five must succeed.

``expect=5`` asks for exactly five winners per resource (``expect=range(0, 6)`` would mean "at
most five"). The shop below takes 5 ms between checking the stock and taking an item, as a
database round trip would. Behind a lock it sells exactly five; without one, every buyer passes
the check before anyone takes an item, and the race catches the oversell.

The app is raced in process through ``race.app`` (gate mode, no socket). Run:
``pytest examples/test_stock_of_k.py -v``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from pytest_seatrace import Attempt, Race, RaceViolation

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

STOCK = 5


class Shop:
    """``POST /buy/{product}``: 201 while the stock lasts, then 409 sold out.

    ``locked=False`` is the classic check-then-act bug: the wait between the check and the
    update is an ``await``, so other buyers run in between.
    """

    def __init__(self, stock: int = STOCK, *, locked: bool = True, window_s: float = 0.005) -> None:
        self.left: defaultdict[str, int] = defaultdict(lambda: stock)
        self.locks: defaultdict[str, anyio.Lock] = defaultdict(anyio.Lock)
        self.locked = locked
        self.window_s = window_s

    async def buy(self, product: str) -> bool:
        if self.left[product] <= 0:
            return False
        await anyio.sleep(self.window_s)  # e.g. the round trip to the database
        self.left[product] -= 1
        return True

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        product = scope["path"].rsplit("/", 1)[-1]
        if self.locked:
            async with self.locks[product]:
                sold = await self.buy(product)
        else:
            sold = await self.buy(product)
        status, body = (201, {"product": product}) if sold else (409, {"error": "sold out"})
        payload = json.dumps(body).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def product_url(attempt: Attempt) -> str:
    return f"/buy/{attempt.resource}"


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
