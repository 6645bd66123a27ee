"""One marker or call argument, checked and normalised on its own.

Each check raises ``MarkerError`` naming the argument and what is allowed; the settings table
(``core/settings.py``) says which check each argument gets. Rules between two arguments are
in ``core/precedence.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from typing import Any

from pytest_seatrace.core.thresholds import ThresholdError, parse_threshold

Check = Callable[[str, Any], Any]
"""``check(name, value)``: the value normalised, or ``MarkerError``."""


class MarkerError(ValueError):
    """A marker or call argument with a value outside what is allowed."""

    def __init__(self, argument: str, value: object, allowed: str, *, problem: str = "") -> None:
        super().__init__(f"{argument}={value!r}: {problem or 'expected ' + allowed}")
        self.argument = argument


def at_least(minimum: int, allowed: str = "") -> Check:
    """An integer (not a bool) >= ``minimum``."""

    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise MarkerError(name, value, allowed or f"an integer >= {minimum}")
        return value

    return check


def one_of(choices: tuple[str, ...]) -> Check:
    def check(name: str, value: Any) -> Any:
        if value not in choices:
            raise MarkerError(name, value, "one of " + ", ".join(repr(c) for c in choices))
        return value

    return check


HTTP3_CHOICES = ("auto", "on", "off")
"""``--race-http3``'s words, which ``http3=`` is normalised to."""


def http3(name: str, value: Any) -> str | None:
    """``http3=``: ``None``/``"auto"``, ``True``/``"on"``, ``False``/``"off"``, as the option's
    word; ``None`` stays unset, so the option beneath it decides."""
    if value is None or isinstance(value, bool):  # not ``1``/``0``: a count is not a switch
        return {None: None, True: "on", False: "off"}[value]
    if isinstance(value, str) and value in HTTP3_CHOICES:
        return value
    raise MarkerError(name, value, "None or 'auto', True or 'on', False or 'off'")


def boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise MarkerError(name, value, "True or False")
    return value


def resources(name: str, value: Any) -> tuple[Hashable, ...]:
    """``N`` (ids ``1..N``) or distinct ids whose text differs too."""
    allowed = "an integer >= 1 or a non-empty iterable of resource ids"
    if isinstance(value, int) and not isinstance(value, bool):
        return tuple(range(1, at_least(1)(name, value) + 1))
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise MarkerError(name, value, allowed)
    ids = tuple(value)
    if not ids:
        raise MarkerError(name, value, allowed)
    try:
        if len(set(ids)) != len(ids):
            raise MarkerError(name, value, "distinct resource ids")
    except TypeError:
        raise MarkerError(name, value, "hashable resource ids") from None
    _check_written_ids(name, ids)
    return ids


def _check_written_ids(name: str, ids: tuple[Hashable, ...]) -> None:
    """Resource ids stay distinct once written as text (``str(id)``: the JSON's ``winners`` and
    ``spread.by_resource`` keys, the summary, the HTML): ``1`` and ``"1"`` would merge there."""
    seen: dict[str, Hashable] = {}
    for rid in ids:
        text = str(rid)
        if text in seen:
            raise MarkerError(
                name,
                list(ids),
                "",
                problem=f"ids {seen[text]!r} and {rid!r} are both written {text!r} in the reports "
                "(JSON keys, summary, HTML); use ids whose str() differs",
            )
        seen[text] = rid


def expect(name: str, value: Any) -> range:
    """An int ``n`` (exactly ``n``, as ``range(n, n + 1)``) or a non-empty step-1 range."""
    if isinstance(value, range):
        if value.step != 1 or len(value) == 0 or value.start < 0:
            raise MarkerError(name, value, "a non-empty range with step 1 and start >= 0, or an integer >= 0")
        return value
    count = at_least(0)(name, value)
    return range(count, count + 1)


def as_written(value: range) -> object:
    """An ``expect`` range as the user wrote it: ``1`` for exactly one, else the range."""
    return value.start if len(value) == 1 else value


def rule(name: str, value: Any) -> Any:
    """``success``/``reject``/``error``: a predicate, a status code or an iterable of them."""
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


def seconds(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise MarkerError(name, value, "a number of seconds > 0")
    return float(value)


def thresholds(name: str, value: Any) -> tuple[Any, ...]:
    given = value
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable):
        raise MarkerError(name, value, "a list of strings like 'p95 < 2000ms'")
    try:
        return tuple(parse_threshold(t) for t in value)
    except ThresholdError as exc:
        raise MarkerError(name, given, "", problem=str(exc)) from exc


def parallel(name: str, value: Any) -> Any:
    if value == "all":
        return value
    return at_least(1, "an integer >= 1 or 'all'")(name, value)


def label(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise MarkerError(name, value, "a non-empty string such as 'Ticket'")
    return value


def model(name: str, value: Any) -> Any:
    """A model from ``pytest_seatrace.models`` or the user's own subclass of ``Model``."""
    from pytest_seatrace.history.model import Model

    if not isinstance(value, Model):
        shown = f"the class {value.__name__}" if isinstance(value, type) else type(value).__name__
        raise MarkerError(
            name,
            value,
            "",
            problem=f"expected a model (an instance of pytest_seatrace.models.Model, e.g. Seats()), "
            f"got {shown}",
        )
    return value


def warmup(name: str, value: Any) -> bool | str:
    if not isinstance(value, bool) and not (isinstance(value, str) and value.startswith("/")):
        raise MarkerError(name, value, "True, False or a path starting with '/' (like '/health')")
    return value
