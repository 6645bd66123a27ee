"""What a non-win response said, in a few words: ``database is locked`` rather than ``HTTP 500``.

A failing service usually says why in its body (a JSON ``error``, an HTML ``<title>``, a line of
text) while its status says only that something failed. The short reason is derived once per
distinct (status, body start), redacted as every report body is, and kept on the records; bodies
are kept per distinct (resource, status, reason), a few each, so 50,000 identical failures keep
three bodies, not 50,000. Pure: no I/O, no pytest.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from pytest_seatrace.core.redact import redact_text

REASON_CHARS = 80
"""Longest reason shown; a longer one is cut and ends with ``…``."""
JSON_FIELDS = ("error", "message", "detail", "errors", "title")
"""Top-level JSON fields that say why, in the order they are tried."""
INNER_FIELDS = ("message", "detail", "msg", "error", "title", "description")
"""Fields of a nested object (``{"error": {"message": …}}``) or list item that say why."""
SAMPLES_PER_KIND = 3
"""Bodies kept per distinct (resource, status, reason): the samples reports show."""
KINDS_PER_RESOURCE = 8
"""Distinct (status, reason) kinds per resource that keep bodies: a service whose every answer
differs (a request id in the message) still keeps a bounded number of bodies."""
CACHE_LIMIT = 512
"""Distinct (status, body start) pairs remembered per race; past it, reasons are derived again."""

_TITLE = re.compile(rb"<title[^>]*>(.*?)</title", re.I | re.S)
_HIDDEN = re.compile(r"<(script|style|head)\b.*?</\1\s*>", re.I | re.S)
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_JSON_FIELD = re.compile(r'"(?:error|message|detail)"\s*:\s*"((?:[^"\\]|\\.)*)"')
"""A reason field in JSON too long to parse (cut at the kept KiB)."""


def derive_reason(body: bytes) -> str | None:
    """The short reason a response body gives, redacted and at most ``REASON_CHARS`` long;
    ``None`` for an empty or binary body.

    A JSON ``error``/``message``/``detail`` string (also one level down), else an HTML
    ``<title>`` (else its first line of text), else the first non-empty line of the text. An
    empty JSON document (``{}``, ``[]``, ``null``) says nothing.
    """
    text = body.decode("utf-8", "replace").strip()
    if not text or _binary(text):
        return None
    found: str | None = None
    if text[0] in '{["':
        found, empty = _from_json(text)
        if empty:
            return None
    elif text[0] == "<":
        found = _from_html(body, text)
    if not found:
        found = _first_line(text)
    return shorten(redact_text(found)) if found else None


def shorten(text: str, limit: int = REASON_CHARS) -> str:
    """One line of at most ``limit`` characters: whitespace runs become one space, a longer text
    is cut and marked ``…``."""
    line = _SPACE.sub(" ", text).strip()
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def explain(reason: str | None, status: int, said: str | None) -> str | None:
    """An error's reason with what the service said: ``HTTP 500`` becomes ``500 database is
    locked``, ``unexpected 404`` becomes ``unexpected 404 Not Found``; any other reason (a
    raising predicate, a transport failure) stays as it is."""
    if not said or not reason:
        return reason
    if reason == f"HTTP {status}":
        return f"{status} {said}"
    if reason.endswith(f" {status}"):
        return f"{reason} {said}"
    return reason


def answer_label(status: int, reason: str | None, said: str | None) -> str:
    """One request's answer as a count names it: an error's reason (``500 database is locked``,
    ``connection refused``), else the status and what the body said (``409 seat taken``)."""
    if reason:
        return reason
    if not status:
        return "no response"
    return f"{status} {said}" if said else str(status)


class Reasons:
    """One race's reasons and body samples, for every start mode's classifier.

    ``said`` derives the reason of a (status, body start) once and hands back the same string
    object each time, so equal records share it; ``keep`` says whether a response's body is kept
    as a sample: the first ``SAMPLES_PER_KIND`` of each (resource, status, reason), for at most
    ``KINDS_PER_RESOURCE`` kinds per resource.
    """

    def __init__(self) -> None:
        self._said: dict[tuple[int, bytes], str | None] = {}
        self._explained: dict[tuple[str, int, str], str | None] = {}
        self._kept: dict[tuple[int, int, str | None], int] = {}
        self._kinds: dict[int, int] = {}
        self.derived = 0
        """How many times a reason was derived (the cache's misses)."""

    def said(self, status: int, body: bytes) -> str | None:
        """What a response with this status and body start said (see ``derive_reason``)."""
        key = (status, body)
        try:
            return self._said[key]
        except KeyError:
            pass
        self.derived += 1
        found = derive_reason(body)
        if len(self._said) < CACHE_LIMIT:
            self._said[key] = found
        return found

    def explain(self, reason: str | None, status: int, said: str | None) -> str | None:
        """``explain(reason, status, said)``, one shared string per distinct result."""
        if not said or not reason:
            return reason
        key = (reason, status, said)
        try:
            return self._explained[key]
        except KeyError:
            pass
        text = explain(reason, status, said)
        if len(self._explained) < CACHE_LIMIT:
            self._explained[key] = text
        return text

    def keep(self, resource: int, status: int, said: str | None) -> bool:
        """Whether this response's body is kept as a sample of its kind."""
        kind = (resource, status, said)
        kept = self._kept.get(kind)
        if kept is None:
            if self._kinds.get(resource, 0) >= KINDS_PER_RESOURCE:
                return False
            self._kinds[resource] = self._kinds.get(resource, 0) + 1
            kept = 0
        if kept >= SAMPLES_PER_KIND:
            return False
        self._kept[kind] = kept + 1
        return True


def _binary(text: str) -> bool:
    """Mostly undecodable or control characters: a compressed or binary body says nothing."""
    odd = sum(1 for c in text[:256] if c == "\ufffd" or (not c.isprintable() and not c.isspace()))
    return odd * 10 > min(len(text), 256)


def _from_json(text: str) -> tuple[str | None, bool]:
    """The reason a JSON body gives, and whether it is an empty document (nothing to say)."""
    try:
        data = json.loads(text)
    except ValueError:  # cut at the kept KiB, or not JSON after all: look for the field itself
        match = _JSON_FIELD.search(text)
        if match is None:
            return None, False
        try:
            return str(json.loads(f'"{match.group(1)}"')), False
        except ValueError:
            return match.group(1), False
    if data in ({}, [], None, ""):
        return None, True
    if isinstance(data, str):
        return data, False
    if isinstance(data, list):
        return _inner(data), False
    if not isinstance(data, dict):
        return None, False
    for name in JSON_FIELDS:
        found = _simple(data.get(name))
        if found:
            return found, False
    return None, False


def _simple(value: Any) -> str | None:
    """A non-empty string, or one found one level down (an object's field, a list's first item)."""
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, dict):
        fields = (value.get(name) for name in INNER_FIELDS)
        return next((field for field in fields if isinstance(field, str) and field.strip()), None)
    if isinstance(value, list):
        return _inner(value)
    return None


def _inner(items: list[Any]) -> str | None:
    """The first item of a list, when it is a string or an object with a message."""
    first = items[0] if items else None
    return _simple(first) if isinstance(first, (str, dict)) else None


def _from_html(body: bytes, text: str) -> str | None:
    title = _TITLE.search(body)
    if title is not None:
        found = html.unescape(title.group(1).decode("utf-8", "replace")).strip()
        if found:
            return found
    visible = _TAG.sub("\n", _HIDDEN.sub("\n", text))
    return _first_line(html.unescape(visible))


def _first_line(text: str) -> str | None:
    return next((line.strip() for line in text.splitlines() if line.strip()), None)
