"""The fetcher: address policy (stub resolver, loopback-only guard), caps, deadlines, redirects.

Every refusal test has a positive control: the same setup with the policy relaxed does
reach the server (or the served bytes really are what the attack needs).
"""

from __future__ import annotations

import http.client
import time
import tracemalloc
import zlib

import pytest
from click.testing import CliRunner
from conftest import MakeConfig
from feedserver import FeedServer
from hostile_corpus import CORPUS, GOOD_TITLES, GZIP_BOMB, Behaviours, gzip_bomb, item, rss, stub_resolve

from digest import fetch
from digest.cli import main
from digest.models import FetchResult
from digest.settings import FeedSpec, FetchSettings

GOOD = (CORPUS / "good.xml").read_bytes()


@pytest.fixture(autouse=True)
def stub_dns(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every resolution goes through the stub (unknown names fail): never real DNS."""
    calls: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return await stub_resolve(host, port)

    monkeypatch.setattr(fetch, "resolve", resolve)
    return calls




def one(url: str, **settings: object) -> FetchResult:
    options: dict[str, object] = {"timeout": 3.0, "allow_hosts": ("127.0.0.1",), **settings}
    return fetch.fetch_all([FeedSpec("f", url)], {}, FetchSettings(**options))[0]  # type: ignore[arg-type]


def test_a_loopback_feed_is_refused_unless_allowed(feed_server: FeedServer) -> None:
    url = feed_server.add("/good.xml", GOOD)
    refused = one(url, allow_hosts=())
    assert refused.error and refused.error.startswith("refused address: 127.0.0.1")
    assert feed_server.requests == []
    allowed = one(url)  # positive control: the same feed with 127.0.0.1 allowed
    assert allowed.ok and allowed.body == GOOD and len(feed_server.requests) == 1


def test_redirect_to_another_loopback_address_is_refused(feed_server: FeedServer, second_server: FeedServer) -> None:
    target = second_server.add("/good.xml", GOOD)
    url = feed_server.add("/r", status=302, headers={"Location": target})
    result = one(url)
    assert result.error == "refused address: 127.0.0.2 (not a public address; see [fetch] allow_hosts)"
    assert second_server.requests == []
    # positive control: allowing 127.0.0.2 too, the redirect is followed to that server
    followed = one(url, allow_hosts=("127.0.0.1", "127.0.0.2"))
    assert followed.ok and followed.body == GOOD and len(second_server.requests) == 1


@pytest.mark.parametrize(
    ("target", "address"),
    [
        ("http://metadata.test/latest/meta-data/", "169.254.169.254"),
        ("http://intranet.test:8080/feed", "10.0.0.5"),
        ("https://router.test/feed", "192.168.1.1"),
    ],
)
def test_redirect_to_a_name_resolving_to_a_private_range_is_refused_before_connect(
    feed_server: FeedServer, stub_dns: list[str], target: str, address: str
) -> None:
    url = feed_server.add("/r", status=302, headers={"Location": target})
    result = one(url)  # the conftest guard fails the test if anything connects to `address`
    assert result.error and result.error.startswith("refused address: ") and address in result.error
    assert target.split("/")[2].split(":")[0] in stub_dns  # refused by our resolver's answer
    # positive control: the server does send that redirect (a naive client would follow it)
    conn = http.client.HTTPConnection("127.0.0.1", feed_server.port, timeout=3)
    conn.request("GET", "/r")
    assert conn.getresponse().getheader("Location") == target
    conn.close()


def test_allowed_names_are_connected_through_the_resolver(feed_server: FeedServer) -> None:
    """Positive control for the stub: `good.test` exists only in the stub, and it is fetched."""
    url = feed_server.add("/good.xml", GOOD).replace("127.0.0.1", "good.test")
    assert one(url, allow_hosts=("good.test",)).body == GOOD
    refused = one(url, allow_hosts=())
    assert refused.error and refused.error.startswith("refused address: good.test resolves to 127.0.0.1")


def test_connect_time_check_stops_dns_rebinding(monkeypatch: pytest.MonkeyPatch, feed_server: FeedServer) -> None:
    answers = [["93.184.216.34"], ["10.0.0.5"]]

    async def rebinding(host: str, port: int) -> list[str]:
        return answers.pop(0) if answers else ["10.0.0.5"]

    monkeypatch.setattr(fetch, "resolve", rebinding)
    result = one("http://rebind.test/feed.xml")
    assert result.error and "10.0.0.5" in result.error  # the hop check passed, the connect check refused
    assert answers == []  # positive control: both checks ran, the first one saw a public address


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/feed.xml", "gopher://127.0.0.1:70/"])
def test_redirect_to_other_schemes_is_refused(feed_server: FeedServer, url: str) -> None:
    result = one(feed_server.add("/r", status=302, headers={"Location": url}))
    assert result.error and result.error.startswith("refused URL: only http and https")


def test_blocked_ranges() -> None:
    for address in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
                    "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "::1", "fe80::1", "fc00::1",
                    "::ffff:10.0.0.5", "::ffff:127.0.0.1", "ff02::1", "::"):
        assert fetch.blocked(address), address
    for address in ("93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"):
        assert not fetch.blocked(address), address


def test_at_most_five_redirects(feed_server: FeedServer) -> None:
    feed_server.add("/good.xml", GOOD)
    for i in range(6):
        feed_server.add(f"/hop{i}", status=302, headers={"Location": f"/hop{i + 1}" if i < 5 else "/good.xml"})
    assert one(feed_server.url("/hop1")).body == GOOD  # 5 redirects: fine
    result = one(feed_server.url("/hop0"))  # 6 redirects: refused
    assert result.error == "too many redirects: over 5"
    assert one(feed_server.add("/loop", status=302, headers={"Location": "/loop"})).error == result.error


def test_gzip_bomb_is_cut_at_the_decompressed_cap_with_bounded_memory(feed_server: FeedServer) -> None:
    bomb = gzip_bomb()
    url = feed_server.add("/bomb", bomb, headers={"Content-Encoding": "gzip"})
    assert len(zlib.decompressobj(31).decompress(bomb, 2_000_001)) > 2_000_000  # control: it is a bomb
    tracemalloc.start()
    try:
        result = one(url, max_bytes=1_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.error == "too large: over 1000000 bytes (decompressed)"
    assert peak < 8_000_000, peak  # far below the bomb's GZIP_BOMB bytes
    assert GZIP_BOMB > 100 * 1_000_000
    small = zlib.compress(GOOD)  # positive control: an honest deflate body is inflated
    assert one(feed_server.add("/deflate", small, headers={"Content-Encoding": "deflate"})).body == GOOD


def test_huge_and_endless_bodies_are_cut(feed_server: FeedServer) -> None:
    behaviours = Behaviours(0)
    feed_server.routes["/endless"] = behaviours.route("endless")
    try:
        result = one(feed_server.url("/endless"), max_bytes=200_000)
    finally:
        behaviours.stop.set()
    assert result.error and result.error.startswith("too large")
    assert one(feed_server.add("/big", b"x" * 300_000), max_bytes=200_000).error == result.error
    assert one(feed_server.add("/fits", GOOD), max_bytes=200_000).body == GOOD  # control


def test_slow_drip_is_cut_at_the_total_deadline(feed_server: FeedServer) -> None:
    behaviours = Behaviours(0)
    feed_server.routes["/drip"] = behaviours.route("slow-drip")
    start = time.monotonic()
    try:
        result = one(feed_server.url("/drip"), timeout=1.0)
    finally:
        behaviours.stop.set()
    assert result.error == "timeout: no complete answer in 1 s"
    assert time.monotonic() - start < 2.5
    # control: each byte arrives well within any socket read timeout; only the total deadline ends it
    assert len(rss(item("drip", "drip-1"))) * 0.5 > 10


def test_status_codes_and_empty_bodies(feed_server: FeedServer) -> None:
    assert one(feed_server.add("/404", status=404)).error == "HTTP 404"
    assert one(feed_server.add("/500", status=500)).error == "HTTP 500"
    assert one(feed_server.add("/empty")).error == "empty response: HTTP 200 with no body"
    gone = one(feed_server.add("/gone", status=410))
    assert gone.gone and gone.error == f"gone: HTTP 410 at {feed_server.url('/gone')}"


def test_user_agent_and_moved_permanently(feed_server: FeedServer) -> None:
    feed_server.add("/new.xml", GOOD)
    result = one(feed_server.add("/old.xml", status=301, headers={"Location": "/new.xml"}))
    assert result.ok and result.new_url == feed_server.url("/new.xml")
    agent = feed_server.requests[-1][1]["User-Agent"]
    assert agent.startswith("digest/") and "http" in agent
    temporary = one(feed_server.add("/tmp.xml", status=302, headers={"Location": "/new.xml"}))
    assert temporary.ok and temporary.new_url is None  # control: a 302 is not a move


def test_per_host_spacing(feed_server: FeedServer) -> None:
    feed_server.add("/a", GOOD)
    feeds = [FeedSpec(str(i), feed_server.url("/a")) for i in range(3)]
    settings = FetchSettings(allow_hosts=("127.0.0.1",), per_host_delay=0.3)
    start = time.monotonic()
    results = fetch.fetch_all(feeds, {}, settings)
    assert all(r.ok for r in results)
    assert time.monotonic() - start >= 0.6  # three requests, at least 0.3 s apart


def test_gone_feed_is_not_polled_again_and_status_reports_it(
    make_config: MakeConfig, feed_server: FeedServer
) -> None:
    feeds = [{"name": "Good", "url": feed_server.add("/good.xml", GOOD)},
             {"name": "Gone", "url": feed_server.add("/gone", status=410)},
             {"name": "Moved", "url": feed_server.add("/old", status=308, headers={"Location": "/good.xml"})}]
    config = make_config(feeds=feeds, subscribers=[{"email": "a@example.com"}], fetch={"allow_hosts": ["127.0.0.1"]})
    for _ in range(2):
        done = CliRunner().invoke(main, ["--config", str(config), "fetch"])
        assert done.exit_code == 0, done.output
    assert [p for p, _ in feed_server.requests].count("/gone") == 1
    assert [p for p, _ in feed_server.requests].count("/good.xml") == 4  # control: the others are polled
    status = CliRunner().invoke(main, ["--config", str(config), "status"]).stdout
    assert f"Gone: gone: HTTP 410 at {feed_server.url('/gone')}" in status
    assert f"Moved: moved permanently to {feed_server.url('/good.xml')}" in status
    assert GOOD_TITLES[0] not in status
