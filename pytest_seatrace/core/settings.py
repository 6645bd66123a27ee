"""Every setting of a race, once: its built-in default, where it can be given, what it allows.

A setting is given as a marker or call argument (``concurrency=``), as a ``--race-*`` option
with its ``race_*`` ini twin, or both. The marker's schema, the options, the report header,
``RaceConfig``'s defaults and ``docs/options.md`` all read this table (``tests/test_docs.py``
checks the docs against it); ``core/precedence.py`` applies the order in which they win.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pytest_seatrace.core import arguments
from pytest_seatrace.core.arguments import HTTP3_CHOICES, Check

SyncMode = Literal["auto", "gate", "last-byte", "single-packet", "single-datagram"]
SYNC_MODES: tuple[SyncMode, ...] = ("auto", "gate", "last-byte", "single-packet", "single-datagram")
HoldPoint = Literal["headers", "body"]
HOLD_POINTS: tuple[HoldPoint, ...] = ("headers", "body")
XDIST_MODES = ("serial", "overlap")
SUMMARY_CHOICES = ("auto", "full", "off")

HOLDLESS = {
    "single-packet": "holds each stream's final DATA frame",
    "gate": "sends each whole request when the gate opens",
}
"""Start modes without a hold point, and what they hold back instead."""

DEFAULT_RESOURCES = 1
DEFAULT_CONCURRENCY = 100
DEFAULT_EXPECT = 1
DEFAULT_TIMEOUT = 10.0
DEFAULT_ROUNDS = 1
DEFAULT_SYNC: SyncMode = "auto"
"""The start of ``race.post``-style calls, decided once per race from the first origin:
single-packet where TLS ALPN picks ``h2``, else last-byte. ``run``/``arun`` and ``race.app``
always use the gate."""
DEFAULT_HOLD: HoldPoint = "headers"
"""Where a last-byte request waits for the gate: after all but the last byte of its header
block (no HTTP/1.1 server can act on it yet), or after all but the last byte of its body."""
DEFAULT_HTTP3 = "auto"
"""Whether ``auto`` may start over HTTP/3: ``auto`` where an ``https://`` origin's ``Alt-Svc``
offers ``h3`` and a QUIC handshake answers; ``on`` on the URL's port without a probe; ``off``."""
DEFAULT_PARALLEL = 1
DEFAULT_SHARDS = 1
DEFAULT_RESOURCE_LABEL = "Seat"
"""The noun ``-v`` puts before the numbered resources of ``resources=N`` (``Seat 7``)."""
DEFAULT_WARMUP = True
DEFAULT_XDIST = "serial"
"""Under pytest-xdist, races against one origin take turns (``overlap``: they may run at once)."""
DEFAULT_SUMMARY = "auto"
DEFAULT_SETUP_CONCURRENCY = 50
"""Set-ups (``setup=``) run at once at most: 1,600 logins must not flood the service."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting. ``check`` is its marker/call check (``None``: an option only); ``metavar``
    is its option's value (``None``: a marker/call argument only)."""

    name: str
    """The marker/call keyword, the ``RaceConfig`` field; ``race_<name>`` is the ini name."""
    default: object
    """The built-in default, as a user would write it; ``None``: unset."""
    check: Check | None = None
    metavar: str | None = None
    help: str = ""
    choices: tuple[str, ...] | None = None
    multiple: bool = False
    """Repeatable on the command line (``action="append"``); a line list in the ini file."""

    @property
    def flag(self) -> str:
        return "--race-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        return "race_" + self.name

    @property
    def is_argument(self) -> bool:
        return self.check is not None

    @property
    def is_option(self) -> bool:
        return self.metavar is not None

    def checked(self, value: object) -> Any:
        """``value`` as this marker or call argument, checked and normalised."""
        if self.check is None:
            raise TypeError(f"{self.name} is an option, not a marker or call argument")
        return self.check(self.name, value)

    @property
    def argument_default(self) -> object:
        """Its default in the marker's signature: ``None`` where an option may still decide."""
        return None if self.is_option else self.default


