"""The jittery path of ``single_datagram``: each chunk or datagram held for its own delay, order
kept per flow, and the relays forwarding both ways (to loopback sockets the tests bind)."""

from __future__ import annotations

import asyncio
import random
import socket

from benchmarks.jitter import JITTER_MS, Delayed, jittery_path

ITEMS = 40
LIMIT_S = 5.0


def test_delayed_holds_each_item_its_own_delay_and_keeps_their_order() -> None:
    async def main() -> tuple[list[float], list[tuple[float, bytes | None]]]:
        loop = asyncio.get_running_loop()
        sent: list[tuple[float, bytes | None]] = []
        done = asyncio.Event()

        def send(data: bytes | None) -> None:
            sent.append((loop.time(), data))
            if len(sent) == ITEMS:
                done.set()

        flow = Delayed(loop, send, random.Random(7))  # noqa: S311 - delays, not secrets
        pushed = []
        for number in range(ITEMS):
            pushed.append(loop.time())
            flow.push(str(number).encode() if number < ITEMS - 1 else None)
        await asyncio.wait_for(done.wait(), LIMIT_S)
        return pushed, sent

    pushed, sent = asyncio.run(main())
    assert [data for _, data in sent] == [str(n).encode() for n in range(ITEMS - 1)] + [None]
    low, high = JITTER_MS
    waited = [at - began for (at, _), began in zip(sent, pushed, strict=True)]
    assert min(waited) >= low / 1000  # none leaves before its own delay
    assert max(waited) - min(waited) > (high - low) / 4000  # drawn, not one fixed delay


def _bound_udp() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(LIMIT_S)
    return sock


def test_the_udp_relay_forwards_a_flow_in_order_both_ways() -> None:
    with (
        _bound_udp() as service,
        _bound_udp() as client,
        jittery_path(tcp_target=1, udp_target=service.getsockname()[1], seed=3) as path,
    ):
        for number in range(ITEMS):
            client.sendto(b"%d" % number, ("127.0.0.1", path.udp_port))
        arrived = []
        for _ in range(ITEMS):
            data, relay = service.recvfrom(100)
            arrived.append(data)
            service.sendto(data.upper() + b"!", relay)
        answers = [client.recvfrom(100)[0] for _ in range(ITEMS)]
    assert arrived == [b"%d" % n for n in range(ITEMS)]
    assert answers == [b"%d!" % n for n in range(ITEMS)]


def test_the_tcp_relay_forwards_a_connection_both_ways() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(LIMIT_S)
        with (
            jittery_path(tcp_target=listener.getsockname()[1], udp_target=1, seed=3) as path,
            socket.create_connection(("127.0.0.1", path.tcp_port), timeout=LIMIT_S) as client,
        ):
            client.sendall(b"held byte")
            client.shutdown(socket.SHUT_WR)
            accepted, _ = listener.accept()
            with accepted:
                accepted.settimeout(LIMIT_S)
                received = b""
                while chunk := accepted.recv(100):  # to the relayed EOF
                    received += chunk
                accepted.sendall(received[::-1])
                accepted.shutdown(socket.SHUT_WR)
            answer = b""
            while chunk := client.recv(100):
                answer += chunk
    assert received == b"held byte"
    assert answer == b"etyb dleh"
