"""The seed race most benchmarks run: ``POST /orders`` by ``clients`` per seat, one winner each."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import anyio

from pytest_seatrace.engine.instrument import (
    AttemptFn,
    GatewayPool,
    HoldPoint,
    RaceConfig,
    RacePlan,
    RaceResult,
    RequestSpec,
    SetupFn,
    SyncMode,
    TargetOptions,
    run_race,
)


@dataclass(frozen=True)
class Start:
    """How a benchmark race starts: the mode, and for last-byte the hold point."""

    label: str
    sync: SyncMode
    hold: HoldPoint = "headers"


STARTS = {
    "last-byte/headers": Start("last-byte/headers", "last-byte", "headers"),
    "last-byte/body": Start("last-byte/body", "last-byte", "body"),
    "gate": Start("gate", "gate"),
}
SINGLE_PACKET_START = Start("single-packet", "single-packet")
"""HTTP/2 only, so not among the HTTP/1.1 benchmarks' ``STARTS``; single_packet races it beside them."""


def seed_config(
    *,
    resources: int,
    clients: int,
    sync: SyncMode,
    seed: int,
    timeout: float,
    parallel: int = 1,
    hold: HoldPoint = "headers",
) -> RaceConfig:
    """The seed scenario: ``clients`` per seat, seats ``1..resources``, exactly one winner each."""
    return RaceConfig(
        resources=tuple(range(1, resources + 1)),
        concurrency=clients,
        timeout=timeout,
        sync=sync,
        hold=hold,
        parallel=parallel,
        seed=seed,
    )


def start_config(label: str, *, resources: int, clients: int, seed: int, timeout: float) -> RaceConfig:
    """The seed scenario started as ``STARTS[label]`` says."""
    start = STARTS[label]
    return seed_config(
        resources=resources, clients=clients, sync=start.sync, hold=start.hold, seed=seed, timeout=timeout
    )


def seed_order(seat: int, client: int) -> dict[str, Any]:
    """The seed's ``POST /orders`` body: ``seat`` booked by user ``vu-<client>``."""
    return {"seats": [seat], "user": f"vu-{client}"}


def seed_held_bytes(resources: int, clients: int, hold: HoldPoint) -> int:
    """How many bytes a seed request holds back until the gate at ``hold`` (the longest one):
    the header block's last byte and the JSON body, or the body's last byte."""
    if hold == "body":
        return 1
    body = json.dumps(seed_order(resources, clients), separators=(",", ":"))
    return 1 + len(body.encode())


def order_spec() -> RequestSpec:
    """``POST /orders`` for the attempt's seat, one user per client."""
    return RequestSpec("POST", "/orders", json=lambda a: seed_order(a.resource, a.client))


def run_one_race(
    url: str,
    config: RaceConfig,
    *,
    name: str,
    limit_s: float,
    request: RequestSpec | None = None,
    setup: SetupFn | None = None,
    attempt: AttemptFn | None = None,
    loops: list[str] | None = None,
    shard_pool: GatewayPool | None = None,
) -> tuple[RaceResult, float]:
    """One race against ``url``, cancelled after ``limit_s``; returns the result and its wall time.

    The seed's ``POST /orders`` by default; or ``request`` (with a ``setup``), or an ``attempt``
    function (gate mode); ``loops`` hears the event loop's class; ``shard_pool`` keeps shard
    gateways from one race to the next. Raises ``TimeoutError`` when the race did not finish
    within ``limit_s``.
    """
    target = TargetOptions(base_url=url, shard_pool=shard_pool)
    if attempt is not None:
        plan = RacePlan(name=name, config=config, target=target, attempt=attempt)
    else:
        plan = RacePlan(name=name, config=config, target=target, request=request or order_spec(), setup=setup)

    results: list[RaceResult] = []

    async def main() -> None:  # returns nothing: Python 3.11 repr's a task's result as the run ends
        if loops is not None:
            loops.append(loop_name())
        with anyio.fail_after(limit_s):
            results.append(RaceResult.from_run(name, config, await run_race(plan)))

    started = time.perf_counter()
    try:
        anyio.run(main)
    except TimeoutError:
        raise TimeoutError(f"race {name} did not finish within {limit_s:g}s") from None
    return results[0], time.perf_counter() - started


def loop_name() -> str:
    """The running event loop's class (asyncio's default, uvloop, ...)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return "-"
    return f"{type(loop).__module__}.{type(loop).__qualname__}"
