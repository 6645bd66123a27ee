"""The open-file limit: a race of 1,600 sockets needs more than the usual soft limit of 1,024."""

from __future__ import annotations

import sys

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
