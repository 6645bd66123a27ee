"""``sync="auto"`` and HTTP/3: the ``Alt-Svc`` parser, the decision table, and the probe against
the HTTP/3 sample service, a UDP port that answers nothing, and its per-origin cache."""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from itertools import product
from pathlib import Path
from typing import Any

import anyio
import pytest

from pytest_seatrace.core.config import RaceConfig
from pytest_seatrace.core.errors import RaceUsageError
from pytest_seatrace.engine.auto_start import (
    DATAGRAM,
    AutoStart,
    choose_auto,
    decide,
    http3_offer,
)
from pytest_seatrace.engine.http3_probe import (
    HANDSHAKE_BUDGET_S,
    NO_AIOQUIC,
    AltService,
    Http3Offer,
    clear_offers,
    h3_service,
    parse_alt_svc,
    probe,
)
from pytest_seatrace.engine.stream import Origin
from pytest_seatrace.report.summary import start_modes
from tests.http3_service import Http3Service, http3_service, tls_files

pytest.importorskip("aioquic")

HTTPS = Origin("https", "127.0.0.1", 8443)
SLACK_S = 4.0
"""Generous room over the handshake budget on a loaded 2-core box: a bound, never a sleep."""


@pytest.fixture(autouse=True)
def fresh_offers() -> Iterator[None]:
    clear_offers()
    yield
    clear_offers()


# -- Alt-Svc -----------------------------------------------------------------------------------


def test_alt_svc_entries_with_ports_hosts_and_max_age() -> None:
    value = 'h3=":443"; ma=86400, h3-29=":8443"; ma=60; persist=1, h2="alt.example:8444"'
    assert parse_alt_svc(value) == [
        AltService("h3", "", 443, 86400),
        AltService("h3-29", "", 8443, 60),
        AltService("h2", "alt.example", 8444, None),
    ]
    assert parse_alt_svc('h3="[::1]:9443"') == [AltService("h3", "::1", 9443)]


def test_alt_svc_clear_and_junk() -> None:
    assert parse_alt_svc("clear") is None
    assert parse_alt_svc('h3=":0", h3=":99999", h3=":x", h3=443') == []
    assert h3_service(['h3=":443"', "clear"]) is None


def test_h3_service_takes_the_first_final_h3_that_has_not_expired() -> None:
    assert h3_service(['h3-29=":1"', 'h3=":2"; ma=0, h3=":3"']) == AltService("h3", "", 3)
    assert h3_service(['h2=":1"', 'h3="cdn.example:4"; ma=5']) == AltService("h3", "cdn.example", 4, 5)
    assert h3_service(['h3-29=":1"']) is None
    assert h3_service([]) is None
    assert AltService("h3", "", 8443).text == "h3=:8443"


# -- the decision table ------------------------------------------------------------------------

PROBES = {
    "yes": Http3Offer(Origin("https", "127.0.0.1", 9443), "HTTP/3 offered by Alt-Svc h3=:9443"),
    "no": Http3Offer(None, "HEAD https://127.0.0.1:8443 answered without Alt-Svc h3"),
    "failed": Http3Offer(None, "Alt-Svc h3=:9443, but the QUIC handshake to UDP port 9443 had no answer"),
}


def auto(
    setting: str,
    found: str,
    verify: Any,
    hold_given: bool,
) -> tuple[str, str | None]:
    """``auto`` against an https origin that offers h2 by ALPN, the probe answering ``found``."""
    offer = http3_offer(setting, HTTPS, verify, aioquic=True)
    probed = offer is None
    start = decide(offer or PROBES[found], h2=True, hold_given=hold_given)
    assert probed == (setting == "auto" and verify is True), "only auto probes, and not with a context"
    return start.mode, start.why


