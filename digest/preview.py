"""`digest preview`: the next edition in a browser, as each subscriber will get it.

It changes no state. The state database is opened read-only on every request
(`Store.read_only`: no file is created or written), feeds are polled once at start with
persist=False, and messages are composed with a throw-away secret and never sent.
Every request re-reads config.toml and re-renders, so edits to the config or the
templates show on reload. The one write is the unsubscribe path, served like `digest run`
does: a suppression, and only on an explicit POST.
"""

from __future__ import annotations

import logging
import re
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import jinja2

from . import archive, pipeline, select, web
from . import config as config_mod
from .errors import DigestError
from .models import Edition, Entry, Rendered
from .settings import Config, NewsletterSettings, Subscriber
from .store import Store

log = logging.getLogger(__name__)
GMAIL_CLIP = 102 * 1024
"""Gmail hides everything after ~102 KB of HTML behind "[Message clipped]"."""
_ARCHIVE_DAY = re.compile(r"^/archive/(\d{4}-\d{2}-\d{2})/?$")


@cache
def pages() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(pipeline.preview_templates())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=True,
    )


@dataclass(frozen=True)
class Copy:
    """One reader's message as it would be mailed, taken apart for the pages."""

    subscriber: Subscriber | None
    rendered: Rendered
    headers: dict[str, str]
    html: str
    text: str
    sections: tuple[tuple[str, int], ...]

    @property
    def size(self) -> dict[str, Any]:
        size = len(self.html.encode("utf-8"))
        percent = round(100 * size / GMAIL_CLIP)
        level = "over" if size > GMAIL_CLIP else "warn" if percent >= 90 else "ok"
        return {"bytes": size, "limit": GMAIL_CLIP, "percent": percent, "level": level}


def find_subscriber(config: Config, email: str | None) -> Subscriber | None:
    if not email:
        return None
    for subscriber in config.subscribers:
        if subscriber.email.lower() == email.strip().lower():
            return subscriber
    known = ", ".join(s.email for s in config.subscribers) or "none"
    raise DigestError(f"{config.path}: no subscriber {email!r} (known: {known}); use one of those or add it")


def reader_copy(config: Config, edition: Edition, subscriber: Subscriber | None, now: datetime) -> Copy:
    rendered, raw = pipeline.preview_message(config, edition, subscriber, now)
    message = message_from_bytes(raw, _class=EmailMessage, policy=policy.default)
    assert isinstance(message, EmailMessage)
    parts = {kind: message.get_body((kind,)) for kind in ("html", "plain")}
    body = {kind: str(part.get_content()) if part is not None else "" for kind, part in parts.items()}
    headers = {"subject": str(message["Subject"]), "to": str(message["To"]), "sender": str(message["From"])}
    topics = subscriber.topics if subscriber else ()
    counts: dict[str, int] = {}
    for story in select.for_topics(edition, topics, config.newsletter.max_stories, config.sections):
        counts[story.section] = counts.get(story.section, 0) + 1
    return Copy(subscriber, rendered, headers, body["html"], body["plain"], tuple(counts.items()))


def write_email(config: Config, output: Path, now: datetime, email: str | None, offline: bool) -> None:
    subscriber = find_subscriber(config, email)
    with Store.read_only(config.state_path) as store:
        edition = pipeline.next_edition(config, store, now, offline=offline)
    output.write_text(reader_copy(config, edition, subscriber, now).html, encoding="utf-8")


