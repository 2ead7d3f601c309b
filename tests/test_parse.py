"""Parsing hostile documents: refused before feedparser, or contained, and always plain and safe.

Each refusal has a positive control: plain feedparser (or a vulnerable XML parser) on the
same bytes does expand, leak, crash or stall.
"""

from __future__ import annotations

import html.parser
import io
import time
import xml.sax
import xml.sax.handler
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest
from hostile_corpus import CORPUS, item, rss

from digest.models import link_key
from digest.parse import MAX_TITLE, canonical_link, parse_feed, plain_text
from digest.settings import FeedSpec

NOW = datetime(2026, 11, 21, 7, tzinfo=UTC)
FEED = FeedSpec("Hostile", "https://hostile.example/feed")


def parse(body: bytes, **kwargs: int):  # type: ignore[no-untyped-def]
    return parse_feed(FEED, body, NOW, **kwargs)


def quadratic(size: int, refs: int) -> bytes:
    return (f'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY a "{"x" * size}">\n]>\n'
            f'<rss version="2.0"><channel><title>Q</title><item><title>q</title>'
            f'<description>{"&a;" * refs}</description></item></channel></rss>').encode()


def test_entity_declarations_are_refused_before_parsing() -> None:
    for name in ("quadratic-blowup.xml", "billion-laughs.xml", "xxe.xml"):
        result = parse((CORPUS / name).read_bytes())
        assert result.error == "bad XML: the document declares entities in its DOCTYPE (refused: entity expansion)"
        assert result.entries == ()
    small = quadratic(1000, 1000)  # positive control: feedparser expands it 1000-fold
    assert len(feedparser.parse(small).entries[0].summary) == 1_000_000
    assert parse(small).error and parse(small.decode().encode("utf-16")).error  # also when re-encoded


