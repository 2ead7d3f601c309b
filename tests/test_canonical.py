"""One page reached through two links is one story, and readers see the clean link."""

from __future__ import annotations

from datetime import UTC, datetime

from digest.group import group
from digest.models import Entry
from digest.parse import canonical_link

NOW = datetime(2026, 11, 21, 7, tzinfo=UTC)


def test_the_same_page_by_two_links_is_one_story() -> None:
    a = Entry("a", "Orbital Wire", canonical_link("https://www.example.com/moon/base/?utm_source=rss"), "Moon base plan", "", NOW)
    b = Entry("b", "Space Aggregator", canonical_link("http://example.com/moon/base?ito=1490"), "Agency unveils plan", "", NOW)
    c = Entry("c", "Launch Report", canonical_link("https://example.com/moon/other"), "Unrelated pad fire", "", NOW)
    stories = group([a, b, c])
    assert sorted(len(s.entries) for s in stories) == [1, 2]
    merged = next(s for s in stories if len(s.entries) == 2)
    assert {e.id for e in merged.entries} == {"a", "b"}
    assert all("utm_" not in e.link and "ito=" not in e.link for e in merged.entries)
