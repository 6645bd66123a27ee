"""The seed report's scenario as one pytest test: 100 clients race for each of 16 seats.

The k6 report said: 1,600 requests, 16 successes, 1,584 rejections, zero 5xx. Here that is
the invariant, asserted on every run, with the start of each seat's 100 requests held within
about a millisecond (last-byte synchronisation). Run: ``pytest examples/ -v``.
"""

from __future__ import annotations

import pytest

from pytest_seatrace import RaceViolation


def order(attempt):
    """One client's order: its seat, and a user name that says which virtual user it was."""
    return {"seats": [attempt.resource], "user": f"vu-{attempt.client}"}


@pytest.mark.race(resources=16, concurrency=100, thresholds=["p95 < 2000ms", "errors == 0"])
def test_one_winner_per_seat(race, sample_service):
    result = race.post(sample_service.url + "/orders", json=order)
    # The invariant (exactly one success per seat) is asserted by race.post itself.
    assert result.requests == 1600
    assert result.status_counts == {201: 16, 409: 1584}


@pytest.mark.xfail(raises=RaceViolation, strict=True, reason="the unsafe strategy double-books: caught")
@pytest.mark.race(resources=16, concurrency=100)
def test_unsafe_service_double_books(race, sample_service_factory):
    unsafe = sample_service_factory(strategy="unsafe", window_ms=1)
    race.post(unsafe.url + "/orders", json=order)
