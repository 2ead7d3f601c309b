"""Stories -> the day's Edition: sections in config order; the email capped at `max_stories`, the rest for the web."""

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
    """Keep the `max_stories` best (group order: most-covered first) for the email, the rest
    for the web, each ordered by section.

    The cap applies before the section order so that a busy section cannot crowd out the
    day's most-covered story from a later one.
    """
    rank = {name: i for i, name in enumerate(sections)}

    def by_section(chosen: Sequence[Story]) -> tuple[Story, ...]:
        return tuple(sorted(chosen, key=lambda s: rank.get(s.section, len(rank))))  # stable: group order within

    more = by_section(stories[max_stories:])
    return Edition(
        day=day,
        stories=by_section(stories[:max_stories]),
        created_at=now,
        overflow=len(more),
        feed_health=tuple(feed_health),
        more=more,
    )


def for_topics(edition: Edition, topics: Sequence[str]) -> tuple[Story, ...]:
    """The stories a subscriber with these topics gets; no topics means everything."""
    return _wanted(edition.stories, topics)


def every_story(edition: Edition, sections: Sequence[str]) -> tuple[Story, ...]:
    """The email's stories and the web-only ones, by section (the email's first within each)."""
    rank = {name: i for i, name in enumerate(sections)}
    return tuple(sorted((*edition.stories, *edition.more), key=lambda s: rank.get(s.section, len(rank))))


def _wanted(stories: Sequence[Story], topics: Sequence[str]) -> tuple[Story, ...]:
    if not topics:
        return tuple(stories)
    wanted = set(topics)
    return tuple(s for s in stories if s.section in wanted)
