"""Debian's nginx as an HTTP/2 TLS reverse proxy in front of a running sample service.

What most staging looks like: clients speak HTTP/2 (ALPN ``h2``) to nginx, nginx speaks
HTTP/1.1 over a keep-alive upstream pool to the app. ``start_nginx_proxy(upstream_port)``
starts nginx as its own process (``nginx -p PREFIX -c PREFIX/nginx.conf -e PREFIX/error.log
-g "daemon off; master_process on;"``) with everything it writes — pid, lock, error and
access logs, temp files, a throwaway CA and certificate from trustme — inside a fresh
temporary prefix: never the system service, never ``/etc/nginx`` or ``/var/lib/nginx``.
The handle's ``ca_path`` is the CA to trust (``tls_verify=handle.ca_path``).

Test support, not installed with the package; imports neither pytest nor pytest_seatrace, so
``benchmarks/single_packet.py`` uses it too.
"""

from __future__ import annotations

import contextlib
import grp
import http.client
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["NGINX_CANDIDATES", "ProxyHandle", "ProxyStartError", "find_nginx", "start_nginx_proxy"]

NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")
"""Where ``find_nginx`` looks: PATH first, then Debian's location (``/usr/sbin`` is not on
every PATH)."""
DEFAULT_MAX_STREAMS = 128  # nginx's own default for http2_max_concurrent_streams
_POLL_INTERVAL = 0.01
_STOP_STEP_S = 2.0
_LOG_TAIL_LINES = 30
_PORT_ATTEMPTS = 3  # nginx binds its own port: a port another process took in between is retried
_KEEPALIVE_REQUESTS = 1_000_000  # nginx closes a connection after 1000 requests (HTTP/2: streams)
_H2_ON_DIRECTIVE = (1, 25, 1)  # from this version ``http2 on;`` replaces ``listen ... http2``


class ProxyStartError(RuntimeError):
    """nginx exited or did not answer in time; the message carries its error log's tail."""


@dataclass(frozen=True)
class ProxyHandle:
    """A running nginx front: where clients reach it and how it was configured."""

    url: str
    """``https://127.0.0.1:PORT``: HTTP/2 by ALPN, HTTP/1.1 for clients that offer only that."""
    port: int
    upstream_port: int
    ca_path: Path
    """The throwaway CA (PEM) that signed nginx's certificate: trust it to verify the proxy."""
    prefix: Path
    pid: int
    """nginx's master process; its workers are its children, in its own process group."""
    request_buffering: bool
    max_concurrent_streams: int
    keepalive: int
    version: tuple[int, ...]

    @property
    def error_log(self) -> Path:
        return self.prefix / "error.log"

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context trusting only ``ca_path`` (no ALPN set: HTTP/1.1 for ``http.client``)."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    def worker_pids(self) -> list[int]:
        """The worker processes nginx forked (e.g. to pin them to a core)."""
        return _children(self.pid)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return _tail(self.error_log, lines)


def find_nginx() -> str | None:
    """The nginx binary to run, or None when none is installed."""
    for candidate in NGINX_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def nginx_version(binary: str) -> tuple[int, ...]:
    """``nginx -v`` as a tuple, e.g. (1, 22, 1)."""
    out = subprocess.run(  # the nginx binary find_nginx chose, no shell
        [binary, "-v"], capture_output=True, text=True, timeout=10, check=False
    )
    found = re.search(r"nginx/(\d+(?:\.\d+)*)", out.stderr + out.stdout)
    if found is None:
        raise ProxyStartError(f"{binary} -v did not say its version: {(out.stderr or out.stdout)!r}")
    return tuple(int(part) for part in found.group(1).split("."))


