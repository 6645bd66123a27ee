"""What the ``race`` fixture gives a test: check a call, run it, judge it, record it.

Sync tests drive the engine through a blocking portal; async tests await it on their own loop,
so the same object works in plain, pytest-asyncio and anyio tests.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import anyio.from_thread
import anyio.lowlevel

from pytest_seatrace.core.arguments import MarkerError
from pytest_seatrace.core.errors import RaceUsageError, RaceViolation
from pytest_seatrace.core.precedence import check_arguments, resolve
from pytest_seatrace.core.records import RaceRun, WaveDone
from pytest_seatrace.core.result import RaceResult
from pytest_seatrace.core.settings import ARGUMENTS, DEFAULT_SETUP_CONCURRENCY
from pytest_seatrace.engine import AttemptFn, RacePlan, RequestSpec, TargetOptions, run_race
from pytest_seatrace.engine.plan import REQUEST_FIELDS, check_method
from pytest_seatrace.report.message import violation_message

if TYPE_CHECKING:
    from pytest_seatrace.core.precedence import Settings

OVERRIDES = frozenset(setting.name for setting in ARGUMENTS)
"""Marker arguments a race call may override: the marker's own schema."""

INTERRUPT_GRACE = 5.0
"""Seconds a cancelled race gets to close its sockets and hand over its partial figures."""

REQUEST_ARGUMENTS = tuple(name for name in REQUEST_FIELDS if name != "url")
"""Request arguments of ``race.post(url, ...)`` and friends (the URL is positional)."""


def _api(prefix: str, method: Any) -> str:
    """``race.post``, ``race.apost``: the call as errors name it (``race.request`` for a method
    that varies per attempt)."""
    return f"race.{prefix}{method.lower()}" if isinstance(method, str) else f"race.{prefix}request"


def _spec(method: Any, url: Any, kwargs: dict[str, Any]) -> RequestSpec:
    fields = {k: kwargs.pop(k) for k in REQUEST_ARGUMENTS if k in kwargs}
    if not callable(method):
        method = check_method(method, f"race.request(method={method!r})")
    return RequestSpec(method=method, url=url, **fields)


@dataclass(frozen=True)
class _Call:
    """One race call, checked and resolved before anything runs: the plan, and whether to raise."""

    plan: RacePlan
    check: bool

    def checked(self, result: RaceResult) -> RaceResult:
        """Raise ``RaceViolation`` when the race broke a rule, unless ``check=False``; a race a
        hook stopped could not finish, so it raises even then, from the hook's own exception."""
        __tracebackhide__ = True
        stop = result.stopped
        if stop is not None and stop.by == "hook":
            raise RaceViolation(violation_message(result.to_dict()), result) from stop.error
        if self.check and result.violations:
            raise RaceViolation(violation_message(result.to_dict()), result)
        return result


def _refuse_inside_loop(api: str, instead: str) -> None:
    try:
        anyio.lowlevel.current_token()
    except RuntimeError:
        return
    raise RaceUsageError(f"{api}() would block the running event loop; use {instead}() in async tests")


