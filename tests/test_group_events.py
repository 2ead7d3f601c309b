"""Same event, not same topic (issue 13): the failure shapes of real busy days, with made-up entries.

Each test builds a small batch in which the right answer is plain to a reader: a shared
common word, a similar name, one famous person in several events, a feed's furniture or
one outlet's own reports must not tie two events; reports of one event in other words,
other languages and other scripts must still join. The batches carry unrelated filler
reports too, because the stage learns what is rare from the batch itself.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from digest import textproc
from digest.group import TUNING, _docs, group
from digest.models import Edition, Entry, Story, outlet_key
from digest.preview import pages
from digest.settings import NewsletterSettings
from digest.store import _edition_dict, _edition_from

T0 = datetime(2026, 6, 2, 8, 0, tzinfo=UTC)

FILLER = [
    ("Central bank holds interest rates steady", "The bank kept its main rate unchanged, citing cooling inflation."),
    ("Ferry service resumes after storm damage", "Crossings restart on Tuesday after repairs to the pier."),
    ("Library extends weekend opening hours", "Branches will open on Sundays from next month."),
    ("Local orchestra announces summer programme", "The season opens with a free concert in the park."),
    ("Farmers warn of poor harvest after dry spring", "Wheat yields are expected to fall by a fifth."),
    ("City council approves new cycle lanes", "Twelve kilometres of protected lanes will be built by 2027."),
    ("Airport passenger numbers recover", "Traffic reached 80 per cent of its pre-crisis level in May."),
    ("Museum acquires rare medieval manuscript", "The illuminated psalter was bought at auction in Paris."),
]


def entry(
    id: str, title: str, summary: str = "", *, feed: str = "Feed", hours: float = 0.0, site: str = ""
) -> Entry:
    site = site or re.sub(r"\W+", "", feed.lower()) + ".example"
    return Entry(id=id, feed=feed, link=f"https://{site}/{id}", title=title, summary=summary,
                 published=T0 + timedelta(hours=hours))  # fmt: skip


def filler(n: int = len(FILLER)) -> list[Entry]:
    return [entry(f"fill{i}", t, s, feed=f"Filler {i}") for i, (t, s) in enumerate(FILLER[:n])]


def together(stories: tuple[Story, ...], a: str, b: str) -> bool:
    return any({a, b} <= {e.id for e in s.entries} for s in stories)


# --------------------------------------------------------------------------- must stay apart


def test_one_shared_common_word_does_not_tie_two_events() -> None:
    batch = [
        entry("drug", "Drugs giant cuts jobs as profits slide",
              "The pharmaceutical giant said it would close two plants in Ohio.", feed="Business Wire"),
        entry("fire", "Giant Forest fire threatens ancient sequoias",
              "Crews wrapped the General Sherman tree in foil as flames neared the grove.", feed="West Coast News"),
        entry("nk", "North Korea tests new missile engine",
              "Pyongyang said the engine would power a new class of rockets.", feed="Asia Desk"),
        entry("sk", "Landslide buries homes in South Korea",
              "Heavy rain loosened a hillside in Gangwon province, burying six houses.", feed="World Wire"),
        *filler(),
    ]  # fmt: skip
    stories = group(batch)
    assert not together(stories, "drug", "fire")
    assert not together(stories, "nk", "sk")


def test_similar_names_of_different_people_stay_apart() -> None:
    batch = [
        entry("neil", "Andrew Neil quits as chairman of the Spectator",
              "The broadcaster Andrew Neil said he would leave the magazine's board.", feed="UK Media"),
        entry("andrews", "Daniel Andrews announces Victoria budget",
              "Premier Daniel Andrews unveiled spending on hospitals and rail.", feed="Melbourne Post"),
        entry("cooper", "Anderson Cooper hosts town hall on schools",
              "Anderson Cooper asked parents about reopening classrooms.", feed="US Cable"),
        entry("jilly", "Jilly Cooper publishes new novel at 83",
              "The author Jilly Cooper returns with a story of racing and romance.", feed="Books Today"),
        *filler(),
    ]  # fmt: skip
    stories = group(batch)
    assert not together(stories, "neil", "andrews")
    assert not together(stories, "cooper", "jilly")


def test_one_famous_name_in_several_events_is_several_stories() -> None:
    batch = [
        entry("tiktok", "Trump threatens to ban TikTok", "Trump said the video app was a security risk.",
              feed="Tech Daily"),
        entry("ballots", "Trump attacks mail ballots in Nevada", "Trump claimed postal voting would be rigged.",
              feed="Politics Now"),
        entry("interview", "Trump sits for interview on the pandemic",
              "In the interview Trump defended his handling of testing.", feed="Evening Bulletin"),
        entry("rally-mel", "Anti-lockdown rally in Melbourne ends in arrests",
              "Police arrested ten people at the protest outside parliament.", feed="Melbourne Post"),
        entry("rally-la", "Anti-vaccine rally draws crowd in Los Angeles",
              "Hundreds marched downtown against vaccine mandates.", feed="West Coast News"),
        *filler(),
    ]  # fmt: skip
    stories = group(batch)
    for a, b in (("tiktok", "ballots"), ("tiktok", "interview"), ("ballots", "interview"), ("rally-mel", "rally-la")):
        assert not together(stories, a, b), (a, b)


def test_a_feeds_boilerplate_does_not_glue_its_entries() -> None:
    tail = (" Subscribe to Channel Nine News! https://example.com/sub Watch more Channel Nine News Video:"
            " https://video.example.com Channel Nine News is a 24-hour all-encompassing news service.")  # fmt: skip
    topics = [
        ("Mayor holds press conference on flooding", "The mayor outlined relief funds for flooded streets."),
        ("Senator weighs in on trade deal", "The senator said tariffs would hurt farmers."),
        ("Anchor interviews Olympic swimmer", "The swimmer talked about training during lockdown."),
        ("Chef shares summer barbecue tips", "Grilling vegetables takes patience, the chef said."),
        ("Storm chasers film tornado in Kansas", "The twister crossed open fields near Wichita."),
    ]
    batch = [entry(f"v{i}", t, s + tail, feed="Channel Nine (YouTube channel feed)", hours=i)
             for i, (t, s) in enumerate(topics)] + filler()  # fmt: skip
    stories = group(batch)
    assert all(len(s.entries) == 1 for s in stories if s.lead.id.startswith("v"))


def test_one_outlets_reports_on_a_topic_are_not_one_story() -> None:
    batch = [
        entry("o1", "Protesters march through downtown Portland", "Thousands gathered peacefully at the waterfront.",
              feed="Daily Planet"),
        entry("o2", "Protesters clash with police in Seattle", "Officers used pepper spray near the market.",
              feed="Daily Planet", hours=1),
        entry("o3", "Protesters in Denver demand police reform", "Organisers presented a list of demands.",
              feed="Daily Planet", hours=2),
        *filler(),
    ]  # fmt: skip
    stories = group(batch)
    assert not any(len(s.entries) > 1 for s in stories if s.lead.id.startswith("o"))


# --------------------------------------------------------------------------- must join


def test_one_event_in_other_words_from_other_outlets_joins() -> None:
    batch = [
        entry("a", "Carole Baskin awarded zoo once owned by Joe Exotic",
              "A federal judge gave Carole Baskin control of the Oklahoma zoo of 'Tiger King' star Joe Exotic.",
              feed="News Network"),
        entry("b", "Tiger King star Carole Baskin wins control of rival Joe Exotic's Oklahoma zoo",
              "Judge hands Baskin the 16-acre park after a trademark fight.", feed="Mail Digest", hours=3),
        entry("c", "Couple dresses as Tiger King characters during lockdown",
              "The pair recreated scenes from the documentary at home.", feed="Fun Times", hours=1),
        *filler(),
    ]  # fmt: skip
    stories = group(batch)
    assert together(stories, "a", "b")
    assert not together(stories, "a", "c") and not together(stories, "b", "c")


def test_two_french_reports_of_one_event_join_and_a_near_miss_stays_apart() -> None:
    batch = [
        entry("fr1", "Incendie à Marseille : trois immeubles évacués dans le quartier du Panier",
              "Les pompiers de Marseille ont évacué trois immeubles du Panier après un incendie dans la nuit.",
              feed="Le Quotidien"),
        entry("fr2", "Marseille : un incendie oblige à évacuer des immeubles du Panier",
              "Dans la nuit, un incendie a contraint les pompiers à évacuer les habitants de trois immeubles.",
              feed="Info Sud", hours=2),
        entry("fr3", "Marseille : la mairie présente son budget pour les écoles",
              "La mairie de Marseille consacrera trois millions d'euros à la rénovation des écoles.",
              feed="Info Sud Matin", hours=1),
        entry("fr4", "Grève des contrôleurs aériens : vols annulés à Nice",
              "La grève perturbe le trafic de l'aéroport de Nice ce mardi.", feed="Le Quotidien"),
        *filler(),
    ]  # fmt: skip
    stories = group(batch)
    assert together(stories, "fr1", "fr2")
    assert not together(stories, "fr1", "fr3") and not together(stories, "fr2", "fr3")


def test_two_chinese_headlines_of_one_event_join() -> None:
    batch = [
        entry("zh1", "嫦娥六号探测器成功着陆月球背面", "嫦娥六号探测器在月球背面南极艾特肯盆地成功着陆。", feed="新华"),
        entry("zh2", "嫦娥六号成功着陆月球背面南极", "中国嫦娥六号探测器今日着陆月球背面。", feed="人民", hours=1),
        entry("zh3", "上海地铁新线路开通运营", "上海地铁十八号线二期今日开通。", feed="新华"),
        *filler(),
    ]
    stories = group(batch)
    assert together(stories, "zh1", "zh2")
    assert not together(stories, "zh1", "zh3")


def test_an_outlets_site_and_its_video_channel_count_as_one_outlet() -> None:
    batch = [
        entry("site", "Sheriff drops riot gear and joins peaceful protesters in Flint",
              "Genesee County Sheriff Chris Swanson took off his helmet and walked with the crowd.",
              feed="CNN.com - RSS Channel"),
        entry("tube", "Sheriff Chris Swanson joins protesters in Flint, Michigan",
              "Genesee County Sheriff Chris Swanson put down his baton and marched with protesters.",
              feed="CNN (YouTube channel feed)", hours=1),
        *filler(),
    ]  # fmt: skip
    stories = group(batch)
    story = next(s for s in stories if s.lead.id in ("site", "tube"))
    assert {e.id for e in story.entries} == {"site", "tube"}  # a clear match still joins ...
    # ... and it is the lead's own outlet: "more from", not another outlet under "Also covered by"
    assert story.outlets == () and len(story.own) == 1


def test_two_papers_whose_feeds_share_a_section_name_are_two_outlets() -> None:
    """News Corp titles its feeds "Breaking News | Daily Telegraph", "Breaking News | Herald
    Sun": the outlet is the part its site's domain names, so the two papers' reports of one
    event are "also covered by" each other, not one outlet's own reports."""
    batch = [
        entry("tele", "Sydney ferry runs aground at Circular Quay, 40 passengers rescued",
              "A Manly ferry ran aground at Circular Quay on Tuesday morning; all 40 passengers were rescued.",
              feed="Breaking News | Daily Telegraph", site="www.dailytelegraph.com.au"),
        entry("herald", "Manly ferry aground at Circular Quay: 40 passengers rescued",
              "Forty passengers were rescued after a Manly ferry ran aground at Circular Quay.",
              feed="Breaking News | Herald Sun", site="www.heraldsun.com.au", hours=1),
        *filler(),
    ]  # fmt: skip
    stories = group(batch)
    story = next(s for s in stories if s.lead.id in ("tele", "herald"))
    assert {e.id for e in story.entries} == {"tele", "herald"}
    assert [o.name for o in story.outlets] == [story.also[0].feed] and story.own == ()


