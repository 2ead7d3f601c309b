"""Poll feeds: bytes in, never parsed here.

All feeds are fetched concurrently (asyncio + httpx), each bounded by a total deadline
and a size cap, with conditional GET. Every failure is contained in its FetchResult so
one bad feed never stops the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from .models import FeedSpec, FetchResult, FetchSettings, Validators

log = logging.getLogger(__name__)


def fetch_all(
    feeds: Sequence[FeedSpec],
    validators: Mapping[str, Validators],
    settings: FetchSettings,
) -> list[FetchResult]:
    """Fetch every feed; results come back in the order of `feeds`."""
    if not feeds:
        return []
    return asyncio.run(_fetch_all(feeds, validators, settings))


async def _fetch_all(
    feeds: Sequence[FeedSpec], validators: Mapping[str, Validators], settings: FetchSettings
) -> list[FetchResult]:
    limit = asyncio.Semaphore(settings.concurrency)
    hosts = _HostSpacing(settings.per_host_delay)
    timeout = httpx.Timeout(settings.timeout)
    limits = httpx.Limits(max_connections=settings.concurrency, max_keepalive_connections=settings.concurrency)
    headers = {"User-Agent": settings.user_agent, "Accept": _ACCEPT}
    async with httpx.AsyncClient(timeout=timeout, limits=limits, headers=headers, follow_redirects=False) as client:

        async def one(feed: FeedSpec) -> FetchResult:
            async with limit:
                start = time.monotonic()
                if feed.is_local:
                    result = await asyncio.to_thread(_read_local, feed, settings.max_bytes)
                else:
                    await hosts.wait(urlsplit(feed.url).hostname or "")
                    cached = validators.get(feed.name, Validators())
                    try:
                        result = await asyncio.wait_for(_get(client, feed, cached, settings), settings.timeout)
                    except TimeoutError:
                        result = FetchResult(
                            feed, None, cached, 0, f"timeout: no complete answer in {settings.timeout:g} s"
                        )
                log.info("fetch %s: %s (%.2f s)", feed.name, result.error or result.status, time.monotonic() - start)
                return _timed(result, time.monotonic() - start)

        return list(await asyncio.gather(*(one(f) for f in feeds)))


_ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1"


def _timed(result: FetchResult, elapsed: float) -> FetchResult:
    return FetchResult(
        result.feed, result.body, result.validators, result.status, result.error, result.new_url, result.gone, elapsed
    )


def _read_local(feed: FeedSpec, max_bytes: int) -> FetchResult:
    try:
        with Path(feed.url).open("rb") as handle:
            body = handle.read(max_bytes + 1)
    except OSError as exc:
        return FetchResult(feed, None, error=f"cannot read {feed.url}: {exc.strerror or exc}")
    if len(body) > max_bytes:
        return FetchResult(feed, None, error=f"too large: over {max_bytes} bytes")
    return FetchResult(feed, body)


async def _get(client: httpx.AsyncClient, feed: FeedSpec, cached: Validators, settings: FetchSettings) -> FetchResult:
    headers = {}
    if cached.etag:
        headers["If-None-Match"] = cached.etag
    if cached.last_modified:
        headers["If-Modified-Since"] = cached.last_modified
    url, new_url = feed.url, None
    try:
        for _hop in range(settings.max_redirects + 1):
            async with client.stream("GET", url, headers=headers) as response:
                if response.is_redirect and "location" in response.headers:
                    target = str(response.url.join(response.headers["location"]))
                    if response.status_code in (301, 308) and new_url is None and url == feed.url:
                        new_url = target
                    url = target
                    continue
                return await _answer(feed, response, cached, settings.max_bytes, new_url)
        return FetchResult(feed, None, cached, 0, f"too many redirects (over {settings.max_redirects})")
    except httpx.HTTPError as exc:
        return FetchResult(feed, None, cached, 0, f"network error: {type(exc).__name__}: {exc}")


async def _answer(
    feed: FeedSpec, response: httpx.Response, cached: Validators, max_bytes: int, new_url: str | None
) -> FetchResult:
    status = response.status_code
    if status == 304:
        return FetchResult(feed, None, cached, 304, new_url=new_url)
    if status == 410:
        return FetchResult(feed, None, cached, 410, "HTTP 410 Gone: the feed was removed", new_url, gone=True)
    if status >= 400:
        return FetchResult(feed, None, cached, status, f"HTTP {status}", new_url)
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > max_bytes:
            return FetchResult(feed, None, cached, status, f"too large: over {max_bytes} bytes", new_url)
        chunks.append(chunk)
    fresh = Validators(response.headers.get("etag"), response.headers.get("last-modified"))
    return FetchResult(feed, b"".join(chunks), fresh, status, new_url=new_url)


class _HostSpacing:
    """Polite per-host spacing: requests to one host start at least `delay` apart."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.next_slot: dict[str, float] = {}
        self.lock = asyncio.Lock()

    async def wait(self, host: str) -> None:
        if self.delay <= 0:
            return
        async with self.lock:
            now = time.monotonic()
            slot = max(now, self.next_slot.get(host, now))
            self.next_slot[host] = slot + self.delay
        await asyncio.sleep(slot - now)
