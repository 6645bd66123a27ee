"""Outside programs a benchmark runs: bounded subprocesses, and hey installed when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from typing import Any

from benchmarks.cli import stderr


class ToolUnavailableError(RuntimeError):
    """The tool is not installed and could not be installed; the message says why."""


class RunFailedError(RuntimeError):
    """One run of a tool did not produce results (crash, time limit); the message says why."""


def run_bounded(command: Sequence[str], limit_s: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # fixed argument lists, no shell
            list(command), capture_output=True, text=True, timeout=limit_s, check=False, **kwargs
        )
    except subprocess.TimeoutExpired:
        raise RunFailedError(f"{command[0]} still running after {limit_s:.0f}s") from None


def ensure_hey(install: bool, limit_s: float) -> str:
    """The ``hey`` binary, installed from Debian's package when missing and we are root."""
    found = shutil.which("hey")
    if found:
        return found
    if not install:
        raise ToolUnavailableError("hey not installed (--no-install)")
    if not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        raise ToolUnavailableError("hey not installed; install it with: apt-get install hey (needs root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    stderr("installing hey: apt-get update && apt-get install -y hey")
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "hey"]):
        try:
            done = run_bounded(command, limit_s, env=env)
        except RunFailedError as exc:
            raise ToolUnavailableError(f"{' '.join(command)}: {exc}") from None
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ToolUnavailableError(f"{' '.join(command)} failed ({done.returncode}): {tail[0]}")
    found = shutil.which("hey")
    if not found:
        raise ToolUnavailableError("apt-get installed hey but it is not on PATH")
    return found
