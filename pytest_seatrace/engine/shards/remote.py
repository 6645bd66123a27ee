"""What a shard's gateway runs first: sent as source with ``gateway.remote_exec(this module)``.

It imports nothing of ours at module level, so that a python without pytest-seatrace answers
with what to install instead of a traceback; the shard itself is ``worker.serve``, imported from
the pytest-seatrace installed on the far side. Its one message is written out by hand as
``messages.ImportFailed`` encodes it (a test holds the two equal).
"""

from __future__ import annotations

import sys
from typing import Any


def start(channel: Any) -> None:
    try:
        from pytest_seatrace.engine.shards.worker import serve
    except ImportError as exc:
        channel.send(("import-error", {"python": sys.executable, "error": f"{type(exc).__name__}: {exc}"}))
        return
    serve(channel)


if __name__ == "__channelexec__":
    start(channel)  # type: ignore[name-defined]  # noqa: F821 - execnet's global for remote code
