"""Stories -> the day's Edition: sections in config order, capped at `max_stories`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from .models import Edition, Story


def arrange(
    stories: Sequence[Story],
    sections: Sequence[str],
    max_stories: int,
    day: date,
    now: datetime,
    feed_health: Sequence[str] = (),
) -> Edition:
    """Keep the `max_stories` best (group order: most-covered first), then order by section.

    The cap applies before the section order so that a busy section cannot crowd out the
    day's most-covered story from a later one.
    """
    kept = list(stories[:max_stories])
    rank = {name: i for i, name in enumerate(sections)}
    kept.sort(key=lambda s: rank.get(s.section, len(rank)))  # stable: group order within a section
    return Edition(
        day=day,
        stories=tuple(kept),
        created_at=now,
        overflow=max(0, len(stories) - max_stories),
        feed_health=tuple(feed_health),
    )


def for_topics(edition: Edition, topics: Sequence[str]) -> tuple[Story, ...]:
    """The stories a subscriber with these topics gets; no topics means everything."""
    if not topics:
        return edition.stories
    wanted = set(topics)
    return tuple(s for s in edition.stories if s.section in wanted)
