"""What every test module of this suite shares.

The plugin loads its engine on first use, and gate mode loads httpcore only when a race runs
in it, so that a plain last-byte race never does. pytester restores ``sys.modules`` after each
in-process run, so a module first imported inside one comes back later as a second copy: httpx,
holding the first copy's exception classes, then no longer maps the second copy's (a refused
connection read ``attempt raised ConnectError`` instead of ``connection refused``), and a class
checked with ``isinstance`` across the copies is another class. Imported here once, before any
pytester run, they stay the one copy.
"""

from __future__ import annotations

import httpcore  # noqa: F401

import pytest_seatrace.engine.h2
import pytest_seatrace.engine.httpx_start
import pytest_seatrace.engine.runner
import pytest_seatrace.engine.shards
import pytest_seatrace.race  # noqa: F401
