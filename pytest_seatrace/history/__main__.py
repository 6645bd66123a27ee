"""``python -m pytest_seatrace.history``: see ``cli``."""

from __future__ import annotations

import sys

from pytest_seatrace.history.cli import main

sys.exit(main(sys.argv[1:]))
