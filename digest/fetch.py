"""Poll feeds: bytes in, never parsed here.

Feeds are written by strangers, so every fetch is bounded and contained:

- a total deadline per feed (connect, redirects, headers and body: a 1 byte/s drip is cut off);
- a cap on the *decompressed* body (we inflate gzip/deflate ourselves, `max_length` at a time,
  so a gzip bomb never grows past the cap in memory);
- at most `max_redirects` hops, http/https only;
- no requests to loopback, private, link-local (cloud metadata), multicast, reserved or
  unspecified addresses: the host is resolved with `resolve()` and checked before every hop
  *and* again at connect time (the connection goes to the checked IP, so DNS rebinding
  between check and connect does not help), unless the host is listed in [fetch] allow_hosts.
  TLS still verifies the certificate against the host name.

Speed: every feed is fetched at once (up to [fetch] concurrency), each on a connection of its
own, kept only across its same-origin redirects: a poll fetches each feed once, so a pool
shared across feeds buys nothing and its bookkeeping grew with connections x requests. The
client is asyncio streams + h11 (which bounds the response head): ~0.5 ms of CPU per feed.

Every failure is contained in its FetchResult with a reason that starts with its kind
("timeout", "too large", "refused address", "HTTP 404", ...), so one bad feed never
stops the others and `digest status` can say why.

Proxies (fetch_proxy.py): [fetch] proxy, else HTTPS_PROXY / HTTP_PROXY / NO_PROXY; https
through CONNECT. The feed's host is still resolved here and refused if private before the
proxy hears of it; CONNECT names the host (the proxy's host rules and logs keep working), so
a proxy with split-horizon DNS should apply its own egress rules too. Bodies (fetch_body.py):
gzip/deflate, and br/zstd when their decoders are installed, all under the same cap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import logging
import os
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import h11

from .fetch_body import Body, Refused, TooLarge, accepted_encodings
from .fetch_proxy import Proxy, ProxyFailure, ProxyRoute, connect_proxy, tunnel
from .models import FetchResult, Validators
from .settings import FeedSpec, FetchSettings

__all__ = ["ProxyFailure", "Refused", "accepted_encodings", "check_url", "fetch_all", "resolve"]

log = logging.getLogger(__name__)

_ACCEPT = "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.1"
_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 64 * 1024
_URL_SAFE = "".join(chr(c) for c in range(33, 127) if chr(c) not in '"<>\\^`{|}')
"""Printable ASCII a request target may carry as is (existing escapes kept); the rest is %-encoded."""


async def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to. Module-level so that tests can stub DNS."""
    try:
        return [str(ipaddress.ip_address(host.strip("[]")))]  # a literal: no lookup (a thread hop each)
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@functools.lru_cache(maxsize=4096)
def blocked(address: str) -> bool:
    """True for any address a feed must not make us talk to (only global unicast passes)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        not ip.is_global
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_private
    )


async def checked_addresses(host: str, port: int, allow_hosts: Iterable[str]) -> list[str]:
    """The addresses to connect to, or Refused if any of them is not allowed."""
    try:
        addresses = await resolve(host, port)
    except OSError as exc:
        raise Refused(f"dns error: cannot resolve {host}: {exc.strerror or exc}") from None
    if not addresses:
        raise Refused(f"dns error: cannot resolve {host}: no address")
    if host.lower().strip("[]") in allow_hosts:
        return addresses
    bad = [a for a in addresses if blocked(a)]
    if bad:
        where = host if host.strip("[]") == bad[0] else f"{host} resolves to {bad[0]}"
        raise Refused(f"refused address: {where} (not a public address; see [fetch] allow_hosts)")
    return addresses


def fetch_all(
    feeds: Sequence[FeedSpec],
    validators: Mapping[str, Validators],
    settings: FetchSettings,
    on_result: Callable[[FetchResult], None] | None = None,
) -> list[FetchResult]:
    """Fetch every feed; results come back in the order of `feeds`; `on_result` hears each as it ends."""
    if not feeds:
        return []
    return asyncio.run(_fetch_all(feeds, validators, settings, on_result))


async def _fetch_all(
    feeds: Sequence[FeedSpec],
    validators: Mapping[str, Validators],
    settings: FetchSettings,
    on_result: Callable[[FetchResult], None] | None = None,
) -> list[FetchResult]:
    limit = asyncio.Semaphore(settings.concurrency)
    hosts = _HostSpacing(settings.per_host_delay)
    tls = _TlsContext(ProxyRoute(settings.proxy, os.environ))

    async def one(feed: FeedSpec) -> FetchResult:
        async with limit:
            if not feed.is_local:
                await hosts.wait(urlsplit(feed.url).hostname or "")
            start = time.monotonic()
            result = await _fetch_one(tls, feed, validators.get(feed.name, Validators()), settings)
            elapsed = time.monotonic() - start
            log.info("fetch %s: %s (%.2f s)", feed.name, result.error or result.status, elapsed)
            result = _timed(result, elapsed)
            if on_result is not None:
                on_result(result)
            return result

    return list(await asyncio.gather(*(one(f) for f in feeds)))


class _TlsContext:
    """One verifying SSL context per poll, built on first use (loading the CA bundle costs ~20 ms),
    and the poll's proxy route (read from the environment once)."""

    def __init__(self, proxies: ProxyRoute | None = None) -> None:
        self.context: ssl.SSLContext | None = None
        self.proxies = proxies or ProxyRoute("", {})

    def get(self) -> ssl.SSLContext:
        if self.context is None:
            import certifi  # only for https feeds: its import costs 25 ms of every start-up

            self.context = ssl.create_default_context(cafile=certifi.where())
            self.context.set_alpn_protocols(["http/1.1"])
        return self.context


