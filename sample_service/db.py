"""SQLite storage for the sample service: seats, orders and one booking row per booked seat.

Everything here is synchronous, over one connection used by one thread at a time (the
app serialises its calls): SQLite allows a single writer, and queuing writes in-process
is far cheaper than letting its busy handler sleep 1-100 ms per retry.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import cast

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seats (
    id     TEXT PRIMARY KEY,
    holder TEXT
);
CREATE TABLE IF NOT EXISTS orders (
    id   INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bookings (
    order_id INTEGER NOT NULL REFERENCES orders(id),
    seat_id  TEXT NOT NULL REFERENCES seats(id),
    user     TEXT NOT NULL,
    PRIMARY KEY (order_id, seat_id)
);
CREATE INDEX IF NOT EXISTS bookings_by_seat ON bookings (seat_id, order_id);
CREATE TABLE IF NOT EXISTS withdrawals (
    seat_id TEXT PRIMARY KEY REFERENCES seats(id)
);
"""


def is_busy(exc: sqlite3.Error) -> bool:
    """SQLITE_BUSY: another connection holds the lock we need ("database is locked")."""
    return isinstance(exc, sqlite3.OperationalError) and str(exc).startswith("database is locked")


class SeatTakenError(Exception):
    """A seat of the order already has a holder (or was withdrawn); the order booked nothing."""


class NotHeldError(Exception):
    """The user named in a cancellation holds no booking of that seat; nothing was cancelled."""


@dataclass(frozen=True, slots=True)
class SeatState:
    """One seat as stored: every holder (a list, so a double booking shows) and their orders."""

    id: str
    holders: tuple[str, ...]
    orders: tuple[int, ...]
    withdrawn: bool = False
    """Taken off sale (``DELETE /seats/{id}``): nobody may book it until a reset."""


