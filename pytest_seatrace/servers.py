"""Serve your app under a real server in a subprocess, for a fixture: ``with serve(uvicorn="app:app")``.

A subprocess, not a thread: a server in the test process shares the GIL with the race engine
and widens the start spread (docs/recipes.md has the figures). As for the bundled sample
service, the parent binds the listening socket and passes its fd, so the port is ours from the
start (no bind-read-release window another xdist worker could steal) and a connection made
before the child serves waits in the backlog instead of being refused. The child gets its own
process group, so a server that forks workers (gunicorn) is stopped whole.

It needs nothing but the standard library (and the server you name); the recipes in
``examples/recipes/`` use it, and so can your project's ``conftest.py``.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Server", "ServerStartError", "gunicorn_command", "serve", "uvicorn_command"]

BACKLOG = 4096  # >= resources x concurrency: every client of a race may connect at once
STOP_TIMEOUT = 5.0  # SIGTERM first (graceful stop), SIGKILL to the whole group after this
_POLL_INTERVAL = 0.01


class ServerStartError(RuntimeError):
    """The server exited, or did not answer its health check in time; carries its log tail."""


@dataclass(frozen=True)
class Server:
    """A running server: where it listens and where its log goes."""

    url: str
    port: int
    pid: int
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server's stdout and stderr, e.g. for a failure report."""
        return read_log_tail(self.log_path, lines)


def uvicorn_command(app: str, fd: int) -> list[str]:
    """Uvicorn serving the ASGI app ``module:attribute`` on the inherited socket ``fd``."""
    return [
        sys.executable, "-m", "uvicorn", app,
        "--fd", str(fd),
        "--backlog", str(BACKLOG),
        "--timeout-graceful-shutdown", "2",
        "--log-level", "warning",
        "--no-access-log",
    ]  # fmt: skip


def gunicorn_command(app: str, fd: int, *, threads: int = 100) -> list[str]:
    """Gunicorn serving the WSGI app ``module:attribute`` on the inherited socket ``fd``.

    One process of ``gthread`` workers: a gthread worker keeps a thread on each connection
    while its request is read, so a race whose requests are held before their last byte needs
    a thread per client (100 clients: ``threads=100``). Several processes would work too (each
    accepts from the same socket), but in-memory state would then differ per process. No
    control socket: its default path is per user, so two servers at once (xdist) would clash.
    """
    return [
        sys.executable, "-m", "gunicorn", app,
        "--bind", f"fd://{fd}",
        "--worker-class", "gthread",
        "--workers", "1",
        "--threads", str(threads),
        "--keep-alive", "30",
        "--graceful-timeout", "2",
        "--no-control-socket",
        "--log-level", "warning",
    ]  # fmt: skip


@contextlib.contextmanager
def serve(
    command: Sequence[str] | None = None,
    *,
    uvicorn: str | None = None,
    gunicorn: str | None = None,
    env: Mapping[str, str] | None = None,
    health_path: str = "/health",
    startup_timeout: float = 30.0,
    cwd: str | Path | None = None,
) -> Iterator[Server]:
    """Start a server on a loopback socket bound here, wait for ``GET health_path``, stop it.

    Give ``uvicorn="module:app"`` or ``gunicorn="module:app"``, or a whole ``command`` with
    ``{fd}`` where the socket's file descriptor goes. ``env`` is added to our environment.
    The server runs in ``cwd`` (default: the current directory, where pytest runs), which also
    goes first on its ``PYTHONPATH`` so that ``module`` imports from your project.
    ``startup_timeout`` is generous: a loaded 2-core CI machine takes seconds to import Django.
    """
    root = Path(cwd if cwd is not None else Path.cwd()).resolve()
    with tempfile.TemporaryDirectory(prefix="seatrace-recipe-") as directory:
        log_path = Path(directory) / "server.log"
        with log_path.open("wb") as log, listening_socket() as sock:
            fd = sock.fileno()
            if uvicorn is not None:
                argv = uvicorn_command(uvicorn, fd)
            elif gunicorn is not None:
                argv = gunicorn_command(gunicorn, fd)
            elif command is not None:
                argv = [part.replace("{fd}", str(fd)) for part in command]
            else:
                raise TypeError("serve() needs command=, uvicorn= or gunicorn=")
            port = sock.getsockname()[1]
            process = subprocess.Popen(  # noqa: S603 - our interpreter, no shell
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(fd,),
                env=_child_env(env, root),
                cwd=root,
                start_new_session=True,  # its own process group: gunicorn's workers stop with it
            )
        # The child holds its own copies of the socket and the log; ours are closed.
        try:
            wait_until_serving(process, port, _get_ok(port, health_path), log_path, startup_timeout)
            yield Server(url=f"http://127.0.0.1:{port}", port=port, pid=process.pid, log_path=log_path)
        finally:
            _stop(process)


def listening_socket(backlog: int = BACKLOG) -> socket.socket:
    """A loopback TCP socket on a free port, listening: its fd goes to the server we start."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def udp_socket() -> socket.socket:
    """A loopback UDP socket on a free port, bound: its fd goes to the server we start (QUIC)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
    except BaseException:
        sock.close()
        raise
    return sock


def _child_env(extra: Mapping[str, str] | None, root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra or {})
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(root) not in paths:
        env["PYTHONPATH"] = os.pathsep.join([str(root), *paths])
    return env


Probe = Callable[[float], str | None]
"""One readiness poll given the seconds left: None once serving, else why not yet (it may raise
``OSError`` or ``http.client.HTTPException``, which count as not yet)."""


def wait_until_serving(
    process: subprocess.Popen[bytes],
    port: int,
    probe: Probe,
    log_path: Path,
    timeout: float,
    *,
    what: str = "server",
    error: type[Exception] = ServerStartError,
    interval: float = _POLL_INTERVAL,
) -> None:
    """Poll with ``probe`` until it says serving, the process exits, or the deadline passes;
    ``what`` names the process and ``error`` is raised, with the log's tail, when it never serves."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while True:
        code = process.poll()
        if code is not None:
            raise error(f"{what} exited with status {code} before serving\n{read_log_tail(log_path)}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise error(
                f"{what} not serving on port {port} after {timeout}s ({last_error})\n"
                f"{read_log_tail(log_path)}"
            )
        try:
            reason = probe(remaining)
        except (OSError, http.client.HTTPException) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        else:
            if reason is None:
                return
            last_error = reason
        time.sleep(interval)  # a poll interval, not synchronisation: the answer decides


def _get_ok(port: int, path: str) -> Probe:
    """A probe: ``GET path`` answers 200 (each try bounded by a second and the deadline)."""

    def probe(remaining: float) -> str | None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=min(1.0, remaining))
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
        finally:
            conn.close()
        return None if response.status == 200 else f"GET {path} answered {response.status}"

    return probe


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the group, up to ``STOP_TIMEOUT`` for a graceful stop, then SIGKILL it; reaped.

    The group is signalled only while its leader is unreaped, so its id is still ours.
    """
    if process.poll() is not None:
        return
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.wait()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)  # the group we created: its id is the child's pid


def read_log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` of a server's log, for an error that says why it did not serve."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])
