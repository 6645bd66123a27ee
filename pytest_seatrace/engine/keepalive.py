"""What the engine learns of a server's keep-alive, so that kept connections it closed (or is
about to close) are replaced before a wave, never reported as the service's failures.

A server closes a connection that sat idle past its keep-alive (gunicorn: 2 s by default). A
kept connection reused just as that timer fires is closed under a written prefix: the request
was never read, yet it looks like a server that dropped a held request. Every HTTP client pool
replaces such connections (RFC 9112 §9.3.1); the engine does the same, and learns the server's
limit from a ``Keep-Alive: timeout=N`` header or from the idle ages at which it saw closes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

MARGIN = 0.25
"""Kept connections idle past ``(1 - MARGIN)`` of the learned keep-alive are not reused: a
close is learned as the idle age at which it was seen, which is later than the server's timer."""

PROBE_S = 0.05
"""Before kept connections are first reused, the one idle longest is left idle this long and all
are looked at again: a server that closes each connection soon after answering (a keep-alive of
one request, without ``Connection: close``) shows it on that one, instead of under the next
wave (one server closes its connections after the same idle time). A learned keep-alive shorter
than this is too short to reuse a connection at all."""
PROBE_NS = int(PROBE_S * 1e9)

_TIMEOUT = re.compile(rb"(?:^|[,;\s])timeout\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


class KeepAlive:
    """One race's knowledge of a server's keep-alive (all origins of a race share it: a race
    nearly always talks to one), and how many kept connections were replaced."""

    __slots__ = ("limit_ns", "probed", "replaced")

    def __init__(self) -> None:
        self.limit_ns: int | None = None
        """The shortest idle time after which the server was seen (or said) to close; ``None``:
        not known yet."""
        self.replaced = 0
        """Kept connections the server closed, or was about to close, replaced by fresh ones."""
        self.probed = False
        """Kept connections were left idle ``PROBE_S`` once before their first reuse."""

    def heard(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Learn from a response's ``Keep-Alive: timeout=N`` (seconds), when it has one."""
        for name, value in headers:
            if name.lower() == b"keep-alive":
                found = _TIMEOUT.search(value)
                if found:
                    self._learn(int(float(found.group(1)) * 1e9))

    def closed_after(self, idle_ns: int) -> None:
        """A kept connection was found closed (or spoken on) after ``idle_ns`` of idleness."""
        self._learn(idle_ns)

    def stale(self, idle_ns: int) -> bool:
        """Whether a connection idle for ``idle_ns`` is too near the server's keep-alive to reuse
        (any connection, when the keep-alive is shorter than ``PROBE_S``)."""
        limit = self.limit_ns
        return limit is not None and (limit < PROBE_NS or idle_ns >= limit * (1 - MARGIN))

    def probe_wait(self, idle_since: Sequence[int], now: int) -> float:
        """Seconds to wait before the first reuse of connections idle since ``idle_since``
        (``perf_counter_ns``), so that the one idle longest has been idle ``PROBE_S``; 0 when
        the keep-alive is known or was probed already. Asking marks the probe done."""
        if self.probed or self.limit_ns is not None or not idle_since:
            return 0.0
        self.probed = True
        return max(0.0, (PROBE_NS - (now - min(idle_since))) / 1e9)

    def _learn(self, idle_ns: int) -> None:
        idle_ns = max(idle_ns, 0)
        if self.limit_ns is None or idle_ns < self.limit_ns:
            self.limit_ns = idle_ns


def idle_ms(idle_ns: int) -> str:
    """An idle time for a message: ``idle 2,013 ms``."""
    return f"idle {idle_ns / 1e6:,.0f} ms"
