"""Edition -> HTML and plain text with Jinja2, once per edition and section set.

User templates (a directory named in config) come first; the packaged defaults always
work. Autoescape and StrictUndefined are on, so a typo fails loudly instead of mailing
blanks. Personalisation is left as markers (see models.NAME_MARK) for mail.py.

Gmail clips HTML over ~102 KB and hides the rest, unsubscribe link included, so
`render_within` measures the finished (inlined) HTML and moves the stories that do not
fit into the "N more stories" link to the web archive.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import date, datetime
from functools import cache
from importlib.resources import files
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2

from .errors import RenderError
from .models import EMAIL_MARK, NAME_MARK, PREFERENCES_MARK, UNSUBSCRIBE_MARK, Edition, Rendered, Story
from .settings import NewsletterSettings

MAX_SUBJECT = 150
SUMMARY_CHARS = 160
"""About two lines of the 600 px layout: a digest teases, the outlet tells."""
HTML_BUDGET = 88_000
"""Bytes of finished HTML, personalisation included: under Gmail's clip (102,000) even
quoted-printable encoded, and under the checker's 90,000 warning."""
PERSONAL_ALLOWANCE = {NAME_MARK: 240, EMAIL_MARK: 320, UNSUBSCRIBE_MARK: 800, PREFERENCES_MARK: 800}
"""Worst-case bytes each marker can become per occurrence (HTML-escaped name/address/URL)."""


ALSO_OUTLETS = 4
"""Outlets named under a story before "and N more": a busy story stays a line, not a list."""


def packaged_templates() -> Path:
    """Inside an installed wheel the templates sit in the package; in a checkout, at the top."""
    inside = Path(str(files("digest"))) / "templates"
    return inside if inside.is_dir() else Path(__file__).resolve().parent.parent / "templates"


@cache
def environment(user_dir: Path | None) -> jinja2.Environment:
    search = [str(user_dir)] if user_dir else []
    search.append(str(packaged_templates()))
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        autoescape=jinja2.select_autoescape(("html", "html.j2", "htm"), default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=True,
    )
    env.filters.update(wrap=_wrap, brief=_brief, clock=_clock, url=_url)
    return env


def render_within(
    edition: Edition,
    stories: Sequence[Story],
    topics: Sequence[str],
    newsletter: NewsletterSettings,
    user_dir: Path | None,
    finish: Callable[[str], str],
    budget: int = HTML_BUDGET,
) -> Rendered:
    """Render and `finish` (inline) the HTML; keep the most stories whose HTML fits `budget`.

    Stories are dropped from the end (binary search on the count, each try measured for
    real); they are counted into the overflow link, and the footer always stays.
    """

    def attempt(count: int) -> Rendered:
        done = render(edition, stories[:count], topics, newsletter, user_dir, dropped=len(stories) - count)
        return replace(done, html=finish(done.html), subject=full_subject, story_count=len(stories))

    full_subject = subject(newsletter, edition, stories)
    best = attempt(len(stories))
    if personal_size(best.html) <= budget:
        return best
    fits, too_many = -1, len(stories)
    while too_many - fits > 1:
        middle = (fits + too_many) // 2 if fits >= 0 else 0
        tried = attempt(middle)
        if personal_size(tried.html) <= budget:
            fits, best = middle, tried
        else:
            too_many = middle
        if fits < 0 and middle == 0:
            raise RenderError(
                f"the email's HTML is {personal_size(tried.html)} bytes even without stories "
                f"(budget {budget}): shrink the templates" + (f" in {user_dir}" if user_dir else "")
            )
    return best


def personal_size(html: str) -> int:
    """UTF-8 size of the HTML once every marker holds the longest value we allow."""
    grow = sum(html.count(mark) * (room - len(mark)) for mark, room in PERSONAL_ALLOWANCE.items())
    return len(html.encode()) + grow


