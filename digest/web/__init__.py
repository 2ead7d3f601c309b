"""The public web app: signup, confirm, preferences, and the one-click unsubscribe.

    GET  /subscribe            the signup page          POST /subscribe   -> "check your inbox"
    GET  /subscribe/embed      the box for other sites  GET  /confirm     -> a button, changes nothing
    POST /confirm              -> config.toml gains the subscriber (config_edit), welcome email
    GET/POST /preferences      name, sections, unsubscribe (signed per subscriber)
    GET/POST /unsubscribe      RFC 8058 one-click (unsubscribe.py)

Paths live under the path of [newsletter] base_url, so a reverse proxy can mount the app
at a prefix. Importing this package loads no web framework: Starlette and uvicorn are
imported by `start_server` / `serve` (app.py) only, so `digest send` starts fast, and
the preview mounts the unsubscribe handler without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DigestError
from ..settings import Config
from .unsubscribe import MAX_BODY, PATH, Handler, Response, handle, make_handler

if TYPE_CHECKING:
    import threading

    from .server import Running

__all__ = ["MAX_BODY", "PATH", "DigestError", "Handler", "Response", "handle", "make_handler", "start_server"]


def start_server(source: Config | Path, listen: str | None = None) -> tuple[Running, threading.Thread]:
    """Serve the web app on `listen` (else [web] listen) in a daemon thread (see app.start_server)."""
    from .server import start_server as start

    return start(source, listen)
