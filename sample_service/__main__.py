"""``python -m sample_service``: serve the booking app with uvicorn or hypercorn on a socket we bind.

We bind (or take ``--fd``) the listening socket before the server starts, because
uvicorn's ``Config.bind_socket`` calls ``sys.exit`` on a busy port; a bad argument,
port, database path or certificate exits with status 2 and one line on stderr, never a
traceback. ``--server hypercorn`` adds HTTP/2 (h2c with prior knowledge on a plain
port, ALPN ``h2`` over TLS) beside HTTP/1.1, and with ``--http3`` HTTP/3 over QUIC (aioquic) on a
UDP socket (the TCP port's number, or an inherited ``--quic-fd``); uvicorn speaks HTTP/1.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import signal
import socket
import sqlite3
import ssl
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NoReturn, cast, get_args

import uvicorn
from starlette.applications import Starlette

from sample_service.app import STRATEGIES, Strategy, create_app
from sample_service.db import SeatStore

PROG = "python -m sample_service"
BACKLOG = 4096  # >= resources x concurrency of a race: 100 clients x 16 seats fit twice over
Server = Literal["uvicorn", "hypercorn"]
SERVERS: tuple[Server, ...] = get_args(Server)
DEFAULT_H2_MAX_STREAMS = 1000  # hypercorn's own 100 would queue a 100-client race on one connection
GRACEFUL_STOP_S = 2
# hypercorn closes a connection after this many requests (HTTP/2: streams), 1000 by default;
# uvicorn has no such cap, and a race keeps its connections across waves and rounds.
_KEEP_ALIVE_MAX_REQUESTS = 1_000_000_000


@dataclass(frozen=True)
class _Tls:
    certfile: Path
    keyfile: Path


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


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, like every other start-up error of the service."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="A small seat-booking HTTP service on SQLite.")
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
    parser.add_argument(
        "--server", choices=SERVERS, default="uvicorn", help="uvicorn (HTTP/1.1) or hypercorn (also HTTP/2)"
    )
    parser.add_argument("--certfile", type=Path, default=None, help="serve https: certificate chain (PEM)")
    parser.add_argument("--keyfile", type=Path, default=None, help="serve https: private key (PEM)")
    parser.add_argument(
        "--auth", action="store_true", help='POST /orders needs a token from POST /login {"user"}'
    )
    parser.add_argument(
        "--keep-alive",
        type=_non_negative_float,
        default=None,
        help="seconds an idle kept-alive connection stays open (default: the server's own, 5)",
    )
    parser.add_argument(
        "--h2-max-streams",
        type=_positive_int,
        default=None,
        help=f"hypercorn: concurrent HTTP/2 streams per connection (default: {DEFAULT_H2_MAX_STREAMS})",
    )
    parser.add_argument(
        "--http3",
        action="store_true",
        help="hypercorn with --certfile/--keyfile: also serve HTTP/3 on UDP, the TCP port's number",
    )
    parser.add_argument(
        "--quic-fd", type=int, default=None, help="serve HTTP/3 on this already bound UDP socket (--http3)"
    )
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.certfile is None) != (args.keyfile is None):
        parser.error("--certfile and --keyfile go together")
    if args.h2_max_streams is not None and args.server != "hypercorn":
        parser.error("--h2-max-streams needs --server hypercorn")
    if args.quic_fd is not None:
        args.http3 = True
    if args.http3 and (args.server != "hypercorn" or args.certfile is None):
        parser.error("--http3 needs --server hypercorn and --certfile/--keyfile (QUIC is always TLS)")
    return args


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


def _quic_socket(tcp: socket.socket, fd: int | None) -> socket.socket:
    """The UDP socket for HTTP/3: the inherited ``--quic-fd``, or one bound to the TCP socket's address."""
    if fd is not None:
        return socket.socket(fileno=fd)
    sock = socket.socket(tcp.family, socket.SOCK_DGRAM)
    try:
        sock.bind(tcp.getsockname()[:2])
    except BaseException:
        sock.close()
        raise
    return sock


