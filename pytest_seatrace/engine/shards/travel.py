"""What of a race crosses a channel to a shard, and how: plain data only (execnet carries builtins).

User callables and the success/reject/error rules stay with the coordinator, which classifies;
a shard gets the race's settings (``RaceSettings``, there by ``of`` and back by ``config``), the
TLS verification (a CA bundle as its text: the far host may lack the file), where HTTP/3
answers (``auto``'s ``Alt-Svc`` find), and request values as builtins; a single-datagram
shard's releases come back as rows of figures. Between equal Python versions tables and rows
travel as ``marshal`` bytes: execnet's own serialiser is pure Python (~55 µs a record row each
way against marshal's ~0.5 µs).
"""

from __future__ import annotations

import marshal
import os
import ssl
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import httpx

from pytest_seatrace.core.config import HoldPoint, RaceConfig, SyncMode
from pytest_seatrace.core.errors import RaceUsageError
from pytest_seatrace.core.records import DatagramRelease
from pytest_seatrace.engine.stream import Origin

PYTHON_VERSION = list(sys.version_info[:2])
HTTPX_FIELDS = frozenset({"headers", "params", "cookies", "url"})
"""The request fields a callable may answer with an httpx container."""


@dataclass(frozen=True, slots=True)
class RaceSettings:
    """The plain-data part of a race's config that a shard races by: no rules, no predicates (the
    coordinator classifies), resources by index, ``sync`` the start mode already decided."""

    resources: int
    concurrency: int
    timeout: float
    sync: SyncMode
    hold: HoldPoint
    hold_given: bool
    parallel: int
    seed: int

    @classmethod
    def of(cls, config: RaceConfig) -> RaceSettings:
        """There: from the coordinator's config."""
        return cls(len(config.resources), **{name: getattr(config, name) for name in _SAME})

    def config(self) -> RaceConfig:
        """Back: the config the shard's firer races by (resource ids are the coordinator's
        indices)."""
        return RaceConfig(tuple(range(self.resources)), **{name: getattr(self, name) for name in _SAME})


_SAME = tuple(f.name for f in fields(RaceSettings) if f.name != "resources")
"""The settings that travel as they are (the resources travel as their count)."""


def plugin_version() -> str:
    """The installed pytest-seatrace's version (both sides of a channel must agree)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("pytest-seatrace")
    except importlib.metadata.PackageNotFoundError:  # a bare checkout
        return "0+unknown"


def tls_for_shard(tls_verify: Any) -> tuple[str, Any]:
    """``tls_verify`` as it travels: ``("bool", flag)`` or ``("ca", the bundle's text)``."""
    if isinstance(tls_verify, ssl.SSLContext):
        raise RaceUsageError(
            "tls_verify=<ssl.SSLContext>: a context cannot cross an execnet channel to a shard; "
            "for shards pass tls_verify=True, False or the path of a CA bundle"
        )
    if isinstance(tls_verify, bool):
        return ("bool", tls_verify)
    if isinstance(tls_verify, (str, os.PathLike)):
        try:
            return ("ca", Path(tls_verify).read_text(encoding="utf-8"))  # the far host may lack the file
        except OSError as exc:
            raise RaceUsageError(f"tls_verify={tls_verify!r}: cannot read the CA bundle ({exc})") from None
    raise RaceUsageError(f"tls_verify={tls_verify!r}: for shards expected True, False or a CA bundle path")


def tls_on_shard(tls: tuple[str, Any], folder: str) -> str | bool:
    """The ``tls_verify`` a shard races with: the travelled CA bundle written into ``folder``."""
    kind, value = tls
    if kind == "ca":
        path = Path(folder) / "ca.pem"
        path.write_text(value, encoding="utf-8")
        return str(path)
    return bool(value)


def h3_for_shard(h3_at: Mapping[Origin, Origin]) -> list[list[Any]]:
    """Where HTTP/3 answers (``auto``'s ``Alt-Svc`` find) as it travels: ``[scheme, host, port]``
    pairs, origin then target."""
    return [[[o.scheme, o.host, o.port], [t.scheme, t.host, t.port]] for o, t in h3_at.items()]


def h3_on_shard(pairs: Iterable[list[Any]]) -> dict[Origin, Origin]:
    """Back: the ``h3_at=`` a shard's single-datagram firer takes."""
    return {Origin(*origin): Origin(*target) for origin, target in pairs}


def release_rows(releases: Iterable[DatagramRelease]) -> list[list[int]]:
    """A shard's single-datagram releases as they travel: one row of figures each."""
    return [[getattr(release, f.name) for f in fields(DatagramRelease)] for release in releases]


def releases_of(rows: Iterable[list[int]]) -> list[DatagramRelease]:
    """Back: the releases a shard reported."""
    return [DatagramRelease(*row) for row in rows]


def plain(value: Any) -> Any:
    """httpx's own containers as builtins, which execnet can carry."""
    if isinstance(value, (httpx.Headers, httpx.QueryParams)):
        return list(value.multi_items())
    if isinstance(value, httpx.Cookies):
        return dict(value.items())
    if isinstance(value, httpx.URL):
        return str(value)
    return value


def cannot_travel(exc: Exception) -> RaceUsageError:
    return RaceUsageError(
        f"shards: a request argument cannot travel to a shard ({exc}); request arguments of "
        "sharded races must be builtins (str, bytes, numbers, lists, dicts)"
    )


def pack(data: Any, packed: bool) -> Any:
    """``data`` as it travels: ``marshal`` bytes when ``packed`` (both sides run the same Python),
    else builtins for execnet."""
    if not packed or data is None:
        return data
    try:
        return marshal.dumps(data)
    except ValueError as exc:
        raise cannot_travel(exc) from None


def unpack(data: Any) -> Any:
    """Rows or tables as sent, either way (``pack``)."""
    return marshal.loads(data) if isinstance(data, bytes) else data  # noqa: S302 - our own coordinator and shards, over a channel that runs our code anyway