@contextlib.contextmanager
def start_nginx_proxy(
    upstream_port: int,
    *,
    request_buffering: bool = True,
    max_concurrent_streams: int = DEFAULT_MAX_STREAMS,
    keepalive: int = 256,
    upstream_keepalive_timeout_s: float = 4.0,
    worker_processes: int = 1,
    worker_cpus: Collection[int] | None = None,
    startup_timeout: float = 10.0,
    ready_path: str | None = "/health",
    access_log: bool = False,
    binary: str | None = None,
) -> Iterator[ProxyHandle]:
    """Start nginx in front of ``127.0.0.1:upstream_port``, yield its handle, stop it.

    ``request_buffering`` is ``proxy_request_buffering`` (on: nginx reads each whole body
    before it opens the upstream request; off: it streams the body as it comes).
    ``max_concurrent_streams`` is ``http2_max_concurrent_streams`` (past it a client needs
    more connections). ``keepalive`` is the upstream pool's idle connections per worker
    (keep it >= the clients racing, or a race opens upstream connections inside its
    window); ``upstream_keepalive_timeout_s`` should stay below the app server's own idle
    timeout (uvicorn's: 5 s) so nginx, not the app, closes an idle pooled connection.
    ``worker_cpus`` pins the workers (``worker_cpu_affinity``) and the master. Ready when
    ``GET ready_path`` through the proxy answers 200 (None: when the TLS handshake
    completes), polled up to ``startup_timeout``; a start that fails raises
    ``ProxyStartError`` with nginx's error log. Stopping is SIGQUIT (graceful), then
    SIGTERM, then SIGKILL of the process group, each step bounded.
    """
    _check_arguments(upstream_port, max_concurrent_streams, keepalive, worker_processes, worker_cpus)
    binary = binary or find_nginx()
    if binary is None:
        raise ProxyStartError(f"nginx is not installed (looked for {', '.join(NGINX_CANDIDATES)})")
    version = nginx_version(binary)
    prefix = Path(tempfile.mkdtemp(prefix="seatrace-nginx-"))
    try:
        ca_path, cert, key = _write_tls_files(prefix)
        context = ssl.create_default_context(cafile=str(ca_path))
        failures: list[str] = []
        for _ in range(_PORT_ATTEMPTS):
            port = _free_port()
            conf = prefix / "nginx.conf"
            conf.write_text(
                render_config(
                    prefix=prefix,
                    port=port,
                    upstream_port=upstream_port,
                    cert=cert,
                    key=key,
                    request_buffering=request_buffering,
                    max_concurrent_streams=max_concurrent_streams,
                    keepalive=keepalive,
                    upstream_keepalive_timeout_s=upstream_keepalive_timeout_s,
                    worker_processes=worker_processes,
                    worker_cpus=worker_cpus,
                    access_log=access_log,
                    version=version,
                ),
                encoding="utf-8",
            )
            process = _spawn(binary, prefix, conf)
            try:
                if worker_cpus is not None:
                    os.sched_setaffinity(process.pid, set(worker_cpus))
                _wait_until_ready(process, port, prefix, startup_timeout, context, ready_path)
            except _PortTakenError as exc:
                _stop(process)
                failures.append(str(exc))
                continue
            except BaseException:
                _stop(process)
                raise
            try:
                yield ProxyHandle(
                    url=f"https://127.0.0.1:{port}",
                    port=port,
                    upstream_port=upstream_port,
                    ca_path=ca_path,
                    prefix=prefix,
                    pid=process.pid,
                    request_buffering=request_buffering,
                    max_concurrent_streams=max_concurrent_streams,
                    keepalive=keepalive,
                    version=version,
                )
            finally:
                _stop(process)
            return
        raise ProxyStartError(f"nginx found no free port in {_PORT_ATTEMPTS} attempts: {failures[-1]}")
    finally:
        shutil.rmtree(prefix, ignore_errors=True)


def render_config(
    *,
    prefix: Path,
    port: int,
    upstream_port: int,
    cert: Path,
    key: Path,
    request_buffering: bool,
    max_concurrent_streams: int,
    keepalive: int,
    upstream_keepalive_timeout_s: float,
    worker_processes: int,
    worker_cpus: Collection[int] | None,
    access_log: bool,
    version: tuple[int, ...],
) -> str:
    """The whole nginx.conf: every path nginx writes lies inside ``prefix``."""
    user = ""
    if os.geteuid() == 0:  # workers would run as 'nobody', whose group Debian lacks; ours can read prefix
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};\n"
    affinity = ""
    if worker_cpus is not None:
        mask = "".join("1" if cpu in worker_cpus else "0" for cpu in range(max(worker_cpus), -1, -1))
        affinity = f"worker_cpu_affinity {' '.join([mask] * worker_processes)};\n"
    if version >= _H2_ON_DIRECTIVE:
        listen = f"listen 127.0.0.1:{port} ssl;\n        http2 on;"
    else:
        listen = f"listen 127.0.0.1:{port} ssl http2;"
    temp = prefix / "temp"
    logs = f"access_log {prefix / 'access.log'};" if access_log else "access_log off;"
    return f"""\
# written by tests/nginx.py: a throwaway front, every path inside {prefix}
{user}worker_processes {worker_processes};
{affinity}pid {prefix / "nginx.pid"};
lock_file {prefix / "nginx.lock"};
error_log {prefix / "error.log"} notice;
worker_rlimit_nofile 8192;

events {{
    worker_connections 4096;
}}

http {{
    {logs}
    client_body_temp_path {temp / "body"};
    proxy_temp_path {temp / "proxy"};
    fastcgi_temp_path {temp / "fastcgi"};
    uwsgi_temp_path {temp / "uwsgi"};
    scgi_temp_path {temp / "scgi"};

    upstream app {{
        server 127.0.0.1:{upstream_port};
        keepalive {keepalive};
        keepalive_requests {_KEEPALIVE_REQUESTS};
        keepalive_timeout {upstream_keepalive_timeout_s:g}s;
    }}

    server {{
        {listen}
        ssl_certificate {cert};
        ssl_certificate_key {key};
        http2_max_concurrent_streams {max_concurrent_streams};
        keepalive_requests {_KEEPALIVE_REQUESTS};
        keepalive_timeout 75s;

        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_request_buffering {"on" if request_buffering else "off"};
        }}
    }}
}}
"""


