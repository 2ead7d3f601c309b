"""Part of the fetch stage: HTTP proxies, as every HTTP tool honours them.

[fetch] proxy, else HTTPS_PROXY / HTTP_PROXY / NO_PROXY. The proxy is an http:// one: plain
http goes to it as absolute-URI requests, https through a CONNECT tunnel with TLS end to end
to the feed's host (the certificate is still verified against that host). The proxy itself
is the operator's choice and may be on a private address, so it is not subject to the
address policy; the feed's host is, and fetch.py checks it before it asks the proxy.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import ipaddress
from collections.abc import Awaitable, Callable, Mapping
from urllib.parse import unquote, urlsplit

_CHUNK = 64 * 1024
Resolve = Callable[[str, int], Awaitable[list[str]]]


class ProxyFailure(Exception):
    """The proxy could not be reached or would not carry the request; the message says why."""


@dataclasses.dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None = None


def parse_proxy(text: str) -> Proxy:
    """`http://[user:password@]host[:port]` (the scheme may be left out); ValueError if not."""
    parts = urlsplit(text if "://" in text else f"http://{text}")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError(f"not a valid proxy URL {text!r}") from None
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"expected an http://host:port proxy (https goes through its CONNECT), got {text!r}")
    authorization = None
    if parts.username is not None:
        token = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(token).decode("ascii")
    return Proxy(parts.hostname, port, authorization)


class ProxyRoute:
    """Which proxy carries a URL: `setting` ([fetch] proxy; "" = none, None = from `environ`).

    The environment is read as curl and Python read it: lower case first, then upper case;
    NO_PROXY lists host names (matching their subdomains too), `.domain`, IPs or networks, `*`.
    """

    def __init__(self, setting: str | None, environ: Mapping[str, str]) -> None:
        def env(name: str) -> str:
            return environ.get(name) or environ.get(name.upper()) or ""

        urls = (
            {"http": env("http_proxy"), "https": env("https_proxy")}
            if setting is None
            else dict.fromkeys(("http", "https"), setting)
        )
        self.proxies: dict[str, Proxy | str] = {}
        for scheme, url in urls.items():
            if url:
                try:
                    self.proxies[scheme] = parse_proxy(url)
                except ValueError as exc:
                    self.proxies[scheme] = str(exc)
        self.bypass = [n.strip().lower() for n in env("no_proxy").replace(" ", ",").split(",") if n.strip()]

    def for_url(self, url: str) -> Proxy | None:
        parts = urlsplit(url)
        proxy = self.proxies.get(parts.scheme)
        if proxy is None or self._bypassed((parts.hostname or "").lower(), parts.port):
            return None
        if isinstance(proxy, str):
            raise ProxyFailure(f"{parts.scheme}_proxy: {proxy}")
        return proxy

    def _bypassed(self, host: str, port: int | None) -> bool:
        for entry in self.bypass:
            if entry == "*":
                return True
            name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
            if entry_port and entry_port != str(port):
                continue
            name = name.removeprefix("*").removeprefix(".").strip("[]")
            try:
                if ipaddress.ip_address(host.strip("[]")) in ipaddress.ip_network(name, strict=False):
                    return True
                continue
            except ValueError:
                pass
            if host == name or host.endswith("." + name):
                return True
        return False


async def connect_proxy(proxy: Proxy, resolve: Resolve) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The operator's proxy: not subject to the address policy (it may well be on a private network)."""
    where = f"{proxy.host}:{proxy.port}"
    try:
        addresses = await resolve(proxy.host, proxy.port)
    except OSError as exc:
        raise ProxyFailure(f"cannot resolve the proxy {where}: {exc.strerror or exc}") from None
    error: OSError | None = None
    for address in addresses:
        try:
            return await asyncio.open_connection(address, proxy.port, limit=_CHUNK)
        except OSError as exc:
            error = exc
    raise ProxyFailure(f"cannot connect to the proxy {where}: {error.strerror if error else 'no address'}")


async def tunnel(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, port: int, proxy: Proxy, agent: str
) -> None:
    """CONNECT host:port through the proxy (the host was checked against the policy before)."""
    try:
        name = host.encode("idna").decode("ascii") if ":" not in host else f"[{host}]"
    except UnicodeError:
        raise ProxyFailure(f"not a valid host name {host[:200]!r}") from None
    lines = [f"CONNECT {name}:{port} HTTP/1.1", f"Host: {name}:{port}", f"User-Agent: {agent}"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace"))
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        raise ProxyFailure(f"the proxy {proxy.host}:{proxy.port} closed or garbled its answer to CONNECT") from None
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    code = status.split(" ", 2)[1] if status.count(" ") >= 1 else ""
    if not (code.isdigit() and 200 <= int(code) < 300):
        shown = "".join(c if c.isprintable() else "?" for c in status[:120])
        raise ProxyFailure(f"CONNECT {name}:{port} refused by the proxy: {shown}")
