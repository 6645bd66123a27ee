"""The recipes' ``serve``: ``pytest_seatrace.servers.serve`` run from the repository root.

The servers import ``examples.recipes...``, so they run in the repository's root whatever the
directory pytest was started in. In your own project, import ``pytest_seatrace.servers``.
"""

from __future__ import annotations

import functools
from pathlib import Path

from pytest_seatrace import servers
from pytest_seatrace.servers import Server, ServerStartError, gunicorn_command, uvicorn_command

__all__ = ["ROOT", "Server", "ServerStartError", "gunicorn_command", "serve", "uvicorn_command"]

ROOT = Path(__file__).resolve().parents[2]
"""The repository root: the servers' working directory, so they import ``examples.recipes...``."""

serve = functools.partial(servers.serve, cwd=ROOT)