def test_the_outlet_is_the_part_of_a_feed_title_that_names_the_reports_site() -> None:
    mail = "https://www.dailymail.co.uk/news/article-1/story.html"
    assert outlet_key("Articles | Mail Online", mail) == outlet_key("Mail Online - Articles", mail) == "mail online"
    assert outlet_key("Breaking News | Daily Telegraph", "https://www.dailytelegraph.com.au/news/a") == "daily telegraph"
    assert outlet_key("Breaking News | Breitbart", "https://www.breitbart.com/a") == "breitbart"
    assert outlet_key("NYT > U.S. News", "https://www.nytimes.com/a") == outlet_key("NYT > World", "") == "nyt"
    assert outlet_key("BBC News - Home", "https://www.bbc.co.uk/news/a") == "bbc news"
    site = outlet_key("CNN.com - RSS Channel - App International Edition", "https://edition.cnn.com/2020/a")
    assert site == outlet_key("CNN (YouTube channel feed)", "https://www.youtube.com/watch?v=a") == "cnn"
    assert outlet_key("Top Stories - Reuters", "https://www.reuters.com/a") == "reuters"
    assert outlet_key("The Latest | The Times", "https://www.thetimes.co.uk/a") == "times"
    assert outlet_key("World news | The Guardian", "https://www.theguardian.com/world/a") == "guardian"
    assert outlet_key("Breaking News | Daily Telegraph") == "breaking news"  # no link: the first part, as before