@pytest.mark.parametrize(
    ("setting", "found", "context", "hold_given"),
    list(product(("auto", "on", "off"), PROBES, (False, True), (False, True))),
)
def test_decision_table(setting: str, found: str, context: bool, hold_given: bool) -> None:
    """HTTP/3 when on, or auto and the probe says yes; never with an SSLContext or off; a hold
    point stops single-packet, never HTTP/3."""
    verify = ssl.create_default_context() if context else True
    mode, why = auto(setting, found, verify, hold_given)
    h3 = not context and (setting == "on" or (setting == "auto" and found == "yes"))
    assert mode == (DATAGRAM if h3 else "last-byte" if hold_given else "single-packet")
    assert why is not None
    if h3:
        assert why == (
            PROBES["yes"].why if setting == "auto" else "http3=on: HTTP/3 on UDP port 8443, not probed"
        )
    elif setting == "off":
        assert why == "no HTTP/3: http3=off"
    elif context:
        assert why == "no HTTP/3: tls_verify is an ssl.SSLContext, which aioquic cannot take"
    else:
        assert why == f"no HTTP/3: {PROBES[found].why}"


def test_without_aioquic_auto_skips_http3_and_on_is_an_error() -> None:
    offer = http3_offer("auto", HTTPS, True, aioquic=False)
    assert offer == Http3Offer(None, NO_AIOQUIC)
    assert decide(offer, h2=False, hold_given=False).why == f"no HTTP/3: {NO_AIOQUIC}"
    with pytest.raises(RaceUsageError, match=r"http3=on \(--race-http3 on\): aioquic is not installed"):
        http3_offer("on", HTTPS, True, aioquic=False)


def test_plain_http_says_nothing_under_auto_and_why_not_under_on() -> None:
    plain = Origin("http", "127.0.0.1", 8000)
    quiet = http3_offer("auto", plain, True, aioquic=True)
    assert quiet is not None
    assert decide(quiet, h2=False, hold_given=False) == AutoStart("last-byte", None)
    loud = http3_offer("on", plain, True, aioquic=True)
    assert loud is not None
    assert decide(loud, h2=False, hold_given=False).why == (
        "no HTTP/3: http3=on, but QUIC needs an https:// origin"
    )


# -- against real servers ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def h3() -> Iterator[Http3Service]:
    with http3_service(seats=2) as service:
        yield service


def config(**given: Any) -> RaceConfig:
    return RaceConfig(resources=(1,), timeout=5.0, **given)


def test_the_probe_finds_http3_on_the_sample_service_and_names_its_port(h3: Http3Service) -> None:
    origin = Origin("https", "127.0.0.1", h3.tcp.port)
    offer = anyio.run(probe, f"{h3.tcp.url}/health", origin, h3.ca_path, 5.0)
    assert offer == Http3Offer(
        Origin("https", "127.0.0.1", h3.udp_port), f"HTTP/3 offered by Alt-Svc h3=:{h3.udp_port}"
    )


def test_auto_races_the_http3_service_and_says_why(race: Any, h3: Http3Service) -> None:
    """The race's own probe finds the Alt-Svc port; the hold point given does not stop HTTP/3."""
    h3.tcp.reset()
    result = race.post(
        h3.tcp.url + "/orders",
        json=lambda a: {"seats": [a.resource], "user": f"vu-{a.client}"},
        tls_verify=h3.ca_path,
        resources=2,
        concurrency=10,
        hold="body",  # an explicit hold stops single-packet, never HTTP/3
    )
    assert result.raced is not None
    assert (result.mode, result.raced.why) == (DATAGRAM, f"HTTP/3 offered by Alt-Svc h3=:{h3.udp_port}")
    assert result.to_dict()["raced"]["why"] == result.raced.why
    assert result.wins == 2


class AltSvcHandler(http.server.BaseHTTPRequestHandler):
    """Answers ``HEAD`` with the server's ``Alt-Svc`` value and counts the HEADs it answered."""

    server: AltSvcServer

    def do_HEAD(self) -> None:
        with self.server.lock:
            self.server.heads += 1
        self.send_response(200)
        if self.server.alt_svc:
            self.send_header("Alt-Svc", self.server.alt_svc)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class AltSvcServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, alt_svc: str, context: ssl.SSLContext) -> None:
        super().__init__(("127.0.0.1", 0), AltSvcHandler)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.alt_svc = alt_svc
        self.heads = 0
        self.lock = threading.Lock()

    @property
    def origin(self) -> Origin:
        return Origin("https", "127.0.0.1", self.server_address[1])


