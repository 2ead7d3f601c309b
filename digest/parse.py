"""Feed bytes -> normalised Entries.

feedparser gets bytes, never a URL (a string may make it open files or URLs). Before it
sees them, a document is refused when it is too large or declares entities in its DOCTYPE
(feedparser drops nested and external entities but expands one big literal entity without
limit: the quadratic blowup), and long author-like fields are cut short (feedparser's
author e-mail regex backtracks quadratically: 16 KB take 2 s). Every exception of one feed
is contained in its ParseResult. Titles and summaries come out as plain text; any HTML kept
is re-sanitised with nh3; links are http(s) only; dates become UTC and are clamped to `now`.
"""

from __future__ import annotations

import calendar
import codecs
import hashlib
import html
import logging
import os
import re
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus, urlsplit, urlunsplit

import nh3

from .models import Entry, FetchResult, ParseResult
from .settings import FeedSpec

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

log = logging.getLogger(__name__)
MAX_TITLE = 500
MAX_SUMMARY = 4000
MAX_DOCUMENT = 32 * 1024 * 1024
"""Bytes: a cap before parsing, whatever the fetch allowed (local files included)."""
MAX_AUTHOR = 256
_TRACKING = re.compile(
    r"^(utm_\w+|ns_\w+|at_\w+|ito|fbclid|gclid|gbraid|wbraid|dclid|msclkid|yclid|twclid|mc_cid|mc_eid|_hsenc|_hsmi"
    r"|_ga|_gl|ref|ref_src|cmpid|cmp|ncid|ocid|icid|smid|smtyp|igshid|xtor|wt_mc|s_cid|mkt_tok|sr_share|rss|feed"
    r"|__twitter_impression|oly_\w+|vero_\w+|spm|ftag|traffic_source)$",
    re.I,
)
_TAG = re.compile(r"<[^>]*>|<[A-Za-z/!?][^<>]*$")
_SPACE = re.compile(r"\s+")
_OPEN_TAG = re.compile(r"<[A-Za-z/!?][^<>]*$")
_TEXT_TAGS = set(nh3.ALLOWED_TAGS)
"""Kept (bare) on the way to plain text, so that each becomes a space as before."""
_SAFE_SCHEMES = {"http", "https", "mailto"}
_ALLOWED_TAGS = {"p", "br", "a", "em", "strong", "b", "i", "ul", "ol", "li", "blockquote", "code", "pre"}
_ENTITY_DECL = re.compile(rb"<!ENTITY", re.I)
_AUTHORISH = re.compile(
    rb"(<(?:[\w.-]+:)?(?:author|creator|contributor|publisher|managingEditor|webMaster|owner|email)\b[^<>]{0,500}>"
    rb"(?:\s*<!\[CDATA\[)?)([^<\]]{%d,})" % (MAX_AUTHOR * 4),
    re.I,
)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
    (b"\x00<\x00?", "utf-16-be"),
    (b"<\x00?\x00", "utf-16-le"),
    (b"\x4c\x6f\xa7\x94", "cp037"),
)
_XML_DECL_ENCODING = re.compile(rb"^(<\?xml[^>]*?)\sencoding=[\"'][^\"']*[\"']")


class Refused(Exception):
    """A document refused before parsing; the message is the reason."""


def parse_all(fetched: Sequence[FetchResult], now: datetime, max_entries: int = 200) -> list[ParseResult | None]:
    """Each fetched body parsed (None where there is none), in the order of `fetched`.

    Parsing is CPU-bound (feedparser: ~20 ms per 50-entry feed), so more than
    PARALLEL_MIN bodies are shared out to worker processes, one per core.
    """
    jobs = [(i, r.feed, r.body) for i, r in enumerate(fetched) if r.body]
    out: list[ParseResult | None] = [None] * len(fetched)
    workers = _workers(len(jobs))
    for i, result in _in_workers(jobs, now, max_entries, workers) if workers > 1 else _batch(jobs, now, max_entries):
        out[i] = result
    return out


PARALLEL_MIN = 8
"""Bodies per worker process below which forking one does not pay."""


