"""The machine-readable (JSON) and visual (HTML) reports, written once by the controller.

Files are written to a temporary sibling and moved into place, so a reader never sees half a
report. A failure to write is reported, never raised: the figures still reach the terminal.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import socket
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytest_seatrace.core.document import RaceDoc
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


def atomic_write(path: Path, text: str) -> None:
    path = path.expanduser()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp's 0600 would hide the report from CI artifact steps
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: Path, option: str) -> str | None:
    """Why ``path`` cannot be written, if so; checked at start so a run's figures are not lost."""
    parent = path.expanduser().absolute().parent
    if not parent.is_dir():
        return f"{option} {path}: directory {parent} does not exist"
    if not os.access(parent, os.W_OK):
        return f"{option} {path}: directory {parent} is not writable"
    if path.is_dir():
        return f"{option} {path}: is a directory"
    return None


def write_reports(
    races: Sequence[RaceDoc], *, seed: int, json_path: Path | None, html_path: Path | None
) -> tuple[list[str], list[str]]:
    """Write the JSON and HTML reports asked for; return (written paths, error messages)."""
    written: list[str] = []
    errors: list[str] = []
    document = json_document(races, seed=seed)
    if json_path is not None:
        try:
            atomic_write(json_path, json.dumps(document, indent=1))
            written.append(str(json_path))
        except OSError as exc:
            errors.append(f"could not write --race-json {json_path}: {exc}")
    if html_path is not None:
        from pytest_seatrace.report.html import render_html

        try:
            atomic_write(html_path, render_html(document))
            written.append(str(html_path))
        except OSError as exc:
            errors.append(f"could not write --race-html {html_path}: {exc}")
    return written, errors