@pytest.fixture
def silent_udp() -> Iterator[int]:
    """A bound UDP port nothing ever reads: no answer, not even an ICMP refusal."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def tls(tmp_path: Path) -> tuple[Path, ssl.SSLContext]:
    ca, cert, key = tls_files(tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return ca, context


@pytest.fixture
def advertise(tls: tuple[Path, ssl.SSLContext]) -> Iterator[Any]:
    servers: list[AltSvcServer] = []

    def start(alt_svc: str) -> AltSvcServer:
        server = AltSvcServer(alt_svc, tls[1])
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_silent_udp_port_fails_within_the_budget_and_auto_falls_back(
    advertise: Any, tls: tuple[Path, ssl.SSLContext], silent_udp: int
) -> None:
    server = advertise(f'h3=":{silent_udp}"; ma=3600')
    url = f"{server.origin.url}/seat/1"
    began = time.monotonic()
    start = anyio.run(choose_auto, url, server.origin, config(), tls[0])
    took = time.monotonic() - began
    failure = f"the QUIC handshake to UDP port {silent_udp} had no answer within {HANDSHAKE_BUDGET_S:g} s"
    assert start == AutoStart("last-byte", f"no HTTP/3: Alt-Svc h3=:{silent_udp}, but {failure}")
    assert took < HANDSHAKE_BUDGET_S + SLACK_S, took


def test_the_probe_asks_each_origin_once_and_keeps_failures(
    advertise: Any, tls: tuple[Path, ssl.SSLContext], silent_udp: int
) -> None:
    quiet, failing = advertise(""), advertise(f'h3=":{silent_udp}"')

    async def twice(server: AltSvcServer) -> tuple[Http3Offer, Http3Offer, float]:
        first = await probe(f"{server.origin.url}/a", server.origin, tls[0], 5.0)
        began = time.monotonic()
        again = await probe(f"{server.origin.url}/b", server.origin, tls[0], 5.0)
        return first, again, time.monotonic() - began

    first, again, _ = anyio.run(twice, quiet)
    assert first == again == Http3Offer(None, f"HEAD {quiet.origin.url} answered without Alt-Svc h3")
    first, again, took = anyio.run(twice, failing)
    assert not first.offered
    assert again == first
    assert took < HANDSHAKE_BUDGET_S  # the cached failure: no second handshake
    assert (quiet.heads, failing.heads) == (1, 1)
    clear_offers()
    anyio.run(probe, f"{quiet.origin.url}/c", quiet.origin, tls[0], 5.0)
    assert quiet.heads == 2


def test_a_head_that_fails_is_a_reason_not_an_error(tls: tuple[Path, ssl.SSLContext]) -> None:
    with socket.socket() as sock:  # a port nobody listens on: refused at once
        sock.bind(("127.0.0.1", 0))
        origin = Origin("https", "127.0.0.1", sock.getsockname()[1])
    start = anyio.run(choose_auto, f"{origin.url}/x", origin, config(), tls[0])
    assert start.mode == "last-byte"
    assert str(start.why).startswith(f"no HTTP/3: HEAD {origin.url} failed (ConnectError")


def test_the_summary_names_each_start_with_why_auto_chose_it() -> None:
    def doc(mode: str, why: str | None) -> Any:
        return {"mode": mode, "raced": {"why": why}}

    offered = "HTTP/3 offered by Alt-Svc h3=:9443"
    races = [doc("last-byte", None), doc(DATAGRAM, offered), doc("last-byte", None), {"mode": "gate"}]
    assert start_modes(races) == f"gate (1 race), last-byte (2 races), single-datagram (1 race; {offered})"
    assert start_modes([doc("last-byte", "no HTTP/3: a"), doc("last-byte", "no HTTP/3: b")]) == (
        "last-byte (2 races; no HTTP/3: a; no HTTP/3: b)"
    )
