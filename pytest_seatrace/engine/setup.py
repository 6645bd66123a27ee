"""Per-client set-up before a precise start: log in, fill a cart, then race one request.

Each client gets its own ``httpx.AsyncClient`` (the race's base URL, its own cookie jar) for its
``setup=`` callable; set-ups run concurrently but bounded (``setup_concurrency``) and untimed,
before any connection of the race is prepared, each bounded by the race's ``timeout``. What a
set-up returns becomes ``attempt.setup`` for the request callables; the cookies it received go
with that client's raced request. A set-up that raises or times out keeps its client out of the
race, as an error with the reason; the others race. A synchronous set-up runs in a daemon thread
of its own: a thread cannot be cancelled, so one that outlives ``timeout`` is left to finish
alone while the race goes on, and it never keeps the interpreter alive at exit.
"""

from __future__ import annotations

import contextvars
import inspect
import ssl
import threading
from collections.abc import Callable
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
            # Our own deadline, told apart from a TimeoutError the set-up raises itself (its
            # socket's timeout is what it is, not ours).
            bound = anyio.move_on_after(config.timeout)
            try:
                with bound:
                    value = await call_setup(setup, attempt)
            except Exception as exc:
                roster.failed[(index, client)] = _raised(exc)
                return
            if bound.cancelled_caught:
                roster.failed[(index, client)] = f"set-up timed out after {config.timeout:g}s"
                return
            roster.values[(index, client)] = value
            jar = {cookie.name: cookie.value or "" for cookie in http.cookies.jar}
            if jar:
                cookies[(index, client)] = jar

    async with anyio.create_task_group() as tg:
        for index in range(len(config.resources)):
            for client in range(1, config.concurrency + 1):
                tg.start_soon(one, index, client)
    return cookies


def _raised(exc: Exception) -> str:
    text = str(exc)
    return f"set-up raised {type(exc).__name__}: {text}" if text else f"set-up raised {type(exc).__name__}"


async def call_setup(fn: Any, attempt: Attempt) -> Any:
    """Await an async set-up; run a sync one in a daemon thread that a cancellation abandons."""
    if inspect.iscoroutinefunction(fn):
        return await fn(attempt)
    value = await in_daemon_thread(fn, attempt)
    return await value if inspect.isawaitable(value) else value


async def in_daemon_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a daemon thread of its own; cancelled, the wait ends at once.

    anyio's ``to_thread.run_sync`` cannot stop a thread, and even with ``abandon_on_cancel`` its
    worker threads are not daemons: a set-up blocked on a hung service would hold the
    interpreter at exit. Here the call runs in a daemon thread, and an anyio worker only waits
    for it (abandoned on cancel, then woken at once, so it holds no limiter token and no
    thread for longer than the wait)."""
    wake = threading.Event()
    outcome: list[tuple[bool, Any]] = []
    context = contextvars.copy_context()  # as to_thread.run_sync does

    def work() -> None:
        try:
            outcome.append((True, context.run(fn, *args)))
        except BaseException as exc:  # handed to the waiting task, raised there
            outcome.append((False, exc))
        finally:
            wake.set()

    name = getattr(fn, "__qualname__", type(fn).__name__)
    threading.Thread(target=work, name=f"seatrace {name}", daemon=True).start()
    try:
        await anyio.to_thread.run_sync(wake.wait, abandon_on_cancel=True)
    finally:
        wake.set()  # cancelled: release the waiting worker; the daemon thread runs on alone
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


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
