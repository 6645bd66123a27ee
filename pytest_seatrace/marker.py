"""The ``race`` marker: its schema is the signature of ``race()``; values are checked once.

Python's own ``TypeError`` names an unknown keyword; ``MarkerError`` names a bad value and
what is allowed. The checks, the defaults and the rules between arguments are the settings
table's (``core/settings.py``, ``core/precedence.py``); call arguments of ``race.post(...)``
go through the same ones.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Any

from pytest_seatrace.core.arguments import MarkerError as MarkerError
from pytest_seatrace.core.precedence import check_arguments
from pytest_seatrace.core.precedence import resolve as resolve
from pytest_seatrace.core.settings import (
    BY_NAME,
    DEFAULT_CONCURRENCY,
    DEFAULT_EXPECT,
    DEFAULT_PARALLEL,
    DEFAULT_RESOURCE_LABEL,
    DEFAULT_ROUNDS,
    DEFAULT_SHARDS,
    DEFAULT_TIMEOUT,
    DEFAULT_WARMUP,
    HOLD_POINTS,
    SYNC_MODES,
)

if TYPE_CHECKING:
    import pytest

MARKER_DOC = (
    f"race(*, resources=N|ids, concurrency={DEFAULT_CONCURRENCY}, expect={DEFAULT_EXPECT}|range, "
    "success=2xx|codes|predicate, reject=4xx|codes|predicate, error=None|codes|predicate, "
    "model=None|Seats()|Stock(k)|..., "
    f"timeout={DEFAULT_TIMEOUT:g}, thresholds=['p95 < 2000ms'], allow_errors=False, "
    f"rounds={DEFAULT_ROUNDS}, sync={'|'.join(repr(m) for m in SYNC_MODES)}, "
    f"hold={'|'.join(repr(h) for h in HOLD_POINTS)}, http3=None|True|False, "
    f"parallel={DEFAULT_PARALLEL}|'all', "
    f"shards={DEFAULT_SHARDS}, "
    f"resource_label={DEFAULT_RESOURCE_LABEL!r}, "
    f"warmup={DEFAULT_WARMUP}|False|'/path'): "
    "race concurrent requests per resource "
    "through the `race` fixture and assert that exactly `expect` of them win per resource."
)


def race(
    *,
    resources: int | Iterable[Hashable] | None = None,
    concurrency: int | None = None,
    expect: int | range = DEFAULT_EXPECT,
    success: Any = None,
    reject: Any = None,
    error: Any = None,
    model: Any = None,
    timeout: float | None = None,
    thresholds: Iterable[str] = (),
    allow_errors: bool = False,
    rounds: int | None = None,
    sync: str | None = None,
    hold: str | None = None,
    http3: bool | str | None = None,
    parallel: int | str | None = None,
    shards: int | None = None,
    resource_label: str | None = None,
    warmup: bool | str = DEFAULT_WARMUP,
) -> dict[str, Any]:
    """The marker's schema (the settings table's arguments, ``tests/test_settings.py`` holds
    them equal); returns the arguments that differ from the defaults, checked and normalised.
    Arguments with a CLI twin default to ``None``: the option, the ini value, the built-in
    default apply in that order."""
    given = {
        name: value
        for name, value in locals().items()
        if value is not None and value is not BY_NAME[name].argument_default
    }
    return check_arguments(given)


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