_rule_help = "a status code, an iterable of status codes, or a predicate"

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "resources",
        DEFAULT_RESOURCES,
        arguments.resources,
        "N",
        f"resources per race when the marker gives none (default {DEFAULT_RESOURCES})",
    ),
    Setting(
        "concurrency",
        DEFAULT_CONCURRENCY,
        arguments.at_least(1),
        "N",
        f"clients racing per resource (default {DEFAULT_CONCURRENCY})",
    ),
    Setting("expect", DEFAULT_EXPECT, arguments.expect),
    Setting("success", None, arguments.rule, help=_rule_help),
    Setting("reject", None, arguments.rule, help=_rule_help),
    Setting("error", None, arguments.rule, help=_rule_help),
    Setting("model", None, arguments.model),
    Setting(
        "timeout",
        DEFAULT_TIMEOUT,
        arguments.seconds,
        "S",
        f"seconds per request; later is an unknown outcome (default {DEFAULT_TIMEOUT:g})",
    ),
    Setting("thresholds", (), arguments.thresholds),
    Setting("allow_errors", False, arguments.boolean),
    Setting(
        "rounds",
        DEFAULT_ROUNDS,
        arguments.at_least(1),
        "N",
        f"repeat every race N times, resetting between (default {DEFAULT_ROUNDS})",
    ),
    Setting(
        "sync",
        DEFAULT_SYNC,
        arguments.one_of(SYNC_MODES),
        "MODE",
        f"start mode for race.request calls (default {DEFAULT_SYNC})",
        SYNC_MODES,
    ),
    Setting(
        "hold",
        DEFAULT_HOLD,
        arguments.one_of(HOLD_POINTS),
        "POINT",
        "where a last-byte or single-datagram request is held until the start: before the last "
        "byte of its headers "
        f"or of its body (default {DEFAULT_HOLD})",
        HOLD_POINTS,
    ),
    Setting(
        "http3",
        DEFAULT_HTTP3,
        arguments.http3,
        "WHEN",
        "whether sync=auto starts over HTTP/3 (single-datagram): auto where an https origin's "
        f"Alt-Svc offers h3, on without a probe, off never (default {DEFAULT_HTTP3})",
        HTTP3_CHOICES,
    ),
    Setting(
        "parallel",
        DEFAULT_PARALLEL,
        arguments.parallel,
        "N|all",
        f"resources raced at once: N or all (default {DEFAULT_PARALLEL})",
    ),
    Setting(
        "shards",
        DEFAULT_SHARDS,
        arguments.at_least(1),
        "N",
        "processes (execnet gateways) that share one race's clients; 1: the test process "
        f"(default {DEFAULT_SHARDS})",
    ),
    Setting("resource_label", None, arguments.label),
    Setting("warmup", DEFAULT_WARMUP, arguments.warmup),
    # Options only: the session's, not one race's.
    Setting("base_url", None, metavar="URL", help="base URL that relative race URLs resolve against"),
    Setting(
        "seed", None, metavar="N", help="seed of the final-write order (default: random, shown in the header)"
    ),
    Setting(
        "tx",
        (),
        metavar="SPEC",
        help="where shards run: an execnet gateway spec as in pytest-xdist's --tx (popen, 4*popen, "
        "ssh=user@host//python=PATH); repeatable",
        multiple=True,
    ),
    Setting(
        "xdist",
        DEFAULT_XDIST,
        metavar="MODE",
        help="under pytest-xdist, races against one origin take turns (serial) or may overlap "
        f"(default {DEFAULT_XDIST})",
        choices=XDIST_MODES,
    ),
    Setting("json", None, metavar="PATH", help="write every race, with its request history, as JSON to PATH"),
    Setting("html", None, metavar="PATH", help="write a self-contained HTML report to PATH"),
    Setting(
        "history",
        None,
        metavar="DIR",
        help="write the history of every race with a model to DIR, one Jepsen EDN file per race",
    ),
    Setting(
        "summary",
        DEFAULT_SUMMARY,
        metavar="MODE",
        help=f"race summary after the run (default {DEFAULT_SUMMARY}: by -q/-v)",
        choices=SUMMARY_CHOICES,
    ),
    Setting("p95_ms", None, metavar="MS", help="fail any race whose p95 latency is not below MS"),
)

BY_NAME = {setting.name: setting for setting in SETTINGS}
ARGUMENTS = tuple(s for s in SETTINGS if s.is_argument)
"""The marker's arguments, in its signature's order (any of them may also be a call argument)."""
OPTIONS = tuple(s for s in SETTINGS if s.is_option)
"""The ``--race-*`` options with their ``race_*`` ini twins, in ``--help`` order."""
