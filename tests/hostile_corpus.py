"""Serves tests/data/hostile (see its manifest.json) on 127.0.0.1, plus the hostile behaviours.

Every behaviour is bounded: loops end on their own (or when the client goes away), so the
server stops by itself even when a fetcher misbehaves.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from functools import cache
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from feedserver import FeedServer, Route

CORPUS = Path(__file__).parent / "data" / "hostile"
STUB_DNS = {
    "metadata.test": ["169.254.169.254"],
    "intranet.test": ["10.0.0.5"],
    "router.test": ["192.168.1.1"],
    "good.test": ["127.0.0.1"],
}
"""Names the stub resolver knows; every other name fails to resolve (no real DNS in tests)."""
GOOD_TITLES = [
    "Lunar gateway module passes its final thermal vacuum test",
    "Ground station network adds a polar site in Svalbard",
]
MOVED_TITLE = "Tracking station reopens after the storm"
ENORMOUS = 1_500_000
GZIP_BOMB = 128 * 1024 * 1024


def manifest() -> list[dict[str, Any]]:
    return list(json.loads((CORPUS / "manifest.json").read_text())["feeds"])


async def stub_resolve(host: str, port: int) -> list[str]:
    if host in STUB_DNS:
        return STUB_DNS[host]
    if host.replace(".", "").isdigit():
        return [host]
    raise OSError(f"stub resolver: unknown host {host}")


def rss(items: str, title: str = "Feed") -> bytes:
    head = '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0">'
    return f"{head}<channel><title>{title}</title>{items}</channel></rss>".encode()


def item(title: str, guid: str, extra: str = "") -> str:
    return (f"<item><title>{title}</title><link>https://ok.example/{guid}</link><guid>{guid}</guid>"
            f"<pubDate>Fri, 20 Nov 2026 16:00:00 GMT</pubDate><description>text</description>{extra}</item>")


@cache
def gzip_bomb() -> bytes:
    """GZIP_BOMB bytes of zeros, gzip-compressed (about 1000:1)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    return b"".join([*(packer.compress(block) for _ in range(GZIP_BOMB >> 20)), packer.flush()])


class Behaviours:
    """Handlers for the manifest's `behaviour` entries; `stop` ends the long-running ones."""

    def __init__(self, port2: int) -> None:
        self.port2 = port2
        self.stop = threading.Event()

    def route(self, behaviour: str) -> Route:
        kind, _, arg = behaviour.partition(":")
        if kind == "redirect":
            return Route(status=302, headers={"Location": arg.format(port2=self.port2)})
        if kind == "permanent":
            return Route(status=301, headers={"Location": arg})
        if kind == "status":
            return Route(status=int(arg))
        if kind == "redirect-loop":
            return Route(status=302, headers={"Location": "/redirect-loop"})
        if kind == "enormous-title":
            return Route(body=rss(item("Enormous " + "title " * (ENORMOUS // 6), "enormous-1")))
        if kind == "redos-author":
            return Route(body=rss(item("Author with a long name", "redos-1", f"<author>{'a' * 40000}</author>")))
        if kind == "gzip-bomb":
            return Route(body=gzip_bomb(), headers={"Content-Encoding": "gzip", "Content-Type": "application/rss+xml"})
        handler = {"huge": self.huge, "endless": self.endless, "slow-drip": self.drip, "hang": self.hang}[kind]
        return Route(handler=handler)

    def huge(self, h: BaseHTTPRequestHandler) -> None:
        block = rss(item("x" * 60000, "huge") * 16)
        self._stream(h, block, 200, length=len(block) * 200)

    def endless(self, h: BaseHTTPRequestHandler) -> None:
        self._stream(h, b"<rss version='2.0'><channel>" + rss(item("x" * 60000, "e")) * 10, 100_000)

    def _stream(self, h: BaseHTTPRequestHandler, block: bytes, times: int, length: int | None = None) -> None:
        h.send_response(200)
        if length:
            h.send_header("Content-Length", str(length))
        h.end_headers()
        try:
            for _ in range(times):
                if self.stop.is_set():
                    return
                h.wfile.write(block)
        except OSError:
            return

    def drip(self, h: BaseHTTPRequestHandler) -> None:
        body = rss(item("drip", "drip-1"))
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        try:
            for byte in body[:40]:
                if self.stop.wait(0.5):
                    return
                h.wfile.write(bytes([byte]))
                h.wfile.flush()
        except OSError:
            return

    def hang(self, h: BaseHTTPRequestHandler) -> None:
        self.stop.wait(20)


def serve(server: FeedServer, server2: FeedServer) -> Behaviours:
    """Registers the whole corpus on `server`; `server2` (127.0.0.2) serves a good feed."""
    behaviours = Behaviours(server2.port)
    for feed in manifest():
        if "file" in feed:
            server.add(feed["route"], (CORPUS / feed["file"]).read_bytes())
        else:
            server.routes[feed["route"]] = behaviours.route(feed["behaviour"])
    server.add("/good2.xml", rss(item(MOVED_TITLE, "moved-1"), "Moved"))
    server2.add("/good.xml", (CORPUS / "good.xml").read_bytes())
    return behaviours


def feeds_config(server: FeedServer) -> list[dict[str, Any]]:
    """[[feeds]] for every manifest entry: name = route, all in one section."""
    return [{"name": f["route"].strip("/"), "url": server.url(f["route"]), "section": "News"} for f in manifest()]


def wait_until(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False
