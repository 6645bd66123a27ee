"""The ``race`` marker: its schema is the signature of ``race()``; values are checked once.

Python's own ``TypeError`` names an unknown keyword; ``MarkerError`` names a bad value and
what is allowed. Call arguments of ``race.post(...)`` go through the same checks.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pytest_seatrace.options import HOLDLESS, Settings

if TYPE_CHECKING:
    import pytest
from pytest_seatrace.core.config import (
    DEFAULT_CONCURRENCY,
    DEFAULT_HOLD,
    DEFAULT_RESOURCE_LABEL,
    DEFAULT_SYNC,
    DEFAULT_TIMEOUT,
    ERROR_DEFAULT,
    HOLD_POINTS,
    REJECT_DEFAULT,
    SUCCESS_DEFAULT,
    SYNC_MODES,
    RaceConfig,
    make_rule,
)
from pytest_seatrace.core.thresholds import Threshold, ThresholdError, parse_threshold

MARKER_DOC = (
    f"race(*, resources=N|ids, concurrency={DEFAULT_CONCURRENCY}, expect=1|range, "
    "success=2xx|codes|predicate, reject=4xx|codes|predicate, error=None|codes|predicate, "
    f"timeout={DEFAULT_TIMEOUT:g}, thresholds=['p95 < 2000ms'], allow_errors=False, "
    f"rounds=1, sync={'|'.join(repr(m) for m in SYNC_MODES)}, "
    f"hold={'|'.join(repr(h) for h in HOLD_POINTS)}, parallel=1|'all', shards=1, "
    f"resource_label={DEFAULT_RESOURCE_LABEL!r}, "
    "warmup=True|False|'/path'): "
    "race concurrent requests per resource "
    "through the `race` fixture and assert that exactly `expect` of them win per resource."
)


class MarkerError(ValueError):
    """A marker or call argument with a value outside what is allowed."""

    def __init__(self, argument: str, value: object, allowed: str, *, problem: str = "") -> None:
        super().__init__(f"{argument}={value!r}: {problem or 'expected ' + allowed}")
        self.argument = argument


def race(
    *,
    resources: int | Iterable[Hashable] | None = None,
    concurrency: int | None = None,
    expect: int | range = 1,
    success: Any = None,
    reject: Any = None,
    error: Any = None,
    timeout: float | None = None,
    thresholds: Iterable[str] = (),
    allow_errors: bool = False,
    rounds: int | None = None,
    sync: str | None = None,
    hold: str | None = None,
    parallel: int | str | None = None,
    shards: int | None = None,
    resource_label: str | None = None,
    warmup: bool | str = True,
) -> dict[str, Any]:
    """The marker's schema; returns the arguments that differ from the defaults, checked and
    normalised. Arguments with a CLI twin default to ``None``: the option, the ini value, the
    built-in default apply in that order."""
    given = {k: v for k, v in locals().items() if v is not None and v is not _DEFAULTS.get(k)}
    return check_values(given)


_DEFAULTS: dict[str, Any] = {"expect": 1, "thresholds": (), "allow_errors": False, "warmup": True}


def merged_marker_args(markers: Iterable[pytest.Mark]) -> dict[str, Any] | None:
    """The checked arguments of a test's stacked ``race`` markers, the closest winning per key
    (as ``httpx_mock`` merges its markers); ``None`` for a test without one."""
    kwargs: dict[str, Any] = {}
    args: tuple[Any, ...] = ()
    found = False
    for marker in reversed(list(markers)):  # farthest first: the closest marker wins per key
        found = True
        kwargs.update(marker.kwargs)
        args = args or marker.args
    return race(*args, **kwargs) if found else None


def _int(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise MarkerError(name, value, f"an integer >= {minimum}")
    return value


def _rule(name: str, value: object) -> Any:
    if callable(value):
        return value
    if isinstance(value, bool):
        raise MarkerError(name, value, "a status code, an iterable of status codes, or a predicate")
    codes = [value] if isinstance(value, int) else value
    if isinstance(codes, (str, bytes)) or not isinstance(codes, Iterable):
        raise MarkerError(name, value, "a status code, an iterable of status codes, or a predicate")
    codes = list(codes)
    if not codes or not all(
        isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in codes
    ):
        raise MarkerError(name, value, "status codes between 100 and 599, or a predicate")
    return frozenset(codes)  # an iterator would be used up by this check


def check_values(given: Mapping[str, Any]) -> dict[str, Any]:
    """Check each given argument; normalise ``resources`` to a tuple and ``expect`` to a range."""
    out: dict[str, Any] = dict(given)
    if "resources" in given:
        value = given["resources"]
        if isinstance(value, int) and not isinstance(value, bool):
            out["resources"] = tuple(range(1, _int("resources", value, 1) + 1))
        elif isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise MarkerError("resources", value, "an integer >= 1 or a non-empty iterable of resource ids")
        else:
            ids = tuple(value)
            if not ids:
                raise MarkerError(
                    "resources", value, "an integer >= 1 or a non-empty iterable of resource ids"
                )
            try:
                if len(set(ids)) != len(ids):
                    raise MarkerError("resources", value, "distinct resource ids")
            except TypeError:
                raise MarkerError("resources", value, "hashable resource ids") from None
            _check_written_ids(ids)
            out["resources"] = ids
    if "concurrency" in given:
        _int("concurrency", given["concurrency"], 1)
    if "expect" in given:
        value = given["expect"]
        if isinstance(value, range):
            if value.step != 1 or len(value) == 0 or value.start < 0:
                raise MarkerError(
                    "expect", value, "a non-empty range with step 1 and start >= 0, or an integer >= 0"
                )
            out["expect"] = value
        else:
            out["expect"] = range(_int("expect", value, 0), value + 1)
    for name in ("success", "reject", "error"):
        if name in given:
            out[name] = _rule(name, given[name])
    if "timeout" in given:
        value = given["timeout"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            raise MarkerError("timeout", value, "a number of seconds > 0")
        out["timeout"] = float(value)
    if "thresholds" in given:
        value = given["thresholds"]
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, Iterable):
            raise MarkerError("thresholds", value, "a list of strings like 'p95 < 2000ms'")
        try:
            out["thresholds"] = tuple(parse_threshold(t) for t in value)
        except ThresholdError as exc:
            raise MarkerError("thresholds", given["thresholds"], "", problem=str(exc)) from exc
    if "allow_errors" in given and not isinstance(given["allow_errors"], bool):
        raise MarkerError("allow_errors", given["allow_errors"], "True or False")
    if "rounds" in given:
        _int("rounds", given["rounds"], 1)
    if "sync" in given and given["sync"] not in SYNC_MODES:
        raise MarkerError("sync", given["sync"], "one of " + ", ".join(repr(m) for m in SYNC_MODES))
    if "hold" in given and given["hold"] not in HOLD_POINTS:
        raise MarkerError("hold", given["hold"], "one of " + ", ".join(repr(h) for h in HOLD_POINTS))
    if "parallel" in given and given["parallel"] != "all":
        try:
            _int("parallel", given["parallel"], 1)
        except MarkerError:
            raise MarkerError("parallel", given["parallel"], "an integer >= 1 or 'all'") from None
    if "shards" in given:
        _int("shards", given["shards"], 1)
    if "resource_label" in given:
        label = given["resource_label"]
        if not isinstance(label, str) or not label.strip():
            raise MarkerError("resource_label", label, "a non-empty string such as 'Ticket'")
    if "warmup" in given:
        value = given["warmup"]
        if not isinstance(value, bool) and not (isinstance(value, str) and value.startswith("/")):
            raise MarkerError("warmup", value, "True, False or a path starting with '/' (like '/health')")
    if "expect" in out and "concurrency" in out:
        check_reachable(out["expect"], out["concurrency"])
    if "sync" in out:  # both on one marker or call: refused at collection, not at the race
        check_hold(out["sync"], out.get("hold"), None)
    return out


def _check_written_ids(ids: tuple[Hashable, ...]) -> None:
    """Resource ids stay distinct once written as text (``str(id)``: the JSON's ``winners`` and
    ``spread.by_resource`` keys, the summary, the HTML): ``1`` and ``"1"`` would merge there."""
    seen: dict[str, Hashable] = {}
    for rid in ids:
        text = str(rid)
        if text in seen:
            raise MarkerError(
                "resources",
                list(ids),
                "",
                problem=f"ids {seen[text]!r} and {rid!r} are both written {text!r} in the reports "
                "(JSON keys, summary, HTML); use ids whose str() differs",
            )
        seen[text] = rid


def check_reachable(expect: range, concurrency: int) -> None:
    """``concurrency`` clients can never make more than ``concurrency`` winners."""
    if expect.start > concurrency:
        raise MarkerError(
            "expect",
            _expect_text(expect),
            "",
            problem=f"needs at least {expect.start} winners per resource but concurrency={concurrency} "
            f"clients can make at most {concurrency}; lower expect or raise concurrency",
        )


def _expect_text(expect: range) -> object:
    return expect.start if len(expect) == 1 else expect


def resolve(
    marker: Mapping[str, Any],
    call: Mapping[str, Any],
    settings: Settings,
    *,
    flexible: bool,
) -> RaceConfig:
    """A call argument beats the marker; then CLI/ini ``settings``; then built-in defaults.

    ``flexible`` races (``run``/``arun``, ASGI apps) always start through the gate.
    """
    args = {**marker, **call}
    resources = args.get("resources") or tuple(range(1, settings.resources + 1))
    sync = args.get("sync")
    hold = args.get("hold")
    if flexible:
        if sync in ("last-byte", "single-packet"):
            raise MarkerError(
                "sync", sync, "'gate' for race.run/arun attempts and race.app (they start through the gate)"
            )
        if hold is not None:
            raise MarkerError(
                "hold",
                hold,
                "no hold point for race.run/arun attempts and race.app (they start through the gate)",
            )
        sync = "gate"
    else:
        sync = sync or settings.sync or DEFAULT_SYNC
    hold_given = (hold or settings.hold) is not None
    check_hold(sync, hold, None if flexible else settings.hold)  # run/arun/app: request races' option
    concurrency = args.get("concurrency", settings.concurrency)
    tx = _shard_specs(args.get("shards"), settings, flexible=flexible, concurrency=concurrency)
    expect = args.get("expect", range(1, 2))
    check_reachable(expect, concurrency)
    parallel = args.get("parallel", settings.parallel)
    thresholds: tuple[Threshold, ...] = tuple(args.get("thresholds", ()))
    if settings.p95_ms is not None:
        bound = settings.p95_ms
        thresholds += (Threshold(text=f"p95 < {bound:g}ms", metric="p95", op="<", bound=bound * 1e6),)
    success, reject, error = args.get("success"), args.get("reject"), args.get("error")
    return RaceConfig(
        resources=tuple(resources),
        concurrency=concurrency,
        expect=expect,
        success=make_rule(success, SUCCESS_DEFAULT),
        reject=make_rule(reject, REJECT_DEFAULT),
        success_given=success is not None,
        reject_given=reject is not None,
        error=make_rule(error, ERROR_DEFAULT),
        error_given=error is not None,
        timeout=args.get("timeout", settings.timeout),
        thresholds=thresholds,
        allow_errors=args.get("allow_errors", False),
        rounds=args.get("rounds", settings.rounds),
        sync=sync,  # type: ignore[arg-type]
        hold=hold or settings.hold or DEFAULT_HOLD,  # type: ignore[arg-type]
        hold_given=hold_given,
        parallel=len(resources) if parallel == "all" else min(int(parallel), len(resources)),
        seed=settings.seed,
        shards=max(1, len(tx)),
        tx=tx,
        resource_label=args.get("resource_label"),
        warmup=args.get("warmup", True),
    )


def check_hold(sync: str, hold: str | None, session_hold: str | None) -> None:
    """A hold point (``hold`` from the marker or call, else ``--race-hold``) is for last-byte
    starts: a start mode without one would ignore it silently, so it is refused."""
    if sync not in HOLDLESS or (hold or session_hold) is None:
        return
    source, drop = ("", "hold=") if hold is not None else ("from --race-hold (race_hold); ", "--race-hold")
    raise MarkerError(
        "hold",
        hold or session_hold,
        "",
        problem=f"{source}a hold point is for last-byte starts; sync={sync!r} {HOLDLESS[sync]}: "
        f"drop {drop} or use sync='last-byte'",
    )


def _shard_specs(
    shards: int | None, settings: Settings, *, flexible: bool, concurrency: int
) -> tuple[str, ...]:
    """The gateway spec of every shard: ``--race-tx`` expanded, else ``shards`` popen gateways;
    empty for a race in the test process (``shards=1`` without ``--race-tx``)."""
    if settings.tx:
        if shards is not None and shards != len(settings.tx):
            raise MarkerError(
                "shards",
                shards,
                "",
                problem=f"--race-tx (race_tx) gives {len(settings.tx)} gateway(s) "
                f"({', '.join(settings.tx)}): with --race-tx the shards are its gateways, so drop "
                f"shards= or make it {len(settings.tx)}",
            )
        tx = settings.tx
    else:
        count = shards if shards is not None else settings.shards or 1
        tx = ("popen",) * count if count > 1 else ()
    if tx and flexible:
        raise MarkerError(
            "shards",
            len(tx),
            "",
            problem="race.run/arun attempts and race.app cannot be sharded: an attempt function (or "
            "an in-process app) is Python code that cannot travel to another process; race them "
            "with shards=1 and no --race-tx, or use race.post & co.",
        )
    if len(tx) > concurrency:
        raise MarkerError(
            "shards",
            len(tx),
            "",
            problem=f"{len(tx)} shards need concurrency >= {len(tx)} (each shard holds a share of "
            f"every resource's clients; concurrency={concurrency})",
        )
    return tx
