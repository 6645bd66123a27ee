"""Which value a race gets: a call argument > the marker > CLI > ini > the built-in default.

Every rule between two settings lives here too, once: ``--race-tx`` against a shard count,
a hold point against a start mode without one, attempts and apps that cannot be sharded, an
``expect`` that ``concurrency`` clients can never reach. The marker (``marker.py``), the
options (``options.py``) and the ``race`` fixture gather raw values and call this module; it
raises ``MarkerError`` for a marker or call and ``OptionError`` for the session's options.
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from pytest_seatrace.core.arguments import MarkerError, as_written
from pytest_seatrace.core.config import ERROR_DEFAULT, REJECT_DEFAULT, SUCCESS_DEFAULT, RaceConfig, make_rule
from pytest_seatrace.core.settings import (
    ARGUMENTS,
    BY_NAME,
    DEFAULT_CONCURRENCY,
    DEFAULT_HOLD,
    DEFAULT_HTTP3,
    DEFAULT_PARALLEL,
    DEFAULT_RESOURCES,
    DEFAULT_ROUNDS,
    DEFAULT_SHARDS,
    DEFAULT_SUMMARY,
    DEFAULT_SYNC,
    DEFAULT_TIMEOUT,
    DEFAULT_XDIST,
    HOLDLESS,
    OPTIONS,
    SyncMode,
)
from pytest_seatrace.core.thresholds import Threshold


class OptionError(ValueError):
    """Two of the session's options that contradict each other (the plugin makes it a usage
    error)."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The session's options, CLI beating ini beating the built-in default, resolved once."""

    concurrency: int = DEFAULT_CONCURRENCY
    resources: int = DEFAULT_RESOURCES
    timeout: float = DEFAULT_TIMEOUT
    base_url: str | None = None
    sync: str | None = None
    hold: str | None = None
    """``None`` unless given: an explicit hold point is a choice, the default is not."""
    http3: str = DEFAULT_HTTP3
    parallel: int | str = DEFAULT_PARALLEL
    rounds: int = DEFAULT_ROUNDS
    seed: int = 0
    json: Path | None = None
    html: Path | None = None
    history: Path | None = None
    """``--race-history``: the directory of the races' Jepsen EDN files."""
    summary: str = DEFAULT_SUMMARY
    xdist: str = DEFAULT_XDIST
    p95_ms: float | None = None
    shards: int | None = None
    """``None`` unless given (``--race-tx`` then decides the count)."""
    tx: tuple[str, ...] = ()
    """``--race-tx`` expanded: one gateway spec per shard."""

    @classmethod
    def from_layers(
        cls,
        cli: Mapping[str, Any],
        ini: Mapping[str, Any],
        *,
        inherited_seed: int | None = None,
    ) -> Settings:
        """Each option's parsed value from the command line, else the ini file, else its default
        (keys are setting names; a value of ``None`` is not given). ``inherited_seed`` (an xdist
        worker's controller's) replaces the random seed of a run that names none."""
        values: dict[str, Any] = {}
        for setting in OPTIONS:
            value = first_given(cli.get(setting.name), ini.get(setting.name))
            if value is not None:
                values[setting.name] = value
        if "tx" in values:
            values["tx"] = tuple(spec for specs in values["tx"] for spec in specs)
            _check_shards_and_tx(values.get("shards"), values["tx"])
        _check_session_hold(values.get("sync"), values.get("hold"))
        if "seed" not in values:  # one seed covers the whole run, xdist workers included
            seed = inherited_seed
            values["seed"] = seed if seed is not None else random.Random().randrange(2**32)  # noqa: S311
        return cls(**values)

    @property
    def shard_count(self) -> int:
        return len(self.tx) if self.tx else self.shards or DEFAULT_SHARDS

    def header(self) -> str:
        parts = [
            f"concurrency={self.concurrency}",
            f"timeout={self.timeout:g}s",
            f"sync={self.sync or DEFAULT_SYNC}",
            f"parallel={self.parallel}",
            f"seed={self.seed}",
            f"hold={self.hold or DEFAULT_HOLD}",
            f"xdist={self.xdist}",
        ]
        if self.base_url:
            parts.append(f"base_url={self.base_url}")
        if self.tx or (self.shards or 1) > 1:
            parts.append(f"shards={self.shard_count} ({', '.join(self.tx) or 'popen'})")
        # Printed before any race: each race's own values are in the summary and the reports.
        return f"seatrace: {', '.join(parts)} (defaults: a marker or call argument overrides them per race)"


def first_given(*layers: Any) -> Any:
    """The first layer that gives a value (not ``None``), highest precedence first."""
    return next((value for value in layers if value is not None), None)


def _check_shards_and_tx(shards: int | None, tx: tuple[str, ...]) -> None:
    if shards is not None and shards != len(tx):
        raise OptionError(
            f"--race-shards {shards} (race_shards) disagrees with --race-tx (race_tx), which "
            f"gives {len(tx)} gateway(s): {', '.join(tx)}; drop one or make them agree"
        )


