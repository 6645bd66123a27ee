"""The Flask recipe's seat app (SQLite, so every worker process sees one state) under gunicorn,
as teams deploy it: sync or gthread workers, a keep-alive, slow requests.

``SEATRACE_DB`` names the database (``init_db`` made it); ``SEATRACE_DELAY_MS`` is how long
each booking keeps its worker thread after the view answered (a payment call, a slow query):
the view books at once, so the answers stay correct, while the workers stay busy.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from examples.recipes.flask_app import create_app, init_db
from examples.recipes.servers import Server, serve

_DELAY_S = float(os.environ.get("SEATRACE_DELAY_MS", "0")) / 1000


def _make_app() -> Callable[..., Iterable[bytes]]:
    flask_app = create_app(os.environ.get("SEATRACE_DB", "seats.db"))

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        answer = flask_app(environ, start_response)
        if _DELAY_S and environ.get("PATH_INFO", "").startswith("/book/"):
            time.sleep(_DELAY_S)
        return answer

    return app


app = _make_app() if "SEATRACE_DB" in os.environ else None
"""What gunicorn serves (``tests.gunicorn_seats:app``); made only in the server's process."""


@contextlib.contextmanager
def gunicorn_seats(
    directory: Path,
    *,
    seats: int = 3,
    worker_class: str = "gthread",
    workers: int = 3,
    threads: int = 8,
    keep_alive: float = 2,
    delay_ms: float = 0,
    preload: bool = False,
) -> Iterator[Server]:
    """The seat app under gunicorn on a fresh database in ``directory``; ``POST /book/{seat}``.

    gunicorn's defaults where not given (its keep-alive is 2 s); ``keep_alive`` is passed as
    ``--keep-alive``, ``threads`` only to gthread workers. ``preload=True`` loads the app
    before forking (``--preload``), so every worker serves from the start instead of joining
    as it finishes importing it.
    """
    db = directory / "seats.db"
    init_db(db, seats)
    command = [
        sys.executable, "-m", "gunicorn", "tests.gunicorn_seats:app",
        "--bind", "fd://{fd}",
        "--worker-class", worker_class,
        "--workers", str(workers),
        "--keep-alive", f"{keep_alive:g}",
        "--graceful-timeout", "2",
        "--no-control-socket",
        "--log-level", "warning",
    ]  # fmt: skip
    if worker_class == "gthread":
        command += ["--threads", str(threads)]
    if preload:
        command.append("--preload")
    env = {"SEATRACE_DB": str(db), "SEATRACE_DELAY_MS": f"{delay_ms:g}"}
    with serve(command, env=env) as server:
        yield server
