"""The web app: Starlette routes on uvicorn; limits, headers and the base_url prefix.

Why these: http.server's own documentation says it is not for production, and a public
signup form is. uvicorn is a production ASGI server (h11 / httptools parsers, keep-alive
and header-size limits, X-Forwarded-For from a trusted local proxy) whose event loop
holds hundreds of slow connections for the price of a socket each; Starlette is the
small, well-kept framework under FastAPI: routing, requests and responses, nothing more.
Routes are thin: read a capped form body, run the blocking part (SQLite, config.toml,
SMTP) in the thread pool, render the page. The logic is in signup.py, unsubscribe.py and
digest/archive.py (the past editions the emails link to); server.py runs the app.

The app re-reads config.toml when it changes (a confirmation or `digest subscribers`
edits it) and keeps one state connection per worker thread.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import archive, pipeline
from .. import config as config_mod
from ..errors import DigestError
from ..settings import Config
from ..signup_store import SignupBook
from ..store import Store
from . import pages, signup, unsubscribe
from .pages import Page

log = logging.getLogger("digest.web")
BODY_SECONDS = 10.0
"""A request body must arrive within this: a slow client cannot hold a form open forever."""
FORM_TYPE = "application/x-www-form-urlencoded"
ARCHIVE_SECONDS = 120.0
"""How long an archive page is served from memory: a busy day's page takes ~0.1 s to build."""
ARCHIVE_PAGES = 16
"""Archive pages kept in memory (a busy day's is ~0.4 MB)."""


class Site:
    """The config (re-read when the file changes) and a state connection per worker thread.

    Connections stay open: closing the last one checkpoints the WAL (~30 ms per request).
    """

    def __init__(self, source: Config | Path) -> None:
        self.source = source
        self._local = threading.local()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._config = source if isinstance(source, Config) else None
        self._pages: OrderedDict[str, tuple[float, Config, str | None]] = OrderedDict()

    def config(self) -> Config:
        if isinstance(self.source, Config):
            return self.source
        try:
            info = os.stat(self.source)
            stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
        except OSError:
            stamp = None
        with self._lock:
            if self._config is None or stamp is None or stamp != self._stamp:
                self._config, self._stamp = config_mod.load(self.source), stamp
            return self._config

    def cached(self, key: str, build: Callable[[Config], str | None]) -> str | None:
        """An archive page from memory while fresh and built for the current config, else built now."""
        config = self.config()
        with self._lock:
            hit = self._pages.get(key)
            if hit and hit[1] is config and time.monotonic() - hit[0] < ARCHIVE_SECONDS:
                self._pages.move_to_end(key)
                return hit[2]
        body = build(config)
        with self._lock:
            self._pages[key] = (time.monotonic(), config, body)
            self._pages.move_to_end(key)
            while len(self._pages) > ARCHIVE_PAGES:
                self._pages.popitem(last=False)
        return body

    def store(self, path: Path) -> Store:
        stores: dict[Path, Store] = self._local.__dict__.setdefault("stores", {})
        if path not in stores:
            with self._lock:  # one open at a time: 40 threads opening at once meet SQLite's busy sleeps
                stores[path] = Store(path)
                SignupBook(stores[path])  # the signup tables, once per connection
        return stores[path]


class Refused(Exception):
    """Answered with a message page: a bad request, a foreign origin, a body too large."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(title)
        self.status, self.title, self.message = status, title, message


# --------------------------------------------------------------------------- responses


def _headers(config: Config, embed: bool) -> dict[str, str]:
    ancestors = " ".join(["'self'", *config.web.embed_origins]) if embed else "'none'"
    headers = dict(unsubscribe.HEADERS)
    # same-origin, not no-referrer: with no-referrer browsers send `Origin: null` on our own
    # form POSTs; the token-bearing URLs still never leave for another site
    headers["Referrer-Policy"] = "same-origin"
    headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src 'unsafe-inline'; form-action 'self' {_origin(config.newsletter.base_url)}; "
        f"frame-ancestors {ancestors}; base-uri 'none'"
    ).replace("  ", " ")
    if not embed:
        headers["X-Frame-Options"] = "DENY"
    return headers


ARCHIVE_HEADERS = {
    "Cache-Control": "public, max-age=300",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    # the stories' images come from the outlets; nothing else loads, nothing runs
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
        "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
}


def _page(config: Config, page: Page, *, embed: bool = False) -> HTMLResponse:
    body = pages.render(config, page.template, **page.context)
    return HTMLResponse(body, page.status, headers=_headers(config, embed))


def _message(config: Config, status: int, title: str, message: str) -> HTMLResponse:
    return _page(
        config, Page(status, "web/message.html.j2", {"title": title, "message": message, "link": "", "link_text": ""})
    )


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


# --------------------------------------------------------------------------- request helpers


async def _body(request: Request, config: Config) -> bytes:
    """The request body, capped at [web] max_body and BODY_SECONDS (chunked bodies too)."""
    limit = config.web.max_body
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise Refused(413, "Too large", "That request was too large.")
    chunks, size = [], 0
    try:
        with anyio.fail_after(BODY_SECONDS):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise Refused(413, "Too large", "That request was too large.")
                chunks.append(chunk)
    except TimeoutError:
        raise Refused(408, "Too slow", "The request took too long to arrive.") from None
    return b"".join(chunks)


async def _form(request: Request, config: Config) -> dict[str, list[str]]:
    """The form-encoded body (nothing else is taken)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != FORM_TYPE:
        raise Refused(415, "Not a form", "Send the form from the page.")
    body = await _body(request, config)
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=200)


