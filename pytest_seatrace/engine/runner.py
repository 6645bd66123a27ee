"""One race end to end: rounds of waves, reset between rounds, verify after each; the records.

The engine measures and returns a ``RaceRun``; judging it is ``core``'s job.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

import anyio
import anyio.to_thread
import httpx

from pytest_seatrace.core.bindings import Bindings
from pytest_seatrace.core.errors import RaceUsageError
from pytest_seatrace.core.operations import settle
from pytest_seatrace.core.records import (
    HookFailed,
    NotACount,
    Outcome,
    Problem,
    Raced,
    RaceRun,
    Record,
    Stop,
    WaveDone,
    WaveHung,
)
from pytest_seatrace.core.redact import strip_url
from pytest_seatrace.engine.asgi import lifespan
from pytest_seatrace.engine.auto_start import AutoStart, choose_auto
from pytest_seatrace.engine.classify import Classifier
from pytest_seatrace.engine.firers import make_firer, ssl_context_for
from pytest_seatrace.engine.hooks import describe, explain, trim, user_error
from pytest_seatrace.engine.limits import ensure_open_files
from pytest_seatrace.engine.locks import origin_lock
from pytest_seatrace.engine.plan import Attempt, RacePlan, Reset, Roster, Verify
from pytest_seatrace.engine.requests import RequestBuilder, check_url, make_ssl_context
from pytest_seatrace.engine.setup import call_maybe_async, failed_records, run_setups, with_setup_cookies
from pytest_seatrace.engine.stream import Origin
from pytest_seatrace.engine.waves import Firer

ASGI_BASE_URL = "http://testserver"
HTTP_VERSIONS = {"single-packet": "HTTP/2", "single-datagram": "HTTP/3"}
"""The HTTP version each start speaks; the others, HTTP/1.1."""


_Fire = tuple[
    Firer,
    str | None,
    RequestBuilder | None,
    httpx.AsyncBaseTransport | None,
    Callable[[int], Awaitable[list[Record]]],
    AutoStart,
]
"""The start mode's firer, the base URL, the request builder, the in-process transport,
``prepare(round)`` (the set-ups) and the start that runs, with why."""


def waves(count: int, parallel: int) -> list[range]:
    """Resource indices in groups of ``parallel``."""
    return [range(start, min(start + parallel, count)) for start in range(0, count, parallel)]


async def run_race(
    plan: RacePlan,
    on_interrupt: Callable[[RaceRun], None] | None = None,
    on_wave: Callable[[WaveDone], None] | None = None,
) -> RaceRun:
    """Race ``plan`` and return its records, unjudged.

    Cancelled (Ctrl-C), it hands the rounds and waves finished so far, and the requests of the
    wave in flight that were sent, to ``on_interrupt``, marked ``interrupted``, before the
    cancellation goes on: figures are never lost. A hook that fails once a request went out
    (``reset=``, ``verify=``, a request argument callable, the default ``POST /reset``) ends the
    race with what it has: the run says where and why (``RaceRun.stopped``) with a failed-hook
    problem (``core.judge`` words it as a violation of kind ``hook``). ``on_wave`` hears of
    every finished wave (a live progress line).
    """
    config, target = plan.config, plan.target
    if target.app is None and not config.tx:  # shards open their sockets on their own side
        ensure_open_files(config.concurrency * config.parallel)
    clock = (time.time_ns(), time.perf_counter_ns())
    records: list[Record] = []
    held: dict[tuple[int, int], int] = {}
    problems: list[Problem] = []
    not_run: tuple[tuple[int, int], ...] = ()
    ungated: list[str] = []
    raced: list[Raced] = []
    modes: list[str] = []
    firers: list[Firer] = []
    busy = 0.0
    at = _Position(len(waves(len(config.resources), config.parallel)))
    stopped: Stop | None = None
    handed: list[bool] = []

    def run(interrupted: bool = False) -> RaceRun:
        settle_operations(records)
        return RaceRun(
            records=tuple(records),
            duration=busy,
            clock=clock,
            held=held if plan.verify is not None else None,
            problems=tuple(problems),
            interrupted=interrupted,
            not_run=not_run,
            ungated=tuple(ungated),
            raced=raced[0] if raced else None,
            mode=modes[0] if modes else None,
            shards=tuple(getattr(firers[0], "shards", ())) if firers else (),
            replaced=getattr(firers[0], "replaced", 0) if firers else 0,
            stopped=stopped,
            releases=tuple(getattr(firers[0], "datagram_releases", ())) if firers else (),
        )

    def hand_over(firer: Firer | None) -> None:
        """Ctrl-C: the figures so far, with the sent requests of the wave in flight, to
        ``on_interrupt`` (once)."""
        nonlocal stopped
        if handed or on_interrupt is None:
            return
        handed.append(True)
        records.extend(_flying(firer, records))
        if stopped is None:  # a hook that stopped it first keeps its reason
            stopped = at.stop("interrupted", f"interrupted (Ctrl-C) in {at.where()}")
        if records:
            on_interrupt(run(interrupted=True))

    async def one_round(rnd: int, fire: _Fire) -> bool:
        """Reset (after round 1), set up, fire every wave, verify; ``False``: the race stops."""
        nonlocal busy, not_run
        firer, base_url, builder, transport, prepare, start_mode = fire
        at.wave, at.stage = None, f"the reset after round {rnd - 1}"  # still the round before
        if rnd > 1:
            origin = base_url or (builder.first_url if builder else None)
            await _reset(plan.reset, _origin(origin) if origin else None, config.timeout, transport, rnd - 1)
        at.round, at.stage = rnd, f"the set-ups of round {rnd}"
        records.extend(await prepare(rnd))
        start = time.perf_counter()
        round_waves = waves(len(config.resources), config.parallel)
        sink = _WaveSink(records, on_wave, rnd, config.rounds, len(round_waves), config.expect, at)
        at.wave, at.stage = 1, None
        try:
            await firer.fire_waves(rnd, round_waves, sink)
        except _Hung as hung:
            not_run = _never_fired(records, config.rounds, len(config.resources))
            problems.append(WaveHung(hung.round, len(not_run)))
            return False
        except Exception as exc:
            if not at.fired:  # nothing went out yet: a usage error, as before the race
                raise
            raise _HookFailed(_wave_failure(at, exc), exc) from exc
        finally:
            busy += time.perf_counter() - start
            ungated.extend(firer.ungated)
            firer.ungated.clear()
            if not raced:
                raced.append(_raced(plan, builder, base_url, start_mode, transport is not None, records))
        at.wave, at.stage = None, f"verify= after round {rnd}"
        if plan.verify is not None:
            for index, resource in enumerate(config.resources):
                holders = await _verify(plan.verify, resource, problems, rnd)
                if holders is not None:
                    held[(rnd, index)] = holders
        return True

    try:
        async with _firer(plan) as fire:
            firer, base_url, builder = fire[:3]
            modes.append(fire[5].mode)
            firers.append(firer)
            if config.rounds > 1 and plan.reset is None and base_url is None and builder is None:
                raise RaceUsageError(NO_RESET)  # before round 1, not after it
            try:
                for rnd in range(1, config.rounds + 1):
                    if not await one_round(rnd, fire):
                        break
            except _HookFailed as failed:
                stopped = at.stop("hook", failed.reason, failed.error)
                problems.append(HookFailed(failed.reason, type(failed.error).__name__))
            except (KeyboardInterrupt, anyio.get_cancelled_exc_class()):
                hand_over(firer)  # now: tearing connections and shards down takes a while
                raise
    except (KeyboardInterrupt, anyio.get_cancelled_exc_class()):
        hand_over(None)
        raise
    return run()


NO_RESET = "rounds > 1 needs reset= or a base URL whose POST /reset restores the state"


class _Position:
    """Where a race is: the round, the wave in flight or being built (``None`` between waves),
    and whether any request went out yet (a wave was fired)."""

    def __init__(self, waves: int) -> None:
        self.round = 0
        self.wave: int | None = None
        self.waves = waves
        self.stage: str | None = None
        """Between waves: what the race is doing (``verify= after round 1``)."""
        self.fired = False

    def where(self) -> str:
        if self.wave is not None:
            return f"round {self.round}, wave {self.wave} of {self.waves}"
        return self.stage or f"round {self.round}"

    def stop(self, by: str, reason: str, error: BaseException | None = None) -> Stop:
        return Stop(by, max(1, self.round), self.wave, self.waves, reason, error)


class _HookFailed(Exception):
    """A hook failed once requests went out: the race ends with what it has."""

    def __init__(self, reason: str, error: BaseException) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = trim(user_error(error))


def _wave_failure(at: _Position, exc: Exception) -> str:
    """A request argument (or its value) failed for a wave after others went out."""
    return f"{explain(exc)} (before {at.where()} went out)"


def _flying(firer: Firer | None, kept: Sequence[Record]) -> list[Record]:
    """The records of the wave in flight at Ctrl-C, when any of its requests went out: those
    sent, and those that failed before the gate; a request sent but not answered is unknown."""
    known = {id(r) for r in kept}
    wave = [r for r in (firer.in_flight if firer is not None else ()) if id(r) not in known]
    if not any(r.sent_ns for r in wave):
        return []
    out = []
    for rec in wave:
        if rec.sent_ns and not rec.end_ns:
            rec.outcome, rec.reason = Outcome.UNKNOWN, "interrupted (Ctrl-C) before its response"
        if rec.sent_ns or rec.end_ns:
            out.append(rec)
    return out


class _Hung(Exception):
    """Every request of a wave timed out (unknown after the gate, or stuck before it): the
    service hangs, so the race stops here."""

    def __init__(self, rnd: int, resources: list[int]) -> None:
        super().__init__(rnd, resources)
        self.round, self.resources = rnd, resources


class _WaveSink(list[Record]):
    """The records list a firer extends once per wave: it tells ``on_wave`` of each, and stops
    the race when a whole wave timed out (a hung service costs one timeout, not one per wave)."""

    def __init__(
        self,
        records: list[Record],
        on_wave: Callable[[WaveDone], None] | None,
        rnd: int,
        rounds: int,
        waves: int,
        expect: range,
        at: _Position | None = None,
    ) -> None:
        super().__init__()
        self._records, self._on_wave, self._expect, self._at = records, on_wave, expect, at
        self._rnd, self._rounds, self._waves, self._done = rnd, rounds, waves, 0

    def extend(self, wave: Iterable[Record]) -> None:
        batch = list(wave)
        self._records.extend(batch)
        self._done += 1
        if self._at is not None:
            self._at.fired = True
            self._at.wave = self._done + 1 if self._done < self._waves else None
            if self._at.wave is None:
                self._at.stage = f"the end of round {self._rnd}"
        if self._on_wave is not None:
            done = WaveDone(self._rnd, self._rounds, self._done, self._waves, self._records, self._expect)
            self._on_wave(done)
        more = self._done < self._waves or self._rnd < self._rounds
        if more and batch and all(r.timed_out for r in batch):
            raise _Hung(self._rnd, sorted({r.resource for r in batch}))


def _never_fired(records: Sequence[Record], rounds: int, resources: int) -> tuple[tuple[int, int], ...]:
    """(round, resource index) pairs with no record: what a stopped race never raced."""
    fired = {(r.round, r.resource) for r in records}
    return tuple((rnd, i) for rnd in range(1, rounds + 1) for i in range(resources) if (rnd, i) not in fired)


@asynccontextmanager
async def _firer(plan: RacePlan) -> AsyncIterator[_Fire]:
    """The start mode's firer, its request builder, and ``prepare(round)``: the per-client
    set-ups of that round (``setup=``), returning the records of clients whose set-up failed.
    ``sync="auto"`` is decided here, once, from the first origin."""
    target, spec = plan.target, plan.request
    start, ssl_context = await _start(plan)
    mode = start.mode
    config = replace(plan.config, sync=mode)  # type: ignore[arg-type]
    roster = Roster(config)
    cookies: dict[tuple[int, int], dict[str, str]] = {}
    if spec is not None and plan.setup is not None:
        spec = with_setup_cookies(spec, cookies, roster)
    bindings = None if config.model is None else Bindings(config.model)
    classifier = Classifier(config, bindings)
    async with AsyncExitStack() as stack:
        transport = None
        if target.app is not None:
            await stack.enter_async_context(lifespan(target.app))
            transport = httpx.ASGITransport(app=target.app, raise_app_exceptions=False)
        base_url = target.base_url or (ASGI_BASE_URL if transport is not None else None)
        builder = None
        if spec is not None:
            builder = RequestBuilder(spec, base_url, ssl_context, bindings)
            stack.push_async_callback(builder.aclose)
            builder.check_operation()  # before any set-up request
        if transport is None and target.lock_dir is not None:  # held until every round and verify= ran
            await stack.enter_async_context(origin_lock(target.lock_dir, _first_origin(plan)))
        firer: Firer
        if config.tx and builder is not None:
            from pytest_seatrace.engine.shards import GatewayPool, ShardedFirer

            pool = target.shard_pool
            if pool is None:  # no session to own the gateways: they live as long as this race
                pool = GatewayPool()
                stack.callback(pool.close)
            firer = ShardedFirer(plan, config, builder, classifier, roster, pool, _h3_at(plan, start))
        else:
            firer = make_firer(
                mode,
                config,
                classifier,
                ssl_context,
                builder=builder,
                roster=roster,
                base_url=base_url,
                attempt_fn=plan.attempt,
                transport=transport,
                tls_verify=target.tls_verify,
                h3_at=_h3_at(plan, start),
            )
        stack.push_async_callback(firer.aclose)

        async def prepare(rnd: int) -> list[Record]:
            if plan.setup is None:
                return []
            if rnd == 1 or plan.setup_each_round:
                # httpx sets the ALPN of the context it is given: never the race's own (h2) one.
                http_context = make_ssl_context(target.tls_verify)
                cookies.update(await run_setups(plan, plan.setup, roster, rnd, base_url, http_context))
            return failed_records(roster, rnd)

        yield firer, base_url, builder, transport, prepare, start


def settle_operations(records: Sequence[Record]) -> None:
    """Give every record its operation's final name (``core.operations.settle``)."""
    names = settle(r.operation for r in records if r.operation)
    if any(name != final for name, final in names.items()):
        for rec in records:
            if rec.operation:
                rec.operation = names[rec.operation]


