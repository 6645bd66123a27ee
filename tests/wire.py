"""HTTP/1.1 off a raw socket, for the tests' own small servers: no third-party import, so a
server in a subprocess (``tests.keepalive_server``) starts as fast as a thread's."""

from __future__ import annotations

import socket

HEAD_END = b"\r\n\r\n"
MAX_HEAD = 65536


def read_request(conn: socket.socket, buffer: bytearray, timeout: float = 30.0) -> bytes | None:
    """One whole request off ``conn``: its request line (``b"POST /book/1 HTTP/1.1"``), its
    head and its Content-Length body read and dropped, what follows it left in ``buffer`` for
    the next call. ``None`` at the end of the stream, or a head past ``MAX_HEAD``; a silence of
    ``timeout`` seconds raises ``TimeoutError``."""
    conn.settimeout(timeout)
    while HEAD_END not in buffer:
        if len(buffer) > MAX_HEAD:
            return None
        data = conn.recv(65536)
        if not data:
            return None
        buffer += data
    head, _, rest = bytes(buffer).partition(HEAD_END)
    lines = head.split(b"\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        data = conn.recv(65536)
        if not data:
            return None
        rest += data
    buffer[:] = rest[length:]
    return lines[0]
