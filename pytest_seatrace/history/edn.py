"""The part of EDN that Jepsen histories use: nil, booleans, numbers, strings, keywords, symbols,
vectors, lists, sets and maps. Vectors and lists read as tuples and sets as frozensets, so values are
hashable; maps read as dicts."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Keyword:
    """``:name`` — kept apart from the string "name" so a history writes back as it was read."""

    name: str

    def __str__(self) -> str:
        return f":{self.name}"


class EdnError(ValueError):
    """Text that is not the EDN this reader knows; the message says where."""


_TOKEN = re.compile(
    r"""[\s,]*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<open>\#\{|[\[({])
      | (?P<close>[\])}])
      | (?P<atom>[^\s,"\[\](){}]+)
    )""",
    re.VERBOSE,
)
_SPACE = re.compile(r"[\s,]*")
_INT = re.compile(r"[+-]?\d+N?")
_FLOAT = re.compile(r"[+-]?\d+(\.\d*)?([eE][+-]?\d+)?M?")
_CLOSERS = {"[": "]", "(": ")", "{": "}", "#{": "}"}
_ESCAPES = {"t": "\t", "r": "\r", "n": "\n", "\\": "\\", '"': '"', "b": "\b", "f": "\f"}


def parse(text: str) -> Any:
    """The one value in ``text``."""
    value, end = _value(text, 0)
    if text[end:].strip(" \t\r\n,"):
        raise EdnError(f"unexpected {text[end:].strip()[:20]!r} after the value")
    return value


def _value(text: str, at: int) -> tuple[Any, int]:
    match = _TOKEN.match(text, at)
    if match is None:
        rest = text[at:].strip(" \t\r\n,")
        if not rest:
            raise EdnError("the value ends early")
        raise EdnError("a string is never closed" if rest[0] == '"' else f"cannot read {rest[:20]!r}")
    kind, token = match.lastgroup, match.group(match.lastgroup or 0)
    if kind == "string":
        return _string(token[1:-1]), match.end()
    if kind == "atom":
        return _atom(token), match.end()
    if kind == "close":
        raise EdnError(f"unexpected {token!r}")
    items: list[Any] = []
    at = match.end()
    closer = _CLOSERS[token]
    while True:
        at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
        if at >= len(text):
            raise EdnError(f"{token!r} is never closed by {closer!r}")
        if text[at] == closer:
            return _collection(token, items), at + 1
        if text[at] in ")]}":
            raise EdnError(f"{token!r} closed by {text[at]!r}")
        item, at = _value(text, at)
        items.append(item)


def _collection(opener: str, items: list[Any]) -> Any:
    if opener == "#{":
        return frozenset(items)
    if opener != "{":
        return tuple(items)
    if len(items) % 2:
        raise EdnError("a map needs an even number of forms")
    return dict(zip(items[::2], items[1::2], strict=True))


def _string(body: str) -> str:
    return re.sub(r"\\(u[0-9a-fA-F]{4}|.)", _unescape, body)


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    if code[0] == "u" and len(code) == 5:
        return chr(int(code[1:], 16))
    if code not in _ESCAPES:
        raise EdnError(f"unknown escape \\{code} in a string")
    return _ESCAPES[code]


def _atom(token: str) -> Any:
    if token in ("nil", "true", "false"):
        return {"nil": None, "true": True, "false": False}[token]
    if token.startswith(":") and len(token) > 1:
        return Keyword(token[1:])
    if _INT.fullmatch(token):
        return int(token.rstrip("N"))
    if _FLOAT.fullmatch(token):
        return float(token.rstrip("M"))
    if token.startswith("#"):
        raise EdnError(f"tagged value {token!r} is not supported")
    return Keyword(token)  # a symbol: kept by name


def dump(value: Any) -> str:
    """EDN for a value read by ``parse`` (or a Python value of the same kinds)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Keyword):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise EdnError(f"{value} has no EDN form")
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, frozenset | set):
        return "#{" + " ".join(sorted(dump(v) for v in value)) + "}"
    if isinstance(value, tuple | list):
        return "[" + " ".join(dump(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{dump(k)} {dump(v)}" for k, v in value.items()) + "}"
    raise EdnError(f"{type(value).__name__} {value!r} has no EDN form")
