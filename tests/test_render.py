"""The email's content: golden files, the size budget, the text part, subjects, user templates."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from click.testing import CliRunner
from conftest import MakeConfig

from digest import inline, mail, render
from digest.cli import main
from digest.models import Edition, Entry, Rendered, Story
from digest.settings import NewsletterSettings, Subscriber

GOLDEN = Path(__file__).parent / "golden"
UPDATE_GOLDEN = os.environ.get("DIGEST_UPDATE_GOLDEN") == "1"  # read at import: conftest clears DIGEST_*
NOW = datetime(2026, 11, 21, 7, 0, tzinfo=UTC)
DAY = date(2026, 11, 21)
NEWS = NewsletterSettings(
    title="Orbit Daily",
    tagline="Our daily space industry news, straight into your inbox",
    sender="Orbit Daily <news@orbitdaily.example>",
    reply_to="editor@orbitdaily.example",
    base_url="https://orbitdaily.example",
    subject="{title}, {date}: {top_story}",
    postal_address="Orbit Daily, 1 Launch Pad Way, Cape Example",
)
READER = Subscriber("ada@example.com", "Ada Lovelace")
LONG_READER = Subscriber(
    "maximiliana.von-hohenzollern-sigmaringen@subscribers.example.com", "Maximiliana Theodora von Hohenzollern"
)


def entry(n: int, title: str, feed: str, section: str, summary: str = "", **extra: object) -> Entry:
    link = f"https://{feed.lower().replace(' ', '')}.example/2026/11/{n}"
    made = Entry(f"id{n}", feed, link, title, summary, NOW - timedelta(hours=n), section=section)
    return replace(made, **extra)  # type: ignore[arg-type]


def fixed_edition() -> Edition:
    """Hand-made, so the golden files do not move when grouping changes."""
    lander = Story(
        entry(
            1,
            "Société Orbitale wins €40 m “first” lunar contract",
            "Commercial Orbit",
            "Commercial",
            'The Lyon firm\'s <b>cargo</b> lander beat AT&T-backed rivals & two "primes" in a contest '
            "that ran for nearly two years, and now has to show it can build hardware at a pace that "
            "nobody in the European industry has managed since the last crewed programme ended.",
        ),
        also=(
            entry(2, "Lyon lander firm wins lunar deal", "Orbital Wire", "Launch"),
            entry(3, "SOL takes Moon cargo award", "Launch Report", "Launch"),
        ),
    )
    rocket = Story(
        entry(
            4,
            "Colossus reaches orbit on maiden flight",
            "Launch Report",
            "Launch",
            "Meridian Aerospace's heavy-lift rocket put a dummy payload into orbit.",
            image="https://launchreport.example/img/colossus.jpg",
            image_alt='Colossus lifts off at "dawn"',
        ),
    )
    quiet = Story(entry(5, "Senate trims lander line", "Space Policy Review", "Politics", ""))
    return Edition(DAY, (quiet, rocket, lander), NOW, overflow=2)


def compose_raw(rendered: Rendered, reader: Subscriber = READER) -> bytes:
    composer = mail.Composer(rendered, rendered.html, NEWS, DAY, NOW)
    return composer.message(mail.recipient(reader, DAY, NEWS, b"golden-secret"))


def compose(rendered: Rendered, reader: Subscriber = READER) -> EmailMessage:
    raw = compose_raw(rendered, reader)
    parsed = message_from_bytes(raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def parts(message: EmailMessage) -> tuple[str, str]:
    html, text = message.get_body(("html",)), message.get_body(("plain",))
    assert html is not None and text is not None
    return str(html.get_content()), str(text.get_content())


def render_fixed(edition: Edition, news: NewsletterSettings = NEWS, user_dir: Path | None = None) -> Rendered:
    return render.render_within(edition, edition.stories, (), news, user_dir, inline.inline_css)


def check_golden(name: str, actual: str) -> None:
    path = GOLDEN / name
    actual = actual.replace("\r\n", "\n")
    if UPDATE_GOLDEN:
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"{path} is missing: DIGEST_UPDATE_GOLDEN=1 writes it"
    assert actual == path.read_text(encoding="utf-8"), f"{path} differs: DIGEST_UPDATE_GOLDEN=1 rewrites it"


def test_golden_html_and_text_of_a_fixed_edition() -> None:
    html, text = parts(compose(render_fixed(fixed_edition())))
    check_golden("sample.html", html)
    check_golden("sample.txt", text)


def test_the_html_carries_every_element_of_a_real_newsletter() -> None:
    html, _ = parts(compose(render_fixed(fixed_edition())))
    assert "Orbit Daily" in html and "straight into your inbox" in html and "Saturday, 21 November 2026" in html
    assert "In this edition: 3 stories (1 Politics, 1 Launch, 1 Commercial), and 2 more on the web." in html
    assert "Société Orbitale wins €40 m “first” lunar contract" in html
    assert "&lt;b&gt;cargo&lt;/b&gt;" in html and "AT&amp;T" in html and "<b>cargo" not in html
    assert re.search(
        r'Orbital Wire:</span> <a href="https://orbitalwire\.example/2026/11/2"[^>]*>Lyon lander firm', html
    )
    assert re.search(
        r'<img src="https://launchreport\.example/img/colossus\.jpg" alt=(\'Colossus lifts off at '
        r'"dawn"\'|"Colossus lifts off at &quot;dawn&quot;") width="552" class',
        html,
    )  # no height: a blocked image is a line of alt text, not a 311 px empty box, and Outlook keeps the ratio
    assert '<a href="https://orbitdaily.example/archive/2026-11-21/"' in html and "2 more stories on the web" in html
    assert "Hello Ada Lovelace," in html and "ada@example.com" in html
    assert "https://orbitdaily.example/unsubscribe?email=ada%40example.com&amp;token=" in html
    assert "1 Launch Pad Way" in html and "View in browser" in html
    assert 'width="600"' in html.split("<!--[if mso]>", 2)[2] and "max-width:600px" in html  # fluid + Outlook ghost
    assert "border-radius" not in html
    assert "<style" in html and "prefers-color-scheme: dark" in html and 'style="' in html  # inlined + dark mode
    assert "__DIGEST_" not in html


def assert_wrapped(text: str) -> None:
    """78 columns; only one unbreakable word (a URL, an address) may run over, never split."""
    for line in text.splitlines():
        if len(line) > 78:
            assert re.fullmatch(r".{0,40} \S{30,}", line), line


def test_text_part_is_a_wrapped_reading_version() -> None:
    _, text = parts(compose(render_fixed(fixed_edition()), LONG_READER))
    assert_wrapped(text)
    flat = " ".join(text.split())
    assert "* Société Orbitale wins €40 m “first” lunar contract" in flat
    assert "Commercial Orbit, 06:00 UTC https://commercialorbit.example/2026/11/1" in flat
    assert (
        "Also covered by: - Orbital Wire: Lyon lander firm wins lunar deal https://orbitalwire.example/2026/11/2"
        in flat
    )
    assert "<b>cargo</b> lander beat AT&T-backed rivals" in flat
    assert "2 more stories on the web: https://orbitdaily.example/archive/2026-11-21/" in flat
    assert "Unsubscribe: https://orbitdaily.example/unsubscribe?email=maximiliana" in flat


def many_stories(count: int) -> Edition:
    stories = tuple(
        Story(
            entry(
                i,
                f"Story number {i} about a rocket that did a thing " + "and more " * 4,
                "Wire",
                "News",
                "A long summary sentence with quite a few words in it. " * 6,
            ),
            also=(entry(1000 + i, f"Other take {i}", "Other Outlet", "News"),),
        )
        for i in range(count)
    )
    return Edition(DAY, stories, NOW, overflow=3)


def test_150_stories_stay_under_gmails_clip_and_keep_the_footer() -> None:
    rendered = render_fixed(many_stories(150))
    shown = rendered.html.count('class="headline"')
    assert 10 < shown < 150
    assert render.personal_size(rendered.html) <= render.HTML_BUDGET
    html, text = parts(compose(rendered, LONG_READER))
    assert len(html.encode()) < 102_000
    more = 150 - shown + 3
    assert '<a href="https://orbitdaily.example/archive/2026-11-21/" class="button-link"' in html
    assert f"{more} more stories on the web" in html and f"{more} more stories on the web" in text
    assert "https://orbitdaily.example/unsubscribe?email=maximiliana.von-hohenzollern" in html.rsplit("</table>", 2)[0]
    assert html.rstrip().endswith("</html>")
    assert rendered.story_count == 150 and "Story number 0" in rendered.subject
    # the budget is used, not wasted: one more story would not fit
    bigger = render.render_within(
        many_stories(150), many_stories(150).stories[: shown + 1], (), NEWS, None, inline.inline_css
    )
    assert render.personal_size(bigger.html) > render.HTML_BUDGET or bigger.html.count('class="headline"') == shown


def test_a_small_edition_has_no_overflow_link() -> None:
    edition = Edition(DAY, fixed_edition().stories, NOW)
    html, text = parts(compose(render_fixed(edition)))
    assert "more stories on the web" not in html and "more on the web" not in text


def test_subject_is_encoded_bounded_and_led_by_the_most_covered_story() -> None:
    raw = compose_raw(render_fixed(fixed_edition()))
    message = message_from_bytes(raw, policy=policy.default)
    assert message["Subject"] == "Orbit Daily, 21 November 2026: Société Orbitale wins €40 m “first” lunar contract"
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and b"Subject: Orbit Daily, 21 November 2026: =?utf-8?" in head
    long_title = Story(entry(9, "Word " * 80, "Wire", "News"))
    line = render.subject(NEWS, fixed_edition(), [long_title])
    assert len(line) <= render.MAX_SUBJECT and line.endswith("…") and "\n" not in line


def test_feed_links_other_than_web_links_are_neutralised() -> None:
    bad = Story(entry(1, "Click", "Wire", "News", link="javascript:alert(1)"))  # type: ignore[arg-type]
    html, _ = parts(compose(render_fixed(Edition(DAY, (bad,), NOW))))
    assert "javascript:" not in html


# ------------------------------------------------------------------ user templates, via the CLI


def send(config: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--config", str(config), "send", "--now", NOW.isoformat()])
    return result.exit_code, result.stderr


def test_a_user_template_overrides_the_packaged_one(make_config: MakeConfig, tmp_path: Path) -> None:
    (tmp_path / "mine" / "partials").mkdir(parents=True)
    (tmp_path / "mine" / "partials" / "story.html.j2").write_text(
        '<tr><td class="story">MY-STORY {{ story.lead.title }}</td></tr>\n', encoding="utf-8"
    )
    config = make_config(newsletter={"templates": "mine"})
    code, err = send(config)
    assert code == 0, err
    message = next((tmp_path / "outbox" / "new").iterdir()).read_bytes()
    html = mail.html_part(message)
    assert html.count("MY-STORY ") >= 3 and 'class="headline"' not in html
    assert "Unsubscribe</a>" in html  # the packaged footer still serves


def test_a_broken_user_template_is_one_error_line_naming_it(make_config: MakeConfig, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "digest.txt.j2").write_text("Hello\n{% for x in %}\n", encoding="utf-8")
    code, err = send(make_config(newsletter={"templates": "mine"}))
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("Error: template ")
    assert "digest.txt.j2, line 2" in err and str(tmp_path / "mine") in err and str(render.packaged_templates()) in err
    assert not (tmp_path / "outbox" / "new").exists() or not any((tmp_path / "outbox" / "new").iterdir())


def test_a_missing_included_template_names_it_and_the_paths(make_config: MakeConfig, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "digest.html.j2").write_text('{% include "partials/masthead.html.j2" %}\n', encoding="utf-8")
    code, err = send(make_config(newsletter={"templates": "mine"}))
    assert code == 1 and err.count("\n") == 1
    assert "'partials/masthead.html.j2' not found" in err and str(tmp_path / "mine") in err


def test_a_missing_template_folder_is_named(make_config: MakeConfig, tmp_path: Path) -> None:
    code, err = send(make_config(newsletter={"templates": "nowhere"}))
    assert code == 1 and err.startswith("Error: [newsletter] templates: folder ") and "nowhere" in err


def test_also_covered_by_names_each_outlet_once_and_stays_compact() -> None:
    """A busy story lists each outlet once, with its count and its report's headline, then "and N more".

    The headline is what keeps a wrong merge from hiding news: the reader sees what the
    other report says, not only who published it."""
    lead = entry(1, "Heavy lifter reaches orbit", "Launch Report", "Launch")
    also = (
        entry(2, "Heavy lifter in orbit", "CNN.com - RSS Channel", "Launch"),
        entry(3, "Watch: the launch", "CNN (YouTube channel feed)", "Launch"),
        entry(4, "Orbit at last", "CNN.com - RSS Channel", "Launch"),
        *(entry(n, f"Rocket report {n}", f"Outlet {n}", "Launch") for n in range(5, 11)),
    )
    edition = Edition(DAY, (Story(lead, also),), NOW)
    html, text = parts(compose(render_fixed(edition)))
    also_html = re.search(r'<p class="also".*?</p>', html, re.S)
    assert also_html is not None
    paragraph = also_html.group(0)
    # CNN's site and its YouTube channel are one outlet, linked once (its best report) with the count
    assert paragraph.count("CNN") == 1
    assert re.search(
        r'CNN\.com - RSS Channel \(3\):</span> <a href="https://cnn\.com-rsschannel\.example/2026/11/2"[^>]*>Heavy lifter in orbit</a>',
        paragraph,
    )
    assert paragraph.count('class="also-link"') == render.ALSO_OUTLETS
    assert "Rocket report 5</a>" in paragraph and "Rocket report 8" not in paragraph
    assert paragraph.endswith(f"and {7 - render.ALSO_OUTLETS} more outlets</p>")
    block = text.split("Also covered by:", 1)[1].split("\r\n\r\n", 1)[0]
    assert block.count("CNN") == 1
    assert (
        "  - CNN.com - RSS Channel (3): Heavy lifter in orbit\r\n    https://cnn.com-rsschannel.example/2026/11/2"
        in block
    )
    assert "Rocket report 5" in block and "Rocket report 8" not in block
    assert block.endswith(f"  - and {7 - render.ALSO_OUTLETS} more outlets")


def test_each_other_outlet_is_a_line_with_its_headline() -> None:
    story = fixed_edition().stories[2]
    html, text = parts(compose(render_fixed(Edition(DAY, (story,), NOW))))
    paragraph = re.search(r'<p class="also".*?</p>', html, re.S).group(0)  # type: ignore[union-attr]
    assert re.search(
        r">Also covered by<br>\s*<span [^>]*>Orbital Wire:</span> <a [^>]*>Lyon lander firm wins lunar deal</a>"
        r"<br>\s*<span [^>]*>Launch Report:</span> <a [^>]*>SOL takes Moon cargo award</a></p>",
        paragraph,
    )
    assert "more" not in paragraph
    assert (
        "  - Orbital Wire: Lyon lander firm wins lunar deal\r\n    https://orbitalwire.example/2026/11/2\r\n"
        "  - Launch Report: SOL takes Moon cargo award\r\n    https://" in text
    )


def test_the_leads_own_outlet_is_not_also_covered_by_itself() -> None:
    """Fox's video under a Fox lead is "more from Fox", not another outlet covering the story."""
    lead = entry(1, "Autopsy findings discussed", "Fox News (YouTube channel feed)", "News")
    also = (
        entry(2, "Autopsy shows asphyxia", "FOX News latest", "News", link="https://www.foxnews.com/us/autopsy"),
        entry(3, "A private autopsy said asphyxiation", "NYT > U.S. News", "News"),
        entry(4, "Examiners confirm homicide", "Fox News (YouTube channel feed)", "News"),
    )
    html, text = parts(compose(render_fixed(Edition(DAY, (Story(lead, also),), NOW))))
    paragraphs = re.findall(r'<p class="also".*?</p>', html, re.S)
    assert len(paragraphs) == 2
    covered, more = paragraphs
    assert re.search(r"NYT &gt; U\.S\. News:</span> <a [^>]*>A private autopsy said asphyxiation</a></p>", covered)
    assert "Fox" not in covered
    assert '">More from Fox News (YouTube channel feed): <a ' in more
    assert "https://www.foxnews.com/us/autopsy" in more and more.endswith("and 1 more</p>")
    assert "Also covered by:\r\n  - NYT > U.S. News: A private autopsy said asphyxiation\r\n    https://" in text
    assert (
        "More from Fox News (YouTube channel feed) (2): Autopsy shows asphyxia\r\n    https://www.foxnews.com/us/autopsy"
        in text
    )


def test_a_story_told_only_by_the_leads_outlet_has_no_also_covered_by() -> None:
    lead = entry(1, "Bridge opens", "Local Wire", "News")
    story = Story(lead, (entry(2, "Bridge opens: pictures", "Local Wire", "News"),))
    html, text = parts(compose(render_fixed(Edition(DAY, (story,), NOW))))
    assert "Also covered by" not in html and "Also covered by" not in text
    assert (
        ">More from Local Wire: <a" in html
        and "More from Local Wire: Bridge opens: pictures\r\n    https://localwire.example/2026/11/2" in text
    )