# --------------------------------------------------------------------------- text rules


def test_words_follow_unicode_rules_in_every_script() -> None:
    assert next(w.lower for w in textproc.words("Alcântara launch site reopens", None)) == "alcantara"
    assert {"москве", "пожар"} <= {w.lower for w in textproc.words("Пожар в Москве", "russian")}
    assert {"σεισμος", "κρητη"} <= {w.lower for w in textproc.words("Σεισμός στην Κρήτη", None)}  # accents folded
    assert {"嫦娥", "娥六"} <= {w.lower for w in textproc.words("嫦娥六号", None)}
    assert [w.lower for w in textproc.words("deaths rose to 19,000 (1.7%)", "english") if w.kind == "n"] == [
        "19,000",
        "1.7%",
    ]


def test_language_detection_and_stemming_per_language() -> None:
    assert textproc.detect(["les", "pompiers", "ont", "évacué", "des", "immeubles", "dans", "la", "nuit"]) == "french"
    assert textproc.detect(["the", "firefighters", "evacuated", "the", "buildings", "in", "the", "night"]) == "english"
    assert textproc.detect(["xq", "zz"]) is None
    assert textproc.stem("french", "immeubles") == textproc.stem("french", "immeuble")
    assert textproc.stem("english", "protests") == textproc.stem("english", "protest") != "protests"


