"""Races through a real reverse proxy: Debian's nginx as an HTTP/2 TLS front over a keep-alive
HTTP/1.1 upstream pool, in front of the uvicorn sample service — what most staging looks like.

ALPN picks ``h2`` at nginx, so ``auto`` chooses single-packet there though the app itself speaks
HTTP/1.1 only. Skipped when nginx is not installed; when it is installed but will not start,
these tests fail (``ProxyStartError`` with nginx's error log), they do not skip.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_seatrace import RaceViolation
from pytest_seatrace.engine.plan import Attempt, RequestSpec
from pytest_seatrace.service import ServiceHandle, start_sample_service
from tests import nginx
from tests.nginx import ProxyHandle, ProxyStartError, find_nginx, start_nginx_proxy
from tests.test_single_packet import fire

pytestmark = pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed (apt-get install nginx)")

SEATS = 4
CLIENTS = 25


def order(a: Attempt) -> dict[str, object]:
    return {"seats": [a.resource], "user": f"vu-{a.client}"}


@pytest.fixture(scope="module")
def safe_service() -> Iterator[ServiceHandle]:
    with start_sample_service(strategy="safe", seats=SEATS) as service:
        yield service


@pytest.fixture(scope="module", params=[False, True], ids=["buffering-off", "buffering-on"])
def front(request: pytest.FixtureRequest, safe_service: ServiceHandle) -> Iterator[ProxyHandle]:
    with start_nginx_proxy(safe_service.port, request_buffering=request.param) as handle:
        yield handle


@pytest.mark.parametrize("sync", ["single-packet", "auto"])
@pytest.mark.nginx
def test_safe_service_behind_nginx_one_winner_per_seat(race, safe_service, front, sync):
    safe_service.reset()
    result = race.post(
        front.url + "/orders",
        json=order,
        resources=SEATS,
        concurrency=CLIENTS,
        sync=sync,
        tls_verify=front.ca_path,
    )
    assert result.mode == "single-packet"  # ALPN h2 at nginx: auto chose it too
    assert result.raced is not None
    assert result.raced.http_version == "HTTP/2"
    assert (result.requests, result.wins, result.rejections, result.errors) == (100, 4, 96, 0)
    assert result.status_counts == {201: 4, 409: 96}
    assert result.early == 0
    for seat in range(1, SEATS + 1):
        assert safe_service.holders(seat) == [f"vu-{result.winners[seat][0].client}"]


@pytest.mark.nginx
def test_unsafe_service_behind_nginx_is_caught(race):
    with (
        start_sample_service(strategy="unsafe", seats=SEATS, window_ms=20) as service,
        start_nginx_proxy(service.port, request_buffering=False) as front,
        pytest.raises(RaceViolation) as info,
    ):
        race.post(
            front.url + "/orders",
            json=order,
            resources=SEATS,
            concurrency=CLIENTS,
            tls_verify=front.ca_path,
        )
    result = info.value.result
    assert result.mode == "single-packet"
    assert result.errors == 0
    assert {v.kind for v in result.violations} == {"too-many"}
    assert sum(len(w) > 1 for w in result.winners.values()) == SEATS


@pytest.mark.nginx
def test_stream_limit_of_nginx_opens_more_connections(safe_service):
    """``http2_max_concurrent_streams 16`` and 40 clients: nginx's SETTINGS make the engine open
    three connections for the seat, their gate writes back to back, every seat still sold once."""
    safe_service.reset()
    with start_nginx_proxy(safe_service.port, max_concurrent_streams=16) as front:
        context = ssl.create_default_context(cafile=str(front.ca_path))
        context.set_alpn_protocols(["h2", "http/1.1"])
        fired = fire(RequestSpec("POST", front.url + "/orders", json=order), context, waves=2, concurrency=40)
    assert (fired.result.wins, fired.result.rejections, fired.result.errors) == (2, 78, 0)
    assert [(g.connections, g.streams, g.sends) for g in fired.firer.gate_writes] == [(3, 40, 3)] * 2


@pytest.mark.nginx
def test_nginx_that_will_not_start_fails_with_its_error_log(safe_service, monkeypatch):
    """A broken key: nginx exits at start-up, and the error names what nginx said."""
    real = nginx._write_tls_files

    def broken_key(prefix: Path) -> tuple[Path, Path, Path]:
        ca, cert, key = real(prefix)
        key.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
        return ca, cert, key

    monkeypatch.setattr(nginx, "_write_tls_files", broken_key)
    with (
        pytest.raises(ProxyStartError, match=r"nginx exited with status 1 before serving") as info,
        start_nginx_proxy(safe_service.port, startup_timeout=5.0),
    ):
        pass
    assert "ssl_certificate_key" in str(info.value) or "PEM" in str(info.value)


def config(tmp_path: Path, **overrides: Any) -> str:
    args: dict[str, Any] = {
        "prefix": tmp_path,
        "port": 8443,
        "upstream_port": 8000,
        "cert": tmp_path / "cert.pem",
        "key": tmp_path / "key.pem",
        "request_buffering": True,
        "max_concurrent_streams": 128,
        "keepalive": 100,
        "upstream_keepalive_timeout_s": 4,
        "worker_processes": 1,
        "worker_cpus": None,
        "access_log": False,
        "version": (1, 22, 1),
    }
    return nginx.render_config(**(args | overrides))


def test_config_keeps_every_path_in_its_prefix_and_the_upstream_pool_warm(tmp_path):
    text = config(
        tmp_path,
        request_buffering=False,
        max_concurrent_streams=64,
        keepalive=200,
        worker_processes=2,
        worker_cpus={1},
        access_log=True,
    )
    paths = [w.rstrip(";") for w in text.split() if w.startswith("/") and w != "/"]  # not "location /"
    assert len(paths) >= 10
    assert all(Path(p).is_relative_to(tmp_path) for p in paths), paths
    for line in (
        "listen 127.0.0.1:8443 ssl http2;",
        "keepalive 200;",
        'proxy_set_header Connection "";',
        "proxy_http_version 1.1;",
        "proxy_request_buffering off;",
        "http2_max_concurrent_streams 64;",
        "worker_cpu_affinity 10 10;",
    ):
        assert line in text
    newer = config(tmp_path, version=(1, 25, 1))
    assert "listen 127.0.0.1:8443 ssl;" in newer
    assert "http2 on;" in newer
    assert "proxy_request_buffering on;" in newer
