"""Per-client set-up before a precise start: log in, fill a cart, then race one request.

Each client gets its own ``httpx.AsyncClient`` (the race's base URL, its own cookie jar) for its
``setup=`` callable; set-ups run concurrently but bounded (``setup_concurrency``) and untimed,
before any connection of the race is prepared. What a set-up returns becomes
``attempt.setup`` for the request callables; the cookies it received go with that client's
raced request. A set-up that raises or times out keeps its client out of the race, as an error
with the reason; the others race.
"""

from __future__ import annotations

import inspect
import ssl
from dataclasses import replace
from typing import Any

import anyio
import anyio.to_thread
import httpx

from pytest_seatrace.core.records import Outcome, Record
from pytest_seatrace.engine.plan import Attempt, RacePlan, RequestSpec, Roster, SetupFn


async def run_setups(
    plan: RacePlan,
    setup: SetupFn,
    roster: Roster,
    rnd: int,
    base_url: str | None,
    ssl_context: ssl.SSLContext,
) -> dict[tuple[int, int], dict[str, str]]:
    """Run every client's ``setup`` for round ``rnd``; fill ``roster``; return the cookies each got."""
    config = plan.config
    limiter = anyio.CapacityLimiter(plan.setup_concurrency)
    cookies: dict[tuple[int, int], dict[str, str]] = {}
    roster.values.clear()
    roster.failed.clear()

    async def one(index: int, client: int) -> None:
        async with (
            limiter,
            httpx.AsyncClient(
                base_url=base_url or "", verify=ssl_context, trust_env=False, timeout=config.timeout
            ) as http,
        ):
            attempt = Attempt(config.resources[index], client, rnd, http=http)
            try:
                with anyio.fail_after(config.timeout):
                    roster.values[(index, client)] = await call_maybe_async(setup, attempt)
            except TimeoutError:
                roster.failed[(index, client)] = f"set-up timed out after {config.timeout:g}s"
                return
            except Exception as exc:
                roster.failed[(index, client)] = f"set-up raised {type(exc).__name__}: {exc}"
                return
            jar = {cookie.name: cookie.value or "" for cookie in http.cookies.jar}
            if jar:
                cookies[(index, client)] = jar

    async with anyio.create_task_group() as tg:
        for index in range(len(config.resources)):
            for client in range(1, config.concurrency + 1):
                tg.start_soon(one, index, client)
    return cookies


def failed_records(roster: Roster, rnd: int) -> list[Record]:
    """One error record per client whose set-up failed: it did not race, and says why."""
    return [
        Record(resource=index, client=client, round=rnd, outcome=Outcome.ERROR, reason=reason)
        for (index, client), reason in sorted(roster.failed.items())
    ]


def with_setup_cookies(
    spec: RequestSpec, cookies: dict[tuple[int, int], dict[str, str]], roster: Roster
) -> RequestSpec:
    """The request with each client's set-up cookies added (the request's own ``cookies=`` win
    per name; a ``Cookie`` header the request sets itself wins over both, as in httpx).
    ``cookies`` is filled by the set-ups later, so it is read per attempt."""
    resources = {res: i for i, res in enumerate(roster.config.resources)}

    def merged(attempt: Attempt) -> Any:
        base = spec.value("cookies", attempt) if spec.cookies is not None else None
        jar = cookies.get((resources[attempt.resource], attempt.client))
        if not jar:
            return base
        return {**jar, **dict(base or {})}

    return replace(spec, cookies=merged)


async def call_maybe_async(fn: Any, *args: Any) -> Any:
    """Await an async callable; run a sync one in a thread (it may block on I/O)."""
    value = await fn(*args) if inspect.iscoroutinefunction(fn) else await anyio.to_thread.run_sync(fn, *args)
    return await value if inspect.isawaitable(value) else value