class Race:
    """What the ``race`` fixture gives a test. Every call is one race and one summary row."""

    __module__ = "pytest_seatrace"  # the public name: tracebacks and pickles say it

    def __init__(
        self,
        *,
        name: str,
        marker: dict[str, Any],
        settings: Settings,
        record: Callable[[RaceResult], None],
        progress: Callable[[str, WaveDone], None] | None = None,
        lock_dir: str | None = None,
        shard_pool: Callable[[], object] | None = None,
    ) -> None:
        self.name = name
        self.base_url: str | None = settings.base_url
        self.app: Any = None
        """An ASGI app to race in process (no socket); its lifespan runs around each race."""
        self._marker = marker
        self._settings = settings
        self._record = record
        self._progress = progress
        self._lock_dir = lock_dir
        """Where races against one origin take turns with other xdist workers (``None``: no lock)."""
        """Hears of every finished wave (the live progress line), with the race's name."""
        self._shard_pool = shard_pool
        """The session's execnet gateways (sharded races), started on first use."""
        self._stack = contextlib.ExitStack()
        self._portal: anyio.from_thread.BlockingPortal | None = None
        self._calls = 0

    # -- request-style races -------------------------------------------------------------

    def request(self, method: Any, url: Any, **kwargs: Any) -> RaceResult:
        """Race ``method url`` from every client of every resource; raise on a violation.

        Request arguments (``json``, ``data``, ``content``, ``headers``, ``params``, ``cookies``),
        ``url`` and ``method`` may be callables of the attempt: a ``method=`` callable mixes
        operations under one start (50 clients book while 50 cancel). Marker arguments override the marker for
        this call; ``check=False`` returns without raising; ``verify=``, ``reset=``,
        ``tls_verify=`` as documented. ``setup=`` runs per client before the race (log in):
        its return value is ``attempt.setup`` for the request callables.
        """
        __tracebackhide__ = True
        _refuse_inside_loop(_api("", method), "await " + _api("a", method))
        call = self._prepare(_api("", method), kwargs, spec=_spec(method, url, kwargs))
        return call.checked(self._sync(call))

    def get(self, url: Any, **kwargs: Any) -> RaceResult:
        __tracebackhide__ = True
        return self.request("GET", url, **kwargs)

    def post(self, url: Any, **kwargs: Any) -> RaceResult:
        __tracebackhide__ = True
        return self.request("POST", url, **kwargs)

    def put(self, url: Any, **kwargs: Any) -> RaceResult:
        __tracebackhide__ = True
        return self.request("PUT", url, **kwargs)

    def patch(self, url: Any, **kwargs: Any) -> RaceResult:
        __tracebackhide__ = True
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: Any, **kwargs: Any) -> RaceResult:
        __tracebackhide__ = True
        return self.request("DELETE", url, **kwargs)

    async def arequest(self, method: Any, url: Any, **kwargs: Any) -> RaceResult:
        """``request`` for async tests, on the test's own event loop."""
        __tracebackhide__ = True
        call = self._prepare(_api("a", method), kwargs, spec=_spec(method, url, kwargs))
        return call.checked(await self._execute(call))

    async def aget(self, url: Any, **kwargs: Any) -> RaceResult:
        __tracebackhide__ = True
        return await self.arequest("GET", url, **kwargs)

    async def apost(self, url: Any, **kwargs: Any) -> RaceResult:
        __tracebackhide__ = True
        return await self.arequest("POST", url, **kwargs)

    async def aput(self, url: Any, **kwargs: Any) -> RaceResult:
        __tracebackhide__ = True
        return await self.arequest("PUT", url, **kwargs)

    async def apatch(self, url: Any, **kwargs: Any) -> RaceResult:
        __tracebackhide__ = True
        return await self.arequest("PATCH", url, **kwargs)

    async def adelete(self, url: Any, **kwargs: Any) -> RaceResult:
        __tracebackhide__ = True
        return await self.arequest("DELETE", url, **kwargs)

    # -- attempt-style races -------------------------------------------------------------

    def run(self, attempt: AttemptFn, **kwargs: Any) -> RaceResult:
        """Race an async ``attempt(a)`` function: set-up before ``await a.gate()``, the timed
        request after it; it returns the response to classify."""
        __tracebackhide__ = True
        _refuse_inside_loop("race.run", "await race.arun")
        call = self._prepare("race.run", kwargs, attempt_fn=attempt)
        return call.checked(self._sync(call))

    async def arun(self, attempt: AttemptFn, **kwargs: Any) -> RaceResult:
        """``run`` for async tests, on the test's own event loop."""
        __tracebackhide__ = True
        call = self._prepare("race.arun", kwargs, attempt_fn=attempt)
        return call.checked(await self._execute(call))

    # -- shared ----------------------------------------------------------------------------

    def _prepare(
        self,
        api: str,
        kwargs: dict[str, Any],
        *,
        spec: RequestSpec | None = None,
        attempt_fn: AttemptFn | None = None,
    ) -> _Call:
        """Check the call's arguments and resolve its settings, in the caller's thread."""
        __tracebackhide__ = True
        check = kwargs.pop("check", True)
        verify = kwargs.pop("verify", None)
        reset = kwargs.pop("reset", None)
        tls_verify = kwargs.pop("tls_verify", True)
        setup = kwargs.pop("setup", None)
        setup_concurrency = kwargs.pop("setup_concurrency", DEFAULT_SETUP_CONCURRENCY)
        setup_each_round = kwargs.pop("setup_each_round", False)
        unknown = sorted(set(kwargs) - OVERRIDES)
        if unknown:
            raise RaceUsageError(
                f"{api}() got an unexpected keyword argument {unknown[0]!r}; it takes request arguments "
                f"({', '.join(REQUEST_ARGUMENTS)}), check, verify, reset, setup, setup_concurrency, "
                f"setup_each_round, tls_verify and the marker's arguments ({', '.join(sorted(OVERRIDES))})"
            )
        if setup is not None and spec is None:
            raise RaceUsageError(
                f"{api}(setup=...): set-up is for request races (race.post & co.); in an attempt "
                "function, do the set-up before `await a.gate()`"
            )
        if setup is not None and not callable(setup):
            raise RaceUsageError(f"{api}(setup={setup!r}): expected a sync or async callable of the attempt")
        if (
            isinstance(setup_concurrency, bool)
            or not isinstance(setup_concurrency, int)
            or setup_concurrency < 1
        ):
            raise RaceUsageError(f"{api}(setup_concurrency={setup_concurrency!r}): expected an integer >= 1")
        if not isinstance(setup_each_round, bool):
            raise RaceUsageError(f"{api}(setup_each_round={setup_each_round!r}): expected True or False")
        if attempt_fn is not None and not callable(attempt_fn):
            raise RaceUsageError(
                f"{api}: attempt must be an async function of the attempt, not {attempt_fn!r}"
            )
        for name, fn in (("verify", verify), ("reset", reset)):
            if fn is not None and not callable(fn):
                raise RaceUsageError(f"{api}({name}={fn!r}): expected a callable")
        try:
            overrides = check_arguments(kwargs)
            config = resolve(
                self._marker,
                overrides,
                self._settings,
                flexible=attempt_fn is not None or self.app is not None,
            )
        except MarkerError as exc:
            raise RaceUsageError(f"{api}: {exc}") from None
        self._calls += 1
        name = self.name if self._calls == 1 else f"{self.name} #{self._calls}"
        if spec is not None:  # errors found while racing (a bad method= value) name the test
            spec = replace(spec, label=f"{api} in {name}")
        plan = RacePlan(
            name=name,
            config=config,
            target=TargetOptions(
                base_url=self.base_url,
                tls_verify=tls_verify,
                app=self.app,
                lock_dir=self._lock_dir,
                shard_pool=self._shard_pool() if config.tx and self._shard_pool is not None else None,
            ),
            request=spec,
            attempt=attempt_fn,
            verify=verify,
            reset=reset,
            setup=setup,
            setup_concurrency=setup_concurrency,
            setup_each_round=setup_each_round,
        )
        return _Call(plan, check=bool(check))

    def _judge(self, call: _Call, run: RaceRun) -> RaceResult:
        """The judged result of a run, recorded for the summary and reports as it is made."""
        plan = call.plan
        result = RaceResult.from_run(plan.name, plan.config, run, checked=call.check)
        self._record(result)
        return result

    async def _execute(self, call: _Call) -> RaceResult:
        plan = call.plan

        def interrupted(partial: RaceRun) -> None:  # Ctrl-C: the finished waves are still judged
            self._judge(call, partial)

        on_wave = None if self._progress is None else functools.partial(self._progress, plan.name)
        run = await run_race(plan, on_interrupt=interrupted, on_wave=on_wave)
        result = self._judge(call, run)
        if run.ungated:  # recorded first: the figures stay in the summary and reports
            more = f" and {len(run.ungated) - 1} more" if len(run.ungated) > 1 else ""
            raise RaceUsageError(
                f"the attempt for {run.ungated[0]}{more} returned without awaiting a.gate(): it was not "
                "raced; await a.gate() right before the timed request",
                result,
            )
        return result

    def _sync(self, call: _Call) -> RaceResult:
        __tracebackhide__ = True
        if self._portal is None:
            self._portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal())
        future = self._portal.start_task_soon(self._execute, call)
        try:
            result: RaceResult = future.result()
        except RaceUsageError as exc:  # re-raised here, so the traceback ends at the test's line
            raise RaceUsageError(str(exc), exc.result) from None
        except BaseException:  # Ctrl-C: cancel the race, let it hand over what it finished
            future.cancel()
            with contextlib.suppress(BaseException):
                future.exception(timeout=INTERRUPT_GRACE)
            raise
        return result

    def close(self) -> None:
        self._stack.close()