def _raced(
    plan: RacePlan,
    builder: RequestBuilder | None,
    base_url: str | None,
    start: AutoStart,
    in_process: bool,
    records: Sequence[Record] = (),
) -> Raced:
    """What this race raced, for reports: secrets stripped from every URL shown; the methods
    seen, in order (``POST, DELETE``), when a ``method=`` callable mixed them."""
    base, stripped = strip_url(base_url) if base_url else (None, ())
    if builder is not None:  # a request race, even one whose every set-up failed (no URL built)
        first = builder.first_url
        if first is None and isinstance(builder.spec.url, str):
            first = str(httpx.URL(base_url).join(builder.spec.url)) if base_url else builder.spec.url
        url, from_url = strip_url(first) if first else (base or "", ())
        method = str(builder.spec.method)
        if builder.spec.method_varies:
            seen = dict.fromkeys(r.operation.partition(" ")[0] for r in records if r.operation)
            method = ", ".join(seen) or "mixed"
    else:
        url, from_url, method = base or "", (), "race.run attempt"
    version = "ASGI (in process)" if in_process else HTTP_VERSIONS.get(start.mode, "HTTP/1.1")
    return Raced(method, url, base, version, tuple(dict.fromkeys((*stripped, *from_url))), start.why)


async def _start(plan: RacePlan) -> tuple[AutoStart, ssl.SSLContext]:
    """The start that runs, why (what ``auto`` decided), and the SSL context for it.

    ``auto`` (``engine.auto_start``): single-datagram where the first origin offers HTTP/3, else
    single-packet where TLS ALPN picks ``h2`` (not with an explicit hold point), else last-byte."""
    config, target = plan.config, plan.target
    if plan.attempt is not None or target.app is not None or config.sync == "gate":
        return AutoStart("gate", None), ssl_context_for("gate", target.tls_verify)
    start = AutoStart(config.sync, None)
    if config.sync == "auto":
        first = _first_url(plan)
        if first is not None:
            start = await choose_auto(*first, config, target.tls_verify)
        else:
            start = AutoStart("last-byte", None)
    if start.mode == "single-datagram":
        _check_single_datagram(plan)
    return start, ssl_context_for(start.mode, target.tls_verify)