class _PortTakenError(ProxyStartError):
    """Another process bound the port between our probe and nginx's bind."""


def _check_arguments(
    upstream_port: int,
    max_concurrent_streams: int,
    keepalive: int,
    worker_processes: int,
    worker_cpus: Collection[int] | None,
) -> None:
    for name, value, low in (
        ("upstream_port", upstream_port, 1),
        ("max_concurrent_streams", max_concurrent_streams, 1),
        ("keepalive", keepalive, 1),
        ("worker_processes", worker_processes, 1),
    ):
        if isinstance(value, bool) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, not {value!r}")
    if worker_cpus is not None and (
        not worker_cpus or any(isinstance(c, bool) or c < 0 for c in worker_cpus)
    ):
        raise ValueError(f"worker_cpus must be a non-empty collection of CPU numbers, not {worker_cpus!r}")


def _write_tls_files(prefix: Path) -> tuple[Path, Path, Path]:
    """(CA, certificate chain, key) for 127.0.0.1 and localhost, from a throwaway trustme CA."""
    try:
        import trustme
    except ImportError as exc:
        raise ProxyStartError("the nginx proxy needs trustme: pip install trustme") from exc
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    paths = (prefix / "ca.pem", prefix / "cert.pem", prefix / "key.pem")
    ca.cert_pem.write_to_path(str(paths[0]))
    paths[1].write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(paths[2]))
    return paths


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _spawn(binary: str, prefix: Path, conf: Path) -> subprocess.Popen[bytes]:
    (prefix / "temp").mkdir(exist_ok=True)
    (prefix / "error.log").unlink(missing_ok=True)
    command = [binary, "-p", f"{prefix}/", "-c", str(conf), "-e", str(prefix / "error.log")]
    command += ["-g", "daemon off; master_process on;"]
    with (prefix / "nginx.out").open("wb") as out:
        return subprocess.Popen(  # the nginx binary, our own config, no shell
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the workers are stopped with it
        )


def _wait_until_ready(
    process: subprocess.Popen[bytes],
    port: int,
    prefix: Path,
    timeout: float,
    context: ssl.SSLContext,
    ready_path: str | None,
) -> None:
    """Poll until nginx answers (a TLS handshake, then ``GET ready_path`` with 200), it exits, or
    the deadline passes; every poll is bounded by the deadline."""
    deadline = time.monotonic() + timeout
    last_error = "no answer yet"
    while True:
        code = process.poll()
        if code is not None:
            log = _logs(prefix)
            if "Address already in use" in log:
                raise _PortTakenError(f"port {port} was taken: {log}")
            raise ProxyStartError(f"nginx exited with status {code} before serving:\n{log}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            _stop(process)
            raise ProxyStartError(
                f"nginx not serving on port {port} after {timeout}s ({last_error}):\n{_logs(prefix)}"
            )
        try:
            status = _probe(port, context, ready_path, min(1.0, remaining))
        except (OSError, http.client.HTTPException) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200:
                return
            last_error = f"GET {ready_path} through nginx answered {status}"
        time.sleep(_POLL_INTERVAL)


def _probe(port: int, context: ssl.SSLContext, path: str | None, timeout: float) -> int:
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=context)
    try:
        if path is None:
            conn.connect()
            return 200
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGQUIT (finish in-flight requests), SIGTERM, then SIGKILL of nginx's process group
    (its workers too, while the unreaped master keeps the group's id ours), each bounded."""
    for sig in (signal.SIGQUIT, signal.SIGTERM):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=_STOP_STEP_S)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (Linux ``/proc``; empty elsewhere)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return sorted(found)


def _logs(prefix: Path) -> str:
    """nginx's error log and its console output (where a config error goes before the log opens)."""
    parts = [_tail(prefix / "error.log"), _tail(prefix / "nginx.out")]
    return "\n".join(p for p in parts if p.strip() and not p.startswith("(no log"))


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])
