"""The session's execnet gateways: one per (spec, occurrence), started on first use, reused.

A gateway is whatever execnet makes of a spec (``popen``, ``ssh=host//python=...``,
``popen//python=...``); starting one takes 0.3-0.5 s, so every sharded race of a session shares
them. The coordinator asks a pool for gateways through ``Gateways``: a test hands it one whose
gateways stand for real ones (as pytest-xdist's ``MockGateway``).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Protocol


class Gateways(Protocol):
    """What the coordinator needs of a gateway pool."""

    def gateway(self, spec: str, occurrence: int) -> Any: ...

    def discard(self, spec: str, occurrence: int) -> None: ...

    def close(self) -> None: ...


class GatewayPool:
    """The session's gateways, torn down by ``close()`` (the plugin calls it when the session
    ends; a race without a session closes its own pool)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._group: Any = None
        self._gateways: dict[tuple[str, int], Any] = {}

    def gateway(self, spec: str, occurrence: int) -> Any:
        """The gateway for ``spec`` (blocking: starting one takes 0.1-0.5 s locally)."""
        import execnet

        key = (spec, occurrence)
        with self._lock:
            if self._group is None:
                self._group = execnet.Group()
            group = self._group
            gateway = self._gateways.get(key)
        if gateway is None:
            gateway = group.makegateway(spec)
            with self._lock:
                self._gateways[key] = gateway
        return gateway

    def discard(self, spec: str, occurrence: int) -> None:
        """Forget a gateway that died (the next race starts a new one)."""
        with self._lock:
            gateway = self._gateways.pop((spec, occurrence), None)
        if gateway is not None:
            with contextlib.suppress(Exception):
                gateway.exit()

    @property
    def started(self) -> int:
        return len(self._gateways)

    def close(self) -> None:
        """Tear every gateway down (a gateway that will not exit is killed)."""
        with self._lock:
            group, self._group = self._group, None
            self._gateways.clear()
        if group is not None:
            group.terminate(timeout=1.0)
