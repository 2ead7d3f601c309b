"""Feed bytes -> normalised Entries.

feedparser gets bytes, never a URL. Titles and summaries come out as plain text; any HTML
kept is re-sanitised with nh3. Dates become UTC and are clamped to `now`.
"""

from __future__ import annotations

import calendar
import hashlib
import html
import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import feedparser
import nh3

from .models import Entry, FeedSpec, ParseResult

MAX_TITLE = 500
MAX_SUMMARY = 4000
_TRACKING = re.compile(
    r"^(utm_\w+|fbclid|gclid|dclid|msclkid|mc_cid|mc_eid|_hsenc|_hsmi|ref|ref_src|cmpid|ncid|igshid)$", re.I
)
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_SAFE_SCHEMES = {"http", "https", "mailto"}
_ALLOWED_TAGS = {"p", "br", "a", "em", "strong", "b", "i", "ul", "ol", "li", "blockquote", "code", "pre"}


def parse_feed(feed: FeedSpec, body: bytes, now: datetime, max_entries: int = 200) -> ParseResult:
    """Parse one feed's bytes; any failure becomes the result's error, never an exception."""
    try:
        parsed = feedparser.parse(body, sanitize_html=True, resolve_relative_uris=True)
    except Exception as exc:  # noqa: BLE001 - feedparser has known crashers; contain them per feed
        return ParseResult(feed, (), f"bad feed: parser failed: {type(exc).__name__}")
    if not parsed.entries:
        if parsed.get("bozo"):
            reason = str(parsed.get("bozo_exception", "not a feed"))[:200]
            return ParseResult(feed, (), f"bad XML: {reason}")
        if not parsed.get("version"):
            return ParseResult(feed, (), "not a feed: no RSS or Atom document found")
    entries: list[Entry] = []
    for raw in parsed.entries[:max_entries]:
        entry = _entry(feed, raw, now)
        if entry is not None:
            entries.append(entry)
    return ParseResult(feed, tuple(entries))


def _entry(feed: FeedSpec, raw: Any, now: datetime) -> Entry | None:
    link = canonical_link(str(raw.get("link") or ""))
    title = plain_text(str(raw.get("title") or ""))[:MAX_TITLE]
    summary_html = str(raw.get("summary") or "")
    summary = plain_text(summary_html)[:MAX_SUMMARY]
    if not title and not summary:
        return None
    guid = str(raw.get("id") or "")[:1000]
    if not title:
        title = _shorten(summary, 120)
    identity = guid or link or f"{title}\n{summary}"
    entry_id = hashlib.sha256(f"{feed.name}\n{identity}".encode()).hexdigest()[:24]
    image, alt = _image(raw)
    return Entry(
        id=entry_id,
        feed=feed.name,
        link=link,
        title=title,
        summary=summary,
        published=_published(raw, now),
        section=feed.section,
        priority=feed.priority,
        guid=guid,
        summary_html=sanitise_html(summary_html)[: MAX_SUMMARY * 2],
        categories=tuple(plain_text(t.get("term", ""))[:60] for t in raw.get("tags", []) if t.get("term"))[:10],
        image=image,
        image_alt=alt or title,
    )


def plain_text(markup: str) -> str:
    """Tags dropped, entities decoded, whitespace collapsed: safe to escape anywhere."""
    text = html.unescape(_TAG.sub(" ", markup))
    text = "".join(c if c.isprintable() else " " for c in text)
    return _SPACE.sub(" ", text).strip()


def sanitise_html(markup: str) -> str:
    """An allow-list re-sanitisation; link schemes are checked after entity decoding by nh3."""
    return nh3.clean(
        markup,
        tags=_ALLOWED_TAGS,
        attributes={"a": {"href"}},
        url_schemes=_SAFE_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )


def canonical_link(url: str) -> str:
    """Scheme and host lowercased, fragment and tracking parameters dropped."""
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return ""
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _TRACKING.match(k)])
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", query, ""))


def _published(raw: Any, now: datetime) -> datetime:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        value = raw.get(key)
        if isinstance(value, time.struct_time):
            try:
                stamp = datetime.fromtimestamp(calendar.timegm(value), UTC)
            except (OverflowError, ValueError, OSError):
                continue
            return min(stamp, now)
    return now


def _image(raw: Any) -> tuple[str | None, str]:
    candidates: list[dict[str, Any]] = [*raw.get("media_content", []), *raw.get("media_thumbnail", [])]
    candidates += [link for link in raw.get("links", []) if link.get("rel") == "enclosure"]
    candidates += list(raw.get("enclosures", []))
    for item in candidates:
        url = str(item.get("url") or item.get("href") or "")
        kind = str(item.get("type") or item.get("medium") or "image")
        if (url.startswith(("https://", "http://"))) and kind.startswith("image"):
            return canonical_link(url) or None, ""
    return None, ""


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rsplit(" ", 1)[0] + "…"
