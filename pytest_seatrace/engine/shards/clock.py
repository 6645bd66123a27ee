"""A shard's clocks mapped onto the coordinator's, with an error bound.

A shard's stamps are ``perf_counter_ns`` of its own host, whose origin is arbitrary, and its wall
clock may be off ours (another host). When it starts it sends one (``time_ns``,
``perf_counter_ns``) pair, then answers ``EXCHANGES`` clock requests with its ``time_ns``; for
each the coordinator reads its own ``time_ns`` before asking (t0) and after the answer (t3):
offset = answer - (t0 + t3) / 2, error bound = (t3 - t0) / 2, and the exchange with the shortest
round trip is kept (NTP's way). A shard stamp ``p`` maps onto our clock as
``p + (wall - perf)_shard - offset - (wall - perf)_ours``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

EXCHANGES = 12


@dataclass(frozen=True, slots=True)
class ClockMap:
    offset_ns: int = 0
    """The shard's wall clock minus ours."""
    error_ns: int = 0
    """How far ``offset_ns`` may be off: half the best round trip."""
    delta_ns: int = 0
    """Added to the shard's ``perf_counter_ns`` stamps: the same instant on our ``perf_counter_ns``."""

    @classmethod
    def measure(
        cls, ask: Callable[[], int], wall_ns: int, perf_ns: int, exchanges: int = EXCHANGES
    ) -> ClockMap:
        """The map of a shard whose ``(time_ns, perf_counter_ns)`` pair is ``wall_ns, perf_ns``;
        ``ask()`` returns the shard's ``time_ns`` now (one exchange over its channel)."""
        best: tuple[int, int] | None = None
        for _ in range(exchanges):
            sent = time.time_ns()
            answer = ask()
            half = (time.time_ns() - sent) // 2
            if best is None or half < best[1]:
                best = (answer - (sent + half), half)
        offset, error = best or (0, 0)
        here_wall, here_perf = time.time_ns(), time.perf_counter_ns()
        return cls(offset, error, (wall_ns - perf_ns) - offset - (here_wall - here_perf))

    def here(self, stamp_ns: int) -> int:
        """A shard's ``perf_counter_ns`` stamp on ours (0, no stamp, stays 0)."""
        return stamp_ns + self.delta_ns if stamp_ns else 0

    def there(self, wall_ns: int) -> int:
        """An instant of our wall clock on the shard's."""
        return wall_ns + self.offset_ns

    def from_there(self, wall_ns: int) -> int:
        """An instant of the shard's wall clock on ours."""
        return wall_ns - self.offset_ns


def perf_at(wall_ns: int) -> int:
    """Our ``perf_counter_ns`` at an instant of our wall clock not after now."""
    wall, perf = time.time_ns(), time.perf_counter_ns()
    return perf - max(0, wall - wall_ns)
