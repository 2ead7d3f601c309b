"""Feed discovery and `digest feeds add/list/remove`, against a local HTTP server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from conftest import ROOT, MakeConfig
from feedserver import FeedServer
from hostile_corpus import item, rss

from digest import discover
from digest.cli import main
from digest.settings import FetchSettings

SETTINGS = FetchSettings(timeout=5.0, allow_hosts=("127.0.0.1",))
LAUNCHES = rss(item("Colossus reaches orbit", "c1") + item("Pad 39A rebuilt", "c2"), title="Spacemagz: Launches")
POLICY = rss(item("Artemis Accords grow", "p1"), title="Spacemagz &amp; Policy")
ATOM = (b'<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>Spacemagz Atom</title>'
        b'<id>urn:x</id><updated>2026-11-20T16:00:00Z</updated><entry><title>Atom entry</title><id>urn:a1</id>'
        b'<link href="https://ok.example/a1"/><updated>2026-11-20T16:00:00Z</updated></entry></feed>')


def page(*links: str, base: str = "") -> bytes:
    head = f'<base href="{base}">' if base else ""
    return (f"<!DOCTYPE html><html><head><title>Spacemagz</title>{head}{''.join(links)}</head>"
            "<body><p>Space news</p></body></html>").encode()


def alternate(href: str, kind: str = "application/rss+xml", title: str = "") -> str:
    return f'<link rel="alternate" type="{kind}" href="{href}" title="{title}">'


HTML = {"Content-Type": "text/html; charset=utf-8"}


def test_a_page_with_one_relative_alternate_link(feed_server: FeedServer) -> None:
    feed_server.add("/feeds/launches.xml", LAUNCHES, headers={"Content-Type": "application/rss+xml"})
    url = feed_server.add("/", page(alternate("feeds/launches.xml")), headers=HTML)
    (found,) = discover.discover(url, SETTINGS)
    assert found.url == feed_server.url("/feeds/launches.xml")  # resolved against the page
    assert found.title == "Spacemagz: Launches" and found.entries == 2
    assert set(found.newest) == {"Colossus reaches orbit", "Pad 39A rebuilt"}
    assert "/rss.xml" not in [p for p, _ in feed_server.requests]  # links found: no guessing


def test_a_page_with_several_feeds_lists_them_all_and_skips_json_feed(feed_server: FeedServer) -> None:
    feed_server.add("/launches.xml", LAUNCHES)
    feed_server.add("/policy.xml", POLICY)
    feed_server.add("/atom", ATOM)
    url = feed_server.add("/news/", page(alternate("/launches.xml"), alternate("../policy.xml"),
                                         alternate("/feed.json", "application/feed+json"),
                                         alternate("/atom", "application/atom+xml"),
                                         alternate("/launches.xml")), headers=HTML)  # fmt: skip
    found = discover.discover(url, SETTINGS)
    assert [f.title for f in found] == ["Spacemagz: Launches", "Spacemagz & Policy", "Spacemagz Atom"]
    assert "/feed.json" not in [p for p, _ in feed_server.requests]


def test_a_page_with_no_links_falls_back_to_the_usual_paths(feed_server: FeedServer) -> None:
    feed_server.add("/rss.xml", LAUNCHES)
    feed_server.add("/feed", status=301, headers={"Location": "/rss.xml"})  # the same feed twice
    url = feed_server.add("/blog/post", page(), headers=HTML)
    (found,) = discover.discover(url, SETTINGS)
    assert found.url == feed_server.url("/rss.xml")
    asked = {p for p, _ in feed_server.requests}
    assert {"/feed", "/rss.xml", "/atom.xml", "/index.xml", "/feed.xml", "/rss"} <= asked


def test_a_page_with_no_feed_at_all_says_what_was_tried(feed_server: FeedServer) -> None:
    url = feed_server.add("/", page(), headers=HTML)
    with pytest.raises(discover.DiscoveryError, match=r"no feed found at .*/feed, /rss.xml, /atom.xml"):
        discover.discover(url, SETTINGS)
    dead = feed_server.add("/d", page(alternate("/gone.xml")), headers=HTML)
    with pytest.raises(discover.DiscoveryError, match=r"links to 1 feed\(s\), none readable: .*/gone.xml: HTTP 404"):
        discover.discover(dead, SETTINGS)
    only_json = feed_server.add("/j", page(alternate("/feed.json", "application/json")), headers=HTML)
    with pytest.raises(discover.DiscoveryError, match="only a JSON Feed"):
        discover.discover(only_json, SETTINGS)


def test_a_feed_url_given_directly(feed_server: FeedServer) -> None:
    url = feed_server.add("/atom", ATOM, headers={"Content-Type": "application/atom+xml"})
    (found,) = discover.discover(url, SETTINGS)
    assert found.url == url and found.title == "Spacemagz Atom" and found.newest == ("Atom entry",)
    assert len(feed_server.requests) == 1  # no discovery needed


def test_a_page_that_redirects_resolves_links_against_where_it_landed(feed_server: FeedServer) -> None:
    feed_server.add("/blog/feed.xml", LAUNCHES)
    feed_server.add("/blog/", page(alternate("feed.xml")), headers=HTML)
    url = feed_server.add("/old", status=302, headers={"Location": "/blog/"})
    (found,) = discover.discover(url, SETTINGS)
    assert found.url == feed_server.url("/blog/feed.xml")  # not /feed.xml next to /old
    based = feed_server.add("/b", page(alternate("feed.xml"), base="/blog/"), headers=HTML)
    assert discover.discover(based, SETTINGS)[0].url == found.url  # <base href> counts too


def test_an_html_error_page_and_an_unreachable_host_are_clear_errors(feed_server: FeedServer) -> None:
    url = feed_server.add("/missing", b"<html><body><h1>Not Found</h1></body></html>", status=404, headers=HTML)
    with pytest.raises(discover.DiscoveryError, match=r"cannot fetch .*/missing: HTTP 404"):
        discover.discover(url, SETTINGS)
    with pytest.raises(discover.DiscoveryError, match=r"refused address: 127\.0\.0\.1"):
        discover.discover(url, FetchSettings(timeout=5.0))  # the same SSRF policy as every poll
    text = feed_server.add("/notes.txt", b"just some notes", headers={"Content-Type": "text/plain"})
    with pytest.raises(discover.DiscoveryError, match=r"notes\.txt: not a feed: no RSS or Atom document"):
        discover.discover(text, SETTINGS)


# --------------------------------------------------------------------------- the commands


def copy_project(tmp_path: Path) -> Path:
    """The bundled, richly commented config.toml, with 127.0.0.1 allowed."""
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    assert "allow_hosts = []" in text
    path = tmp_path / "config.toml"
    path.write_bytes(text.replace("allow_hosts = []", 'allow_hosts = ["127.0.0.1"]').encode())
    return path


def cli(config: Path, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, ["--config", str(config), *args], input=input)


def test_feeds_add_keeps_every_other_byte_and_remove_restores_the_file(tmp_path: Path, feed_server: FeedServer) -> None:
    feed_server.add("/launches.xml", LAUNCHES)
    url = feed_server.add("/", page(alternate("/launches.xml")), headers=HTML)
    config = copy_project(tmp_path)
    before = config.read_bytes()
    done = cli(config, "feeds", "add", url, "--section", "Launch", "--priority", "3")
    assert done.exit_code == 0, done.output
    assert "Feed: Spacemagz: Launches" in done.output and "  - Colossus reaches orbit" in done.output
    anchor = b'name = "Defence Space Monitor"\nurl = "examples/feeds/defence-space-monitor.xml"\nsection = "Military"\n'
    block = (f'\n[[feeds]]\nname = "Spacemagz: Launches"\nurl = "{feed_server.url("/launches.xml")}"\n'
             'section = "Launch"\npriority = 3\n').encode()
    assert before.count(anchor) == 1
    assert config.read_bytes() == before.replace(anchor, anchor + block)
    again = cli(config, "feeds", "add", url)
    assert again.exit_code == 1 and "is already in" in again.output
    assert config.read_bytes() == before.replace(anchor, anchor + block)  # refused: unchanged
    removed = cli(config, "feeds", "remove", "Spacemagz: Launches")
    assert removed.exit_code == 0, removed.output
    assert config.read_bytes() == before


def test_feeds_add_asks_which_feed_or_takes_pick(tmp_path: Path, feed_server: FeedServer) -> None:
    feed_server.add("/launches.xml", LAUNCHES)
    feed_server.add("/policy.xml", POLICY)
    url = feed_server.add("/", page(alternate("/launches.xml"), alternate("/policy.xml")), headers=HTML)
    config = copy_project(tmp_path)
    asked = cli(config, "feeds", "add", url, input="2\n")
    assert asked.exit_code == 0, asked.output
    assert "1. Spacemagz: Launches" in asked.output and "2. Spacemagz & Policy" in asked.output
    assert "Added 'Spacemagz & Policy'" in asked.output
    picked = cli(config, "feeds", "add", url, "--pick", "1", "--name", "Spacemagz")
    assert picked.exit_code == 0 and "Which one" not in picked.output
    assert 'name = "Spacemagz"\nurl = "' + feed_server.url("/launches.xml") in config.read_text()
    too_far = cli(config, "feeds", "add", url, "--pick", "3")
    assert too_far.exit_code == 1 and "offers 2 feed(s)" in too_far.output


def test_feeds_list_shows_poll_status_and_entries(make_config: MakeConfig, feed_server: FeedServer) -> None:
    feeds = [{"name": "Launches", "url": feed_server.add("/l.xml", LAUNCHES), "section": "Launch"},
             {"name": "Broken", "url": feed_server.add("/gone", status=404)},
             {"name": "Later", "url": feed_server.url("/later.xml")}]
    config = make_config(feeds=feeds, subscribers=[{"email": "a@example.com"}], fetch={"allow_hosts": ["127.0.0.1"]})
    fresh = cli(config, "feeds", "list")
    assert fresh.exit_code == 0 and "never polled" in fresh.output
    assert not (config.parent / ".digest").exists()  # listing creates no state
    assert cli(config, "fetch").exit_code == 0
    feed_server.add("/later.xml", POLICY)
    lines = cli(config, "feeds", "list").output.splitlines()
    assert lines[0].split() == ["NAME", "SECTION", "ENTRIES", "LAST", "POLL"]
    assert lines[1].split() == ["Launches", "Launch", "2", "ok"]
    assert lines[2].split()[:4] == ["Broken", "News", "0", "HTTP"]
    assert lines[3].split() == ["Later", "News", "0", "HTTP", "404"]  # polled before it existed


def test_feeds_remove_an_unknown_name_changes_nothing(make_config: MakeConfig) -> None:
    config = make_config()
    before = config.read_bytes()
    result = cli(config, "feeds", "remove", "Nope")
    assert result.exit_code == 1 and "no feed named 'Nope'" in result.output and "Orbital Wire" in result.output
    assert config.read_bytes() == before


def test_feeds_add_without_a_config_points_to_init(tmp_path: Path, feed_server: FeedServer) -> None:
    result = cli(tmp_path / "config.toml", "feeds", "add", feed_server.add("/f.xml", LAUNCHES))
    assert result.exit_code == 1 and "create one with `digest init`" in result.output
    assert feed_server.requests == [] and not (tmp_path / "config.toml").exists()