class Preview:
    """What the server shows; one instance per session, safe to use from many threads."""

    def __init__(self, config_path: Path, now: datetime | None, offline: bool) -> None:
        self.config_path, self.fixed_now = config_path, now
        config = self.config()
        with Store.read_only(config.state_path) as store:
            self.fresh: tuple[Entry, ...] = (
                () if offline else pipeline.poll(config, store, self.now(), persist=False).fresh
            )

    def config(self) -> Config:
        return config_mod.load(self.config_path)

    def now(self) -> datetime:
        return self.fixed_now or datetime.now(UTC)

    def edition(self, config: Config) -> tuple[Edition, bool]:
        """The next edition, and whether it is already recorded (then it is what was frozen)."""
        with Store.read_only(config.state_path) as store:
            stored = store.edition(pipeline.edition_day(config, self.now())) is not None
            return pipeline.next_edition(config, store, self.now(), fresh=self.fresh), stored

    def respond(self, path: str, query: dict[str, str]) -> tuple[int, str, str]:
        """(status, content type, body) for a GET; DigestErrors become an error page.

        For a 301 the second item is the Location.
        """
        config: Config | None = None
        try:
            config = self.config()
            return self._route(config, path, query)
        except DigestError as exc:
            return 500, "text/html", self._error(config, "Cannot build the preview", str(exc))

    def _route(self, config: Config, path: str, query: dict[str, str]) -> tuple[int, str, str]:
        if path == "/archive":
            return 301, "/archive/", ""
        if path == "/archive/":
            return 200, "text/html", archive.index(config, archive.listed(config), back="/")
        if path == "/archive/feed.xml":  # links relative to the feed: the preview has no public address
            return 200, "application/atom+xml", archive.feed(config, archive.listed(config, archive.FEED_ENTRIES), "")
        day = _ARCHIVE_DAY.match(path)
        if day:
            when = archive.parse_day(day[1])
            page = archive.page(config, when) if when else None
            if page is None:
                return 404, "text/html", self._error(config, "Not found", f"no archived edition {day[1]}")
            return (200, "text/html", page) if path.endswith("/") else (301, path + "/", "")
        if path == "/check":  # for headless browsers: the email in a frame of exactly `width` px, measured
            width = query.get("width", "600")
            if not width.isdigit() or not 200 <= int(width) <= 2000:
                return 400, "text/html", self._error(config, "Bad request", "width must be 200..2000")
            src = "/email" + (f"?subscriber={quote(query['subscriber'])}" if "subscriber" in query else "")
            return 200, "text/html", pages().get_template("check.html.j2").render(width=int(width), src=src)
        if path not in ("/", "/email", "/text", "/stories"):
            return 404, "text/html", self._error(config, "Not found", f"no page {path}")
        subscriber = find_subscriber(config, query.get("subscriber"))
        edition, stored = self.edition(config)
        common = {"newsletter": config.newsletter, "subscriber": subscriber, "edition": edition, "stored": stored}
        if path == "/stories":
            grouping = _grouping(config, edition)
            return 200, "text/html", self._page("stories.html.j2", page="stories", **common, **grouping)
        copy = reader_copy(config, edition, subscriber, self.now())
        if path == "/email":
            return 200, "text/html", copy.html
        if path == "/text":
            return 200, "text/html", self._page("text.html.j2", page="text", copy=copy, **common)
        return (
            200,
            "text/html",
            self._page(
                "index.html.j2", page="email", copy=copy, size=copy.size, subscribers=config.subscribers, **common
            ),
        )

    def _page(self, name: str, **context: Any) -> str:
        try:
            return pages().get_template(name).render(context)
        except jinja2.TemplateError as exc:
            raise DigestError(f"preview template {name}: {exc}") from exc

    def _error(self, config: Config | None, heading: str, message: str) -> str:
        newsletter = config.newsletter if config else NewsletterSettings()
        context = {"newsletter": newsletter, "subscriber": None, "page": "error"}
        return pages().get_template("error.html.j2").render(heading=heading, message=message, **context)


def _grouping(config: Config, edition: Edition) -> dict[str, Any]:
    sections: dict[str, list[Any]] = {}
    for story in edition.stories:
        sections.setdefault(story.section, []).append(story)
    return {
        "sections": list(sections.items()),
        "entry_count": sum(len(s.entries) for s in edition.stories),
        "threshold": config.grouping.threshold,
    }


class PreviewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, preview: Preview) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.preview = preview
        self.unsubscribe = web.make_handler(preview.config_path)
        self.hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class Handler(BaseHTTPRequestHandler):
    server: PreviewServer
    server_version = "digest-preview"

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if not self._our_host():
            return
        if url.path == web.PATH:
            self._unsubscribe()
            return
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        status, kind, body = self.server.preview.respond(url.path, query)
        self._send(status, kind, body)

    def do_POST(self) -> None:
        if not self._our_host():
            return
        if urlsplit(self.path).path == web.PATH:
            self._unsubscribe()
        else:
            self._send(405, "text/plain", "the preview only reads; POST is for /unsubscribe")

    def _our_host(self) -> bool:
        """Only our own address in Host: a web page cannot reach this server by DNS rebinding."""
        if self.headers.get("Host", "") in self.server.hosts:
            return True
        self._send(400, "text/plain", "unexpected Host header")
        return False

    def _unsubscribe(self) -> None:
        """Served like `digest run` does; the only write of the preview (a suppression, on POST)."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > web.MAX_BODY:
            self._send(413, "text/plain", "request body too large")
            return
        body = self.rfile.read(length) if length > 0 else b""
        parts = urlsplit(self.path)
        try:
            status, headers, page = self.server.unsubscribe(self.command, parts.path, parts.query, body)
        except DigestError as exc:
            self._send(503, "text/plain", f"unsubscribe is unavailable: {exc}")
            return
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(len(page))}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(page)

    def _send(self, status: int, kind: str, body: str) -> None:
        if status == 301:
            self.send_response(status)
            self.send_header("Location", kind)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


def serve(
    config_path: Path,
    *,
    port: int,
    now: datetime | None,
    offline: bool,
    subscriber: str | None,
    open_browser: bool,
    announce: Callable[[str], None],
) -> None:
    """Serve until Ctrl-C (or SIGTERM)."""
    preview = Preview(config_path, now, offline)
    chosen = find_subscriber(preview.config(), subscriber)
    try:
        server = PreviewServer(port, preview)
    except OSError as exc:
        raise DigestError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}; choose another --port") from exc
    url = f"http://127.0.0.1:{server.port}/" + (f"?subscriber={quote(chosen.email)}" if chosen else "")
    announce(f"Preview at {url} (Ctrl-C to stop)")
    if open_browser:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
