"""Proxies (a real CONNECT proxy on 127.0.0.1) and brotli/zstd bodies under the size cap."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest
from conftest import running
from feedserver import FeedServer
from hostile_corpus import CORPUS, stub_resolve
from proxyserver import ProxyServer

from digest import fetch, fetch_body
from digest.fetch_proxy import ProxyRoute, parse_proxy
from digest.models import FetchResult
from digest.settings import FeedSpec, FetchSettings

GOOD = (CORPUS / "good.xml").read_bytes()
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def stub_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names resolve through the stub only (intranet.test -> 10.0.0.5, ...); never real DNS."""
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        if host == "localhost":
            return ["127.0.0.1"]
        return await stub_resolve(host, port)

    monkeypatch.setattr(fetch, "resolve", resolve)
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    return calls


@pytest.fixture
def proxy() -> Iterator[ProxyServer]:
    # the proxy's own name table: what *it* would resolve these names to
    yield from running(ProxyServer({"localhost": "127.0.0.1", "intranet.test": "127.0.0.1", "feeds.test": "127.0.0.1"}))


def one(url: str, **settings: object) -> FetchResult:
    options: dict[str, object] = {"timeout": 5.0, "allow_hosts": ("127.0.0.1",), **settings}
    return fetch.fetch_all([FeedSpec("f", url)], {}, FetchSettings(**options))[0]  # type: ignore[arg-type]


