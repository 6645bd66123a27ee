"""``only_double_bookings()``: a strict xfail that means "caught double-booking", not "crashed"."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from pytest_seatrace import RaceViolation, ViolationKind


@contextlib.contextmanager
def only_double_bookings() -> Iterator[None]:
    """Let a ``RaceViolation`` through only when every violation is ``too-many``.

    An HTTP 500 or a wrong URL is a ``RaceViolation`` too, and would satisfy
    ``xfail(raises=RaceViolation)`` as well as the bug does; here it becomes a plain
    ``AssertionError``, which that xfail does not accept, so the test fails and says why.
    """
    try:
        yield
    except RaceViolation as violation:
        kinds = {v.kind for v in violation.result.violations}
        if kinds != {ViolationKind.TOO_MANY}:
            found = ", ".join(sorted(kinds))
            raise AssertionError(
                f"expected only double bookings (too-many), found {found}:\n{violation}"
            ) from None
        raise
