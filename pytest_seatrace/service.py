"""Run the bundled sample service in a subprocess, for fixtures, tests and benchmarks.

A subprocess, not a thread: in the test process the server would share the GIL with
the race engine (measured 12-14 ms start spread and ~2 s for the seed scenario instead
of < 1 ms and < 1 s). The parent binds the listening socket and passes its fd, so the
port is ours from the start: no bind-read-release window another xdist worker could
steal, and connections made before the child serves wait in the backlog.

Free of pytest, so benchmarks and examples use it too.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ServiceError", "ServiceHandle", "ServiceStartError", "start_sample_service"]

_BACKLOG = 4096  # >= resources x concurrency; uvicorn re-listens with the same value
_POLL_INTERVAL = 0.005
_STOP_TIMEOUT = 5.0
_LOG_TAIL_LINES = 30


class ServiceError(RuntimeError):
    """The sample service answered something a helper did not expect."""


class ServiceStartError(ServiceError):
    """The sample service exited or did not answer ``GET /health`` in time; carries its log tail."""


@dataclass(frozen=True)
class ServiceHandle:
    """A running sample service: where it listens, how it was started, and small helpers."""

    url: str
    port: int
    db_path: Path
    strategy: str
    seats: int
    window_ms: float
    pid: int
    log_path: Path
    _process: subprocess.Popen[bytes] = field(repr=False, compare=False)

    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 10.0) -> tuple[int, Any]:
        """One HTTP request to the service: (status, decoded JSON body).

        ``http.client`` ignores proxy variables, like the race engine (a proxy would
        re-time the requests).
        """
        return _request(self.port, method, path, body, timeout=timeout)

    def holders(self, seat: str | int) -> list[str]:
        """Users holding ``seat`` according to ``GET /seats/{seat}`` (two or more: a double booking)."""
        status, body = self.request("GET", "/seats/" + urllib.parse.quote(str(seat), safe=""))
        if status != 200:
            raise ServiceError(f"GET /seats/{seat} answered {status}: {body}")
        holders: list[str] = body["holders"]
        return holders

    def reset(self) -> None:
        """Free every seat (``POST /reset``), e.g. between rounds."""
        status, body = self.request("POST", "/reset")
        if status != 200:
            raise ServiceError(f"POST /reset answered {status}: {body}")

    def kill(self) -> None:
        """SIGKILL the service and reap it: a crash, for durability tests.

        Start it again on the same database with ``start_sample_service(db_path=handle.db_path)``.
        """
        self._process.kill()
        self._process.wait()

    @property
    def returncode(self) -> int | None:
        """The exit status once the process ended, else None."""
        return self._process.poll()

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the service's stdout and stderr, e.g. for a failure report."""
        return _tail(self.log_path, lines)


@contextlib.contextmanager
def start_sample_service(
    *,
    strategy: str = "safe",
    seats: int = 16,
    window_ms: float = 5.0,
    db_path: Path | None = None,
    startup_timeout: float = 10.0,
    busy_timeout_ms: int = 5000,
) -> Iterator[ServiceHandle]:
    """Start ``python -m sample_service`` on a fresh port, yield its handle, stop it.

    ``db_path=None`` uses a fresh temporary directory, removed at exit; a given
    ``db_path`` is kept, so starting again on it finds the earlier bookings. The log
    (stdout and stderr) goes next to the database. Stopping is SIGTERM, up to 5 s for
    a graceful stop, then SIGKILL.
    """
    own_dir: Path | None = None
    if db_path is None:
        own_dir = Path(tempfile.mkdtemp(prefix="seatrace-service-"))
        db_path = own_dir / "seats.db"
    try:
        fd, log_name = tempfile.mkstemp(prefix="sample_service-", suffix=".log", dir=db_path.parent)
        log_path = Path(log_name)
        with os.fdopen(fd, "wb") as log, _listening_socket() as sock:
            port = sock.getsockname()[1]
            command = [
                sys.executable, "-m", "sample_service",
                "--fd", str(sock.fileno()),
                "--db", str(db_path),
                "--strategy", strategy,
                "--seats", str(seats),
                "--window-ms", repr(window_ms),
                "--busy-timeout-ms", str(busy_timeout_ms),
            ]  # fmt: skip
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(sock.fileno(),),
                env=_child_env(),
            )
        # The child has its own copy of the socket and the log file; ours are closed.
        try:
            _wait_until_serving(process, port, log_path, startup_timeout)
            yield ServiceHandle(
                url=f"http://127.0.0.1:{port}",
                port=port,
                db_path=db_path,
                strategy=strategy,
                seats=seats,
                window_ms=window_ms,
                pid=process.pid,
                log_path=log_path,
                _process=process,
            )
        finally:
            _stop(process)
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def _child_env() -> dict[str, str]:
    """Our environment, with a source checkout's root first on PYTHONPATH.

    The child must import the same ``sample_service`` as we would, even from another
    working directory. An installed copy needs nothing (and site-packages on
    PYTHONPATH would come before the standard library).
    """
    env = dict(os.environ)
    spec = importlib.util.find_spec("sample_service")
    if spec is None or spec.origin is None:
        return env
    root = str(Path(spec.origin).resolve().parent.parent)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    installed = {str(Path(sysconfig.get_path(key)).resolve()) for key in ("purelib", "platlib")}
    if root not in installed and root not in paths:
        env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    return env


def _wait_until_serving(process: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float) -> None:
    """Poll ``GET /health`` until it answers 200, the process exits, or the deadline passes.

    The socket already listens, so a poll made before the child serves waits in the
    backlog instead of being refused; each poll's timeout is short and bounded by the
    deadline, so a hung child cannot stall us past ``timeout``.
    """
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while True:
        code = process.poll()
        if code is not None:
            raise ServiceStartError(
                f"sample service exited with status {code} before serving\n{_tail(log_path)}"
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServiceStartError(
                f"sample service not serving on port {port} after {timeout}s ({last_error})\n"
                f"{_tail(log_path)}"
            )
        try:
            status, body = _request(port, "GET", "/health", timeout=min(0.5, remaining))
        except (OSError, http.client.HTTPException) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                return
            last_error = f"GET /health answered {status}: {body}"
        time.sleep(_POLL_INTERVAL)


def _request(port: int, method: str, path: str, body: Any = None, *, timeout: float) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        payload = None if body is None else json.dumps(body).encode()
        headers = {} if payload is None else {"Content-Type": "application/json"}
        conn.request(method, path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(data) if data else None
    except ValueError:  # not ours: e.g. uvicorn's plain-text 400 for a malformed request
        return response.status, data.decode("utf-8", errors="replace")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, up to 5 s for uvicorn's graceful stop, then SIGKILL; always reaped."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])
