"""Races against one origin take turns across processes: a file lock per (scheme, host, port).

Under pytest-xdist, one worker's ``POST /reset`` between rounds would wipe another worker's
race on a shared service mid-flight, and two races at once skew each other's timings. The
controller picks one lock directory for the run; a race holds its origin's lock across its
resets, rounds and ``verify=`` calls. The lock is taken in a worker thread, a bounded try at a
time, so the test's event loop never blocks and a cancelled race stops waiting at once.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread

from pytest_seatrace.engine.stream import Origin

TRY_SECONDS = 0.25
"""How long one try waits for the lock before the loop checks for cancellation again."""


def lock_path(directory: str, origin: Origin) -> Path:
    name = re.sub(r"[^A-Za-z0-9.-]", "_", f"{origin.scheme}-{origin.host}-{origin.port}")
    return Path(directory) / f"{name}.lock"


@asynccontextmanager
async def origin_lock(directory: str | None, origin: Origin | None) -> AsyncIterator[None]:
    """Hold ``origin``'s lock in ``directory`` for the block; nothing without either."""
    if directory is None or origin is None:
        yield
        return
    from filelock import FileLock, Timeout

    # thread_local=False: acquired in a worker thread, released on the event loop's thread.
    lock = FileLock(lock_path(directory, origin), thread_local=False)

    def attempt() -> bool:
        try:
            lock.acquire(timeout=TRY_SECONDS)
        except Timeout:
            return False
        return True

    while not await anyio.to_thread.run_sync(attempt):
        pass
    try:
        yield
    finally:
        lock.release()