class SeatStore:
    """One SQLite connection and the few statements the service needs.

    The connection has ``isolation_level=None`` so the ``BEGIN IMMEDIATE`` here is the
    only transaction control (Python's implicit BEGIN would defer the write lock).
    ``check_same_thread=False`` because the app calls it from its event loop and, when
    it must wait for another process's lock, from a worker thread; never both at once.
    """

    def __init__(
        self, connection: sqlite3.Connection, seat_ids: frozenset[str], busy_timeout_ms: int
    ) -> None:
        self._conn = connection
        self.seat_ids = seat_ids
        self.busy_timeout_ms = busy_timeout_ms

    @classmethod
    def open(cls, path: str | Path, *, seats: int, busy_timeout_ms: int = 5000) -> SeatStore:
        """Open (or create) the database and make sure seats "1".."seats" exist.

        Existing bookings are kept, so a restart after a crash still shows every
        acknowledged order. WAL with ``synchronous=NORMAL`` makes a commit durable
        against a killed process (not against power loss) without an fsync per order.
        Raises ``sqlite3.Error`` when the path cannot hold a database.
        """
        conn = sqlite3.connect(
            path, timeout=busy_timeout_ms / 1000, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.executescript(_SCHEMA)
            store = cls(conn, frozenset(), busy_timeout_ms)
            with store._transaction():
                conn.executemany(
                    "INSERT OR IGNORE INTO seats (id) VALUES (?)", ((str(i),) for i in range(1, seats + 1))
                )
            store.seat_ids = frozenset(row[0] for row in conn.execute("SELECT id FROM seats"))
        except BaseException:
            conn.close()
            raise
        return store

    def close(self) -> None:
        self._conn.close()

    def wait_for_locks(self, wait: bool) -> None:
        """Wait up to ``busy_timeout_ms`` for another connection's lock (True) or fail at once (False).

        Failing at once lets a caller run the store on an event loop and move only the
        rare blocked call to a thread, where the wait cannot stall the loop.
        """
        self._conn.execute(f"PRAGMA busy_timeout = {self.busy_timeout_ms if wait else 0}")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception (a failed COMMIT too)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def book(self, seats: Sequence[str], user: str) -> int:
        """The safe path: claim every seat with a conditional update in one transaction.

        ``UPDATE … WHERE holder IS NULL`` touching no row means someone else holds the
        seat: the whole order rolls back (all-or-nothing) and ``SeatTakenError`` is
        raised. Returns the new order id.
        """
        with self._transaction() as conn:
            for seat in seats:
                cursor = conn.execute(
                    "UPDATE seats SET holder = ? WHERE id = ? AND holder IS NULL", (user, seat)
                )
                if cursor.rowcount != 1:  # held, or withdrawn (held by nobody: ``""``)
                    raise SeatTakenError(seat)
            return self._insert_order(conn, seats, user)

    def any_booked(self, seats: Sequence[str]) -> bool:
        """The unsafe path's check: does any of these seats have a booking row yet, or was it
        withdrawn?"""
        query = "SELECT 1 FROM bookings WHERE seat_id = ? LIMIT 1"
        return any(self._conn.execute(query, (seat,)).fetchone() or self._withdrawn(seat) for seat in seats)

    def _withdrawn(self, seat: str) -> bool:
        return (
            self._conn.execute("SELECT 1 FROM withdrawals WHERE seat_id = ?", (seat,)).fetchone() is not None
        )

    def withdraw(self, seat: str) -> None:
        """The safe path: take a free seat off sale with the same conditional update as a
        booking (its holder becomes ``""``, nobody), in one transaction; ``SeatTakenError`` when
        it is booked or withdrawn already."""
        with self._transaction() as conn:
            cursor = conn.execute("UPDATE seats SET holder = ? WHERE id = ? AND holder IS NULL", ("", seat))
            if cursor.rowcount != 1:
                raise SeatTakenError(seat)
            conn.execute("INSERT INTO withdrawals (seat_id) VALUES (?)", (seat,))

    def withdraw_unchecked(self, seat: str) -> None:
        """The unsafe path's act: withdraw without re-checking (the unsafe check was
        ``any_booked``): a booking made meanwhile stays, on a seat that is off sale."""
        with self._transaction() as conn:
            conn.execute("UPDATE seats SET holder = ? WHERE id = ?", ("", seat))
            conn.execute("INSERT OR IGNORE INTO withdrawals (seat_id) VALUES (?)", (seat,))

    def cancel(self, seat: str, user: str) -> None:
        """The safe path: free a seat ``user`` holds, with a conditional update (``holder = user``)
        in one transaction; ``NotHeldError`` when ``user`` does not hold it (any more)."""
        with self._transaction() as conn:
            cursor = conn.execute("UPDATE seats SET holder = NULL WHERE id = ? AND holder = ?", (seat, user))
            if cursor.rowcount != 1:
                raise NotHeldError(seat)
            conn.execute("DELETE FROM bookings WHERE seat_id = ? AND user = ?", (seat, user))

    def holds(self, seat: str, user: str) -> bool:
        """The unsafe path's check: does ``user`` have a booking row for this seat?"""
        query = "SELECT 1 FROM bookings WHERE seat_id = ? AND user = ? LIMIT 1"
        return self._conn.execute(query, (seat, user)).fetchone() is not None

    def cancel_unchecked(self, seat: str, user: str) -> None:
        """The unsafe path's act: delete ``user``'s bookings of the seat without re-checking, so
        two cancellations that both passed the check both succeed."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM bookings WHERE seat_id = ? AND user = ?", (seat, user))
            conn.execute("UPDATE seats SET holder = NULL WHERE id = ? AND holder = ?", (seat, user))

    def book_unchecked(self, seats: Sequence[str], user: str) -> int:
        """The unsafe path's act: record the order without re-checking (check-then-act bug).

        The seat's ``holder`` column is overwritten (last writer wins) so a later
        switch to the safe strategy on this database still sees the seat as taken.
        """
        with self._transaction() as conn:
            conn.executemany("UPDATE seats SET holder = ? WHERE id = ?", ((user, seat) for seat in seats))
            return self._insert_order(conn, seats, user)

    @staticmethod
    def _insert_order(conn: sqlite3.Connection, seats: Iterable[str], user: str) -> int:
        # A successful INSERT always sets lastrowid; typeshed says ``int | None`` for other statements.
        order_id = cast(int, conn.execute("INSERT INTO orders (user) VALUES (?)", (user,)).lastrowid)
        conn.executemany(
            "INSERT INTO bookings (order_id, seat_id, user) VALUES (?, ?, ?)",
            ((order_id, seat, user) for seat in seats),
        )
        return order_id

    def seat(self, seat_id: str) -> SeatState | None:
        """One seat with its holders and orders, or None when there is no such seat."""
        if seat_id not in self.seat_ids:
            return None
        rows = self._conn.execute(
            "SELECT user, order_id FROM bookings WHERE seat_id = ? ORDER BY order_id", (seat_id,)
        ).fetchall()
        holders, orders = tuple(row[0] for row in rows), tuple(row[1] for row in rows)
        return SeatState(seat_id, holders, orders, self._withdrawn(seat_id))

    def all_seats(self) -> list[SeatState]:
        """Every seat, numerically ordered ("2" before "10"), read in one query (one snapshot)."""
        bookings: dict[str, list[tuple[str, int]]] = {}
        for seat_id, user, order_id in self._conn.execute(
            "SELECT s.id, b.user, b.order_id FROM seats AS s LEFT JOIN bookings AS b ON b.seat_id = s.id"
            " ORDER BY CAST(s.id AS INTEGER), s.id, b.order_id"
        ):
            seat_bookings = bookings.setdefault(seat_id, [])
            if order_id is not None:
                seat_bookings.append((user, order_id))
        return [
            SeatState(seat_id, tuple(user for user, _ in rows), tuple(order for _, order in rows))
            for seat_id, rows in bookings.items()
        ]

    def reset(self) -> None:
        """Free every seat: delete all bookings and orders (order ids keep counting up)."""
        with self._transaction() as conn:
            conn.execute("DELETE FROM bookings")
            conn.execute("DELETE FROM orders")
            conn.execute("DELETE FROM withdrawals")
            conn.execute("UPDATE seats SET holder = NULL WHERE holder IS NOT NULL")
