"""A wave's responses read by one reader, not by a task and a ``wait_readable`` per connection.

Under asyncio every socket still waiting for its response is registered with the running loop
(``add_reader``) and parsed in the loop's callback as its bytes come: no task, no cancel scope,
no future per response (measured: a task and a ``wait_readable`` per response were ~19 % of the
client's CPU). Under trio (and any loop without ``add_reader``) the wave's sockets go into the
engine's own epoll or kqueue selector, and one ``wait_readable`` on the selector's descriptor
wakes the reader whenever any of them has bytes. Only where neither exists (Windows) does
each connection wait in its own task. Either way ``finish`` hears of each response as it completes, and the
caller's deadline bounds the whole: cancelled, nothing stays registered.
"""

from __future__ import annotations

import functools
import selectors
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Generic, TypeVar

import anyio
import anyio.lowlevel

from pytest_seatrace.engine.http11 import HTTP11Connection
from pytest_seatrace.engine.http11_response import RawResponse
from pytest_seatrace.engine.stream import NetworkStream, TransportError

if TYPE_CHECKING:
    import asyncio

K = TypeVar("K")

Finish = Callable[[K, HTTP11Connection, "RawResponse | TransportError"], None]
"""Told of each connection's outcome once: its response, or why there is none."""


async def read_responses(jobs: Sequence[tuple[K, HTTP11Connection]], finish: Finish[K]) -> None:
    """Read the response each connection was told to expect (``HTTP11Connection.begin_response``)."""
    loop = _asyncio_loop()
    pending = []
    for key, conn in jobs:
        if (
            loop is not None
            and conn.stream.unregister is not None
            and (conn.stream.tls is None or not conn.buffered())
        ):
            pending.append((key, conn))  # registered: the loop tells, of bytes already in too
            continue
        try:  # answers already in need no registration at all
            response = conn.poll_response()
        except TransportError as exc:
            finish(key, conn, exc)
            continue
        if response is None:
            pending.append((key, conn))
        else:
            finish(key, conn, response)
    if not pending:
        return
    if loop is not None:
        try:
            await _LoopReader(loop, pending, finish).wait()
            return
        except NotImplementedError:  # a loop without add_reader (Windows' proactor)
            pass
    if _SELECTOR is not None:
        await _SelectorReader(_SELECTOR(), pending, finish).wait()
        return
    async with anyio.create_task_group() as tg:
        for key, conn in pending:
            tg.start_soon(_read_one, key, conn, finish)


async def _read_one(key: K, conn: HTTP11Connection, finish: Finish[K]) -> None:
    """The generic path: this connection's own wait for readability."""
    while True:  # ends at the response or an error; the caller's deadline bounds it
        try:
            response = conn.poll_response()
        except TransportError as exc:
            finish(key, conn, exc)
            return
        if response is not None:
            finish(key, conn, response)
            return
        if conn.buffered():  # read but not parsed yet (TLS): the socket may stay quiet
            await anyio.lowlevel.checkpoint()
        else:
            await anyio.wait_readable(conn.sock)


