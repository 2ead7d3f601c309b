"""Serving the web app: uvicorn in a thread for `digest run` and tests, in front for `digest serve`.

The listening socket is bound here first, so a busy port is one clear error and port 0
tells its number before the server runs.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import uvicorn

from .. import config as config_mod
from ..errors import DigestError
from ..settings import Config
from .app import create_app


class Running:
    """A server started by `start_server`, stopped like the http.server it replaced."""

    def __init__(self, server: uvicorn.Server, sock: socket.socket, thread: threading.Thread) -> None:
        self.server, self.sock, self.thread = server, sock, thread
        self.server_address: tuple[str, int] = sock.getsockname()[:2]

    def shutdown(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

    def server_close(self) -> None:
        self.sock.close()


def bind(where: str) -> socket.socket:
    """A listening socket on HOST:PORT (port 0: a free one); one clear error if it cannot be had."""
    host, _, port = where.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # Nagle holds the body behind the headers until the client's delayed ACK (~40 ms a request)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
        sock.listen(2048)
    except (OSError, ValueError) as exc:
        sock.close()
        raise DigestError(f"[web] listen {where!r}: cannot serve the web app: {exc}") from exc
    return sock


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after a graceful stop (exit -15); `digest serve` exits 0 like `digest run`."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop(signum: int, frame: FrameType | None) -> None:
            self.force_exit = self.should_exit  # a second Ctrl-C: do not wait for open connections
            self.should_exit = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _server(source: Config | Path) -> uvicorn.Server:
    settings = uvicorn.Config(
        create_app(source),
        lifespan="off",
        log_config=None,  # digest's own logging setup (one format, -v), not uvicorn's
        access_log=False,
        log_level="warning",
        server_header=False,
        proxy_headers=True,  # X-Forwarded-For/-Proto, trusted from a local reverse proxy only
        timeout_keep_alive=5,
        timeout_graceful_shutdown=5,
        ws="none",
    )
    return _Server(settings)


def start_server(source: Config | Path, listen: str | None = None) -> tuple[Running, threading.Thread]:
    """Serve the app on `listen` (else [web] listen) in a daemon thread, for `digest run` and tests.

    `source` is the config file (re-read when it changes) or a loaded Config. Stop it with
    `server.shutdown(); server.server_close()`. Port 0 picks a free port (`server.server_address[1]`).
    """
    where = listen or (source if isinstance(source, Config) else config_mod.load(source)).web.listen
    sock = bind(where)
    server = _server(source)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="digest-web", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    return Running(server, sock, thread), thread


def serve(source: Path, listen: str | None, announce: Callable[[str], None]) -> None:
    """`digest serve`: the web app in the foreground until SIGTERM / Ctrl-C."""
    config = config_mod.load(source)
    sock = bind(listen or config.web.listen)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    prefix = urlsplit(config.newsletter.base_url).path.rstrip("/")
    announce(f"Serving the signup form on http://{shown}:{port}{prefix}/subscribe (Ctrl-C stops)")
    if not config.newsletter.base_url:
        announce("Note: [newsletter] base_url is empty: emailed links will name the address each request came to")
    _server(source).run(sockets=[sock])
