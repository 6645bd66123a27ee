"""Limits every start mode shares: open files (a race of 1,600 sockets needs more than the usual
soft limit of 1,024) and the size of a response's header block."""

from __future__ import annotations

import sys
from collections.abc import Iterable

from pytest_seatrace.core.errors import RaceUsageError

SPARE_FDS = 64
"""Descriptors left for everything else the process has open (logs, the DB, pytest)."""


def ensure_open_files(sockets: int) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` toward the hard one so ``sockets`` fit; return the limit.

    Raises ``RaceUsageError`` saying how many could be opened when even the hard limit is short.
    """
    if sys.platform == "win32":  # pragma: no cover - gate mode only there, no rlimit
        return sockets
    import resource

    need = sockets + SPARE_FDS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < need:
        raise RaceUsageError(
            f"this race needs {sockets} sockets at once but the open-file limit allows about "
            f"{max(0, soft - SPARE_FDS)} (soft {soft}, hard {hard}); lower concurrency or parallel, "
            "or raise the limit (ulimit -n)"
        )
    return int(soft)


MAX_RESPONSE_HEAD = 64 * 1024
"""The largest response header block, in every start mode, counted as HTTP/2 counts it (RFC 9113
§6.5.2, ``SETTINGS_MAX_HEADER_LIST_SIZE``): each field's name and value plus 32 bytes, the
status as a ``:status`` field. Single-packet advertises it and hpack enforces it; last-byte and
gate count the fields of each HTTP/1.1 response head the same way."""

MAX_HEAD_READ = 100 * 1024
"""Bytes of an HTTP/1.1 response head read before it must be complete: httpcore's h11 limit in
gate mode, kept by last-byte's readers too, so a head that never ends stops at the same size."""

HEAD_TOO_LARGE = f"response header block larger than {MAX_RESPONSE_HEAD // 1024} KiB"
"""The one message of a response whose header block is over the limit, whatever the start mode."""

FIELD_OVERHEAD = 32
STATUS_FIELD = FIELD_OVERHEAD + len(":status") + 3
"""The status line as HTTP/2 counts it: a ``:status`` field of three digits."""


def head_size(headers: Iterable[tuple[bytes, bytes]]) -> int:
    """A response head's size as ``MAX_RESPONSE_HEAD`` counts it."""
    return STATUS_FIELD + sum(FIELD_OVERHEAD + len(name) + len(value) for name, value in headers)


H11_HEAD_TOO_LONG = "Receive buffer too long"
"""h11's words (through httpcore and httpx) for a response head past ``MAX_HEAD_READ``."""


def head_limit_words(text: str) -> str:
    """An httpx error's text, with h11's words for a head too long said as every mode says it
    (any code that reports an httpx transport error in gate mode, the warm-up's too)."""
    return HEAD_TOO_LARGE if text == H11_HEAD_TOO_LONG else text
