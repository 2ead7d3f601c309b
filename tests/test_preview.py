"""`digest preview` (issue 6): a real server in a subprocess, pages fetched over HTTP on 127.0.0.1."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import select
import shutil
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import feedparser
import pytest
from click.testing import CliRunner
from conftest import ROOT, SUBSCRIBERS, base_tables, sample_feeds, write_config

from digest import config as config_mod
from digest import pipeline
from digest import select as select_stage
from digest.cli import main
from digest.mail import unsubscribe_token
from digest.models import Edition, SendReport
from digest.store import Store

DAY1 = "2026-11-21T07:00:00+00:00"
DAY2 = "2026-11-22T07:00:00+00:00"
COMMERCIAL = "Lodestar Orbital raises $220 million to build in-orbit refuelling tugs"
MILITARY = "Nordic defence ministries agree shared satellite surveillance pool"
LAUNCH = "Kourou pad refurbishment finishes ahead of schedule"
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def cli(config: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)
    return result.exit_code, result.stdout + result.stderr


@contextmanager
def preview_server(config: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`digest preview --no-open --port 0` as a subprocess; yields its base URL, stops it after."""
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DIGEST_")}, **(env or {})}
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-m", "digest", "--config", str(config), "preview", "--no-open", "--port", "0", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None and proc.stderr is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        found = re.search(r"^Preview at (http://127\.0\.0\.1:(\d+))/\S* \(Ctrl-C to stop\)$", line.strip())
        if not found:
            proc.kill()
            pytest.fail(f"preview server did not start: {line!r} {proc.stderr.read()}")
        assert int(found[2]) > 0
        yield found[1]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def get(url: str, data: bytes | None = None) -> tuple[int, str]:
    try:
        with OPENER.open(urllib.request.Request(url, data=data), timeout=60) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8")


def expected_edition(config_path: Path, now: str) -> Edition:
    """The edition the preview should show, computed in-process the same read-only way."""
    config = config_mod.load(config_path)
    with Store.read_only(config.state_path) as store:
        return pipeline.next_edition(config, store, datetime.fromisoformat(now))


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (state, outbox, locks) -> its hash."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "config.toml" and "feeds" not in p.parts
    }


@pytest.fixture(scope="module")
def fresh_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """No state at all yet, five sample feeds, the preview fetching them (persist=False)."""
    folder = tmp_path_factory.mktemp("fresh")
    config = write_config(folder / "config.toml", base_tables(), sample_feeds(folder), SUBSCRIBERS)
    with preview_server(config, "--now", DAY1) as url:
        yield config, url


@pytest.fixture(scope="module")
def history_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str, dict[str, str]]]:
    """Day 1 sent from three feeds; then two more feeds configured; the preview on day 2."""
    folder = tmp_path_factory.mktemp("history")
    feeds = sample_feeds(folder)
    day1_subscribers = [{**s, "topics": ["Launch"]} if s.get("topics") else s for s in SUBSCRIBERS]
    config = write_config(folder / "config.toml", base_tables(), feeds[:3], day1_subscribers)
    code, out = cli(config, "send", "--now", DAY1)
    assert code == 0 and "delivered to 3 of 3" in out, out
    write_config(config, base_tables(), feeds, SUBSCRIBERS)
    before = snapshot(folder)
    assert any(name.endswith("state.sqlite3") for name in before) and any("outbox" in n for n in before)
    with preview_server(config, "--now", DAY2) as url:
        yield config, url, before


def test_fresh_preview_creates_no_state_and_shows_the_email_in_two_frames(fresh_site: tuple[Path, str]) -> None:
    config, url = fresh_site
    status, page = get(url + "/")
    assert status == 200, page
    assert re.search(r'<iframe[^>]*width="600"[^>]*srcdoc="', page)
    assert re.search(r'<iframe[^>]*width="375"[^>]*srcdoc="', page)
    srcdoc = html.unescape(re.findall(r'srcdoc="([^"]*)"', page)[0])
    status, email = get(url + "/email")
    assert status == 200 and srcdoc == email  # the frame holds exactly the mailed HTML
    assert "<table" not in page  # escaped into srcdoc: the email's markup cannot reach the preview page
    size = len(email.encode("utf-8"))
    assert f"HTML size: {size:,} bytes" in page and "102 KB" in page
    for link in ('href="/text"', 'href="/stories"', 'href="/archive/"', "?subscriber=ada%40example.com"):
        assert link in page
    status, text = get(url + "/text")
    assert status == 200 and "<pre>" in text and html.escape(COMMERCIAL) in text
    assert not (config.parent / ".digest").exists()  # nothing created, not even an empty database
    assert not (config.parent / "outbox").exists()