def _workers(bodies: int) -> int:
    """Worker processes for `bodies` to parse: one per core, PARALLEL_MIN bodies each at least.

    Forked only from a single-threaded process (`digest send`, `digest fetch`): a fork while
    other threads hold locks (the daemon's scheduler and web threads) can deadlock the child.
    """
    if bodies < 2 * PARALLEL_MIN or threading.active_count() != 1:
        return 1
    return min(_cores(), bodies // PARALLEL_MIN)


def _pool(workers: int) -> ProcessPoolExecutor:
    """Worker processes forked from this one at the pool's first submit (no interpreter start-up)."""
    import multiprocessing  # with concurrent.futures, 15 ms a poll answered by 304s never needs
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))


def _cores() -> int:
    import multiprocessing

    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return len(usable) if "fork" in multiprocessing.get_all_start_methods() else 1


def _batch(
    jobs: Sequence[tuple[int, FeedSpec, bytes]], now: datetime, max_entries: int
) -> list[tuple[int, ParseResult]]:
    return [(i, parse_feed(feed, body, now, max_entries)) for i, feed, body in jobs]


def _in_workers(
    jobs: Sequence[tuple[int, FeedSpec, bytes]], now: datetime, max_entries: int, workers: int
) -> list[tuple[int, ParseResult]]:
    """Batches in forked workers; a batch whose worker failed (it died, say) is parsed here
    instead, so each feed still gets its own result."""
    batches = [jobs[k :: workers * 4] for k in range(workers * 4) if jobs[k :: workers * 4]]
    done: list[tuple[int, ParseResult]] = []
    with _pool(workers) as pool:
        futures: list[Future[list[tuple[int, ParseResult]]] | None] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: the workers only parse
            for batch in batches:
                try:
                    futures.append(pool.submit(_batch, batch, now, max_entries))
                except Exception:  # noqa: BLE001 - the pool broke already: parsed here below
                    futures.append(None)
        for batch, future in zip(batches, futures, strict=True):
            try:
                done += future.result() if future else _batch(batch, now, max_entries)
            except Exception as exc:  # noqa: BLE001 - a lost worker must not lose the poll
                log.warning("parse worker failed (%s: %s); parsing %d feeds here", type(exc).__name__, exc, len(batch))
                done += _batch(batch, now, max_entries)
    return done