def test_general_word_frequencies_match_wordfreq_and_grouping_does_not_import_it() -> None:
    """textproc reads wordfreq's data file itself (importing wordfreq costs 0.25 s): the
    values must be wordfreq's own, in every language the detector knows."""
    import math
    import subprocess
    import sys

    import wordfreq

    for lang, code in textproc._WORDFREQ.items():
        table = wordfreq.get_frequency_dict(code, wordlist="small")
        sample = list(table)[::97]
        assert len(sample) > 100
        for word in sample:
            assert textproc.zipf(lang, word) == pytest.approx(math.log10(table[word] * 1e9), abs=1e-9), (lang, word)
    assert textproc.zipf("english", "the") > 7 > textproc.zipf("english", "giant") > 3
    assert textproc.zipf("english", "qwxzzyq") == 0.0
    code = (
        "import sys; from datetime import datetime, UTC; from digest.group import group; from digest.models import Entry\n"
        "e = [Entry(id=str(i), feed=f'https://site{i}.example/feed', title='Giant forest fire spreads', summary='', link='', guid='',"
        " published=datetime(2026, 6, 2, tzinfo=UTC)) for i in range(3)]\n"
        "assert len(group(e)) == 1; print('wordfreq' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_names_are_not_stemmed_but_words_are() -> None:
    batch = [
        entry("p1", "Andrews speaks", "Premier Daniel Andrews spoke to reporters about the protests.", feed="A"),
        entry("p2", "Andrew speaks", "The broadcaster Andrew Neil spoke about protesting.", feed="B"),
    ]
    (docs, names) = _docs(sorted(batch, key=lambda e: e.id), TUNING)
    assert {"andrews", "andrew"} <= names
    assert "andrews" in docs[0].summary and "andrew" in docs[1].summary
    assert "andrew" not in docs[0].summary
    assert set(docs[0].summary) & set(docs[1].summary) >= {textproc.stem("english", "protests")}


# --------------------------------------------------------------------------- properties

WORDS = st.sampled_from(
    [
        "Mars",
        "rover",
        "dust",
        "storm",
        "NASA",
        "Kazakhstan",
        "lunar",
        "station",
        "Artemis",
        "Bulgaria",
        "signs",
        "accord",
        "budget",
        "vote",
        "giant",
        "forest",
        "fire",
        "rally",
        "Melbourne",
        "police",
        "arrests",
        "zoo",
        "judge",
        "trade",
        "tariff",
    ]
)
TEXT = st.lists(WORDS, min_size=2, max_size=9).map(" ".join)
ENTRIES = st.lists(
    st.builds(
        lambda i, t, s, f, h: entry(f"e{i}", t, s, feed=f"Outlet {f}", hours=h),
        st.integers(0, 10_000), TEXT, TEXT, st.integers(0, 4), st.integers(0, 72),
    ),
    max_size=14, unique_by=lambda e: e.id,
)  # fmt: skip


@settings(max_examples=60, deadline=None)
@given(ENTRIES, st.randoms(use_true_random=False))
def test_each_entry_is_in_exactly_one_story_whatever_the_order(entries: list[Entry], rnd: object) -> None:
    stories = group(entries)
    ids = [e.id for s in stories for e in s.entries]
    assert sorted(ids) == sorted(e.id for e in entries)
    shuffled = list(entries)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    assert group(shuffled) == stories
    for story in stories:
        assert len(story.why) == len(story.also)
        assert [j.entry_id for j in story.why] == [e.id for e in story.also]


# --------------------------------------------------------------------------- explanation


def test_stories_page_explains_why_each_report_joined_and_the_why_survives_the_store() -> None:
    batch = [
        entry("a", "Carole Baskin awarded zoo once owned by Joe Exotic",
              "A federal judge gave Carole Baskin control of the Oklahoma zoo of Joe Exotic.", feed="News Network"),
        entry("b", "Carole Baskin wins control of Joe Exotic's Oklahoma zoo",
              "Judge hands Baskin the park after a trademark fight.", feed="Mail Digest", hours=3),
        *filler(),
    ]  # fmt: skip
    stories = group(batch)
    story = next(s for s in stories if s.also)
    (why,) = story.why
    assert why.entry_id == story.also[0].id and why.score >= 0.16
    assert {"Baskin", "Exotic"} & set(why.terms)
    edition = Edition(day=date(2026, 6, 2), stories=stories, created_at=T0)
    assert _edition_from(_edition_dict(edition)) == edition
    page = html.unescape(
        pages().get_template("stories.html.j2").render(
            newsletter=NewsletterSettings(), subscriber=None, edition=edition, stored=False, page="stories",
            sections=[("News", list(stories))], entry_count=len(batch), threshold=0.16,
        )
    )  # fmt: skip
    assert f"joined with score {why.score:.2f} on" in page
    assert all(f'<span class="term">{t}</span>' in page for t in why.terms)