def _h3_at(plan: RacePlan, start: AutoStart) -> dict[Origin, Origin]:
    """Where HTTP/3 answers for the first origin, when ``auto`` found it elsewhere (``Alt-Svc``)."""
    if start.target is None:
        return {}
    origin = _first_origin(plan)
    return {} if origin is None or start.target == origin else {origin: start.target}


def _check_single_datagram(plan: RacePlan) -> None:
    """What a single-datagram race cannot do, refused before anything is sent: QUIC is always
    TLS, and aioquic takes no ``ssl.SSLContext`` (nor can one travel to a shard)."""
    from pytest_seatrace.engine.http3 import Http3Error, load_aioquic

    try:
        load_aioquic()
    except Http3Error as exc:  # the [http3] extra is not installed
        raise RaceUsageError(f"sync='single-datagram': {exc}") from None
    if isinstance(plan.target.tls_verify, ssl.SSLContext):
        raise RaceUsageError(
            "tls_verify=<ssl.SSLContext>: sync='single-datagram' speaks QUIC through aioquic, which "
            "cannot take an SSLContext; pass True, False or a CA bundle path"
        )
    origin = _first_origin(plan)
    if origin is not None and origin.scheme != "https":
        raise RaceUsageError(
            f"sync='single-datagram' needs an https:// URL (QUIC is always TLS), not {origin.url}"
        )


