"""The sample service over HTTP/3 (hypercorn + aioquic) in a subprocess, for the suite's fixtures.

The plugin's ``start_sample_service`` serves HTTP/1.1 and HTTP/2; this variant adds the UDP
socket: bound here, like the TCP one, and passed as ``--quic-fd`` so the port is ours from the
start. QUIC is always TLS, so the service gets a throwaway trustme CA; the handle names it.
``http3_service`` starts one per set of options and stops it at exit.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme

from pytest_seatrace.servers import Probe, listening_socket, wait_until_serving
from pytest_seatrace.service import ServiceHandle
from tests.processes import stop

STARTUP_TIMEOUT = 15.0
ROOT = Path(__file__).resolve().parent.parent  # the checkout: the child imports this sample_service


@dataclass(frozen=True)
class Http3Service:
    """A running HTTP/3 sample service: its HTTPS (TCP) side as a ``ServiceHandle``, and its UDP port."""

    tcp: ServiceHandle
    udp_port: int

    @property
    def ca_path(self) -> Path:
        assert self.tcp.ca_path is not None
        return self.tcp.ca_path

    @property
    def udp_address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.udp_port)


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind(("127.0.0.1", 0))
    except BaseException:
        sock.close()
        raise
    return sock


def tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA, and a certificate chain and key for 127.0.0.1, as PEM files: (ca, cert, key)."""
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost")
    paths = (directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    paths[0].write_bytes(ca.cert_pem.bytes())
    paths[1].write_bytes(issued.private_key_and_cert_chain_pem.bytes())
    paths[2].write_bytes(issued.private_key_pem.bytes())
    return paths


@contextlib.contextmanager
def http3_service(
    *, strategy: str = "safe", seats: int = 4, window_ms: float = 5.0
) -> Iterator[Http3Service]:
    """``python -m sample_service --server hypercorn --http3`` on fresh TCP and UDP ports; stopped at exit."""
    with tempfile.TemporaryDirectory(prefix="seatrace-h3-") as name:
        directory = Path(name)
        ca, cert, key = tls_files(directory)
        db_path = directory / "seats.db"
        log_path = directory / "service.log"
        with log_path.open("wb") as log, listening_socket() as tcp, _udp_socket() as udp:
            port, udp_port = tcp.getsockname()[1], udp.getsockname()[1]
            command = [
                sys.executable, "-m", "sample_service",
                "--server", "hypercorn",
                "--fd", str(tcp.fileno()),
                "--quic-fd", str(udp.fileno()),
                "--certfile", str(cert),
                "--keyfile", str(key),
                "--db", str(db_path),
                "--strategy", strategy,
                "--seats", str(seats),
                "--window-ms", repr(window_ms),
            ]  # fmt: skip
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                pass_fds=(tcp.fileno(), udp.fileno()),
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        try:
            handle = ServiceHandle(
                url=f"https://127.0.0.1:{port}",
                port=port,
                db_path=db_path,
                strategy=strategy,
                seats=seats,
                window_ms=window_ms,
                pid=process.pid,
                log_path=log_path,
                _process=process,
                server="hypercorn",
                tls=True,
                ca_path=ca,
            )
            wait_until_serving(process, port, _health(handle), log_path, STARTUP_TIMEOUT)
            yield Http3Service(tcp=handle, udp_port=udp_port)
        finally:
            stop(process)


def _health(service: ServiceHandle) -> Probe:
    """``GET /health`` over HTTPS (TCP) answers 200: hypercorn serves every listener by then."""

    def probe(remaining: float) -> str | None:
        status, body = service.request("GET", "/health", timeout=min(0.5, remaining))
        return None if status == 200 else f"GET /health answered {status}: {body}"

    return probe