def _check_session_hold(sync: str | None, hold: str | None) -> None:
    """``--race-hold`` with a session start mode that has no hold point would be ignored by
    every race: refused at start-up (a marker's or call's own ``sync=`` is checked per race)."""
    if hold is not None and sync in HOLDLESS:
        raise OptionError(
            f"--race-hold {hold} (race_hold) with --race-sync {sync} (race_sync): a hold point is "
            f"for last-byte starts, and {sync} {HOLDLESS[sync]}; drop --race-hold or use "
            "--race-sync last-byte"
        )


def check_arguments(given: Mapping[str, Any]) -> dict[str, Any]:
    """One marker's (or call's) arguments, each checked and normalised by its own check, then
    the rules between arguments given together; ``resources`` becomes a tuple, ``expect`` a
    range. Checked in the signature's order, so the first bad argument is named."""
    out: dict[str, Any] = dict(given)
    for setting in ARGUMENTS:
        if setting.name in given:
            out[setting.name] = setting.checked(given[setting.name])
    if "expect" in out and "concurrency" in out:
        check_reachable(out["expect"], out["concurrency"])
    if "sync" in out:  # both on one marker or call: refused at collection, not at the race
        check_hold(out["sync"], out.get("hold"), None)
    return out


def check_reachable(expect: range, concurrency: int) -> None:
    """``concurrency`` clients can never make more than ``concurrency`` winners."""
    if expect.start > concurrency:
        raise MarkerError(
            "expect",
            as_written(expect),
            "",
            problem=f"needs at least {expect.start} winners per resource but concurrency={concurrency} "
            f"clients can make at most {concurrency}; lower expect or raise concurrency",
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


def resolve(
    marker: Mapping[str, Any],
    call: Mapping[str, Any],
    settings: Settings,
    *,
    flexible: bool,
) -> RaceConfig:
    """The ``RaceConfig`` of one race call: a call argument beats the marker, which beats the
    session's ``settings`` (CLI, ini), which beat the built-in defaults.

    ``flexible`` races (``run``/``arun``, ASGI apps) always start through the gate.
    """
    args = {**marker, **call}

    def pick(name: str) -> Any:
        """A setting with an option twin: the call, the marker, the session, the default."""
        return first_given(args.get(name), getattr(settings, name), BY_NAME[name].default)

    def argument(name: str) -> Any:
        """A marker/call argument only: given, else its built-in default, normalised alike."""
        if name in args:
            return args[name]
        setting = BY_NAME[name]
        return None if setting.default is None else setting.checked(setting.default)

    resources: tuple[Hashable, ...] = args.get("resources") or tuple(range(1, pick("resources") + 1))
    sync, hold = args.get("sync"), args.get("hold")
    if flexible:
        _refuse_starts_of_requests(sync, hold)
        sync = "gate"
    else:
        sync = pick("sync")
    check_hold(sync, hold, None if flexible else settings.hold)  # run/arun/app: request races' option
    concurrency = pick("concurrency")
    tx = shard_specs(args.get("shards"), settings, flexible=flexible, concurrency=concurrency)
    expect = argument("expect")
    check_reachable(expect, concurrency)
    parallel = pick("parallel")
    thresholds: tuple[Threshold, ...] = tuple(argument("thresholds"))
    if settings.p95_ms is not None:
        bound = settings.p95_ms
        thresholds += (Threshold(text=f"p95 < {bound:g}ms", metric="p95", op="<", bound=bound * 1e6),)
    success, reject, error = argument("success"), argument("reject"), argument("error")
    return RaceConfig(
        resources=resources,
        concurrency=concurrency,
        expect=expect,
        success=make_rule(success, SUCCESS_DEFAULT),
        reject=make_rule(reject, REJECT_DEFAULT),
        success_given=success is not None,
        reject_given=reject is not None,
        error=make_rule(error, ERROR_DEFAULT),
        error_given=error is not None,
        timeout=pick("timeout"),
        thresholds=thresholds,
        allow_errors=argument("allow_errors"),
        rounds=pick("rounds"),
        sync=cast("SyncMode", sync),
        hold=pick("hold"),
        hold_given=first_given(hold, settings.hold) is not None,
        http3=pick("http3"),
        parallel=len(resources) if parallel == "all" else min(int(parallel), len(resources)),
        seed=settings.seed,
        shards=max(1, len(tx)),
        tx=tx,
        resource_label=argument("resource_label"),
        warmup=argument("warmup"),
        model=argument("model"),
        expect_given="expect" in args,
    )


def _refuse_starts_of_requests(sync: str | None, hold: str | None) -> None:
    """``run``/``arun`` attempts and ``race.app`` start through the gate: a start mode or a hold
    point of request races, given by their marker or call, is refused."""
    if sync in ("last-byte", "single-packet", "single-datagram"):
        raise MarkerError(
            "sync", sync, "'gate' for race.run/arun attempts and race.app (they start through the gate)"
        )
    if hold is not None:
        raise MarkerError(
            "hold",
            hold,
            "no hold point for race.run/arun attempts and race.app (they start through the gate)",
        )


def shard_specs(
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
        count = first_given(shards, settings.shards, DEFAULT_SHARDS)
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