async def _fetch_one(tls: _TlsContext, feed: FeedSpec, cached: Validators, settings: FetchSettings) -> FetchResult:
    if feed.is_local:
        return await asyncio.to_thread(_read_local, feed, settings.max_bytes)
    try:
        async with asyncio.timeout(settings.timeout):  # no extra task per feed, unlike wait_for
            return await _get(tls, feed, cached, settings)
    except TimeoutError:
        return FetchResult(feed, None, cached, 0, f"timeout: no complete answer in {settings.timeout:g} s")
    except Refused as exc:
        return FetchResult(feed, None, cached, 0, str(exc))
    except TooLarge:
        return FetchResult(feed, None, cached, 0, f"too large: over {settings.max_bytes} bytes (decompressed)")
    except ProxyFailure as exc:
        return FetchResult(feed, None, cached, 0, f"proxy error: {exc}")
    except Exception as exc:  # noqa: BLE001 - one feed's failure never stops the others
        return FetchResult(feed, None, cached, 0, f"network error: {type(exc).__name__}: {str(exc)[:200]}")


def _timed(result: FetchResult, elapsed: float) -> FetchResult:
    """With `elapsed`, and with no control characters in what a terminal will print."""
    error = "".join(c if c.isprintable() else "?" for c in result.error) if result.error else None
    new_url = result.new_url if result.new_url and result.new_url.isprintable() else None
    return dataclasses.replace(result, error=error, new_url=new_url, elapsed=elapsed)


def _read_local(feed: FeedSpec, max_bytes: int) -> FetchResult:
    try:
        with Path(feed.url).open("rb") as handle:
            body = handle.read(max_bytes + 1)
    except OSError as exc:
        return FetchResult(feed, None, error=f"cannot read {feed.url}: {exc.strerror or exc}")
    if len(body) > max_bytes:
        return FetchResult(feed, None, error=f"too large: over {max_bytes} bytes")
    return FetchResult(feed, body)


