"""Edition -> HTML and plain text with Jinja2, once per edition and section set.

User templates (a directory named in config) come first; the packaged defaults always
work. Autoescape and StrictUndefined are on, so a typo fails loudly instead of mailing
blanks. Personalisation is left as markers (see models.NAME_MARK) for mail.py.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from functools import cache
from importlib.resources import files
from pathlib import Path

import jinja2

from .errors import RenderError
from .models import EMAIL_MARK, NAME_MARK, UNSUBSCRIBE_MARK, Edition, NewsletterSettings, Rendered, Story

MAX_SUBJECT = 150


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
    env.filters["wrap"] = _wrap
    return env


def render(
    edition: Edition,
    stories: Sequence[Story],
    topics: Sequence[str],
    newsletter: NewsletterSettings,
    user_dir: Path | None = None,
) -> Rendered:
    """Render one section set of the edition; raises RenderError naming the template."""
    env = environment(user_dir)
    sections = _by_section(stories)
    context = {
        "newsletter": newsletter,
        "edition": edition,
        "sections": sections,
        "topics": list(topics),
        "date_long": edition.day.strftime("%A, %-d %B %Y"),
        "in_this_edition": _in_this_edition(sections),
        "preheader": "; ".join(s.lead.title for s in stories[:3]),
        "overflow": edition.overflow,
        "archive_url": f"{newsletter.base_url}/archive/{edition.key}/" if newsletter.base_url else "",
        "name_mark": NAME_MARK,
        "email_mark": EMAIL_MARK,
        "unsubscribe_mark": UNSUBSCRIBE_MARK,
    }
    html = _render(env, "digest.html.j2", context, user_dir)
    text = _render(env, "digest.txt.j2", context, user_dir)
    return Rendered(tuple(topics), subject(newsletter, edition, stories), html, text, len(stories))


def subject(newsletter: NewsletterSettings, edition: Edition, stories: Sequence[Story]) -> str:
    """From the config's `subject` pattern; one line, bounded length."""
    # the most-covered story leads the subject, whatever section it sits in
    top = max(stories, key=lambda s: len({e.feed for e in s.entries})).lead.title if stories else "no new stories"
    try:
        line = newsletter.subject.format(
            title=newsletter.title, date=edition.day.strftime("%-d %B %Y"), top_story=top, count=len(stories)
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise RenderError(
            f"[newsletter] subject {newsletter.subject!r}: unknown placeholder {exc}; "
            "use {title}, {date}, {top_story}, {count}"
        ) from None
    line = " ".join(line.split())
    return line if len(line) <= MAX_SUBJECT else line[: MAX_SUBJECT - 1].rsplit(" ", 1)[0] + "…"


def _render(env: jinja2.Environment, name: str, context: dict[str, object], user_dir: Path | None) -> str:
    searched = ", ".join(str(p) for p in ([user_dir] if user_dir else []) + [packaged_templates()])
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateNotFound as exc:
        raise RenderError(f"template {exc.name!r} not found (searched: {searched})") from exc
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(f"template {exc.filename or exc.name}: line {exc.lineno}: {exc.message}") from exc
    except jinja2.UndefinedError as exc:
        raise RenderError(f"template {name} (searched: {searched}): {exc.message}") from exc


def _by_section(stories: Sequence[Story]) -> list[tuple[str, list[Story]]]:
    sections: dict[str, list[Story]] = {}
    for story in stories:
        sections.setdefault(story.section, []).append(story)
    return list(sections.items())


def _in_this_edition(sections: list[tuple[str, list[Story]]]) -> str:
    total = sum(len(s) for _, s in sections)
    parts = ", ".join(f"{len(s)} {name}" for name, s in sections)
    return f"{total} {'story' if total == 1 else 'stories'}" + (f" ({parts})" if parts else "")


def _wrap(text: str, width: int = 78) -> str:
    return "\n".join(textwrap.wrap(str(text), width, break_long_words=False, break_on_hyphens=False)) or str(text)
