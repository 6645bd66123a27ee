"""Secrets out of what reports show: URLs without credentials, secret-looking values masked.

CI artifacts are often public; a report must show what was raced without the tokens it used.
"""

from __future__ import annotations

import re
import urllib.parse

MASK = "***"
SECRET_NAME = re.compile(r"token|passw|secret|key|session|auth|signature|sig\b|credential|cookie", re.I)
"""Names whose values are masked: query parameters, headers, JSON fields."""
SECRET_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})


def is_secret(name: str) -> bool:
    return name.lower() in SECRET_HEADERS or bool(SECRET_NAME.search(name))


def strip_url(url: str) -> tuple[str, tuple[str, ...]]:
    """``url`` without user and password, secret-looking query values masked; and what was taken."""
    parts = urllib.parse.urlsplit(url)
    stripped: list[str] = []
    netloc = parts.netloc
    if "@" in netloc:
        netloc = netloc.rsplit("@", 1)[1]
        stripped.append("userinfo")
    query = []
    for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if is_secret(name):
            stripped.append(f"query {name}")
            value = MASK
        query.append((name, value))
    new_query = urllib.parse.urlencode(query, safe="*") if stripped else parts.query
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, new_query, parts.fragment)), tuple(
        stripped
    )


_PAIR = re.compile(
    r"""(?P<name>["']?[\w.-]*(?:token|passw|secret|key|session|auth|signature|sig\b|credential|cookie)"""
    r"""[\w.-]*["']?)(?P<sep>\s*[:=]\s*)"""
    r"""(?P<value>"[^"]*"|'[^']*'|(?:(?:bearer|basic|digest|token|negotiate)\s+)?[^\s&,;}]+)""",
    re.I,
)
"""A secret-looking name and its value; an authentication scheme (``Bearer abc``) goes with the
credential after it, so the credential is masked too (``Authorization: ***``)."""


def redact_text(text: str) -> str:
    """A body as reports show it: values of secret-looking names (``"token": "..."``,
    ``password=...``) become ``***``; everything else stays, even in a truncated body."""

    def mask(match: re.Match[str]) -> str:
        value = match.group("value")
        quote = value[0] if value[:1] in "\"'" else ""
        return f"{match.group('name')}{match.group('sep')}{quote}{MASK}{quote}"

    return _PAIR.sub(mask, text)