def test_xxe_positive_control_a_vulnerable_parser_leaks(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    doc = (f'<?xml version="1.0"?>\n<!DOCTYPE r [\n<!ENTITY x SYSTEM "{secret.as_uri()}">\n]>'
           "<r>&x;</r>").encode()
    seen: list[str] = []

    class Text(xml.sax.handler.ContentHandler):
        def characters(self, content: str) -> None:
            seen.append(content)

    reader = xml.sax.make_parser()
    reader.setFeature(xml.sax.handler.feature_external_ges, True)
    reader.setContentHandler(Text())
    reader.parse(io.BytesIO(doc))
    assert "TOP-SECRET" in "".join(seen)  # the bytes do attack a parser that resolves entities
    assert parse(doc).error and "TOP-SECRET" not in str(parse(doc))


@pytest.mark.parametrize("name", ["crash-surrogate.xml", "crash-out-of-range.xml"])
def test_parser_crashes_are_contained(name: str) -> None:
    body = (CORPUS / name).read_bytes()
    with pytest.raises((UnicodeEncodeError, ValueError)):
        feedparser.parse(body)  # positive control: feedparser itself raises
    result = parse(body)
    assert result.error and result.error.startswith("bad XML: parser failed")


def test_huge_author_fields_are_cut_before_the_quadratic_regex() -> None:
    body = rss(item("Long author", "a-1", f"<author>{'a' * 12000}</author>"))
    start = time.monotonic()
    feedparser.parse(body)
    naive = time.monotonic() - start
    start = time.monotonic()
    result = parse(body)
    ours = time.monotonic() - start
    assert [e.title for e in result.entries] == ["Long author"]
    assert naive > 0.3 and ours < naive / 5, (naive, ours)  # control: the regex really stalls


def test_document_size_cap_before_parsing() -> None:
    body = rss(item("x", "1"))
    assert parse(body, max_bytes=len(body) - 1).error == f"too large: document over {len(body) - 1} bytes"
    assert parse(body, max_bytes=len(body)).entries  # control


def test_not_a_feed_empty_and_malformed() -> None:
    assert parse((CORPUS / "not-a-feed.html").read_bytes()).error == "not a feed: an HTML page"
    assert parse(b"just text").error == "not a feed: no RSS or Atom document"
    for name in ("malformed.xml", "truncated.xml"):
        error = parse((CORPUS / name).read_bytes()).error
        assert error and error.startswith("bad XML: ")


def test_wrong_encodings_never_raise() -> None:
    (entry,) = parse((CORPUS / "wrong-encoding.xml").read_bytes()).entries
    assert entry.title.startswith("Caf")
    utf16 = rss(item("Ünïcödé title", "u-1")).decode().replace("utf-8", "utf-16").encode("utf-16")
    assert [e.title for e in parse(utf16).entries] == ["Ünïcödé title"]


class _Tags(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.add(tag)
        self.attrs += attrs


def test_xss_in_every_field_is_defanged() -> None:
    entries = parse((CORPUS / "xss.xml").read_bytes()).entries + parse((CORPUS / "xss-atom.xml").read_bytes()).entries
    assert len(entries) == 3
    raw = (CORPUS / "xss.xml").read_text()
    assert "javascript:alert('link')" in raw and "onerror" in raw  # control: the bait is there
    for entry in entries:
        for text in (entry.title, entry.summary, entry.image_alt, *entry.categories):
            assert "<" not in text and ">" not in text, text
        assert entry.link == "" or entry.link.startswith(("http://", "https://"))
        assert entry.image is None or entry.image.startswith(("http://", "https://"))
        lowered = entry.summary_html.lower()
        for bad in ("<script", "javascript", "vbscript", "<form", "<style", "<link", "<img", "<svg", "<iframe",
                    "data:", "style="):
            assert bad not in lowered, (bad, entry.summary_html)
        tags = _Tags()
        tags.feed(entry.summary_html)
        assert tags.seen <= {"p", "a", "b"}, tags.seen  # "onerror=" may remain only as escaped text
        assert all(name in ("href", "rel") for name, _ in tags.attrs), tags.attrs
    first = entries[0]
    assert first.link == "" and first.image is None
    assert "https://ok.example/" in first.summary_html  # control: safe links survive
    assert 'href="mailto:editor@example.com"' in entries[1].summary_html


def test_control_characters_never_survive_in_titles() -> None:
    titles = [e.title for e in parse((CORPUS / "header-injection.xml").read_bytes()).entries]
    assert len(titles) == 3
    raw = [e.title for e in feedparser.parse((CORPUS / "header-injection.xml").read_bytes()).entries]
    assert "\r\n" in raw[0] and "\u2028" in raw[1]  # control: feedparser passes them through
    for title in titles:
        assert title.isprintable() and title == title.strip(), repr(title)


def test_field_and_entry_caps() -> None:
    body = rss(item("word " * 100_000, "big") + "".join(item(f"t{i}", f"g{i}") for i in range(50)))
    result = parse(body, max_entries=10)
    assert len(result.entries) == 10
    assert len(result.entries[0].title) <= MAX_TITLE
    huge_summary = rss(item("s", "s", "") .replace("<description>text</description>",
                                                   f"<description>{'&lt;b&gt;bold&lt;/b&gt; ' * 20000}</description>"))
    (entry,) = parse(huge_summary).entries
    assert len(entry.summary_html) <= 8000 and entry.summary_html.count("<b>") == entry.summary_html.count("</b>")


def test_dates_in_the_future_or_unparseable_fall_back() -> None:
    future = rss(item("f", "f").replace("Fri, 20 Nov 2026 16:00:00 GMT", "Sat, 01 Jan 2099 00:00:00 GMT"))
    junk = rss(item("j", "j").replace("Fri, 20 Nov 2026 16:00:00 GMT", "the day after tomorrow, 99:99"))
    ancient = rss(item("a", "a").replace("Fri, 20 Nov 2026 16:00:00 GMT", "Mon, 01 Jan 0001 00:00:00 GMT"))
    assert parse(future).entries[0].published == NOW
    assert parse(junk).entries[0].published == NOW
    assert parse(ancient).entries[0].published <= NOW


def test_plain_text_drops_double_escaped_markup() -> None:
    assert plain_text("&lt;img src=x onerror=alert(1)&gt;Hi") == "Hi"
    assert plain_text("a &amp; b") == "a & b"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("https://www.bbc.co.uk/news/world-52891238?at_medium=RSS&at_campaign=KARANGA", "https://www.bbc.co.uk/news/world-52891238"),
        ("https://www.dailymail.co.uk/news/a.html?ns_mchannel=rss&ito=1490&ns_campaign=1490", "https://www.dailymail.co.uk/news/a.html"),
        ("HTTPS://News.Example.COM:443/a?utm_source=rss&id=7&fbclid=x#top", "https://news.example.com/a?id=7"),
        ("http://example.com/search?q=a%20b&page=2", "http://example.com/search?q=a%20b&page=2"),  # encoding and order kept
        ("https://user:secret@example.com/", "https://example.com/"),  # credentials never reach readers
        ("https://example.com:8443/x", "https://example.com:8443/x"),
        ("javascript:alert(1)", ""),
        ("https://[::1/", ""),
    ],
)
def test_links_shown_to_readers_lose_tracking_parameters(raw: str, clean: str) -> None:
    assert canonical_link(raw) == clean


