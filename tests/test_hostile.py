"""Hostile feeds through a full `digest send` (issue 10): bounded, contained, safe.

The corpus (tests/data/hostile, manifest.json) is served on 127.0.0.1 next to one good feed;
a second server on 127.0.0.2 is the target of a redirect that must be refused. The send runs
in a subprocess (so its peak memory can be measured) with a stub resolver and the same
loopback-only connect guard as conftest.py.
"""

from __future__ import annotations

import html.parser
import json
import re
import subprocess
import sys
import time
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import MakeConfig
from feedserver import FeedServer
from hostile_corpus import CORPUS, GOOD_TITLES, MOVED_TITLE, feeds_config, manifest, serve
from smtp_fault import FaultySMTPServer

from digest.cli import main

NOW = "2026-11-21T07:00:00+00:00"
TIMEOUT = 2.0
BOOT = r"""
import ipaddress, json, resource, socket, sys
sys.path.insert(0, sys.argv[1])
import hostile_corpus
import digest.fetch
digest.fetch.resolve = hostile_corpus.stub_resolve
real_connect = socket.socket.connect
def guarded(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not ipaddress.ip_address(address[0]).is_loopback:
        with open(sys.argv[2] + ".violations", "a") as out:
            out.write(repr(address) + "\n")
        raise OSError("connect outside loopback blocked by the test guard")
    return real_connect(self, address)
socket.socket.connect = guarded
from digest.cli import main
try:
    main(sys.argv[3:])
finally:
    with open(sys.argv[2], "w") as out:
        json.dump({"maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}, out)
"""




