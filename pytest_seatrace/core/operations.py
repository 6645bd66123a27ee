"""Operations: what a request did, as people name it — ``POST /seats/{resource}/book``.

An operation is the method plus the path, with the attempt's resource, client and key written
``{resource}``, ``{client}``, ``{key}`` where they are whole path segments, so the 1,600
requests of a race that books while it cancels are two operations, not 1,600 paths. A race
with more than one operation gets its statuses broken down per operation in every report.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Protocol
from urllib.parse import unquote

AMBIGUOUS = "{resource|client}"
"""A segment equal to both the resource id and the client number (seat 3, client 3): which of
the two it is is settled once the race is over, from the requests that were not ambiguous."""
_PLACES = ("{resource}", "{client}")


class Who(Protocol):
    """Whose request it is: the engine's ``Attempt``."""

    @property
    def resource(self) -> Hashable: ...
    @property
    def client(self) -> int: ...
    @property
    def key(self) -> str: ...


class OperationNamer:
    """Names each request's operation; a race whose URL never varies names each (method, path)
    once, so the hot path pays one dictionary lookup per request."""

    def __init__(self, templated: bool) -> None:
        self.templated = templated
        """The URL is a callable of the attempt: its segments may carry the attempt's values."""
        self._known: dict[tuple[str, str], str] = {}

    def name(self, method: str, target: str, who: Who) -> str:
        """``target``: the request target (path and query) as sent; the query is left out."""
        if not self.templated:
            known = self._known.get((method, target))
            if known is None:
                known = self._known[(method, target)] = f"{method} {target.partition('?')[0]}"
            return known
        path = target.partition("?")[0]
        res, cli, key = str(who.resource), str(who.client), who.key
        segments = path.split("/")
        for i, raw in enumerate(segments):
            segment = unquote(raw) if "%" in raw else raw
            if segment == key:
                segments[i] = "{key}"
            elif segment == res:
                segments[i] = AMBIGUOUS if segment == cli else "{resource}"
            elif segment == cli:
                segments[i] = "{client}"
        return f"{method} {'/'.join(segments)}"


def settle(operations: Iterable[str]) -> dict[str, str]:
    """The final name of each operation seen: one with an ambiguous segment becomes the
    unambiguous operation it matches (the first seen), else reads ``{resource}`` there."""
    seen = list(dict.fromkeys(operations))
    clear = [op for op in seen if AMBIGUOUS not in op]
    out = {op: op for op in clear}
    for op in seen:
        if op in out:
            continue
        parts = op.split("/")
        matches = [
            other
            for other in clear
            if len(other_parts := other.split("/")) == len(parts)
            and all(
                a == b or (a == AMBIGUOUS and b in _PLACES) for a, b in zip(parts, other_parts, strict=True)
            )
        ]
        out[op] = matches[0] if matches else op.replace(AMBIGUOUS, "{resource}")
    return out


def readings(operation: str) -> list[str]:
    """What ``operation`` may settle on: itself, or for an ambiguous one each way of reading
    its ambiguous segments, ``{resource}`` first (a model binds one of them)."""
    if AMBIGUOUS not in operation:
        return [operation]
    parts = operation.split(AMBIGUOUS)
    out = [parts[0]]
    for part in parts[1:]:
        out = [f"{head}{place}{part}" for head in out for place in _PLACES]
    return out


def _fits(ambiguous: list[str], clear: list[str]) -> bool:
    """``clear`` reads like ``ambiguous`` with each ambiguous segment a resource or a client."""
    return len(ambiguous) == len(clear) and all(
        a == b or (a == AMBIGUOUS and b in _PLACES) for a, b in zip(ambiguous, clear, strict=True)
    )
