"""Race an ASGI app in process: its lifespan runs around the race, no socket involved."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio

from pytest_seatrace.core.errors import RaceUsageError

LIFESPAN_TIMEOUT = 10.0


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    """Run the app's startup before and its shutdown after, if it speaks the lifespan protocol."""
    send_to_app, app_receive = anyio.create_memory_object_stream[dict[str, Any]](4)
    app_send, receive_from_app = anyio.create_memory_object_stream[dict[str, Any]](4)
    supported = True

    async def run_app() -> None:
        nonlocal supported
        try:
            await app(
                {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                app_receive.receive,
                app_send.send,
            )
        except Exception:
            supported = False  # apps without lifespan support raise on the unknown scope
        finally:
            app_send.close()

    failure: Exception | None = None
    async with send_to_app, app_receive, app_send, receive_from_app, anyio.create_task_group() as tg:
        tg.start_soon(run_app)
        await _step(send_to_app, receive_from_app, "startup", lambda: supported)
        try:
            yield
        except Exception as exc:  # raised after the task group, not wrapped in an ExceptionGroup
            failure = exc
        finally:
            with anyio.CancelScope(shield=True):
                await _step(send_to_app, receive_from_app, "shutdown", lambda: supported)
                tg.cancel_scope.cancel()
    if failure is not None:
        raise failure


async def _step(send: Any, receive: Any, phase: str, supported: Any) -> None:
    try:
        await send.send({"type": f"lifespan.{phase}"})
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        return
    with anyio.fail_after(LIFESPAN_TIMEOUT):
        try:
            message = await receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return
    if message["type"] == f"lifespan.{phase}.failed" and supported():
        raise RaceUsageError(f"the ASGI app's lifespan {phase} failed: {message.get('message', '')}")