def render(
    edition: Edition,
    stories: Sequence[Story],
    topics: Sequence[str],
    newsletter: NewsletterSettings,
    user_dir: Path | None = None,
    *,
    dropped: int = 0,
    web: bool = False,
) -> Rendered:
    """Render one section set of the edition; raises RenderError naming the template.

    `dropped` stories did not fit the size budget: they join the edition's web-only
    stories (those of `topics`) in the "N more stories on the web" count. `web` renders
    the public archive page: no greeting, and a footer that invites to subscribe.
    """
    if user_dir is not None and not user_dir.is_dir():
        raise RenderError(f"[newsletter] templates: folder {user_dir} does not exist: create it or remove the key")
    env = environment(user_dir)
    sections = _by_section(stories)
    overflow = edition.more_count(topics, stories) + dropped
    context = {
        "newsletter": newsletter,
        "edition": edition,
        "sections": sections,
        "topics": list(topics),
        "date_long": long_date(edition.day),
        "in_this_edition": _in_this_edition(sections, overflow),
        "preheader": " · ".join(s.lead.title for s in stories[:3]),
        "overflow": overflow,
        "also_limit": ALSO_OUTLETS,
        "archive_url": f"{newsletter.base_url}/archive/{edition.key}/" if newsletter.base_url else "",
        "web": web,
        "name_mark": NAME_MARK,
        "email_mark": EMAIL_MARK,
        "unsubscribe_mark": UNSUBSCRIBE_MARK,
        "preferences_mark": PREFERENCES_MARK,
    }
    html = _render(env, "digest.html.j2", context, user_dir)
    text = _render(env, "digest.txt.j2", context, user_dir)
    return Rendered(tuple(topics), subject(newsletter, edition, stories), html, text, len(stories))


def long_date(day: date) -> str:
    """How an edition's day reads to people: "Saturday, 21 November 2026"."""
    return day.strftime("%A, %-d %B %Y")


def subject(newsletter: NewsletterSettings, edition: Edition, stories: Sequence[Story]) -> str:
    """From the config's `subject` pattern; one line, bounded length."""
    # the most-covered story leads the subject, whatever section it sits in
    top = max(stories, key=lambda s: len({e.feed for e in s.entries})).lead.title if stories else "no new stories"
    try:
        line = newsletter.subject.format(
            title=newsletter.title, date=edition.day.strftime("%-d %B %Y"), top_story=top, count=len(stories)
        )
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        raise RenderError(
            f"[newsletter] subject {newsletter.subject!r}: unknown placeholder {exc}; "
            "use {title}, {date}, {top_story}, {count}"
        ) from None
    line = " ".join(line.split())
    return line if len(line) <= MAX_SUBJECT else line[: MAX_SUBJECT - 1].rsplit(" ", 1)[0] + "…"


def _render(env: jinja2.Environment, name: str, context: dict[str, object], user_dir: Path | None) -> str:
    searched = " and ".join(str(p) for p in ([user_dir] if user_dir else []) + [packaged_templates()])
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateNotFound as exc:
        raise RenderError(f"template {exc.name!r} not found (searched {searched})") from exc
    except jinja2.TemplateSyntaxError as exc:
        where = exc.filename or exc.name or name
        raise RenderError(f"template {where}, line {exc.lineno}: {exc.message} (searched {searched})") from exc
    except jinja2.TemplateError as exc:
        raise RenderError(f"template {name}: {exc.message} (searched {searched})") from exc
    except Exception as exc:  # a user template can raise anything (e.g. {{ 1 / 0 }})
        raise RenderError(f"template {name}: {type(exc).__name__}: {exc} (searched {searched})") from exc


def _by_section(stories: Sequence[Story]) -> list[tuple[str, list[Story]]]:
    sections: dict[str, list[Story]] = {}
    for story in stories:
        sections.setdefault(story.section, []).append(story)
    return list(sections.items())


def _in_this_edition(sections: list[tuple[str, list[Story]]], overflow: int = 0) -> str:
    total = sum(len(s) for _, s in sections)
    parts = ", ".join(f"{len(s)} {name}" for name, s in sections)
    line = f"{total} {'story' if total == 1 else 'stories'}" + (f" ({parts})" if len(sections) > 1 else "")
    return line + (f", and {overflow} more on the web" if overflow else "")


def _wrap(text: str, width: int = 78, indent: str = "", first: str | None = None) -> str:
    """Wrap for the text part; words (URLs) are never broken, so a long URL may run over."""
    lead = indent if first is None else first
    lines = textwrap.wrap(
        " ".join(str(text).split()),
        width,
        initial_indent=lead,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )
    return "\n".join(lines) or lead.rstrip()


def _brief(text: str, limit: int = SUMMARY_CHARS) -> str:
    """A one- or two-line teaser: cut at a word boundary, marked with an ellipsis."""
    flat = " ".join(str(text).split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1].rsplit(" ", 1)[0].rstrip(" ,;:.-–—")
    return cut + "…"


def _clock(moment: datetime, timezone: str = "UTC") -> str:
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    return moment.astimezone(zone).strftime("%H:%M %Z")


def _url(value: str) -> str:
    """Only web links reach the email: a feed's javascript: or data: link becomes '#'."""
    text = str(value).strip()
    return text if text.lower().startswith(("https://", "http://")) else "#"
