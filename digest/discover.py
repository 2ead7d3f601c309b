"""From a site's address to the feeds it offers (`digest feeds add`).

Operators know a site (https://spacemagz.example/), rarely its feed URL. Like feed readers,
we fetch the page through the same bounded, SSRF-safe fetcher as every poll, read its
`<link rel="alternate">` feeds (relative hrefs resolved against the page's final URL and its
`<base href>`), and only when it has none try the usual paths at the site's root. Every
candidate is fetched and parsed before it is offered: what `feeds add` writes is a feed that
worked a moment ago, with its own title and newest entries to show.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from . import fetch, parse
from .errors import DigestError
from .models import FetchResult
from .settings import FeedSpec, FetchSettings

FEED_TYPES = {
    "application/rss+xml": "RSS",
    "application/atom+xml": "Atom",
    "application/feed+json": "JSON Feed",
    "application/json": "JSON Feed",
    "application/rdf+xml": "RSS",
    "application/xml": "RSS",
    "text/xml": "RSS",
}
USUAL_PATHS = ("/feed", "/rss.xml", "/atom.xml", "/index.xml", "/feed.xml", "/rss")
SHOWN_ENTRIES = 3


class DiscoveryError(DigestError):
    """No usable feed at the address; the message says what was tried."""


@dataclass(frozen=True)
class Found:
    """A feed that was fetched and parsed just now."""

    url: str
    title: str
    newest: tuple[str, ...]
    """Titles of its newest entries (at most SHOWN_ENTRIES)."""
    entries: int


class _Links(HTMLParser):
    """`<link rel="alternate" type=feed href=...>` and `<base href>`, in document order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.links: list[tuple[str, str, str]] = []  # (href, type, title)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k.lower(): (v or "").strip() for k, v in attrs}
        if tag == "base" and values.get("href") and self.base is None:
            self.base = values["href"]
        rels = values.get("rel", "").lower().split()
        kind = values.get("type", "").lower().split(";")[0].strip()
        if tag == "link" and "alternate" in rels and kind in FEED_TYPES and values.get("href"):
            self.links.append((values["href"], kind, values.get("title", "")))


def feed_links(html: bytes, page_url: str) -> list[tuple[str, str]]:
    """(absolute URL, type) of every feed the page links to, duplicates dropped, in page order."""
    reader = _Links()
    reader.feed(html.decode("utf-8", "replace")[: 2 * 1024 * 1024])
    reader.close()
    base = urljoin(page_url, reader.base) if reader.base else page_url
    found: dict[str, str] = {}
    for href, kind, _title in reader.links:
        url = urljoin(base, href)
        if urlsplit(url).scheme in ("http", "https"):
            found.setdefault(url.split("#", 1)[0], kind)
    return list(found.items())


def discover(url: str, settings: FetchSettings, now: datetime | None = None) -> list[Found]:
    """The feeds at `url` (a feed itself, or a page that offers feeds); DiscoveryError if none."""
    now = now or datetime.now(UTC)
    if not re.match(r"^https?://", url, re.I):
        url = f"https://{url}"  # "spacemagz.example" as typed
    (page,) = fetch.fetch_all([FeedSpec("page", url)], {}, settings)
    if page.error or page.body is None:
        raise DiscoveryError(f"cannot fetch {url}: {page.error or 'no content'}")
    direct = _as_feed(page, now, settings.max_entries)
    if direct is not None:
        return [direct]
    if not _looks_like_html(page):
        raise DiscoveryError(f"{url}: {_why_not(page, now)}")
    links = feed_links(page.body, page.final_url or url)
    supported = [u for u, kind in links if FEED_TYPES[kind] != "JSON Feed"]
    candidates = supported or [urljoin(page.final_url or url, p) for p in USUAL_PATHS]
    found, reasons = _fetch_feeds(candidates, settings, now)
    if found:
        return found
    if links and not supported:
        raise DiscoveryError(f"{url} offers only a JSON Feed ({links[0][0]}), which digest does not read yet")
    if supported:
        raise DiscoveryError(f"{url} links to {len(supported)} feed(s), none readable: {supported[0]}: {reasons[0]}")
    tried = ", ".join(USUAL_PATHS)
    raise DiscoveryError(
        f'no feed found at {url}: the page has no <link rel="alternate"> feed and none of {tried} is a feed;'
        " give the feed's own URL"
    )


def _fetch_feeds(urls: list[str], settings: FetchSettings, now: datetime) -> tuple[list[Found], list[str]]:
    """The candidates that are feeds (in order, one per final URL), and why each other one is not."""
    results = fetch.fetch_all([FeedSpec(str(i), u) for i, u in enumerate(urls)], {}, settings)
    found: dict[str, Found] = {}
    reasons = []
    for result in results:
        feed = _as_feed(result, now, settings.max_entries) if result.ok else None
        if feed is not None:
            found.setdefault(feed.url, feed)  # /feed and /rss.xml are often one feed
        else:
            reasons.append(result.error or ("an HTML page" if _looks_like_html(result) else _why_not(result, now)))
    return list(found.values()), reasons


def _as_feed(result: FetchResult, now: datetime, max_entries: int) -> Found | None:
    if result.body is None or _looks_like_html(result):
        return None
    parsed = parse.parse_feed(result.feed, result.body, now, max_entries)
    if parsed.error:
        return None
    newest = sorted(parsed.entries, key=lambda e: e.published, reverse=True)[:SHOWN_ENTRIES]
    url = result.final_url or result.feed.url
    return Found(url, feed_title(result.body) or urlsplit(url).hostname or url, tuple(e.title for e in newest),
                 len(parsed.entries))  # fmt: skip


def _why_not(result: FetchResult, now: datetime) -> str:
    return parse.parse_feed(result.feed, result.body or b"", now).error or "not a feed"


def _looks_like_html(result: FetchResult) -> bool:
    kind = result.content_type.lower()
    head = (result.body or b"")[:4096].lstrip().lower()
    return "html" in kind or head.startswith((b"<!doctype html", b"<html")) or b"<html" in head[:512]


def feed_title(body: bytes) -> str:
    """The feed's own title as one clean line (it becomes the default outlet name)."""
    import feedparser  # already imported by parse; kept local for start-up elsewhere

    title = feedparser.parse(parse.guard(body), sanitize_html=False).feed.get("title", "")
    text = parse.plain_text(str(title))
    return " ".join(text.split())[:120]
