"""The installed version, read from the package metadata: ``pyproject.toml`` is the one source."""

from __future__ import annotations

import importlib.metadata

try:
    __version__ = importlib.metadata.version("pytest-seatrace")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - run from a bare checkout
    __version__ = "0+unknown"
