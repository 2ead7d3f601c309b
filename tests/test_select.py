"""The day's stories -> an Edition: the email's share, the web-only rest, and their order.

Property tests over made-up stories, and a round trip of the rest through a real SQLite
state: what the email has no room for is kept, counted per reader, and shown on the web.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from digest.models import Edition, Entry, Story
from digest.select import arrange, every_story, for_topics
from digest.store import Store

SECTIONS = ("Politics", "Launch", "Commercial")
NOW = datetime(2026, 11, 21, 7, tzinfo=UTC)


def story(n: int, section: str) -> Story:
    lead = Entry(f"id{n}", "Feed", f"https://feed.example/{n}", f"Story {n}", "", NOW, section=section)
    return Story(lead)


stories_st = st.lists(st.sampled_from((*SECTIONS, "Unlisted")), max_size=40).map(
    lambda sections: [story(n, s) for n, s in enumerate(sections)]
)


def ordered_by_section(part: tuple[Story, ...], original: list[Story]) -> bool:
    """Sections in config order (unknown ones last); within one, the group order kept."""
    rank = {name: i for i, name in enumerate(SECTIONS)}
    position = {id(s): i for i, s in enumerate(original)}
    keys = [(rank.get(s.section, len(rank)), position[id(s)]) for s in part]
    return keys == sorted(keys)


@given(stories_st, st.integers(0, 45), st.lists(st.sampled_from(SECTIONS), max_size=3, unique=True))
def test_every_story_is_in_the_email_or_on_the_web_once(stories: list[Story], cap: int, topics: list[str]) -> None:
    edition = arrange(stories, SECTIONS, cap, NOW.date(), NOW)
    assert {id(s) for s in edition.stories} == {id(s) for s in stories[:cap]}  # the most covered go in the email
    assert edition.more == tuple(stories[cap:])  # the rest keep the group order: most covered first
    assert ordered_by_section(edition.stories, stories)
    assert edition.overflow == len(edition.more) == edition.more_count()
    everything = every_story(edition, SECTIONS)
    assert sorted(map(id, everything)) == sorted(map(id, stories))
    rank = {name: i for i, name in enumerate(SECTIONS)}
    assert [rank.get(s.section, 3) for s in everything] == sorted(rank.get(s.section, 3) for s in everything)
    for section in {s.section for s in stories}:  # within a section the email's stories come first
        mine = [s for s in everything if s.section == section]
        email = [s for s in edition.stories if s.section == section]
        assert mine[: len(email)] == email


@given(stories_st, st.integers(0, 45), st.lists(st.sampled_from(SECTIONS), max_size=3, unique=True))
def test_a_reader_of_a_few_sections_gets_up_to_max_stories_of_theirs(
    stories: list[Story], cap: int, topics: list[str]
) -> None:
    """A quiet section is not left out on a busy day: its reader's email fills up from the day's others."""
    edition = arrange(stories, SECTIONS, cap, NOW.date(), NOW)
    got = for_topics(edition, topics, cap, SECTIONS)
    if not topics:
        assert got == edition.stories
        return
    theirs = [s for s in stories if s.section in topics]  # group order
    assert sorted(map(id, got)) == sorted(map(id, theirs[:cap]))  # their most covered, up to the cap
    assert ordered_by_section(got, stories)
    left = edition.more_count(topics, got)
    assert left == len(theirs) - len(got)  # the email's "N more on the web" for them


def test_an_older_edition_knows_only_its_count() -> None:
    old = Edition(date(2026, 11, 20), (story(1, "Launch"),), NOW, overflow=7)
    assert old.more_count() == old.more_count(["Politics"]) == 7  # the stories themselves were never kept


def test_the_web_only_stories_survive_the_state(tmp_path: Path) -> None:
    stories = [story(n, SECTIONS[n % 3]) for n in range(9)]
    edition = arrange(stories, SECTIONS, 4, NOW.date(), NOW)
    with Store(tmp_path / "state.sqlite3") as store:
        store.record_edition(edition, [])
    with Store.read_only(tmp_path / "state.sqlite3") as store:
        again = store.edition(NOW.date())
        [(day, created, count, tops)] = store.edition_index(5)
    assert again is not None
    assert [s.lead.id for s in again.more] == [s.lead.id for s in edition.more] and again.overflow == 5
    assert [s.lead.id for s in again.stories] == [s.lead.id for s in edition.stories]
    assert (day, created, count) == (NOW.date(), NOW, 9)
    assert tops == tuple(s.lead.title for s in edition.stories[:3])
