"""A jittery path: TCP and UDP relays that hold each forwarded chunk or datagram for its own
random delay, as the internet does to separate packets, order kept per flow.

The relays run in a forked helper process (an asyncio loop of their own), so their work does
not share the benchmark's interpreter lock while it times a gate write. Every flow direction
(one TCP connection's bytes one way; one UDP client's datagrams one way) is a queue whose
release times never decrease: a chunk waits its own delay, or for the one ahead of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import resource
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import cast

JITTER_MS = (0.5, 4.5)
"""Each chunk's or datagram's delay is drawn uniformly from this range."""
STOP_TIMEOUT_S = 5.0
UDP_MAX = 65_535


@dataclass(frozen=True)
class JitteryPath:
    """Where to aim for the relayed service: its TCP and UDP relay ports on 127.0.0.1; the
    helper process that relays (``pid``)."""

    tcp_port: int
    udp_port: int
    pid: int


class Delayed:
    """One flow direction: each item sent after its own random delay, never before the one ahead.

    ``send(None)`` is the end of the flow (EOF or close), queued behind its data."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, send: Callable[[bytes | None], None], rng: random.Random
    ) -> None:
        self._loop = loop
        self._send = send
        self._rng = rng
        self._queue: deque[tuple[float, bytes | None]] = deque()
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def push(self, data: bytes | None) -> None:
        low, high = JITTER_MS
        at = max(self._last, self._loop.time() + self._rng.uniform(low, high) / 1000)
        self._last = at
        self._queue.append((at, data))
        if self._timer is None:
            self._timer = self._loop.call_at(at, self._pump)

    def _pump(self) -> None:
        self._timer = None
        now = self._loop.time()
        while self._queue and self._queue[0][0] <= now:
            self._send(self._queue.popleft()[1])
        if self._queue:
            self._timer = self._loop.call_at(self._queue[0][0], self._pump)


# -- TCP: one upstream connection per client connection ------------------------------------------


async def _pipe(reader: asyncio.StreamReader, out: Delayed) -> None:
    while data := await reader.read(UDP_MAX):
        out.push(data)
    out.push(None)


def _sender(writer: asyncio.StreamWriter) -> Callable[[bytes | None], None]:
    def send(data: bytes | None) -> None:
        if writer.is_closing():
            return
        if data is None:
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()
        else:
            writer.write(data)

    return send


def _tcp_handler(
    target: int, rng: random.Random
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", target)
        except OSError:
            client_w.close()
            return
        try:
            await asyncio.gather(
                _pipe(client_r, Delayed(loop, _sender(server_w), rng)),
                _pipe(server_r, Delayed(loop, _sender(client_w), rng)),
            )
            await asyncio.sleep(JITTER_MS[1] / 1000)  # the last delayed chunks and EOFs out
        except OSError:
            pass
        finally:
            server_w.close()
            client_w.close()

    return handle


# -- UDP: one upstream socket per client address -----------------------------------------------


class _UdpFront(asyncio.DatagramProtocol):
    """The relay's public UDP port: each client address gets its own upstream socket (its flow)."""

    def __init__(self, target: int, rng: random.Random) -> None:
        self._target = target
        self._rng = rng
        self._flows: dict[tuple[str, int], Delayed] = {}
        self._transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # a datagram endpoint's

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        flow = self._flows.get(addr)
        if flow is None:
            flow = self._flows[addr] = self._open(addr)
        flow.push(data)

    def _open(self, addr: tuple[str, int]) -> Delayed:
        loop = asyncio.get_running_loop()
        front = self._transport
        assert front is not None
        upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        upstream.setblocking(False)
        upstream.connect(("127.0.0.1", self._target))

        def reply(data: bytes | None) -> None:
            if data is not None:
                front.sendto(data, addr)

        back = Delayed(loop, reply, self._rng)

        def readable() -> None:
            with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                while True:
                    back.push(upstream.recv(UDP_MAX))

        loop.add_reader(upstream.fileno(), readable)

        def send(data: bytes | None) -> None:
            if data is not None:
                with contextlib.suppress(BlockingIOError, ConnectionRefusedError):
                    upstream.send(data)

        return Delayed(loop, send, self._rng)


async def _relay(tcp: socket.socket, udp: socket.socket, tcp_target: int, udp_target: int, seed: int) -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    server = await asyncio.start_server(_tcp_handler(tcp_target, rng), sock=tcp, backlog=4096)
    await loop.create_datagram_endpoint(lambda: _UdpFront(udp_target, rng), sock=udp)
    async with server:
        await server.serve_forever()


def _serve(tcp: socket.socket, udp: socket.socket, tcp_target: int, udp_target: int, seed: int) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):  # two sockets per relayed connection
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asyncio.run(_relay(tcp, udp, tcp_target, udp_target, seed))


@contextlib.contextmanager
def jittery_path(tcp_target: int, udp_target: int, *, seed: int) -> Iterator[JitteryPath]:
    """Relays to the service's TCP and UDP ports on 127.0.0.1 in a helper process, for one
    ``with`` block; each forwarded chunk or datagram held ``JITTER_MS`` apart, order kept per flow."""
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with tcp, udp:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(4096)
        udp.bind(("127.0.0.1", 0))
        helper = multiprocessing.get_context("fork").Process(
            target=_serve, args=(tcp, udp, tcp_target, udp_target, seed), daemon=True
        )
        helper.start()
        assert helper.pid is not None  # started
        path = JitteryPath(tcp.getsockname()[1], udp.getsockname()[1], helper.pid)
    try:
        yield path
    finally:
        helper.terminate()
        helper.join(STOP_TIMEOUT_S)
        if helper.is_alive():
            helper.kill()
            helper.join(STOP_TIMEOUT_S)
