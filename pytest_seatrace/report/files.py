"""The machine-readable (JSON) and visual (HTML) reports, written once by the controller.

Files are written by :class:`ReportFiles` through its
:class:`~pytest_seatrace.report.safe_write.SafeWriter`, by what ``os.stat`` finds at the path: a
regular file (or none) by write-and-rename beside the symlink-resolved target, a FIFO or a device
in place. A failure to write is returned, never raised: the figures still reach the terminal, and
the session's exit status says the report is missing.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import socket
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_seatrace.core.document import RaceDoc
from pytest_seatrace.report.safe_write import SafeWriter
from pytest_seatrace.version import __version__

SCHEMA_VERSION = 1


def machine_info() -> dict[str, Any]:
    return {
        "node": socket.gethostname(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": platform.system(),
        "release": platform.release(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def json_document(races: Sequence[RaceDoc], *, seed: int) -> dict[str, Any]:
    """The ``--race-json`` file: schema, plugin version, machine, command line, every race."""
    return {
        "schema": SCHEMA_VERSION,
        "plugin_version": __version__,
        "datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "machine_info": machine_info(),
        "argv": sys.argv[1:],
        "seed": seed,
        "races": list(races),
    }


def one_path_for_both(json_path: Path | None, html_path: Path | None) -> str | None:
    """Why the two reports cannot share their path: the HTML would replace the JSON (on a FIFO
    or a device such as ``/dev/stdout``, run into it). Paths are compared with symlinks resolved,
    and two names of one existing regular file (a hard link) by inode; the null device, which
    keeps nothing, may take both."""
    if json_path is None or html_path is None:
        return None
    json_file, html_file = json_path.expanduser(), html_path.expanduser()
    real = os.path.realpath(json_file)
    same = real == os.path.realpath(html_file)
    if not same:
        with contextlib.suppress(OSError):
            same = json_file.is_file() and json_file.samefile(html_file)
    if not same or _discards(json_file):
        return None
    where = str(json_path) if json_path == html_path else f"{json_path} and {html_path}"
    if real != str(json_path):
        where += f", that is {real}"
    return (
        f"--race-json (race_json) and --race-html (race_html) name one file ({where}): one "
        "report would overwrite or run into the other; give each report its own path"
    )


def _discards(path: Path) -> bool:
    """``path`` is the null device (``/dev/null`` or a node of it): both reports may go there."""
    try:
        found, null = path.stat(), Path(os.devnull).stat()
    except OSError:
        return False
    return stat.S_ISCHR(found.st_mode) and found.st_rdev == null.st_rdev


@dataclass
class ReportFiles:
    """The session's ``--race-json`` and ``--race-html`` files: probed at start-up, written at
    the end. Owned by the session's controller role; its writer keeps a FIFO's write end from the
    probe to the write, and :meth:`release` closes whatever was not written."""

    json_path: Path | None
    html_path: Path | None
    writer: SafeWriter = field(default_factory=SafeWriter)

    def _asked(self) -> list[tuple[Path, str]]:
        pairs = ((self.json_path, "--race-json"), (self.html_path, "--race-html"))
        return [(path, flag) for path, flag in pairs if path]

    def probe(self) -> str | None:
        """Why a report could not be written at the end, naming its option; checked at start-up.

        The probe the final write makes (:meth:`~pytest_seatrace.report.safe_write.SafeWriter.probe`).
        A FIFO's write end it opens stays open for that write: :meth:`release` closes what is left.
        """
        shared = one_path_for_both(self.json_path, self.html_path)
        if shared:
            return shared
        for path, flag in self._asked():
            problem = self.writer.probe(path, flag)
            if problem:
                return problem
        return None

    def release(self) -> None:
        """Close whatever a start-up probe kept open for reports that were not written."""
        for path, _ in self._asked():
            self.writer.release(path)

    def write(self, races: Sequence[RaceDoc], *, seed: int) -> tuple[list[str], list[str]]:
        """Write the JSON and HTML reports asked for; return (written paths, error messages)."""
        written: list[str] = []
        errors: list[str] = []
        try:
            document = json_document(races, seed=seed)
            if self.json_path is not None:
                try:
                    self.writer.write_text(self.json_path, json.dumps(document, indent=1))
                    written.append(str(self.json_path))
                except OSError as exc:
                    errors.append(f"could not write --race-json {self.json_path}: {_reason(exc)}")
            if self.html_path is not None:
                from pytest_seatrace.report.html import render_html

                try:
                    self.writer.write_text(self.html_path, render_html(document))
                    written.append(str(self.html_path))
                except OSError as exc:
                    errors.append(f"could not write --race-html {self.html_path}: {_reason(exc)}")
        finally:
            self.release()
        return written, errors


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