def _same_site(request: Request, config: Config, *, embeddable: bool) -> str:
    """The origin that sent a POST if it may ("" when the browser named none); else Refused.

    `Origin: null` (a privacy setting, a sandboxed frame) names none: the route's token decides."""
    origin = request.headers.get("origin", "")
    origin = _origin(request.headers.get("referer", "")) if origin in ("", "null") else origin
    if not origin:
        return ""
    own = {_origin(config.newsletter.base_url), f"{request.url.scheme}://{request.headers.get('host', '')}".lower()}
    if embeddable:
        own |= set(config.web.embed_origins)
    if origin.lower() not in own:
        log.info("refused a POST to %s from origin %s", request.url.path, origin)
        raise Refused(403, "Not allowed", "This form can only be sent from its own site.")
    return origin


def _visit(request: Request, config: Config, secret: bytes) -> signup.Visit:
    host = request.client.host if request.client else "unknown"
    base = config.newsletter.base_url or str(request.base_url).rstrip("/")
    source = request.headers.get("referer", "") or request.headers.get("origin", "") or f"{base}/subscribe"
    source = source.split("?")[0].split("#")[0]  # the page, never a query (a token could be in it)
    return signup.Visit(secret, signup.client_hash(secret, host), source[:500], base, datetime.now(UTC))


Work = Callable[[Config, Store, signup.Visit], Page]


async def _run(request: Request, work: Work, *, embed: bool = False) -> Response:
    """Open the state, run the blocking part in the thread pool, render its page."""
    site: Site = request.app.state.site

    def blocking() -> tuple[Config, Page]:
        config = site.config()
        store = site.store(config.state_path)
        visit = _visit(request, config, pipeline.unsubscribe_secret(config, store))
        return config, work(config, store, visit)

    config, page = await run_in_threadpool(blocking)
    return _page(config, page, embed=embed)


# --------------------------------------------------------------------------- routes


async def subscribe_form(request: Request) -> Response:
    return await _run(request, lambda c, s, v: signup.subscribe_page(c, v, store=s))


async def subscribe_post(request: Request) -> Response:
    config = request.app.state.site.config()
    fields = await _form(request, config)
    origin = _same_site(request, config, embeddable=True)

    def work(c: Config, store: Store, visit: signup.Visit) -> Page:
        if not origin and not signup.form_token_ok(visit.secret, signup.field(fields, "form_token"), visit.now):
            raise Refused(403, "Not allowed", "Send the form from the signup page.")
        return signup.subscribe(c, store, fields, visit)

    return await _run(request, work)


async def embed(request: Request) -> Response:
    site: Site = request.app.state.site
    config = site.config()
    base = config.newsletter.base_url or str(request.base_url).rstrip("/")
    return _page(config, Page(200, "web/embed.html.j2", {"box": pages.box(config, base)}), embed=True)


async def confirm_get(request: Request) -> Response:
    token = request.query_params.get("token", "")
    return await _run(request, lambda c, s, v: signup.confirm_page(c, s, token, v))


async def confirm_post(request: Request) -> Response:
    config = request.app.state.site.config()
    fields = await _form(request, config)
    _same_site(request, config, embeddable=False)
    token = signup.field(fields, "token") or request.query_params.get("token", "")
    return await _run(request, lambda c, s, v: signup.confirm(c, s, token, v))