def test_plain_http_goes_through_the_proxy_as_an_absolute_uri(
    feed_server: FeedServer, proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = feed_server.add("/feed.xml", GOOD)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    result = one(url)
    assert result.ok and result.body == GOOD
    assert proxy.lines() == [f"GET {url} HTTP/1.1"]
    assert feed_server.requests[0][0] == "/feed.xml"  # the proxy forwarded it
    monkeypatch.setenv("NO_PROXY", "example.org, 127.0.0.1")  # control: a bypassed host goes direct
    assert one(url).ok and len(proxy.requests) == 1 and len(feed_server.requests) == 2


@pytest.fixture
def tls_feed(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """An HTTPS feed server on 127.0.0.1 with a self-signed certificate for "localhost"."""
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    server = FeedServer()
    server.add("/feed.xml", GOOD)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    for started in running(server):
        yield started.port, cert


def test_https_goes_through_a_connect_tunnel_with_tls_to_the_feed(
    tls_feed: tuple[int, Path], proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, cert = tls_feed
    monkeypatch.setattr(certifi, "where", lambda: str(cert))
    monkeypatch.setenv("https_proxy", proxy.url)
    result = one(f"https://localhost:{port}/feed.xml", allow_hosts=("localhost",))
    assert result.ok and result.body == GOOD, result.error
    line, headers = proxy.requests[0]
    assert line == f"CONNECT localhost:{port} HTTP/1.1"  # the host name, not our resolved address
    assert headers["Host"] == f"localhost:{port}"
    # control: TLS is end to end: a certificate we do not trust fails through the tunnel too
    monkeypatch.setattr(certifi, "where", lambda: certifi.core.where())
    untrusted = one(f"https://localhost:{port}/feed.xml", allow_hosts=("localhost",))
    assert untrusted.error and "CERTIFICATE_VERIFY_FAILED" in untrusted.error
    assert len(proxy.requests) == 2


@pytest.mark.parametrize(
    ("url", "variable", "address"),
    [("http://intranet.test/feed.xml", "HTTP_PROXY", "10.0.0.5"), ("https://router.test/feed", "HTTPS_PROXY", "192.168.1.1")],
)
def test_a_private_target_stays_refused_through_the_proxy(
    proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch, stub_dns: list[str], url: str, variable: str, address: str
) -> None:
    monkeypatch.setenv(variable, proxy.url)
    result = one(url)
    assert result.error and result.error.startswith("refused address: ") and address in result.error
    assert proxy.requests == []  # the proxy never heard of it
    assert url.split("/")[2] in stub_dns  # refused on our own resolution


def test_the_refusal_is_what_stops_a_private_target(
    feed_server: FeedServer, proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Positive control: allowed, the same private name is fetched through the proxy (which maps it here)."""
    feed_server.add("/feed.xml", GOOD)
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    url = f"http://intranet.test:{feed_server.port}/feed.xml"
    assert one(url).error
    allowed = one(url, allow_hosts=("intranet.test",))
    assert allowed.ok and allowed.body == GOOD
    assert proxy.lines() == [f"GET {url} HTTP/1.1"]


def test_config_proxy_overrides_the_environment_and_carries_credentials(
    feed_server: FeedServer, proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = feed_server.add("/feed.xml", GOOD)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    broken = one(url)
    assert broken.error and broken.error.startswith("proxy error: cannot connect to the proxy 127.0.0.1:9")
    assert one(url, proxy="").ok  # "" = no proxy, whatever the environment says
    assert proxy.requests == []
    configured = one(url, proxy=f"http://ada:s%40cret@127.0.0.1:{proxy.port}")
    assert configured.ok and configured.body == GOOD
    assert proxy.requests[0][1]["Proxy-Authorization"] == "Basic YWRhOnNAY3JldA=="  # ada:s@cret


def test_a_proxy_that_refuses_connect_is_reported(proxy: ProxyServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    result = one("https://feeds.test:8443/feed.xml", allow_hosts=("feeds.test",), proxy=None)
    assert result.error is not None and "dns error" in result.error  # feeds.test is unknown to our resolver
    result = one("https://good.test:1/feed.xml", allow_hosts=("good.test",))  # the proxy has no route to good.test
    assert result.error == "proxy error: CONNECT good.test:1 refused by the proxy: HTTP/1.1 403 Forbidden"


def test_proxy_route_rules() -> None:
    route = ProxyRoute(None, {"HTTPS_PROXY": "http://p:3128", "http_proxy": "p2:8080",
                              "NO_PROXY": ".internal.example, 10.0.0.0/8, api.example:8443, [::1]"})
    assert route.for_url("https://news.example/feed") == parse_proxy("http://p:3128")
    assert route.for_url("http://news.example/feed") == parse_proxy("http://p2:8080")
    for bypassed in ("https://a.internal.example/", "https://internal.example/", "http://10.1.2.3/",
                     "https://api.example:8443/", "http://[::1]/"):
        assert route.for_url(bypassed) is None, bypassed
    assert route.for_url("https://api.example/") is not None  # another port is not bypassed
    assert route.for_url("https://notinternal.example/") is not None  # suffix on a dot boundary only
    assert ProxyRoute(None, {"NO_PROXY": "*", "HTTPS_PROXY": "http://p:1"}).for_url("https://x.example/") is None
    assert ProxyRoute("", {"HTTPS_PROXY": "http://p:1"}).for_url("https://x.example/") is None
    with pytest.raises(fetch.ProxyFailure, match="https_proxy"):
        ProxyRoute(None, {"HTTPS_PROXY": "socks5://p:1080"}).for_url("https://x.example/")


# --------------------------------------------------------------------------- brotli / zstd


def test_brotli_and_zstd_are_announced_and_decoded(feed_server: FeedServer) -> None:
    brotli = pytest.importorskip("brotli")
    zstandard = pytest.importorskip("zstandard")
    assert fetch.accepted_encodings() == "gzip, deflate, br, zstd"
    br = one(feed_server.add("/br", brotli.compress(GOOD), headers={"Content-Encoding": "br"}))
    zst = one(feed_server.add("/zst", zstandard.ZstdCompressor().compress(GOOD), headers={"Content-Encoding": "zstd"}))
    assert br.body == GOOD and zst.body == GOOD
    assert feed_server.requests[0][1]["Accept-Encoding"] == "gzip, deflate, br, zstd"
    broken = one(feed_server.add("/broken", b"\x00not brotli" * 10, headers={"Content-Encoding": "br"}))
    assert broken.error and broken.error.startswith("refused content: broken br body")


def test_without_the_decoders_br_and_zstd_are_neither_asked_for_nor_accepted(
    feed_server: FeedServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    brotli = pytest.importorskip("brotli")
    monkeypatch.setattr(fetch_body, "_brotli", lambda: None)
    monkeypatch.setattr(fetch_body, "_zstd", lambda: None)
    assert fetch.accepted_encodings() == "gzip, deflate"
    result = one(feed_server.add("/br", brotli.compress(GOOD), headers={"Content-Encoding": "br"}))
    assert result.error == "refused content: unsupported Content-Encoding 'br'"
    assert feed_server.requests[0][1]["Accept-Encoding"] == "gzip, deflate"


@pytest.mark.parametrize("coding", ["br", "zstd"])
def test_brotli_and_zstd_bombs_are_cut_at_the_cap_with_bounded_memory(feed_server: FeedServer, coding: str) -> None:
    size = 32 * 1024 * 1024
    if coding == "br":
        brotli = pytest.importorskip("brotli")
        bomb = brotli.compress(bytes(size), quality=5)
    else:
        zstandard = pytest.importorskip("zstandard")
        bomb = zstandard.ZstdCompressor(level=3).compress(bytes(size))
    assert len(bomb) < size // 1000  # control: a small body that inflates 1000-fold and more
    url = feed_server.add("/bomb", bomb, headers={"Content-Encoding": coding})
    tracemalloc.start()
    try:
        result = one(url, max_bytes=1_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.error == "too large: over 1000000 bytes (decompressed)"
    assert peak < 8_000_000, peak
    fits = one(url, max_bytes=size)  # control: with a cap above it, the same body decodes whole
    assert fits.ok and fits.body is not None and len(fits.body) == size
