"""A minimal HTTP/3 seat service on aioquic's own server that grants few streams a connection:
hypercorn's QUIC side (aioquic's ``QuicConnection``) always grants 128, so a race there never
needs a connection for credit alone. ``small_credit_service(credit=8)`` runs it in a thread.

It books ``POST`` orders (``{"seats": [n], "user": ...}``) safely: its one event loop handles
each order's check and act in one step, so each seat is sold once (201) and then refused (409).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, H3Event, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import QuicEvent

from tests.http3_service import tls_files

START_TIMEOUT_S = 10.0


@dataclass
class SmallCreditService:
    port: int
    ca_path: Path
    credit: int
    holders: dict[int, str] = field(default_factory=dict)
    """Seat -> the user who booked it."""

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"


class SeatProtocol(QuicConnectionProtocol):
    """One client connection: HTTP/3 over it, orders booked into the service's ``holders``."""

    def __init__(self, *args: Any, service: SmallCreditService, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # aioquic hard-codes its grant (128) and has no setting for it; this test server alone
        # lowers it before the handshake sends it, and aioquic raises it from there as streams end.
        limit = self._quic._local_max_streams_bidi
        limit.value = limit.sent = service.credit
        self.service = service
        self.h3 = H3Connection(self._quic)
        self.bodies: dict[int, bytearray] = {}

    def quic_event_received(self, event: QuicEvent) -> None:
        for h3_event in self.h3.handle_event(event):
            self._h3_event(h3_event)

    def _h3_event(self, event: H3Event) -> None:
        if isinstance(event, HeadersReceived):
            self.bodies[event.stream_id] = bytearray()
        elif isinstance(event, DataReceived) and event.stream_id in self.bodies:
            self.bodies[event.stream_id] += event.data
        else:
            return
        if event.stream_ended:
            self._answer(event.stream_id, bytes(self.bodies.pop(event.stream_id)))

    def _answer(self, stream_id: int, body: bytes) -> None:
        order = json.loads(body)
        seat = order["seats"][0]
        taken = seat in self.service.holders
        if not taken:
            self.service.holders[seat] = order["user"]
        answer = json.dumps({"error": "seat taken"} if taken else {"seat": seat}).encode()
        self.h3.send_headers(
            stream_id,
            [(b":status", b"409" if taken else b"201"), (b"content-type", b"application/json")],
        )
        self.h3.send_data(stream_id, answer, end_stream=True)
        self.transmit()


@contextlib.contextmanager
def small_credit_service(directory: Path, *, credit: int) -> Iterator[SmallCreditService]:
    """The service on a fresh loopback UDP port, its event loop in a daemon thread; stopped at exit."""
    ca, cert, key = tls_files(directory)
    config = QuicConfiguration(is_client=False, alpn_protocols=H3_ALPN)
    config.load_cert_chain(cert, key)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    service = SmallCreditService(sock.getsockname()[1], ca, credit)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    servers: list[QuicServer] = []

    def protocol(*args: Any, **kwargs: Any) -> SeatProtocol:
        return SeatProtocol(*args, service=service, **kwargs)

    async def serve() -> None:
        _, server = await loop.create_datagram_endpoint(
            lambda: QuicServer(configuration=config, create_protocol=protocol), sock=sock
        )
        servers.append(server)
        started.set()

    def run() -> None:
        loop.run_until_complete(serve())
        loop.run_forever()

    def stop() -> None:
        for server in servers:
            server.close()  # its connections and its UDP transport
        loop.stop()

    thread = threading.Thread(target=run, name="h3-small-credit", daemon=True)
    thread.start()
    try:
        if not started.wait(START_TIMEOUT_S):
            raise RuntimeError(f"the small-credit HTTP/3 service did not start in {START_TIMEOUT_S}s")
        yield service
    finally:
        loop.call_soon_threadsafe(stop)
        thread.join(START_TIMEOUT_S)
        if not thread.is_alive():
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
        sock.close()