async def preferences(request: Request) -> Response:
    query = {key: request.query_params.getlist(key) for key in ("email", "token")}
    if request.method == "GET":
        return await _run(request, lambda c, s, v: signup.preferences_page(c, s, query, v))
    config = request.app.state.site.config()
    fields = await _form(request, config)
    _same_site(request, config, embeddable=False)
    merged = {**query, **{k: v for k, v in fields.items() if v}}
    return await _run(request, lambda c, s, v: signup.save_preferences(c, s, merged, v))


async def unsubscribe_route(request: Request) -> Response:
    """RFC 8058 one-click: mail providers POST without an Origin, so only the token counts."""
    site: Site = request.app.state.site
    config = site.config()
    body = await _body(request, config) if request.method == "POST" else b""
    query = request.url.query
    status, headers, page = await run_in_threadpool(
        unsubscribe.handle, config, request.method, request.url.path, query, body
    )
    return Response(page, status, headers=headers)


async def archive_index(request: Request) -> Response:
    """Past editions, newest first: the emails' "View in browser" pages."""
    site: Site = request.app.state.site
    body = await run_in_threadpool(site.cached, "", lambda c: archive.index(c, archive.listed(c)))
    return HTMLResponse(body, headers=ARCHIVE_HEADERS)


async def archive_feed(request: Request) -> Response:
    """The newest editions as Atom, for readers who follow the newsletter in a feed reader."""
    site: Site = request.app.state.site
    base = site.config().newsletter.base_url or str(request.base_url).rstrip("/")
    body = await run_in_threadpool(
        site.cached, f"feed {base}", lambda c: archive.feed(c, archive.listed(c, archive.FEED_ENTRIES), base)
    )
    headers = {**ARCHIVE_HEADERS, "Content-Type": "application/atom+xml; charset=utf-8"}
    return Response(body, headers=headers)


async def archive_day(request: Request) -> Response:
    """One edition with every story: where "N more stories on the web" leads."""
    site: Site = request.app.state.site
    day = archive.parse_day(request.path_params["day"])
    body = await run_in_threadpool(site.cached, day.isoformat(), lambda c: archive.page(c, day)) if day else None
    if body is None:
        return _message(site.config(), 404, "Not found", "There is no edition for that day.")
    return HTMLResponse(body, headers=ARCHIVE_HEADERS)


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    config = request.app.state.site.config()
    return _message(config, exc.status, exc.title, exc.message)


async def _failed(request: Request, exc: Exception) -> Response:
    log.error("%s %s: %s", request.method, request.url.path, exc)
    return Response("Temporarily unavailable; please try again later.", 503, media_type="text/plain")


class Prefix:
    """ASGI middleware: paths under base_url's path (a proxy that keeps the prefix) route as if at /."""

    def __init__(self, app: ASGIApp, site: Site) -> None:
        self.app, self.site = app, site

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                config = self.site.config()  # a stat; re-read only when the file changed
            except DigestError:  # the route meets it again and answers 503
                prefix = ""
            else:
                prefix = urlsplit(config.newsletter.base_url).path.rstrip("/")
            path = scope["path"]
            if prefix and (path == prefix or path.startswith(prefix + "/")):
                scope = {**scope, "root_path": scope.get("root_path", "") + prefix}
        await self.app(scope, receive, send)


def create_app(source: Config | Path) -> ASGIApp:
    site = Site(source)
    config = site.config()
    with Store(config.state_path) as store:  # tables and the secret exist before the first burst
        SignupBook(store)
        pipeline.unsubscribe_secret(config, store)
    routes = [
        Route("/subscribe", subscribe_form, methods=["GET", "HEAD"]),
        Route("/subscribe", subscribe_post, methods=["POST"]),
        Route("/subscribe/embed", embed, methods=["GET", "HEAD"]),
        Route("/confirm", confirm_get, methods=["GET", "HEAD"]),
        Route("/confirm", confirm_post, methods=["POST"]),
        Route("/preferences", preferences, methods=["GET", "HEAD", "POST"]),
        Route("/unsubscribe", unsubscribe_route, methods=["GET", "HEAD", "POST", "PUT", "DELETE"]),
        Route("/archive/", archive_index, methods=["GET", "HEAD"]),
        Route("/archive/feed.xml", archive_feed, methods=["GET", "HEAD"]),
        Route("/archive/{day}/", archive_day, methods=["GET", "HEAD"]),
    ]
    handlers: dict[Any, Callable[[Request, Exception], Awaitable[Response]]] = {
        Refused: _refused,
        DigestError: _failed,
    }
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.site = site
    return Prefix(app, site)