def test_one_page_behind_two_links_has_one_key() -> None:
    same = ["https://www.example.com/story/1/", "http://example.com/story/1", "https://example.com/story/1?utm_medium=rss"]
    assert len({link_key(canonical_link(link)) for link in same}) == 1
    assert link_key(canonical_link("https://example.com/story/2")) != link_key(canonical_link(same[0]))


def test_feed_links_arrive_clean_in_entries() -> None:
    body = rss("<item><title>Launch</title><link>https://example.com/launch?utm_source=rss&amp;ito=1490&amp;id=3</link></item>")
    (entry,) = parse(body).entries
    assert entry.link == "https://example.com/launch?id=3"


def described(descriptions: list[str]) -> bytes:
    items = "".join(
        f"<item><title>Video {n}</title><link>https://v.example/{n}</link><guid>v{n}</guid>"
        f"<pubDate>Fri, 20 Nov 2026 16:00:00 GMT</pubDate><description>{d}</description></item>"
        for n, d in enumerate(descriptions)
    )
    return rss(items)


BLURB = (
    "Subscribe to Orbit TV! https://short.example/sub Watch more Orbit TV Video: https://video.example "
    "Orbit TV is the most watched space channel for 18 consecutive years."
)


def test_a_channels_repeated_blurb_and_hashtags_leave_the_summary() -> None:
    news = [
        "Crew capsule splashes down off the coast after a six month mission.",
        "The agency picks two landing sites near the lunar south pole.",
        "A private lander loses contact hours before touchdown.",
        "Launch of the weather satellite slips to Friday after a sensor fault.",
    ]
    tags = ["#OrbitTV #Splashdown", "#OrbitTV #Moon", "#Landers", "#OrbitTV"]
    result = parse(described([f"{n} {t} {BLURB}" for n, t in zip(news, tags, strict=True)]))
    assert [e.summary for e in result.entries] == news
    # the same blurb with trailing per-video hashtags (Al Jazeera's shape) goes too
    shaped = parse(described([f"{n} - {BLURB} {t}" for n, t in zip(news, tags, strict=True)]))
    assert [e.summary for e in shaped.entries] == news


def test_a_phrase_that_recurs_mid_summary_is_news_not_furniture() -> None:
    summaries = [
        "Protesters marched over the death of George Floyd in three cities on Monday.",
        "The family spoke about the death of George Floyd at a vigil in Houston.",
        "Officers knelt with the crowd mourning the death of George Floyd in Queens.",
        "A mural honours the death of George Floyd near the corner where he died.",
    ]
    assert [e.summary for e in parse(described(summaries)).entries] == summaries


def test_a_summary_that_is_only_furniture_is_kept_whole() -> None:
    summaries = [BLURB, "Live now. " + BLURB, "Docking confirmed at the station. " + BLURB]
    entries = parse(described(summaries)).entries
    assert [e.summary for e in entries[:2]] == summaries[:2]  # nothing (or next to nothing) would be left
    assert entries[2].summary == "Docking confirmed at the station."