class Parsing:
    """Parsing that starts while the fetch goes on: `take` each FetchResult as its fetch ends,
    then `results` once all have.

    When enough feeds are expected to answer in full (`bodies`: those with no ETag or
    Last-Modified to revalidate, say), worker processes are forked *before* the fetch opens
    any socket (a fork during it would hand the workers copies of live sockets and of the
    event loop's epoll set), and bodies go to them in batches as they arrive, while slower
    servers are still answering. Otherwise `results` is `parse_all` after the fetch, and a
    poll answered by 304s forks nothing.
    """

    def __init__(self, now: datetime, max_entries: int = 200, bodies: int = 0) -> None:
        self.now, self.max_entries = now, max_entries
        self.jobs: dict[int, tuple[FetchResult, Future[list[tuple[int, ParseResult]]] | None, int]] = {}
        self.waiting: list[FetchResult] = []
        self.pool: ProcessPoolExecutor | None = None
        workers = _workers(bodies)
        self.batch = max(1, bodies // (workers * 8))
        if workers > 1:
            self.pool = _pool(workers)
            try:  # the first submit forks every worker, now; each imports feedparser while the fetch waits
                for _ in range(workers):
                    self.pool.submit(_warm)
            except Exception:  # noqa: BLE001 - no workers: parse_all after the fetch
                self.close()

    def take(self, result: FetchResult) -> None:
        """One fetch has ended (called from the fetch's event loop: never blocks)."""
        if self.pool is None or not result.body:
            return
        self.waiting.append(result)
        if len(self.waiting) >= self.batch:
            self._submit()

    def _submit(self) -> None:
        batch, self.waiting = self.waiting, []
        if not batch or self.pool is None:
            return
        jobs = [(n, r.feed, r.body or b"") for n, r in enumerate(batch)]
        try:  # the workers exist already: no fork here
            future: Future[list[tuple[int, ParseResult]]] | None = self.pool.submit(
                _batch, jobs, self.now, self.max_entries
            )
        except Exception:  # noqa: BLE001 - the pool broke: parsed here in `results`
            future = None
        for n, result in enumerate(batch):
            self.jobs[id(result)] = (result, future, n)  # the result is kept, so its id stays its own

    def results(self, fetched: Sequence[FetchResult]) -> list[ParseResult | None]:
        """Each body's parse, in the order of `fetched`; a feed whose worker failed is parsed here."""
        if self.pool is None:
            return parse_all(fetched, self.now, self.max_entries)
        self._submit()
        out: list[ParseResult | None] = []
        for result in fetched:
            parsed: ParseResult | None = None
            if result.body:
                _, future, n = self.jobs.get(id(result), (result, None, 0))
                if future is not None:
                    try:
                        parsed = future.result()[n][1]
                    except Exception as exc:  # noqa: BLE001 - a lost worker must not lose the poll
                        log.warning("parse worker failed (%s: %s); parsing %s here", type(exc).__name__, exc,
                                    result.feed.name)  # fmt: skip
                parsed = parsed or parse_feed(result.feed, result.body, self.now, self.max_entries)
            out.append(parsed)
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None

    def __enter__(self) -> Parsing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _warm() -> None:
    import feedparser  # noqa: F401 - imported in each worker while the fetch is still waiting


def parse_feed(
    feed: FeedSpec, body: bytes, now: datetime, max_entries: int = 200, max_bytes: int = MAX_DOCUMENT
) -> ParseResult:
    """Parse one feed's bytes; any failure becomes the result's error, never an exception."""
    import feedparser  # ~100 ms of imports that a poll answered by 304s alone never needs

    try:
        # No sanitising in feedparser (a fifth of its time): every field is re-made here, HTML by
        # nh3's allow-list, the rest as plain text, links checked to be http(s).
        parsed = feedparser.parse(guard(body, max_bytes), sanitize_html=False, resolve_relative_uris=False)
    except Refused as exc:
        return ParseResult(feed, (), str(exc))
    except Exception as exc:  # noqa: BLE001 - feedparser has known crashers; contain them per feed
        return ParseResult(feed, (), _reason(f"bad XML: parser failed: {type(exc).__name__}: {exc}"))
    if not parsed.entries and not parsed.get("version"):
        kind = "an HTML page" if re.search(rb"<html[\s>]", body[:4096], re.I) else "no RSS or Atom document"
        return ParseResult(feed, (), f"not a feed: {kind}")
    entries: list[Entry] = []
    if parsed.get("bozo") and not parsed.entries:
        return ParseResult(feed, (), _reason(f"bad XML: {parsed.get('bozo_exception', 'not a feed')}"))
    for raw in parsed.entries[:max_entries]:
        try:
            entry = _entry(feed, raw, now)
        except Exception as exc:  # noqa: BLE001 - one odd entry is skipped, not the feed
            log.warning("feed %s: entry skipped: %s: %s", feed.name, type(exc).__name__, exc)
            continue
        if entry is not None:
            entries.append(entry)
    return ParseResult(feed, _without_furniture(entries))


FURNITURE_SHINGLE = 5  # words: a run this long, repeated to the end of several summaries, is the feed's furniture
_HASHTAGS = re.compile(r"(?:\s+#\w+)+\s*$")
_TRAILING_MARKS = re.compile(r"[\s\-–—|:•·]+$")


def _without_furniture(entries: list[Entry]) -> tuple[Entry, ...]:
    """Summaries without the tail a feed repeats under every entry, and without trailing hashtags.

    Video channels end every description with the same "Subscribe to ...! https://...  Watch
    more ..." blurb, which would fill the digest's summary and tie unrelated reports together.
    Only a tail that repeats to the very end in several of the feed's summaries is cut, so a
    phrase that merely recurs ("the death of George Floyd") stays; what is left must still say
    something, else the summary is kept whole.
    """
    k = FURNITURE_SHINGLE
    words = [_HASHTAGS.sub("", e.summary).split() for e in entries]
    seen: dict[tuple[str, ...], int] = {}
    for distinct in {tuple(w) for w in words}:
        for gram in {distinct[i : i + k] for i in range(len(distinct) - k + 1)}:
            seen[gram] = seen.get(gram, 0) + 1
    repeated = max(3, len(entries) // 10)
    out = []
    for entry, text in zip(entries, words, strict=True):
        cut = len(text)
        for i in range(len(text) - k, 0, -1):  # the longest suffix made of repeated runs
            if seen.get(tuple(text[i : i + k]), 0) < repeated:
                break
            cut = i
        kept = _TRAILING_MARKS.sub("", _HASHTAGS.sub("", " ".join(text[:cut])))
        if len(kept.split()) >= 3 and kept != entry.summary:
            entry = replace(entry, summary=kept)
        out.append(entry)
    return tuple(out)


def _reason(text: str) -> str:
    """One printable line: reasons are shown on terminals by `digest status`."""
    return "".join(c if c.isprintable() else " " for c in text)[:200]


def guard(body: bytes, max_bytes: int = MAX_DOCUMENT) -> bytes:
    """The document as UTF-8 bytes fit for feedparser, or Refused with the reason."""
    if len(body) > max_bytes:
        raise Refused(f"too large: document over {max_bytes} bytes")
    body = _utf8(body)
    if _ENTITY_DECL.search(body):
        raise Refused("bad XML: the document declares entities in its DOCTYPE (refused: entity expansion)")
    return _AUTHORISH.sub(lambda m: m.group(1) + _cut(m.group(2), MAX_AUTHOR), body)


def _utf8(body: bytes) -> bytes:
    """UTF-16/32/EBCDIC documents re-encoded as UTF-8 so that the checks above see them."""
    for mark, codec in _BOMS:
        if body.startswith(mark):
            if codec == "utf-8":
                return body
            try:
                text = body.decode(codec)
            except UnicodeDecodeError:
                raise Refused(f"bad XML: the document is not valid {codec}") from None
            return _XML_DECL_ENCODING.sub(rb"\1", text.lstrip("\ufeff").encode("utf-8"), count=1)
    return body


def _cut(text: bytes, limit: int) -> bytes:
    """At most `limit` bytes, not ending inside an entity reference or a UTF-8 sequence."""
    text = text[:limit]
    amp = text.rfind(b"&")
    if amp >= 0 and b";" not in text[amp:]:
        text = text[:amp]
    return text.decode("utf-8", "ignore").encode("utf-8")


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
        summary_html=_bounded_html(summary_html, MAX_SUMMARY * 2),
        categories=tuple(c for c in (plain_text(t.get("term") or "")[:60] for t in raw.get("tags", [])) if c)[:10],
        image=image,
        image_alt=alt or title,
    )


def plain_text(markup: str) -> str:
    """Tags dropped, entities decoded, whitespace collapsed: safe to escape anywhere.

    Tags are dropped again after decoding, so double-escaped markup does not come back as text.
    """
    if "<" in markup:  # tokenised as a browser would: bare tags left, no attributes, script/style dropped
        markup = nh3.clean(markup, tags=_TEXT_TAGS, attributes={"*": set()}, link_rel=None)
    text = _drop_tags(html.unescape(_drop_tags(markup)))
    if not text.isprintable():  # the common case is checked in C; the rare one char by char
        text = "".join(c if c.isprintable() else " " for c in text)
    return _SPACE.sub(" ", text).strip()


def _drop_tags(text: str) -> str:
    """`_TAG.sub(" ", text)` in linear time: after the last ">" only an unclosed tag can match
    (so "<<<<..." with no ">" is not rescanned from every "<")."""
    end = text.rfind(">") + 1
    return _TAG.sub(" ", text[:end]) + _OPEN_TAG.sub(" ", text[end:])


def sanitise_html(markup: str) -> str:
    """An allow-list re-sanitisation; link schemes are checked after entity decoding by nh3."""
    return nh3.clean(
        markup,
        tags=_ALLOWED_TAGS,
        attributes={"a": {"href"}},
        url_schemes=_SAFE_SCHEMES,
        link_rel="noopener noreferrer nofollow",
    )


def _bounded_html(markup: str, limit: int) -> str:
    """Sanitised, then cut, then sanitised again: a cut never leaves an unclosed tag behind."""
    clean = sanitise_html(markup[: limit * 4])
    cut = limit
    while len(clean) > limit and cut > 0:  # re-sanitising can add a closing tag or an escape
        cut -= max(64, len(clean) - limit)
        clean = sanitise_html(clean[: max(cut, 0)])
    return clean


def canonical_link(url: str) -> str:
    """The link readers get: scheme and host lowercased, default port, fragment and tracking parameters dropped.

    The query's other parameters keep their order and their exact encoding: a site may
    tell `a+b` from `a%20b`.
    """
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return ""
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return ""
    netloc = parts.netloc.rpartition("@")[2].lower()
    if port == {"http": 80, "https": 443}[scheme]:
        netloc = netloc.rpartition(":")[0]
    kept = [p for p in parts.query.split("&") if p and not _TRACKING.match(unquote_plus(p.partition("=")[0]))]
    return urlunsplit((scheme, netloc, parts.path or "/", "&".join(kept), ""))


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
