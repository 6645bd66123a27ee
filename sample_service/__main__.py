"""``python -m sample_service``: serve the booking app with uvicorn on a socket we bind ourselves.

We bind (or take ``--fd``) the listening socket before uvicorn starts, because
uvicorn's ``Config.bind_socket`` calls ``sys.exit`` on a busy port; a bad port or
database path exits with status 2 and one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import math
import socket
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from sample_service.app import STRATEGIES, Strategy, create_app
from sample_service.db import SeatStore

PROG = "python -m sample_service"
BACKLOG = 4096  # >= resources x concurrency of a race: 100 clients x 16 seats fit twice over


class _Server(uvicorn.Server):
    """A uvicorn server that announces itself on stdout once it really serves."""

    def __init__(self, config: uvicorn.Config, banner: str) -> None:
        super().__init__(config)
        self._banner = banner

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            sys.stdout.write(self._banner + "\n")
            sys.stdout.flush()


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, not {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="A small seat-booking HTTP service on SQLite.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port to bind, 0 for a free one")
    parser.add_argument(
        "--fd", type=int, default=None, help="serve this already bound, listening socket (ignores host/port)"
    )
    parser.add_argument("--db", type=Path, default=Path("seats.db"), help="SQLite file, kept across restarts")
    parser.add_argument("--seats", type=_positive_int, default=16, help="seats 1..N (default: %(default)s)")
    parser.add_argument("--strategy", choices=STRATEGIES, default="safe", help="booking strategy")
    parser.add_argument(
        "--window-ms", type=_non_negative_float, default=5.0, help="unsafe strategy's check-to-act gap"
    )
    parser.add_argument(
        "--busy-timeout-ms", type=_non_negative_int, default=5000, help="wait for another writer"
    )
    return parser


def _listening_socket(host: str, port: int, fd: int | None) -> socket.socket:
    """The socket to serve: the inherited ``--fd`` or a fresh one bound to host:port."""
    if fd is not None:
        return socket.socket(fileno=fd)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # A quick restart must not wait for TIME_WAIT; a port someone listens on stays busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _fail(message: str) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    strategy: Strategy = args.strategy
    where = f"fd {args.fd}" if args.fd is not None else f"{args.host}:{args.port}"
    try:
        sock = _listening_socket(args.host, args.port, args.fd)
    except OSError as exc:
        return _fail(f"cannot listen on {where}: {exc.strerror or exc}")
    with sock:
        try:
            store = SeatStore.open(args.db, seats=args.seats, busy_timeout_ms=args.busy_timeout_ms)
        except sqlite3.Error as exc:
            return _fail(f"cannot use database {args.db}: {exc}")
        try:
            app = create_app(store, strategy=strategy, window_ms=args.window_ms, seats=args.seats)
            config = uvicorn.Config(
                app,
                log_level="warning",
                access_log=False,
                backlog=BACKLOG,
                timeout_graceful_shutdown=2,
                lifespan="on",
            )
            banner = (
                f"sample_service listening on {_url(sock)}"
                f" (strategy={strategy}, seats={args.seats}, db={args.db})"
            )
            server = _Server(config, banner)
            # On SIGTERM uvicorn stops gracefully, then re-raises the signal: exit -SIGTERM.
            server.run(sockets=[sock])
        finally:
            store.close()
    if not server.started:
        sys.stderr.write(f"{PROG}: error: the server did not start\n")
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
