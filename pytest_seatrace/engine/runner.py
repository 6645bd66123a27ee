"""One race end to end: rounds of waves, reset between rounds, verify after each; the records.

The engine measures and returns a ``RaceRun``; judging it is ``core``'s job.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Callable, Hashable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Protocol

import anyio
import anyio.to_thread
import httpx

from pytest_seatrace.core.errors import RaceUsageError
from pytest_seatrace.core.records import RaceRun, Record, WaveDone
from pytest_seatrace.core.violations import Violation, ViolationKind
from pytest_seatrace.engine.asgi import lifespan
from pytest_seatrace.engine.classify import Classifier
from pytest_seatrace.engine.gate import GateFirer
from pytest_seatrace.engine.lastbyte import LastByteFirer
from pytest_seatrace.engine.limits import ensure_open_files
from pytest_seatrace.engine.plan import RacePlan, Reset, Verify
from pytest_seatrace.engine.requests import RequestBuilder, check_url, make_ssl_context

ASGI_BASE_URL = "http://testserver"


class Firer(Protocol):
    async def fire_waves(self, rnd: int, waves: Sequence[Sequence[int]], sink: list[Record]) -> None: ...

    async def aclose(self) -> None: ...


def waves(count: int, parallel: int) -> list[range]:
    """Resource indices in groups of ``parallel``."""
    return [range(start, min(start + parallel, count)) for start in range(0, count, parallel)]


async def run_race(
    plan: RacePlan,
    on_interrupt: Callable[[RaceRun], None] | None = None,
    on_wave: Callable[[WaveDone], None] | None = None,
) -> RaceRun:
    """Race ``plan`` and return its records, unjudged.

    Cancelled (Ctrl-C), it hands the rounds and waves finished so far to ``on_interrupt``,
    marked ``interrupted``, before the cancellation goes on: figures are never lost.
    ``on_wave`` hears of every finished wave (a live progress line).
    """
    config, target = plan.config, plan.target
    if target.app is None:
        # Last-byte mode prepares the next wave on a second set of connections.
        sets = 2 if config.sync == "last-byte" and config.parallel < len(config.resources) else 1
        ensure_open_files(sets * config.concurrency * config.parallel)
    clock = (time.time_ns(), time.perf_counter_ns())
    records: list[Record] = []
    held: dict[tuple[int, int], int] = {}
    problems: list[Violation] = []
    busy = 0.0

    def run(interrupted: bool = False) -> RaceRun:
        return RaceRun(
            records=tuple(records),
            duration=busy,
            clock=clock,
            held=held if plan.verify is not None else None,
            problems=tuple(problems),
            interrupted=interrupted,
        )

    try:
        async with _firer(plan) as (firer, base_url, builder, transport):
            for rnd in range(1, config.rounds + 1):
                if rnd > 1:
                    origin = base_url or (builder.first_url if builder else None)
                    await _reset(plan.reset, _origin(origin) if origin else None, config.timeout, transport)
                start = time.perf_counter()
                round_waves = waves(len(config.resources), config.parallel)
                sink: list[Record] = records
                if on_wave is not None:
                    sink = _ProgressSink(records, on_wave, rnd, config.rounds, len(round_waves))
                try:
                    await firer.fire_waves(rnd, round_waves, sink)
                finally:
                    busy += time.perf_counter() - start
                if plan.verify is not None:
                    for index, resource in enumerate(config.resources):
                        holders = await _verify(plan.verify, resource, problems, rnd)
                        if holders is not None:
                            held[(rnd, index)] = holders
    except (KeyboardInterrupt, anyio.get_cancelled_exc_class()):
        if records and on_interrupt is not None:
            on_interrupt(run(interrupted=True))
        raise
    return run()


class _ProgressSink(list[Record]):
    """The records list a firer extends once per wave, telling ``on_wave`` each time."""

    def __init__(
        self, records: list[Record], on_wave: Callable[[WaveDone], None], rnd: int, rounds: int, waves: int
    ) -> None:
        super().__init__()
        self._records, self._on_wave = records, on_wave
        self._rnd, self._rounds, self._waves, self._done = rnd, rounds, waves, 0

    def extend(self, wave: Iterable[Record]) -> None:
        self._records.extend(wave)
        self._done += 1
        self._on_wave(WaveDone(self._rnd, self._rounds, self._done, self._waves, self._records))


@asynccontextmanager
async def _firer(
    plan: RacePlan,
) -> AsyncIterator[tuple[Firer, str | None, RequestBuilder | None, httpx.AsyncBaseTransport | None]]:
    config, target, spec = plan.config, plan.target, plan.request
    classifier = Classifier(config)
    ssl_context = make_ssl_context(target.tls_verify)
    async with AsyncExitStack() as stack:
        transport = None
        if target.app is not None:
            await stack.enter_async_context(lifespan(target.app))
            transport = httpx.ASGITransport(app=target.app, raise_app_exceptions=False)
        base_url = target.base_url or (ASGI_BASE_URL if transport is not None else None)
        builder = None
        if spec is not None:
            builder = RequestBuilder(spec, base_url, ssl_context)
            stack.push_async_callback(builder.aclose)
        firer: Firer
        if config.sync == "last-byte" and builder is not None and transport is None:
            firer = LastByteFirer(config, builder, ssl_context, classifier)
        else:
            if target.base_url and transport is None:
                check_url(httpx.URL(target.base_url), target.base_url)
            firer = GateFirer(
                config,
                classifier,
                ssl_context,
                base_url=base_url,
                builder=builder,
                attempt_fn=plan.attempt,
                transport=transport,
            )
        stack.push_async_callback(firer.aclose)
        yield firer, base_url, builder, transport


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    return str(parsed.copy_with(path="/", query=None, fragment=None)).rstrip("/")


async def _reset(
    reset: Reset | None,
    origin: str | None,
    request_timeout: float,
    transport: httpx.AsyncBaseTransport | None,
) -> None:
    """Between rounds: the user's ``reset=`` callable, else ``POST {origin}/reset`` (in process
    for ``race.app``)."""
    if reset is not None:
        await _call(reset)
        return
    if origin is None:
        raise RaceUsageError("rounds > 1 needs reset= or a base URL whose POST /reset restores the state")
    async with httpx.AsyncClient(trust_env=False, timeout=request_timeout, transport=transport) as client:
        try:
            response = await client.post(f"{origin}/reset")
        except httpx.HTTPError as exc:
            raise RaceUsageError(f"POST {origin}/reset between rounds failed ({exc}); pass reset=") from None
    if response.status_code >= 300:
        raise RaceUsageError(
            f"POST {origin}/reset between rounds answered {response.status_code}; "
            "pass reset= to reset the state"
        )


async def _call(fn: Any, *args: Any) -> Any:
    """Await an async callable; run a sync one in a thread (it may block on I/O)."""
    value = await fn(*args) if inspect.iscoroutinefunction(fn) else await anyio.to_thread.run_sync(fn, *args)
    return await value if inspect.isawaitable(value) else value


async def _verify(verify: Verify, resource: Hashable, extra: list[Violation], rnd: int) -> int | None:
    """Holders of ``resource`` in the final state; a failing ``verify`` is a violation, not a crash."""
    try:
        value = await _call(verify, resource)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"verify() returned {value!r}, expected the number of holders (int)")
        return value
    except Exception as exc:
        extra.append(
            Violation(
                ViolationKind.VERIFY,
                resource,
                rnd,
                "an int",
                type(exc).__name__,
                f"verify({resource!r}) raised: {exc}",
            )
        )
        return None