def _url(sock: socket.socket, scheme: str) -> str:
    host, port = sock.getsockname()[:2]
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def _check_tls(tls: _Tls) -> None:
    """Load the pair once here, so a bad file is one line from us, not a server's traceback."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile=tls.certfile, keyfile=tls.keyfile)


def _serve_uvicorn(
    app: Starlette, sock: socket.socket, banner: str, tls: _Tls | None, keep_alive: float | None
) -> bool:
    """Serve until SIGTERM/SIGINT; True once it served. uvicorn then re-raises the signal."""
    config = uvicorn.Config(
        app,
        # uvicorn's own default is 5 s; it takes seconds as a float, though typed as an int
        timeout_keep_alive=5 if keep_alive is None else keep_alive,  # type: ignore[arg-type]
        log_level="warning",
        access_log=False,
        backlog=BACKLOG,
        timeout_graceful_shutdown=GRACEFUL_STOP_S,
        lifespan="on",
        ssl_certfile=None if tls is None else str(tls.certfile),
        ssl_keyfile=None if tls is None else str(tls.keyfile),
    )
    server = _Server(config, banner)
    server.run(sockets=[sock])
    return server.started


def _serve_hypercorn(
    app: Starlette,
    sock: socket.socket,
    banner: str,
    tls: _Tls | None,
    h2_max_streams: int,
    keep_alive: float | None,
    quic: socket.socket | None = None,
) -> bool:
    """Serve until SIGTERM/SIGINT, then stop gracefully and return (exit 0); True once it served.

    hypercorn calls ``shutdown_trigger`` once every listener serves, so the banner goes
    out there; passing a trigger replaces hypercorn's own signal handlers with ours. With a
    ``quic`` socket hypercorn also serves HTTP/3 there and names it in an ``Alt-Svc`` header.
    """
    from hypercorn.asyncio import serve
    from hypercorn.config import Config
    from hypercorn.typing import ASGIFramework

    config = Config()
    # hypercorn wraps the fd in its own socket object and closes it: ours lets go of it.
    config.bind = [f"fd://{sock.detach()}"]
    if quic is not None:
        config.quic_bind = [f"fd://{quic.detach()}"]
    if tls is not None:
        config.certfile = str(tls.certfile)
        config.keyfile = str(tls.keyfile)
    config.backlog = BACKLOG
    config.h2_max_concurrent_streams = h2_max_streams
    config.keep_alive_max_requests = _KEEP_ALIVE_MAX_REQUESTS
    if keep_alive is not None:
        config.keep_alive_timeout = keep_alive
    config.graceful_timeout = GRACEFUL_STOP_S
    config.loglevel = "WARNING"
    started = False

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)

        async def serving_until_stopped() -> None:
            nonlocal started
            started = True
            sys.stdout.write(banner + "\n")
            sys.stdout.flush()
            await stop.wait()

        # Starlette types its scope as a MutableMapping, hypercorn as TypedDicts: both ASGI 3.
        await serve(cast("ASGIFramework", app), config, shutdown_trigger=serving_until_stopped)

    asyncio.run(run())
    return started


def _fail(message: str) -> int:
    sys.stderr.write(f"{PROG}: error: {message}\n")
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    strategy: Strategy = args.strategy
    server: Server = args.server
    tls = None if args.certfile is None else _Tls(args.certfile, args.keyfile)
    if tls is not None:
        try:
            _check_tls(tls)
        except (OSError, ssl.SSLError) as exc:
            return _fail(f"cannot use certificate {tls.certfile} with key {tls.keyfile}: {exc}")
    if server == "hypercorn":
        try:
            import hypercorn  # noqa: F401 - fail here, in one line, not once serving
        except ImportError:
            return _fail("--server hypercorn needs hypercorn: pip install 'pytest-seatrace[http2]'")
    if args.http3:
        try:
            import aioquic  # noqa: F401 - fail here, in one line, not once serving
        except ImportError:
            return _fail("--http3 needs aioquic: pip install 'pytest-seatrace[http3]'")
    where = f"fd {args.fd}" if args.fd is not None else f"{args.host}:{args.port}"
    try:
        sock = _listening_socket(args.host, args.port, args.fd)
    except OSError as exc:
        return _fail(f"cannot listen on {where}: {exc.strerror or exc}")
    with contextlib.ExitStack() as stack:
        stack.enter_context(sock)
        quic = None
        if args.http3:
            try:
                quic = stack.enter_context(_quic_socket(sock, args.quic_fd))
            except OSError as exc:
                return _fail(f"cannot bind UDP for HTTP/3 on {where}: {exc.strerror or exc}")
        try:
            store = SeatStore.open(args.db, seats=args.seats, busy_timeout_ms=args.busy_timeout_ms)
        except sqlite3.Error as exc:
            return _fail(f"cannot use database {args.db}: {exc}")
        try:
            app = create_app(
                store, strategy=strategy, window_ms=args.window_ms, seats=args.seats, auth=args.auth
            )
            extras = "".join(
                [
                    ", server=hypercorn" if server == "hypercorn" else "",
                    "" if quic is None else f", http3=udp:{quic.getsockname()[1]}",
                    ", auth=on" if args.auth else "",
                ]
            )
            banner = (
                f"sample_service listening on {_url(sock, 'http' if tls is None else 'https')}"
                f" (strategy={strategy}, seats={args.seats}{extras}, db={args.db})"
            )
            if server == "hypercorn":
                max_streams = args.h2_max_streams or DEFAULT_H2_MAX_STREAMS
                started = _serve_hypercorn(app, sock, banner, tls, max_streams, args.keep_alive, quic)
            else:
                started = _serve_uvicorn(app, sock, banner, tls, args.keep_alive)
        finally:
            store.close()
    if not started:
        sys.stderr.write(f"{PROG}: error: the server did not start\n")
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