def _asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop, if asyncio is what runs this (not trio, not trio-asyncio)."""
    aio = sys.modules.get("asyncio")
    if aio is None:
        return None
    try:
        import sniffio
    except ImportError:  # no sniffio means no trio either: a running loop is asyncio's
        pass
    else:
        try:
            if sniffio.current_async_library() != "asyncio":
                return None
        except sniffio.AsyncLibraryNotFoundError:
            return None
    try:
        loop: asyncio.AbstractEventLoop = aio.get_running_loop()
    except RuntimeError:
        return None
    return loop


class _LoopReader(Generic[K]):
    """Waits for every pending connection through the loop's own reader callbacks.

    A socket is registered with the loop once for the connection's lifetime, not once per
    response (asyncio's ``add_reader``/``remove_reader`` are a few microseconds of Python each):
    between its responses it stays registered, and only if it turns readable while no response
    is awaited (an early answer before the gate, the server closing an idle connection) is it
    unregistered, leaving those bytes for ``early_answer`` to find. ``NetworkStream.close``
    unregisters it before the socket's number is freed.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop, jobs: list[tuple[K, HTTP11Connection]], finish: Finish[K]
    ) -> None:
        self.loop = loop
        self.finish = finish
        self.jobs = jobs
        self.left = len(jobs)
        self.done: asyncio.Future[None] = loop.create_future()

    async def wait(self) -> None:
        try:
            for key, conn in self.jobs:
                conn.stream.waiter = functools.partial(self._readable, key, conn)
                if conn.stream.unregister is None:
                    _register(self.loop, conn.stream)
            await self.done  # cancelled by the caller's deadline: the finally still lets go
        finally:
            for _, conn in self.jobs:
                conn.stream.waiter = None

    def _readable(self, key: K, conn: HTTP11Connection) -> None:
        if self.done.done():
            return
        outcome: RawResponse | TransportError
        try:
            response = conn.poll_response()
        except TransportError as exc:
            outcome = exc
        else:
            if response is None:
                if conn.buffered():  # read but not parsed yet (TLS): the socket may stay quiet
                    self.loop.call_soon(self._readable, key, conn)
                return
            outcome = response
        conn.stream.waiter = None
        self.left -= 1
        try:
            self.finish(key, conn, outcome)
        except Exception as exc:  # a bug must surface in the wave, not in the loop's log
            self.done.set_exception(exc)
            return
        if not self.left:
            self.done.set_result(None)


_SELECTOR: type[selectors.BaseSelector] | None = getattr(
    selectors, "EpollSelector", getattr(selectors, "KqueueSelector", None)
)
"""A selector whose own descriptor turns readable when a registered socket does (epoll, kqueue)."""


class _SelectorReader(Generic[K]):
    """Waits for every pending connection of a wave in one selector, behind one ``wait_readable``
    on the selector's descriptor: one registration per socket and wave, no task per response."""

    def __init__(
        self, selector: selectors.BaseSelector, jobs: list[tuple[K, HTTP11Connection]], finish: Finish[K]
    ) -> None:
        self.selector = selector
        self.finish = finish
        self.jobs = jobs

    async def wait(self) -> None:
        selector, finish = self.selector, self.finish
        try:
            quiet: list[tuple[K, HTTP11Connection]] = []
            for key, conn in self.jobs:
                selector.register(conn.sock, selectors.EVENT_READ, (key, conn))
            while selector.get_map():  # the caller's deadline bounds the wait
                if quiet:  # read but not parsed yet (TLS): the socket may stay quiet
                    await anyio.lowlevel.checkpoint()
                else:
                    await anyio.wait_readable(selector.fileno())  # type: ignore[attr-defined]
                ready, seen = list(quiet), {id(conn) for _, conn in quiet}
                ready += [k.data for k, _ in selector.select(0) if id(k.data[1]) not in seen]
                quiet = []
                for key, conn in ready:
                    try:
                        response = conn.poll_response()
                    except TransportError as exc:
                        selector.unregister(conn.sock)
                        finish(key, conn, exc)
                        continue
                    if response is None:
                        if conn.buffered():
                            quiet.append((key, conn))
                        continue
                    selector.unregister(conn.sock)
                    finish(key, conn, response)
        finally:
            selector.close()


def _register(loop: asyncio.AbstractEventLoop, stream: NetworkStream) -> None:
    fd = stream.sock.fileno()

    def unregister() -> None:
        stream.unregister = None
        loop.remove_reader(fd)

    def readable() -> None:
        waiter, let_go = stream.waiter, stream.unregister
        if waiter is not None:
            waiter()
        elif let_go is not None:  # nothing awaited: leave the bytes where early_answer looks
            let_go()

    loop.add_reader(fd, readable)
    stream.unregister = unregister
