"""A minimal but real seat-booking HTTP service, bundled to demonstrate and test pytest-seatrace.

``python -m sample_service --strategy safe|unsafe`` serves it; ``create_app`` builds the
ASGI app over a ``SeatStore`` for in-process use. It imports neither pytest nor
pytest_seatrace, so it runs as a plain subprocess.
"""

from __future__ import annotations

from sample_service.app import SEAT_TAKEN, SESSION_COOKIE, STRATEGIES, Strategy, create_app, parse_order
from sample_service.db import SeatState, SeatStore, SeatTakenError

__all__ = [
    "SEAT_TAKEN",
    "SESSION_COOKIE",
    "STRATEGIES",
    "SeatState",
    "SeatStore",
    "SeatTakenError",
    "Strategy",
    "create_app",
    "parse_order",
]