def _first_origin(plan: RacePlan) -> Origin | None:
    """The origin a race talks to: its first request's, or the base URL of ``run`` attempts."""
    first = _first_url(plan)
    return None if first is None else first[1]


def _first_url(plan: RacePlan) -> tuple[str, Origin] | None:
    """The first URL a race requests and its origin, or the base URL of ``run`` attempts.

    Only the URL is resolved (a ``url=`` callable is called once more for it); the other
    argument callables run once per attempt, as always.
    """
    base = plan.target.base_url
    if plan.request is not None:
        try:
            url = plan.request.value("url", Attempt(plan.config.resources[0], 1, 1))
        except RaceUsageError:
            if plan.setup is None or not base:
                raise
            # The URL needs attempt.setup, which no set-up has made yet: the base URL's origin.
            return base, check_url(httpx.URL(base), base)
        full = httpx.URL(base).join(url) if base else httpx.URL(url)
        return str(full), check_url(full, url)
    return (base, check_url(httpx.URL(base), base)) if base else None


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    return str(parsed.copy_with(path="/", query=None, fragment=None)).rstrip("/")


async def _reset(
    reset: Reset | None,
    origin: str | None,
    request_timeout: float,
    transport: httpx.AsyncBaseTransport | None,
    after: int,
) -> None:
    """Between rounds: the user's ``reset=`` callable, else ``POST {origin}/reset`` (in process
    for ``race.app``). Either failing ends the race after round ``after`` (``_HookFailed``)."""
    if reset is not None:
        try:
            await call_maybe_async(reset)
        except Exception as exc:
            raise _HookFailed(f"reset= raised after round {after}: {explain(exc)}", exc) from exc
        return
    if origin is None:
        raise RaceUsageError(NO_RESET)
    where = f"POST {strip_url(origin)[0]}/reset between rounds"
    async with httpx.AsyncClient(trust_env=False, timeout=request_timeout, transport=transport) as client:
        try:
            response = await client.post(f"{origin}/reset")
            response.raise_for_status()  # 3xx included: a redirect is not a reset
        except httpx.HTTPStatusError as exc:
            status = response.status_code
            reason = f"{where} answered {status} after round {after}; pass reset= to reset the state"
            raise _HookFailed(reason, exc) from exc
        except httpx.HTTPError as exc:
            reason = f"{where} failed after round {after} ({describe(exc)}); pass reset="
            raise _HookFailed(reason, exc) from exc


async def _verify(verify: Verify, resource: Hashable, extra: list[Problem], rnd: int) -> int | None:
    """Holders of ``resource`` in the final state. A value that is not a count is a problem
    (a violation of kind ``verify``; the race goes on); a ``verify=`` that raises ends the race
    (a hook)."""
    try:
        value = await call_maybe_async(verify, resource)
    except Exception as exc:
        raise _HookFailed(f"verify({resource!r}) raised after round {rnd}: {explain(exc)}", exc) from exc
    if isinstance(value, bool) or not isinstance(value, int):
        extra.append(NotACount(resource, rnd, repr(value), type(value).__name__))
        return None
    return value