class _Attributes(html.parser.HTMLParser):
    """Collects every tag and attribute of the mailed HTML, as a browser would see them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs += [(k, v or "") for k, v in attrs]


def assert_safe_html(page: str) -> None:
    assert "<script" not in page.lower()
    assert not re.search(r"\bon\w+\s*=", page, re.I), re.search(r".{40}\bon\w+\s*=.{40}", page, re.I)
    assert "javascript:" not in page.lower() and "vbscript:" not in page.lower()
    seen = _Attributes()
    seen.feed(page)
    assert not seen.tags & {"script", "form", "iframe", "svg", "object", "embed", "input", "link", "noscript"}
    for name, value in seen.attrs:
        assert not name.startswith("on"), name
        if name in ("href", "src"):
            assert value.startswith(("http://", "https://", "mailto:", "#")), (name, value)


def test_positive_controls_the_corpus_is_hostile(feed_server: FeedServer, second_server: FeedServer) -> None:
    """The served bytes really carry the attacks that the send below must neutralise."""
    serve(feed_server, second_server)
    xss = (CORPUS / "xss.xml").read_bytes()
    for bait in (b"<script>", b"onerror=", b"javascript:", b"<form", b"<style>", b"jav&#x09;ascript:"):
        assert bait in xss
    assert b"\r\nBcc:" in (CORPUS / "header-injection.xml").read_bytes()
    assert "\u2028".encode() in (CORPUS / "header-injection.xml").read_bytes()
    assert b"<!ENTITY" in (CORPUS / "quadratic-blowup.xml").read_bytes()
    assert feed_server.routes["/redirect-metadata"].headers["Location"].startswith("http://metadata.test/")
    assert "127.0.0.2" in feed_server.routes["/redirect-loopback2"].headers["Location"]
    assert len(manifest()) >= 30


def test_hostile_corpus_through_a_full_send(
    make_config: MakeConfig,
    smtp_server: FaultySMTPServer,
    feed_server: FeedServer,
    second_server: FeedServer,
    tmp_path: Path,
) -> None:
    behaviours = serve(feed_server, second_server)
    config = make_config(
        smtp=smtp_server,
        feeds=feeds_config(feed_server),
        subscribers=[{"email": "ada@example.com", "name": "Ada"}],
        fetch={"timeout": TIMEOUT, "max_bytes": 3_000_000, "allow_hosts": ["127.0.0.1"]},
    )
    stats = tmp_path / "stats.json"
    tests_dir = str(Path(__file__).parent)
    args = ["--config", str(config), "send", "--now", NOW]
    start = time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, "-c", BOOT, tests_dir, str(stats), *args], capture_output=True, text=True, timeout=60
        )
    finally:
        behaviours.stop.set()
    elapsed = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    assert elapsed < 2 * TIMEOUT + 12, elapsed  # every feed is fetched concurrently under one deadline
    peak_mb = json.loads(stats.read_text())["maxrss_kb"] / 1024
    print(f"hostile send: {elapsed:.2f} s, peak RSS {peak_mb:.0f} MB")
    assert peak_mb < 400, peak_mb
    assert not Path(str(stats) + ".violations").exists()
    assert second_server.requests == []  # the redirect to 127.0.0.2 was refused before any connect
    assert "delivered to 1 of 1" in done.stdout, done.stdout

    (message,) = smtp_server.received
    parsed = BytesParser(policy=policy.strict).parsebytes(message.data)
    assert not parsed.defects
    for part in parsed.walk():
        assert not part.defects
    head = message.data.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"^(Bcc|Subject: injected)", head, re.M | re.I)
    assert sorted(k.lower() for k in parsed).count("subject") == 1
    page = parsed.get_body(("html",)).get_content()
    text = parsed.get_body(("plain",)).get_content()
    for title in [*GOOD_TITLES, MOVED_TITLE]:
        assert title in page and title in text
    assert "Hostile title" in text  # the hostile feed's entry is delivered, defanged
    assert_safe_html(page)
    assert "\u2028" not in page and "\x1b" not in page and "\x1b" not in text

    status = CliRunner().invoke(main, ["--config", str(config), "status"], catch_exceptions=False).stdout
    for feed in manifest():
        name = feed["route"].strip("/")
        line = next((x for x in status.splitlines() if x.strip().startswith(f"{name}:")), "")
        if feed["reason"] is None:
            assert not line or "moved permanently" in line, line
        else:
            assert line.strip().startswith(f"{name}: {feed['reason']}"), (name, line)
    assert f"moved: moved permanently to {feed_server.url('/good2.xml')}" in status


@pytest.mark.parametrize(
    ("tables", "feed_url", "key"),
    [
        ({"fetch": {"timeout": -1}}, None, "fetch.timeout"),
        ({"fetch": {"max_bytes": "10MB"}}, None, "fetch.max_bytes"),
        ({"fetch": {"max_redirects": 50}}, None, "fetch.max_redirects"),
        ({"fetch": {"allow_hosts": "127.0.0.1"}}, None, "fetch.allow_hosts"),
        ({"fetch": {"user_agent": "digest\u2028X-Injected: 1"}}, None, "fetch.user_agent"),
        ({"smtp": {"port": 70000}}, None, "smtp.port"),
        ({"smtp": {"security": "ssl3"}}, None, "smtp.security"),
        ({"schedule": {"send_at": "25:00"}}, None, "schedule.send_at"),
        ({"schedule": {"poll_every": "often"}}, None, "schedule.poll_every"),
        ({}, "file:///etc/passwd", "feeds[0].url"),
        ({}, "ftp://example.com/feed.xml", "feeds[0].url"),
        ({}, "javascript:alert(1)", "feeds[0].url"),
    ],
)
def test_malformed_config_values_give_one_clear_error_and_write_nothing(
    make_config: MakeConfig, tmp_path: Path, tables: dict[str, dict[str, object]], feed_url: str | None, key: str
) -> None:
    (tmp_path / "good.xml").write_bytes((CORPUS / "good.xml").read_bytes())  # local: no DNS in tests
    feeds = [{"name": "Good", "url": feed_url or "good.xml"}]
    smtp = tables.pop("smtp", None)  # make_config's own `smtp` argument is a server
    config = make_config(feeds=feeds, subscribers=[{"email": "ada@example.com"}], **tables)
    if smtp:
        config.write_text(config.read_text() + "\n[smtp]\n" + "".join(f"{k} = {v!r}\n" for k, v in smtp.items()))
    before = sorted(p.name for p in tmp_path.iterdir())
    result = CliRunner().invoke(main, ["--config", str(config), "send", "--now", NOW])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and f": {key}: " in lines[0], result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no state, no outbox
    good = make_config(feeds=[{"name": "Good", "url": "good.xml"}],
                       subscribers=[{"email": "ada@example.com"}])  # control: the same file without the fault
    assert CliRunner().invoke(main, ["--config", str(good), "send", "--dry-run", "--now", NOW]).exit_code == 0