async def check_url(url: str, allow_hosts: Iterable[str]) -> None:
    """Refused unless `url` is http(s) with a host whose addresses pass the policy."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise Refused(f"refused URL: not a valid URL {url[:200]!r}") from None
    if parts.scheme not in ("http", "https"):
        raise Refused(f"refused URL: only http and https are fetched, got {url[:200]!r}")
    if not parts.hostname:
        raise Refused(f"refused URL: no host in {url[:200]!r}")
    await checked_addresses(parts.hostname, port, tuple(allow_hosts))


async def _get(tls: _TlsContext, feed: FeedSpec, cached: Validators, settings: FetchSettings) -> FetchResult:
    headers = [("User-Agent", settings.user_agent), ("Accept", _ACCEPT), ("Accept-Encoding", accepted_encodings())]
    if cached.etag:
        headers.append(("If-None-Match", cached.etag))
    if cached.last_modified:
        headers.append(("If-Modified-Since", cached.last_modified))
    url, new_url, permanent = feed.url, None, True
    allow = tuple(h.lower() for h in settings.allow_hosts)
    connection: _Connection | None = None
    try:
        for _hop in range(settings.max_redirects + 1):
            await check_url(url, allow)
            if connection is None or not connection.serves(url):
                if connection is not None:
                    connection.close()
                connection = await _Connection.open(url, allow, tls, settings.user_agent)
            response = await connection.get(url, headers)
            location = response.header(b"location")
            if response.status in _REDIRECTS and location:
                permanent = permanent and response.status in (301, 308)
                url = urljoin(url, location)
                new_url = url if permanent else new_url
                await connection.finish(response)
                continue
            return await _answer(feed, url, response, cached, settings.max_bytes, new_url)
    finally:
        if connection is not None:
            connection.close()
    return FetchResult(feed, None, cached, 0, f"too many redirects: over {settings.max_redirects}", new_url)


class _Response:
    """The answer to one GET, read with h11 (which bounds the size of the head)."""

    def __init__(self, reader: asyncio.StreamReader, conn: h11.Connection) -> None:
        self.reader, self.conn = reader, conn
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []

    async def next_event(self) -> Any:
        while (event := self.conn.next_event()) is h11.NEED_DATA:
            self.conn.receive_data(await self.reader.read(_CHUNK))
        return event

    async def start(self) -> None:
        event = await self.next_event()
        while isinstance(event, h11.InformationalResponse):
            event = await self.next_event()
        if not isinstance(event, h11.Response):
            raise h11.RemoteProtocolError(f"no response: {type(event).__name__}")
        self.status, self.headers = event.status_code, list(event.headers)

    async def chunks(self) -> AsyncIterator[bytes]:
        while isinstance(event := await self.next_event(), h11.Data):
            yield bytes(event.data)

    def header(self, name: bytes) -> str | None:
        for key, value in self.headers:
            if key == name:  # h11 lowercases names
                return bytes(value).decode("latin-1").strip()
        return None


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


class _Connection:
    """One feed's connection, to an address checked at connect time, kept only across that
    feed's redirects to the same origin. No pool across feeds: each feed is fetched once per
    poll, so sharing buys nothing, and a shared pool's bookkeeping grows with connections x requests.
    """

    def __init__(
        self,
        origin: tuple[str, str, int],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        forward: Proxy | None = None,
    ) -> None:
        self.origin, self.reader, self.writer = origin, reader, writer
        self.conn = h11.Connection(h11.CLIENT)
        self.forward = forward
        """A proxy that gets absolute-URI requests (plain http through a proxy)."""

    @classmethod
    async def open(cls, url: str, allow: tuple[str, ...], tls: _TlsContext, agent: str) -> _Connection:
        origin = scheme, host, port = _origin(url)
        proxy = tls.proxies.for_url(url)
        if proxy is None:
            reader, writer = await _connect(host, port, allow, tls.get() if scheme == "https" else None)
            return cls(origin, reader, writer)
        reader, writer = await connect_proxy(proxy, resolve)
        if scheme == "http":
            return cls(origin, reader, writer, proxy)
        try:
            await tunnel(reader, writer, host, port, proxy, agent)
            await writer.start_tls(tls.get(), server_hostname=host)
        except BaseException:
            writer.transport.abort()
            raise
        return cls(origin, reader, writer)

    def serves(self, url: str) -> bool:
        return self.conn.our_state is h11.IDLE and _origin(url) == self.origin

    async def get(self, url: str, headers: list[tuple[str, str]]) -> _Response:
        parts = urlsplit(url)
        try:
            authority = parts.netloc.rsplit("@", 1)[-1].encode("idna").decode("ascii")
        except UnicodeError:
            raise Refused(f"refused URL: not a valid host name in {url[:200]!r}") from None
        target = quote(urlunsplit(("", "", parts.path or "/", parts.query, "")), safe=_URL_SAFE)
        if self.forward is not None:  # absolute-form for the proxy (RFC 9112, 3.2.2)
            target = f"{parts.scheme}://{authority}{target}"
            if self.forward.authorization:
                headers = [*headers, ("Proxy-Authorization", self.forward.authorization)]
        request = h11.Request(method="GET", target=target, headers=[("Host", authority), *headers])
        self.writer.write(self.conn.send(request) + self.conn.send(h11.EndOfMessage()))
        response = _Response(self.reader, self.conn)
        await response.start()
        return response

    async def finish(self, response: _Response) -> None:
        """Reads the rest of a (small) redirect body so that the next hop may reuse the connection."""
        size = 0
        async for chunk in response.chunks():
            size += len(chunk)
            if size > _CHUNK:
                return
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()

    def close(self) -> None:
        self.writer.transport.abort()


async def _connect(
    host: str, port: int, allow: tuple[str, ...], context: ssl.SSLContext | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The first checked address that accepts; TLS verifies the certificate against `host`."""
    error: OSError | None = None
    for address in await checked_addresses(host, port, allow):
        try:
            return await asyncio.open_connection(
                address, port, ssl=context, server_hostname=host if context else None, limit=_CHUNK
            )
        except OSError as exc:
            error = exc
    assert error is not None
    raise error


async def _answer(
    feed: FeedSpec, url: str, response: _Response, cached: Validators, max_bytes: int, new_url: str | None
) -> FetchResult:
    status = response.status
    if status == 304:
        return FetchResult(feed, None, cached, 304, new_url=new_url)
    if status == 410:
        return FetchResult(feed, None, cached, 410, f"gone: HTTP 410 at {url}", new_url, gone=True)
    if status >= 300:
        return FetchResult(feed, None, cached, status, f"HTTP {status}", new_url)
    body = Body(response.header(b"content-encoding") or "identity", max_bytes)
    async for chunk in response.chunks():
        body.feed(chunk)
    content = body.value()
    if not content.strip():
        return FetchResult(feed, None, cached, status, f"empty response: HTTP {status} with no body", new_url)
    fresh = Validators(response.header(b"etag"), response.header(b"last-modified"))
    kind = response.header(b"content-type") or ""
    return FetchResult(feed, content, fresh, status, new_url=new_url, final_url=url, content_type=kind)


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
