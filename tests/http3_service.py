"""The sample service over HTTP/3 for the suite's tests: ``start_sample_service(http3=True)``
with the UDP side named apart (``Http3Service``), and ``tls_files`` for tests that start
hypercorn themselves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import trustme

from pytest_seatrace.service import ServiceHandle, start_sample_service

STARTUP_TIMEOUT = 15.0


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
    *, strategy: str = "safe", seats: int = 4, window_ms: float = 5.0, auth: bool = False
) -> Iterator[Http3Service]:
    """``start_sample_service(http3=True)``: fresh TCP and UDP ports; stopped at exit."""
    with start_sample_service(
        http3=True,
        strategy=strategy,
        seats=seats,
        window_ms=window_ms,
        auth=auth,
        startup_timeout=STARTUP_TIMEOUT,
    ) as handle:
        assert handle.http3_port is not None
        yield Http3Service(tcp=handle, udp_port=handle.http3_port)
