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
    """Keep the `max_stories` best (group order: most-covered first) for the email, ordered by
    section; the rest, in group order, for the web and for readers of a few sections.

    The cap applies before the section order so that a busy section cannot crowd out the
    day's most-covered story from a later one.
    """
    more = tuple(stories[max_stories:])
    return Edition(
        day=day,
        stories=_by_section(stories[:max_stories], sections),
        created_at=now,
        overflow=len(more),
        feed_health=tuple(feed_health),
        more=more,
    )


def for_topics(edition: Edition, topics: Sequence[str], max_stories: int, sections: Sequence[str]) -> tuple[Story, ...]:
    """The stories a reader of `topics` gets, by section; no topics means the edition's email.

    A reader of a few sections gets up to `max_stories` of theirs: the email's, then the
    most covered of the day's others, so a quiet section is not left out on a busy day.
    """
    if not topics:
        return edition.stories
    wanted = set(topics)
    mine = [s for s in edition.stories if s.section in wanted]
    extra = [s for s in edition.more if s.section in wanted][: max(0, max_stories - len(mine))]
    return _by_section((*mine, *extra), sections)


def every_story(edition: Edition, sections: Sequence[str]) -> tuple[Story, ...]:
    """The email's stories and the web-only ones, by section (the email's first within each)."""
    return _by_section((*edition.stories, *edition.more), sections)


def _by_section(stories: Sequence[Story], sections: Sequence[str]) -> tuple[Story, ...]:
    """In config section order, unknown sections last; stable, so group order holds within each."""
    rank = {name: i for i, name in enumerate(sections)}
    return tuple(sorted(stories, key=lambda s: rank.get(s.section, len(rank))))
