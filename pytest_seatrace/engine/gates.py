"""Start gates: every client of a resource waits until all of them are ready."""

from __future__ import annotations

import anyio


class ResourceGate:
    """Opens when each of ``clients`` has either arrived or given up (failed before it)."""

    def __init__(self, clients: int) -> None:
        self._pending = clients
        self._open = anyio.Event()

    def _count(self) -> None:
        self._pending -= 1
        if self._pending <= 0:
            self._open.set()

    def leave(self) -> None:
        """A client that will never arrive (its set-up failed) must not hold the others."""
        self._count()

    async def arrive(self) -> None:
        self._count()
        await self._open.wait()
