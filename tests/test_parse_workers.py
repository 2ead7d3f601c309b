"""Fast polling (issue 9) without losing containment: parsing in worker processes, linear text.

`parse_all` must give exactly what parsing each feed here would, in order, even when a
worker process dies; `plain_text` must stay linear on markup made to make regexes rescan.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hostile_corpus import CORPUS, item, rss

from digest import parse
from digest.models import FeedSpec, FetchResult

NOW = datetime(2026, 11, 21, 7, tzinfo=UTC)


def _fetched(count: int) -> list[FetchResult]:
    """`count` feeds: most with a body (good, hostile, broken), every fifth with none (a 304)."""
    files = ["good.xml", "xss.xml", "malformed.xml", "header-injection.xml", "not-a-feed.html"]
    out = []
    for n in range(count):
        feed = FeedSpec(f"feed{n}", f"http://feeds.test/{n}")
        if n % 5 == 4:
            out.append(FetchResult(feed, None, status=304))
            continue
        body = (CORPUS / files[n % 5]).read_bytes() if n % 2 else rss(item(f"Story {n}", f"g{n}"), title=f"F{n}")
        out.append(FetchResult(feed, body, status=200))
    return out


def _serial(fetched: list[FetchResult]) -> list[Any]:
    return [parse.parse_feed(r.feed, r.body, NOW) if r.body else None for r in fetched]


def test_parse_all_matches_parsing_each_feed_in_order() -> None:
    fetched = _fetched(40)  # 32 bodies: enough for worker processes on a machine with 2+ cores
    results = parse.parse_all(fetched, NOW)
    assert results == _serial(fetched)
    assert [r is None for r in results] == [f.body is None for f in fetched]
    assert any(r and r.error for r in results) and any(r and r.entries for r in results)  # control: both kinds


def test_a_dead_worker_loses_no_feed(caplog: pytest.LogCaptureFixture) -> None:
    class Fatal(FeedSpec):
        """Kills the worker process that unpickles it (as an out-of-memory kill would)."""

        def __reduce__(self) -> Any:
            return (os._exit, (3,))

    fetched = _fetched(40)
    fetched[7] = FetchResult(Fatal("fatal", "http://feeds.test/fatal"), rss(item("Still here", "s")), status=200)
    with caplog.at_level(logging.WARNING, logger="digest.parse"):
        results = parse.parse_all(fetched, NOW)
    assert results == _serial(fetched)
    if parse._cores() > 1:  # control: the worker did die, and its feeds were parsed here
        assert "parse worker failed (BrokenProcessPool" in caplog.text
    assert results[7] is not None and [e.title for e in results[7].entries] == ["Still here"]


def test_plain_text_is_linear_on_markup_that_never_closes() -> None:
    for bait in ("&lt;" * 200_000, "<" * 200_000, "<a" * 100_000, "<p title='" * 50_000):
        start = time.monotonic()
        text = parse.plain_text(bait)
        assert time.monotonic() - start < 3.0, bait[:12]  # the old regex needed minutes for these
        assert len(text) <= len(bait), bait[:12]


def test_plain_text_keeps_words_apart_and_drops_hidden_content() -> None:
    assert parse.plain_text("<p>One.</p><p>Two <b>bold</b></p>") == "One. Two bold"
    assert parse.plain_text("Hi <script>alert(1)</script><style>p{}</style>there") == "Hi there"
    assert parse.plain_text('<p title="</noscript><img src=x onerror=alert(1)>">text</p>') == "text"
    assert parse.plain_text("3 &gt; 2 &amp; 1 &lt; 2") == "3 > 2 & 1 < 2"
