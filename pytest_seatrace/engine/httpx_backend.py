"""Connections opened before the gate, for the ``gate`` start over httpx.

httpx cannot open a connection without sending a request, so each client's httpcore pool gets
a network backend that first hands out a stream opened here (TCP, then TLS): the raced request
is the first thing on a fresh connection, and no hidden request (whose answer a server might
frame wrongly, or which might use up a one-request keep-alive) goes before it.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpcore


class _Opened(httpcore.AsyncNetworkStream):
    """A stream whose TLS is already up: httpcore's ``start_tls`` on it is the stream itself."""

    def __init__(self, stream: httpcore.AsyncNetworkStream) -> None:
        self._stream = stream

    # httpcore's stream and backend interfaces take their timeouts as arguments.
    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self._stream.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        await self._stream.write(buffer, timeout)

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return self._stream

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class OpeningBackend(httpcore.AsyncNetworkBackend):
    """httpcore's anyio backend, except that it first hands out a stream opened before the gate."""

    def __init__(self) -> None:
        self._inner = httpcore.AnyIOBackend()
        self.opened: dict[tuple[str, int], httpcore.AsyncNetworkStream] = {}

    async def open(self, origin: httpcore.Origin, ssl_context: ssl.SSLContext, within: float) -> None:
        """Open (TCP, then TLS as httpcore would) the stream the next request to ``origin`` gets."""
        host, key = origin.host.decode("ascii"), (origin.host.decode("ascii"), origin.port)
        stream = self.opened.pop(key, None)
        if stream is not None:
            await stream.aclose()
        stream = await self._inner.connect_tcp(host, origin.port, timeout=within)
        if origin.scheme == b"https":
            ssl_context.set_alpn_protocols(["http/1.1"])  # what httpcore sets for an HTTP/1.1 pool
            try:
                stream = _Opened(await stream.start_tls(ssl_context, server_hostname=host, timeout=within))
            except BaseException:
                await stream.aclose()
                raise
        self.opened[key] = stream

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = self.opened.pop((host, port), None)
        if stream is not None:
            return stream
        return await self._inner.connect_tcp(host, port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Any = None,
    ) -> httpcore.AsyncNetworkStream:
        return await self._inner.connect_unix_socket(path, timeout, socket_options)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)

    async def aclose(self) -> None:
        for stream in self.opened.values():
            await stream.aclose()
        self.opened.clear()


__all__ = ["OpeningBackend"]
