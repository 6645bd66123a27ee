"""A Flask booking app over SQLite, with a correct view and a check-then-act one, for the Flask recipe.

``POST /book/<seat>`` ``{"user"}``: 201 for the first booking of a seat, 409 after, 404 for a
seat that does not exist. The correct view checks and acts in one conditional ``UPDATE ...
WHERE holder IS NULL``: the database decides, whatever the number of threads, processes or
replicas. The check-then-act view reads the seat, spends ``WINDOW_S`` (a payment call, say),
then writes: every request that read the seat before the first write wins too.

Serve it: ``gunicorn -k gthread --threads 100 'examples.recipes.flask_app:create_app("seats.db")'``
after ``python -c 'from examples.recipes.flask_app import init_db; init_db("seats.db", 4)'``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from flask import Flask, Response, g, jsonify, request

WINDOW_S = 0.05
"""Between check and act. Wider than the widest start spread of the recipes' races (tens of ms
with live_server or in process on a loaded machine), so the check-then-act test fails on every
run; a shorter window makes the race rarer, not harmless (docs/recipes.md)."""


def init_db(path: str | os.PathLike[str], seats: int) -> None:
    """A fresh database with the free seats ``"1"`` to ``str(seats)``; WAL, so readers never block."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE seats (id TEXT PRIMARY KEY, holder TEXT)")
        db.executemany("INSERT INTO seats (id) VALUES (?)", [(str(i),) for i in range(1, seats + 1)])
    db.close()


def holder(path: str | os.PathLike[str], seat: str) -> str | None:
    """Who holds ``seat``, read straight from the database (for a test's own checks)."""
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT holder FROM seats WHERE id = ?", (seat,)).fetchone()
    db.close()
    return None if row is None else row[0]


def create_app(db_path: str) -> Flask:
    """The app over the SQLite file ``db_path`` (made by ``init_db``)."""
    app = Flask(__name__)
    database = Path(db_path)

    def db() -> sqlite3.Connection:
        """One connection per request, autocommit: each statement is its own transaction."""
        if "db" not in g:
            g.db = sqlite3.connect(database, timeout=10, isolation_level=None)
        connection: sqlite3.Connection = g.db
        return connection

    @app.teardown_appcontext
    def close_db(_exc: BaseException | None) -> None:
        connection = g.pop("db", None)
        if connection is not None:
            connection.close()

    @app.before_request
    def stamp() -> None:
        g.arrived = time.perf_counter_ns()

    @app.after_request
    def add_stamp(response: Response) -> Response:
        """``X-Arrival-Ns``: when the view began; the plugin's server-side start spread."""
        response.headers["X-Arrival-Ns"] = str(g.arrived)
        return response

    def user() -> str:
        body = request.get_json(silent=True)
        return str(body["user"]) if isinstance(body, dict) and "user" in body else "anonymous"

    def answer(booked: bool, seat: str, who: str) -> tuple[Response, int]:
        if booked:
            return jsonify(seat=seat, user=who), 201
        exists = db().execute("SELECT 1 FROM seats WHERE id = ?", (seat,)).fetchone()
        if exists is None:
            return jsonify(error=f"no seat {seat}"), 404
        return jsonify(error=f"seat {seat} is taken"), 409

    @app.post("/book/<seat>")
    def book(seat: str) -> tuple[Response, int]:
        who = user()
        cursor = db().execute("UPDATE seats SET holder = ? WHERE id = ? AND holder IS NULL", (who, seat))
        return answer(cursor.rowcount == 1, seat, who)

    @app.post("/unsafe/book/<seat>")
    def book_unsafe(seat: str) -> tuple[Response, int]:
        who = user()
        row = db().execute("SELECT holder FROM seats WHERE id = ?", (seat,)).fetchone()
        if row is None or row[0] is not None:
            return answer(False, seat, who)
        time.sleep(WINDOW_S)  # the window: another request reads the seat as free meanwhile
        db().execute("UPDATE seats SET holder = ? WHERE id = ?", (who, seat))
        return answer(True, seat, who)

    @app.get("/health")
    def health() -> Response:
        return jsonify(ok=True)

    return app
