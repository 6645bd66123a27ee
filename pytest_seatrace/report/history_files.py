"""The ``--race-history DIR`` files: one Jepsen EDN history per race with a model, written by the
controller only (a worker's histories reach it through the session's exchange file, as the JSON
report's request histories do), so each lands in ``DIR`` exactly once under a name no other race
of the session has, whatever host the worker ran on.

The directory is made and probed at start-up, with the probe the reports use: a path that is a
file, a read-only directory or ``/proc`` is a usage error before any test runs. A file that still
cannot be written is returned as an error, never raised, and fails the session as a lost report
does.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from pytest_seatrace.report.safe_write import SafeWriter

OPTION = "--race-history"
MAX_STEM = 120
"""Characters of a file name taken from the test's node id; a longer one is cut and hashed."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def file_stem(node_id: str, number: int) -> str:
    """``tests/test_a.py::test_b[x y]``, race 2 → ``tests_test_a.py_test_b_x_y-race2``: only
    letters, digits, ``.``, ``_`` and ``-``, no leading dot, at most ``MAX_STEM`` characters."""
    stem = _UNSAFE.sub("_", node_id).strip("._-") or "race"
    if len(stem) > MAX_STEM:
        digest = hashlib.sha256(node_id.encode("utf-8")).hexdigest()[:10]
        stem = f"{stem[: MAX_STEM - 11]}_{digest}"
    return f"{stem}-race{number}"


@dataclass
class HistoryFiles:
    """The session's EDN files in ``directory``: the names given so far, what was written, what
    failed."""

    directory: Path
    writer: SafeWriter = field(default_factory=SafeWriter)
    names: set[str] = field(default_factory=set)
    written: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def prepare(self) -> str | None:
        """Make the directory if missing and probe a file in it; why it cannot take the files,
        naming the option, else ``None``."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            return f"{OPTION} {self.directory}: not a directory"
        except OSError as exc:
            return f"{OPTION} {self.directory}: cannot create the directory ({exc.strerror or exc})"
        return self.writer.probe(self.directory / ".seatrace-probe.edn", OPTION)

    def name(self, stem: str) -> str:
        """``stem.edn``, or ``stem-2.edn``… when an earlier race of the session took it."""
        name, n = f"{stem}.edn", 1
        while name in self.names:
            n += 1
            name = f"{stem}-{n}.edn"
        self.names.add(name)
        return name

    def write(self, stem: str, text: str) -> None:
        """Write one race's history under a name of its own."""
        path = self.directory / self.name(stem)
        try:
            self.writer.write_text(path, text)
        except OSError as exc:
            self.errors.append(f"could not write {OPTION} {path}: {exc.strerror or exc}")
            return
        self.written.append(str(path))
