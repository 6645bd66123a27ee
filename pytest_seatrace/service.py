"""Run the bundled sample service in a subprocess, for fixtures, tests and benchmarks.

A subprocess, not a thread: in the test process the server would share the GIL with
the race engine (measured 12-14 ms start spread and ~2 s for the seed scenario instead
of < 1 ms and < 1 s). The parent binds the listening socket and passes its fd, so the
port is ours from the start: no bind-read-release window another xdist worker could
steal, and connections made before the child serves wait in the backlog.

``server="hypercorn"`` adds HTTP/2; ``tls=True`` serves https with a throwaway CA made
by trustme (imported only then), whose certificate the handle names in ``ca_path``.
``http3=True`` adds HTTP/3 (hypercorn with aioquic, so TLS) on a UDP socket bound here too.

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
import ssl
import subprocess
import sys
import sysconfig
import tempfile
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_seatrace.servers import Probe, listening_socket, read_log_tail, udp_socket, wait_until_serving

__all__ = ["ServiceError", "ServiceHandle", "ServiceStartError", "start_sample_service"]

_BACKLOG = 4096  # >= resources x concurrency; uvicorn re-listens with the same value
_POLL_INTERVAL = 0.005
_STOP_TIMEOUT = 5.0
_LOG_TAIL_LINES = 30
SERVERS = ("uvicorn", "hypercorn")


class ServiceError(RuntimeError):
    """The sample service answered something a helper did not expect."""


class ServiceStartError(ServiceError):
    """The sample service exited or did not answer ``GET /health`` in time; carries its log tail."""


@dataclass(frozen=True)
class ServiceHandle:
    """A running sample service: where it listens, how it was started, and small helpers."""

    __module__ = "pytest_seatrace"  # the public name: tracebacks and pickles say it

    url: str
    port: int
    db_path: Path
    strategy: str
    seats: int
    window_ms: float
    pid: int
    log_path: Path
    _process: subprocess.Popen[bytes] = field(repr=False, compare=False)
    server: str = "uvicorn"
    tls: bool = False
    auth: bool = False
    ca_path: Path | None = None
    """The throwaway CA's certificate (PEM) when ``tls``: trust it to verify the service."""
    http3_port: int | None = None
    """The UDP port HTTP/3 answers on (started with ``http3=True``), else None."""

    @property
    def http3_url(self) -> str:
        """``https://127.0.0.1:{http3_port}``: a race's URL for HTTP/3 without ``Alt-Svc`` discovery."""
        if self.http3_port is None:
            raise ServiceError("the sample service was started without http3=True")
        return f"https://127.0.0.1:{self.http3_port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """A client context trusting ``ca_path`` (None without TLS), e.g. for httpx's ``verify=``."""
        return None if self.ca_path is None else _client_context(self.ca_path)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout: float = 10.0,
        token: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One HTTP/1.1 request to the service: (status, decoded JSON body).

        ``token`` (from ``login``) goes as ``Authorization: Bearer``. ``http.client``
        ignores proxy variables, like the race engine (a proxy would re-time the requests).
        """
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        return _request(
            self.port, method, path, body, timeout=timeout, context=self.ssl_context(), headers=sent
        )

    def login(self, user: str) -> str:
        """``POST /login`` as ``user`` (a service started with ``auth=True``): the bearer token."""
        status, body = self.request("POST", "/login", {"user": user})
        if status != 200:
            hint = "" if self.auth else " (the service was started without auth=True)"
            raise ServiceError(f"POST /login answered {status}: {body}{hint}")
        token: str = body["token"]
        return token

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
        return read_log_tail(self.log_path, lines)


@contextlib.contextmanager
def start_sample_service(
    *,
    strategy: str = "safe",
    seats: int = 16,
    window_ms: float = 5.0,
    db_path: Path | None = None,
    startup_timeout: float = 10.0,
    busy_timeout_ms: int = 5000,
    server: str | None = None,
    tls: bool = False,
    auth: bool = False,
    h2_max_streams: int | None = None,
    keep_alive_s: float | None = None,
    http3: bool = False,
) -> Iterator[ServiceHandle]:
    """Start ``python -m sample_service`` on a fresh port, yield its handle, stop it.

    ``db_path=None`` uses a fresh temporary directory, removed at exit; a given
    ``db_path`` is kept, so starting again on it finds the earlier bookings. The log
    (stdout and stderr) goes next to the database, and with ``tls=True`` so do the
    throwaway CA, certificate and key (removed at exit: the CA dies with the service).
    ``server`` is ``"uvicorn"`` (HTTP/1.1, the default) or ``"hypercorn"`` (HTTP/2 too: h2c, or
    ALPN ``h2`` with ``tls``). ``http3=True`` also serves HTTP/3 on a UDP port of its own (the
    handle's ``http3_port`` and ``http3_url``; the HTTPS answers name it in ``Alt-Svc``): it means
    hypercorn and ``tls``, and needs aioquic. ``h2_max_streams`` is hypercorn's per-connection stream limit
    (the service's default: 1000). ``auth=True`` makes orders need a ``login`` token.
    ``keep_alive_s`` is how long the server keeps an idle connection open (its own default: 5 s).
    Stopping is SIGTERM, up to 5 s for a graceful stop, then SIGKILL.
    """
    if server is None:
        server = "hypercorn" if http3 else "uvicorn"
    tls = tls or http3
    _check_arguments(server, h2_max_streams, http3)
    own_dir: Path | None = None
    if db_path is None:
        own_dir = Path(tempfile.mkdtemp(prefix="seatrace-service-"))
        db_path = own_dir / "seats.db"
    tls_files: _TlsFiles | None = None
    try:
        if tls:
            tls_files = _write_tls_files(db_path.parent)
        fd, log_name = tempfile.mkstemp(prefix="sample_service-", suffix=".log", dir=db_path.parent)
        log_path = Path(log_name)
        with contextlib.ExitStack() as sockets:
            log = sockets.enter_context(os.fdopen(fd, "wb"))
            sock = sockets.enter_context(listening_socket(_BACKLOG))
            quic = sockets.enter_context(udp_socket()) if http3 else None
            port = sock.getsockname()[1]
            http3_port = None if quic is None else quic.getsockname()[1]
            command = [
                sys.executable, "-m", "sample_service",
                "--fd", str(sock.fileno()),
                "--db", str(db_path),
                "--strategy", strategy,
                "--seats", str(seats),
                "--window-ms", repr(window_ms),
                "--busy-timeout-ms", str(busy_timeout_ms),
                "--server", server,
            ]  # fmt: skip
            if tls_files is not None:
                command += ["--certfile", str(tls_files.cert), "--keyfile", str(tls_files.key)]
            if auth:
                command.append("--auth")
            if h2_max_streams is not None:
                command += ["--h2-max-streams", str(h2_max_streams)]
            if keep_alive_s is not None:
                command += ["--keep-alive", repr(keep_alive_s)]
            if quic is not None:
                command += ["--quic-fd", str(quic.fileno())]
            process = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=tuple(s.fileno() for s in (sock, quic) if s is not None),
                env=_child_env(),
            )
        # The child has its own copy of the socket and the log file; ours are closed.
        try:
            ca_path = None if tls_files is None else tls_files.ca
            context = None if ca_path is None else _client_context(ca_path)
            wait_until_serving(
                process,
                port,
                _health(port, context),
                log_path,
                startup_timeout,
                what="sample service",
                error=ServiceStartError,
                interval=_POLL_INTERVAL,
            )
            yield ServiceHandle(
                url=f"{'https' if tls else 'http'}://127.0.0.1:{port}",
                port=port,
                db_path=db_path,
                strategy=strategy,
                seats=seats,
                window_ms=window_ms,
                pid=process.pid,
                log_path=log_path,
                _process=process,
                server=server,
                tls=tls,
                auth=auth,
                ca_path=ca_path,
                http3_port=http3_port,
            )
        finally:
            _stop(process)
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
        elif tls_files is not None:
            for path in (tls_files.ca, tls_files.cert, tls_files.key):
                path.unlink(missing_ok=True)


def _check_arguments(server: str, h2_max_streams: int | None, http3: bool) -> None:
    """Refuse a bad combination here, before a subprocess is started to say so."""
    if server not in SERVERS:
        raise ValueError(f"server must be one of {', '.join(SERVERS)}, not {server!r}")
    if h2_max_streams is not None:
        if server != "hypercorn":
            raise ValueError(f"h2_max_streams needs server='hypercorn', not server={server!r}")
        if isinstance(h2_max_streams, bool) or h2_max_streams < 1:
            raise ValueError(f"h2_max_streams must be an int >= 1, not {h2_max_streams!r}")
    if http3 and server != "hypercorn":
        raise ValueError(f"http3=True needs server='hypercorn', not server={server!r}")
    if server == "hypercorn" and importlib.util.find_spec("hypercorn") is None:
        raise ServiceStartError("server='hypercorn' needs hypercorn: pip install 'pytest-seatrace[http2]'")
    if http3 and importlib.util.find_spec("aioquic") is None:
        raise ServiceStartError("http3=True needs aioquic: pip install 'pytest-seatrace[http3]'")


@dataclass(frozen=True)
class _TlsFiles:
    ca: Path
    cert: Path
    key: Path


def _write_tls_files(directory: Path) -> _TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost, as PEM files.

    Unique names (``mkstemp``, mode 0600), so services sharing a directory never clash.
    """
    try:
        import trustme
    except ImportError as exc:
        raise ServiceStartError("tls=True needs trustme: pip install trustme") from exc
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    paths: list[Path] = []
    try:
        for kind, blob in (
            ("ca", ca.cert_pem),
            ("cert", issued.private_key_and_cert_chain_pem),
            ("key", issued.private_key_pem),
        ):
            fd, name = tempfile.mkstemp(prefix=f"sample_service-{kind}-", suffix=".pem", dir=directory)
            paths.append(Path(name))
            with os.fdopen(fd, "wb") as file:
                file.write(blob.bytes())
    except BaseException:
        for path in paths:
            path.unlink(missing_ok=True)
        raise
    return _TlsFiles(ca=paths[0], cert=paths[1], key=paths[2])


def _client_context(ca_path: Path) -> ssl.SSLContext:
    """Trust only the throwaway CA; check the hostname (the certificate names 127.0.0.1)."""
    return ssl.create_default_context(cafile=str(ca_path))


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


def _health(port: int, context: ssl.SSLContext | None) -> Probe:
    """A probe: ``GET /health`` answers 200.

    The socket already listens, so a poll made before the child serves waits in the
    backlog instead of being refused; each poll's timeout is short and bounded by the
    deadline, so a hung child cannot stall us past the start-up timeout.
    """

    def probe(remaining: float) -> str | None:
        status, body = _request(port, "GET", "/health", timeout=min(0.5, remaining), context=context)
        return None if status == 200 else f"GET /health answered {status}: {body}"

    return probe


def _request(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    *,
    timeout: float,
    context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, Any]:
    conn = (
        http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        if context is None
        else http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    )
    try:
        payload = None if body is None else json.dumps(body).encode()
        sent = dict(headers or {})
        if payload is not None:
            sent.setdefault("Content-Type", "application/json")
        conn.request(method, path, body=payload, headers=sent)
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    try:
        return response.status, json.loads(data) if data else None
    except ValueError:  # not ours: e.g. uvicorn's plain-text 400 for a malformed request
        return response.status, data.decode("utf-8", errors="replace")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, up to 5 s for the server's graceful stop (2 s), then SIGKILL; always reaped."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