def test_subscriber_page_shows_only_their_sections_and_name(fresh_site: tuple[Path, str]) -> None:
    _config, url = fresh_site
    status, yuri = get(url + "/email?subscriber=yuri%40example.com")
    assert status == 200
    assert html.escape(COMMERCIAL) in yuri and html.escape(LAUNCH) in yuri
    assert html.escape(MILITARY) not in yuri  # Yuri reads Launch and Commercial only
    assert "Hello Yuri" in yuri
    status, page = get(url + "/?subscriber=YURI@example.com")
    assert status == 200
    assert "Launch, Commercial only" in page and "&lt;yuri@example.com&gt;" in page
    _, ada = get(url + "/email?subscriber=ada%40example.com")
    assert html.escape(MILITARY) in ada and "Hello Ada Lovelace" in ada
    _, text = get(url + "/text?subscriber=yuri%40example.com")
    assert COMMERCIAL in html.unescape(text) and MILITARY not in html.unescape(text)
    status, missing = get(url + "/?subscriber=nobody%40example.com")
    assert status == 500 and "no subscriber" in missing and "ada@example.com" in missing


def test_stories_page_shows_each_group_lead_outlets_and_terms(fresh_site: tuple[Path, str]) -> None:
    config, url = fresh_site
    edition = expected_edition(config, DAY1)
    status, page = get(url + "/stories")
    assert status == 200
    text = html.unescape(page)
    assert f"{len(edition.stories)} stories from {sum(len(s.entries) for s in edition.stories)} entries" in text
    for story in edition.stories:
        assert story.lead.title in text and f"Lead: {story.lead.feed}" in text
        for other in story.also:
            assert f"{other.feed}: {other.title}" in re.sub(r"<[^>]+>", "", text)
        for term in story.terms:
            assert f"<span>{term}</span>" in text
    assert text.count('class="story"') == len(edition.stories)


def test_preview_changes_no_state(history_site: tuple[Path, str, dict[str, str]]) -> None:
    config, url, before = history_site
    for path in (
        "/",
        "/email",
        "/text",
        "/stories",
        "/archive/",
        "/archive/2026-11-21/",
        "/?subscriber=yuri%40example.com",
        "/check?width=375",
        "/missing",
    ):
        get(url + path)
    with Store.read_only(config_mod.load(config).state_path) as store:
        token = unsubscribe_token(pipeline.unsubscribe_secret(config_mod.load(config), store), "ada@example.com")
    status, confirm = get(f"{url}/unsubscribe?email=ada%40example.com&token={token}")
    assert status == 200 and "<form" in confirm  # a GET only asks
    assert get(url + "/", data=b"x")[0] == 405  # the preview takes no writes
    assert snapshot(config.parent) == before  # same files, same bytes: database, outbox, locks


def test_next_edition_holds_only_what_was_not_sent(history_site: tuple[Path, str, dict[str, str]]) -> None:
    _config, url, _ = history_site
    _, email = get(url + "/email")
    assert html.escape(COMMERCIAL) in email and html.escape(MILITARY) in email  # new feeds, fetched in memory
    assert html.escape(LAUNCH) not in email  # went out on day 1
    _, page = get(url + "/")
    assert "Edition 2026-11-22" in page and "nothing recorded" in page


def test_archive_pages_show_past_editions_as_sent(history_site: tuple[Path, str, dict[str, str]]) -> None:
    _config, url, _ = history_site
    status, index = get(url + "/archive/")
    assert status == 200 and 'href="2026-11-21/"' in index and "2026-11-22" not in index
    status, day = get(url + "/archive/2026-11-21/")
    assert status == 200 and html.escape(LAUNCH) in day and html.escape(COMMERCIAL) not in day
    assert "__DIGEST_" not in day and "Hello" not in day and "You receive" not in day  # a public page, not a copy
    assert '<a href="https://news.example.com/subscribe" class="footer-link">Subscribe</a>' in day
    assert get(url + "/archive/2026-11-20/")[0] == 404
    assert get(url + "/archive/2026-11-21")[0] == 200  # redirected to the slash form
    status, atom = get(url + "/archive/feed.xml")
    feed = feedparser.parse(atom.encode())
    assert status == 200 and not feed.bozo and [e.link for e in feed.entries] == ["2026-11-21/"]
    assert all(e.id.startswith("urn:uuid:") for e in feed.entries)  # no public address: stable name-based ids


