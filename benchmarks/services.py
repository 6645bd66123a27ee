"""The one place the benchmarks start what they race: the sample service (also over HTTP/3), and
nginx before it.

Every service runs in its own process on a free loopback port and stops when its ``with``
block ends; traffic goes nowhere else.
"""

from __future__ import annotations

import contextlib
from typing import Any

from pytest_seatrace.service import ServiceError, ServiceHandle, start_sample_service
from tests.http3_service import Http3Service, http3_service
from tests.nginx import ProxyHandle, ProxyStartError, find_nginx, nginx_version, start_nginx_proxy

__all__ = [
    "Http3Service",
    "ProxyHandle",
    "ProxyStartError",
    "ServiceError",
    "ServiceHandle",
    "http3",
    "nginx",
    "nginx_binary",
    "service",
]
STARTUP_ERRORS = (ServiceError, ProxyStartError)
"""What starting a service may raise: the benchmark is then incomplete."""


def service(
    strategy: str = "safe", *, seats: int, **options: Any
) -> contextlib.AbstractContextManager[ServiceHandle]:
    """The sample service (``start_sample_service``'s options: ``window_ms``, ``server``,
    ``tls``, ``auth``...), started for one ``with`` block."""
    return start_sample_service(strategy=strategy, seats=seats, **options)


def http3(
    strategy: str = "safe", *, seats: int, window_ms: float = 5.0
) -> contextlib.AbstractContextManager[Http3Service]:
    """The hypercorn sample service serving HTTP/1.1 and HTTP/2 over TLS and HTTP/3 on its own UDP
    port, with a throwaway CA (``.tcp.ca_path``), started for one ``with`` block."""
    return http3_service(strategy=strategy, seats=seats, window_ms=window_ms)


def nginx(
    app: ServiceHandle, *, request_buffering: bool, keepalive: int
) -> contextlib.AbstractContextManager[ProxyHandle]:
    """nginx as an HTTP/2 TLS front with a keep-alive HTTP/1.1 upstream pool before ``app``."""
    return start_nginx_proxy(app.port, request_buffering=request_buffering, keepalive=keepalive)


def nginx_binary() -> tuple[str, str] | None:
    """nginx's path and version, or None when it is not installed."""
    binary = find_nginx()
    if binary is None:
        return None
    return binary, ".".join(str(part) for part in nginx_version(binary))
