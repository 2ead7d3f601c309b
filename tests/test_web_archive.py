"""The web archive `digest serve` answers: where the emails' "View in browser" and "N more
stories on the web" links lead. A real uvicorn server on 127.0.0.1, a real send into a
Maildir, the links followed from the delivered email; the page read in headless Chromium.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import feedparser
import httpx
import pytest
from conftest import MakeConfig
from test_preview import snapshot
from test_web_browser import browser, maildir_messages  # noqa: F401  (browser: the module's Chromium fixture)
from test_web_signup import DAY1, html_part, start

from digest import config as config_mod
from digest.store import Store

DAY = DAY1[:10]


@pytest.fixture
def sent(make_config: MakeConfig) -> Iterator[tuple[Path, str, str]]:
    """A server, then a send of DAY1 whose email keeps 2 stories: (config, base, Ada's email HTML)."""
    config = make_config(newsletter={"max_stories": 2})
    server, base = start(config)
    try:
        done = subprocess.run(  # its own process: Playwright's sync API may hold this thread's event loop
            [sys.executable, "-m", "digest", "--config", str(config), "send", "--now", DAY1],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "stories (" in done.stdout and "more on the web)" in done.stdout, done.stdout
        [ada] = [m for m in maildir_messages(config) if "ada@example.com" in str(m["To"])]
        yield config, base, html_part(ada)
    finally:
        server.shutdown()
        server.server_close()


def test_the_emails_web_links_lead_to_every_story(sent: tuple[Path, str, str]) -> None:
    config, base, email = sent
    with Store.read_only(config_mod.load(config).state_path) as store:
        edition = store.edition(date.fromisoformat(DAY))
    assert edition is not None and edition.more
    more_link = re.search(r'<a href="([^"]+)"[^>]*>(\d+) more stories on the web', email)
    assert more_link and int(more_link[2]) == len(edition.more)
    view = re.search(r'<a href="([^"]+)"[^>]*>View in browser', email)
    assert view and view[1] == more_link[1] == f"{base}/archive/{DAY}/"

    state = config_mod.load(config).state_path.parent
    before = snapshot(state)
    page = httpx.get(html.unescape(more_link[1]), timeout=20)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = html.unescape(page.text)
    for story in (*edition.stories, *edition.more):
        assert story.lead.title in text
    assert "more stories on the web" not in text and "__DIGEST_" not in text and "ada@example.com" not in text
    assert f'<a href="{base}/subscribe" class="footer-link">Subscribe</a>' in page.text  # invites, not "you receive"
    assert "You receive" not in text and "Hello" not in text and "Unsubscribe" not in text
    images = re.findall(r"<img [^>]*>", page.text)
    assert images and all('loading="lazy"' in image for image in images)
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "img-src https: http: data:" in csp and "script-src" not in csp
    assert page.headers["x-frame-options"] == "DENY" and "public" in page.headers["cache-control"]

    index = httpx.get(f"{base}/archive/", timeout=20)
    total = len(edition.stories) + len(edition.more)
    assert index.status_code == 200 and f'href="{DAY}/"' in index.text and f"· {total} stories" in index.text
    assert httpx.get(f"{base}/archive/{DAY}", timeout=20, follow_redirects=True).text == page.text
    assert httpx.head(f"{base}/archive/{DAY}/", timeout=20).status_code == 200
    for missing in ("2026-11-20/", "2026-13-45/", "yesterday/", "../config.toml/"):
        assert httpx.get(f"{base}/archive/{missing}", timeout=20).status_code == 404, missing
    assert httpx.post(f"{base}/archive/{DAY}/", timeout=20).status_code == 405
    assert snapshot(state) == before  # a GET changes nothing


def test_the_archive_page_reads_on_a_phone(browser: object, sent: tuple[Path, str, str], tmp_path: Path) -> None:  # noqa: F811
    _config, base, _email = sent
    page = browser.new_page(viewport={"width": 375, "height": 740})  # type: ignore[attr-defined]
    try:
        page.goto(f"{base}/archive/", wait_until="domcontentloaded")
        page.get_by_role("link", name=re.compile(r"Saturday, 21 November 2026")).click()
        page.wait_for_url(f"{base}/archive/{DAY}/")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        headlines = page.locator("h2.headline").all_inner_texts()
        assert len(headlines) >= 4  # the email's two and those it had no room for
        assert page.get_by_text("more stories on the web").count() == 0
        page.screenshot(path=str(tmp_path / "archive-375.png"), full_page=True)
    finally:
        page.close()


def test_the_archive_feed_lists_the_editions_for_a_feed_reader(sent: tuple[Path, str, str]) -> None:
    """Read back with feedparser, the parser digest itself uses for feeds."""
    config, base, _email = sent
    index = httpx.get(f"{base}/archive/", timeout=20).text
    assert '<link rel="alternate" type="application/atom+xml"' in index and 'href="feed.xml"' in index
    answer = httpx.get(f"{base}/archive/feed.xml", timeout=20)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/atom+xml; charset=utf-8"
    parsed = feedparser.parse(answer.content)
    assert not parsed.bozo, parsed.bozo_exception
    assert parsed.feed.title == "Orbit Daily" and parsed.feed.link == f"{base}/archive/"
    [entry] = parsed.entries
    with Store.read_only(config_mod.load(config).state_path) as store:
        edition = store.edition(date.fromisoformat(DAY))
    assert edition is not None
    assert entry.link == entry.id == f"{base}/archive/{DAY}/"
    assert entry.title == f"Saturday, 21 November 2026: {edition.stories[0].lead.title}"
    total = len(edition.stories) + len(edition.more)
    assert entry.summary.startswith(f"{total} stories: {edition.stories[0].lead.title} · ")
    assert httpx.get(entry.link, timeout=20).status_code == 200


def test_the_signup_page_shows_the_latest_edition(sent: tuple[Path, str, str]) -> None:
    """A reader deciding whether to subscribe sees what comes: the newest headlines, a link to them."""
    config, base, _email = sent
    with Store.read_only(config_mod.load(config).state_path) as store:
        edition = store.edition(date.fromisoformat(DAY))
    assert edition is not None
    page = httpx.get(f"{base}/subscribe", timeout=20)
    text = html.unescape(page.text)
    assert page.status_code == 200 and "The latest edition" in text
    for story in edition.stories[:2]:
        assert story.lead.title in text
    link = re.search(r'The latest edition: <a href="([^"]+)">Saturday, 21 November 2026</a>', page.text)
    assert link and httpx.get(f"{base}/{link[1]}", timeout=20).status_code == 200
    assert httpx.get(f"{base}/archive/", timeout=20).status_code == 200 and 'href="archive/"' in page.text


def test_before_the_first_edition_the_signup_page_shows_none(make_config: MakeConfig) -> None:
    server, base = start(make_config())
    try:
        page = httpx.get(f"{base}/subscribe", timeout=20)
        assert page.status_code == 200 and "Subscribe to Updates" in page.text and "latest edition" not in page.text
    finally:
        server.shutdown()
        server.server_close()