def test_output_writes_the_email_html_offline_or_fetched(tmp_path: Path) -> None:
    feeds = sample_feeds(tmp_path)
    config = write_config(tmp_path / "config.toml", base_tables(), feeds, SUBSCRIBERS)
    out = tmp_path / "next.html"
    code, said = cli(config, "preview", "--output", str(out), "--now", DAY1, "--subscriber", "yuri@example.com")
    assert code == 0 and "Wrote" in said
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and html.escape(COMMERCIAL) in page and html.escape(MILITARY) not in page
    code, _ = cli(config, "preview", "--output", str(out), "--now", DAY1, "--offline")
    assert code == 0 and html.escape(COMMERCIAL) not in out.read_text(encoding="utf-8")  # nothing stored, no fetch
    assert not (tmp_path / ".digest").exists()
    code, said = cli(config, "preview", "--output", str(out), "--subscriber", "nobody@example.com")
    assert code == 1 and "Error: " in said and "no subscriber 'nobody@example.com'" in said


def test_archive_option_writes_static_files(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", base_tables(), sample_feeds(tmp_path), SUBSCRIBERS)
    assert cli(config, "send", "--now", DAY1)[0] == 0
    code, said = cli(config, "preview", "--archive", str(tmp_path / "site"))
    assert code == 0 and "Wrote 1 editions" in said
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert 'href="2026-11-21/"' in index and "back to the preview" not in index
    day = (tmp_path / "site" / "2026-11-21" / "index.html").read_text(encoding="utf-8")
    assert html.escape(COMMERCIAL) in day and html.escape(MILITARY) in day
    assert "__DIGEST_" not in day and "ada@example.com" not in day  # no one's personal copy
    assert 'href="https://news.example.com/archive/"' in day and "View in browser" not in day  # it is the browser view
    feed = feedparser.parse((tmp_path / "site" / "feed.xml").read_bytes())
    assert not feed.bozo and [e.link for e in feed.entries] == ["https://news.example.com/archive/2026-11-21/"]


def test_edits_to_config_and_templates_show_on_reload(tmp_path: Path) -> None:
    user = tmp_path / "mytemplates" / "partials"
    user.mkdir(parents=True)
    header = user / "header.html.j2"
    header.write_text('<tr><td class="header"><h1 class="title">{{ newsletter.title }}</h1></td></tr>\n')
    tables = base_tables(newsletter={"templates": "mytemplates"})
    config = write_config(tmp_path / "config.toml", tables, sample_feeds(tmp_path), SUBSCRIBERS)
    with preview_server(config, "--offline", "--now", DAY1) as url:
        assert "Orbit Daily" in get(url + "/email")[1]
        tables["newsletter"]["title"] = "Orbit Weekly"
        write_config(config, tables, sample_feeds(tmp_path), SUBSCRIBERS)
        assert "Orbit Weekly" in get(url + "/email")[1]
        header.write_text('<tr><td class="header"><h1 class="title">EDITED {{ newsletter.title }}</h1></td></tr>\n')
        stat = header.stat()
        os.utime(header, (stat.st_atime, stat.st_mtime + 5))
        assert "EDITED Orbit Weekly" in get(url + "/email")[1]
        header.write_text("{% if %}\n")
        os.utime(header, (stat.st_atime, stat.st_mtime + 10))
        status, broken = get(url + "/")
        assert status == 500 and "header.html.j2" in broken and "reload" in broken


def test_unsubscribe_path_is_served_and_one_click_post_suppresses(tmp_path: Path) -> None:
    config = write_config(tmp_path / "config.toml", base_tables(), sample_feeds(tmp_path), SUBSCRIBERS)
    token = unsubscribe_token(b"preview-test-key", "ada@example.com")
    with preview_server(config, "--offline", "--now", DAY1, env={"DIGEST_SECRET": "preview-test-key"}) as url:
        assert get(f"{url}/unsubscribe?email=ada%40example.com&token=bad", data=b"")[0] == 403
        status, page = get(
            f"{url}/unsubscribe?email=ada%40example.com&token={token}", data=b"List-Unsubscribe=One-Click"
        )
    assert status == 200 and "Unsubscribed" in page
    with Store.read_only(config_mod.load(config).state_path) as store:
        assert store.suppressed() == {"ada@example.com"}


def emails(folder: Path) -> dict[str, str]:
    """Each delivered message's HTML part, by recipient (none when nothing was delivered)."""
    from email import message_from_bytes, policy

    out = {}
    for path in sorted((folder / "new").glob("*")) if (folder / "new").is_dir() else []:
        message = message_from_bytes(path.read_bytes(), policy=policy.default)
        out[str(message["To"])] = message.get_body(("html",)).get_content()  # type: ignore[attr-defined]
    return out


def test_more_stories_on_the_web_are_on_the_web(tmp_path: Path) -> None:
    """The email's "N more stories on the web" button leads to a page that has them, and
    they are published: tomorrow's edition does not bring them back as news."""
    tables = base_tables(newsletter={"max_stories": 2})
    config = write_config(tmp_path / "config.toml", tables, sample_feeds(tmp_path), SUBSCRIBERS)
    code, said = cli(config, "send", "--now", DAY1)
    assert code == 0
    with Store.read_only(config_mod.load(config).state_path) as store:
        edition = store.edition(datetime.fromisoformat(DAY1).date())
    assert edition is not None and len(edition.stories) == 2 and len(edition.more) >= 2
    assert edition.overflow == len(edition.more)
    assert f", 2 stories ({len(edition.more)} more on the web), delivered to 3 of 3 subscribers" in said
    web_only = [s.lead.title for s in edition.more]

    sent = emails(tmp_path / "outbox")
    ada = html.unescape(sent["Ada Lovelace <ada@example.com>"])
    assert f"{len(edition.more)} more stories on the web" in ada
    assert not any(title in ada for title in web_only)
    yuri = html.unescape(sent["Yuri <yuri@example.com>"])  # Launch and Commercial only: two of those, then a count
    config_values = config_mod.load(config)
    his = select_stage.for_topics(edition, ("Launch", "Commercial"), 2, config_values.sections)
    assert len(his) == 2 and all(s.lead.title in yuri for s in his)
    left = sum(1 for s in (*edition.stories, *edition.more) if s.section in ("Launch", "Commercial")) - 2
    assert (f"{left} more stor" in yuri) if left else ("more stories on the web" not in yuri)

    assert cli(config, "preview", "--archive", str(tmp_path / "site"))[0] == 0
    page = html.unescape((tmp_path / "site" / "2026-11-21" / "index.html").read_text(encoding="utf-8"))
    for story in (*edition.stories, *edition.more):
        assert story.lead.title in page
    assert "more stories on the web" not in page and "__DIGEST_" not in page
    total = len(edition.stories) + len(edition.more)
    assert f"In this edition: {total} stories" in page
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert f"· {total} stories" in index

    shutil.rmtree(tmp_path / "outbox")
    assert cli(config, "send", "--now", DAY2)[0] == 0
    tomorrow = html.unescape(" ".join(emails(tmp_path / "outbox").values()))
    assert not any(title in tomorrow for title in web_only)


def test_an_edition_recorded_before_web_stories_were_kept_shows_as_sent(tmp_path: Path) -> None:
    """Older editions hold only the count of their left-over stories: the archive shows the email."""
    tables = base_tables(newsletter={"max_stories": 2})
    config = write_config(tmp_path / "config.toml", tables, sample_feeds(tmp_path), SUBSCRIBERS)
    assert cli(config, "send", "--now", DAY1)[0] == 0
    state = config_mod.load(config).state_path
    db = sqlite3.connect(state)
    with db:
        (data,) = db.execute("SELECT data FROM editions").fetchone()
        old = json.loads(data)
        dropped = len(old.pop("more"))
        db.execute("UPDATE editions SET data=?", (json.dumps(old),))
    db.close()
    assert cli(config, "preview", "--archive", str(tmp_path / "site"))[0] == 0
    page = html.unescape((tmp_path / "site" / "2026-11-21" / "index.html").read_text(encoding="utf-8"))
    assert f"{dropped} more stories on the web" in page and "Hello reader" in page
    index = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
    assert "· 2 stories" in index  # the two it holds: the others were never kept


def test_the_send_summary_says_where_the_left_over_stories_are() -> None:
    report = SendReport(feeds=5, feeds_failed=0, new_entries=9, stories=2, delivered=3, recipients=3, web_only=4)
    assert report.summary() == "5 feeds, 9 new entries, 2 stories (4 more on the web), delivered to 3 of 3 subscribers"
    assert "2 stories (4 more did not fit)," in replace(report, archive=False).summary()  # no base_url: no web page
    assert "9 new entries, 2 stories, delivered" in replace(report, web_only=0).summary()
