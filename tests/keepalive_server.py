"""A seat service whose server closes kept connections as real servers do when their keep-alive
expires: ``python -m tests.keepalive_server --fd N --keep-alive-ms MS --close lazy|eager``.

``eager`` closes a connection idle for the keep-alive at once (a timer per connection).
``lazy`` looks at the timer only when the next request's first bytes arrive, and then closes
without reading them: the worst case of a server whose loop checks expiry and readability in
one pass (gunicorn's gthread worker), where a request arriving as the timer fires is never read.

``POST /book/{seat}``: 201 to the first, 409 after; ``GET /seats/{seat}``: ``{"holders": n}``;
``GET /stats``: ``{"idle_closes": n}`` (connections closed by the keep-alive); ``GET /health``.
A thread per connection, in its own process (the race engine keeps the test process's GIL).
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import threading
import time

from tests.wire import read_request

READ_TIMEOUT_S = 30.0
"""How long a connection may stay silent mid-request, or idle under ``lazy``, before it goes."""


class Seats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holders: dict[str, int] = {}
        self.idle_closes = 0

    def answer(self, method: str, path: str) -> tuple[int, dict[str, object]]:
        parts = path.strip("/").split("/")
        with self.lock:
            if method == "POST" and len(parts) == 2 and parts[0] == "book":
                if self.holders.get(parts[1]):
                    return 409, {"error": "seat taken"}
                self.holders[parts[1]] = 1
                return 201, {"seat": parts[1]}
            if method == "GET" and len(parts) == 2 and parts[0] == "seats":
                return 200, {"holders": self.holders.get(parts[1], 0)}
            if method == "GET" and parts == ["stats"]:
                return 200, {"idle_closes": self.idle_closes}
            if method == "GET" and parts == ["health"]:
                return 200, {"ok": True}
        return 404, {"error": "not found"}


def serve_connection(conn: socket.socket, seats: Seats, keep_alive_s: float, lazy: bool) -> None:
    buffer = bytearray()
    try:
        while True:
            line = read_request(conn, buffer, READ_TIMEOUT_S)
            if line is None:
                return
            method, path = line.decode("latin-1").split(" ")[:2]
            status, payload = seats.answer(method, path)
            body = json.dumps(payload).encode()
            conn.sendall(
                f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            answered = time.monotonic()
            if buffer:
                continue
            wait = READ_TIMEOUT_S if lazy else keep_alive_s
            readable, _, _ = select.select([conn], [], [], wait)
            if readable and not conn.recv(1, socket.MSG_PEEK):
                return  # the client closed it
            if not readable or time.monotonic() - answered >= keep_alive_s:
                with seats.lock:
                    seats.idle_closes += 1
                return  # closed idle: what waits unread makes the close a reset
    except (OSError, ValueError):
        return
    finally:
        conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fd", type=int, required=True, help="an inherited listening socket")
    parser.add_argument("--keep-alive-ms", type=float, required=True)
    parser.add_argument("--close", choices=("lazy", "eager"), required=True)
    args = parser.parse_args()
    listener = socket.socket(fileno=args.fd)
    seats = Seats()
    while True:
        conn, _ = listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(
            target=serve_connection,
            args=(conn, seats, args.keep_alive_ms / 1000, args.close == "lazy"),
            daemon=True,
        ).start()


if __name__ == "__main__":
    main()
