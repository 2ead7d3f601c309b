"""The web archive: each past edition as one page with every story, and an index of them.

The email's "View in browser" and "N more stories on the web" links lead here, so a day's
page holds the whole edition: the stories beyond `max_stories` and those cut to keep the
email under Gmail's clip included. `digest serve` answers these pages itself, `digest
preview` shows them, and `digest preview --archive DIR` writes them as static files.
Pages are built from the stored edition (read-only) with the email's templates; nothing
personal is in them.
"""

from __future__ import annotations

import html
import logging
import re
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path

import jinja2

from . import render, select
from .errors import RenderError
from .models import EMAIL_MARK, NAME_MARK, PREFERENCES_MARK, UNSUBSCRIBE_MARK
from .settings import Config, NewsletterSettings
from .store import Store

log = logging.getLogger(__name__)
LIMIT = 10_000
"""Editions listed in the index (27 years of daily editions)."""


FEED_ENTRIES = 50
"""Editions in the archive's Atom feed."""
ATOM = "http://www.w3.org/2005/Atom"
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Listed:
    """One past edition in the index and the feed: its day, when it was made, how many
    stories its page holds, and its first headlines."""

    day: date
    created: datetime
    stories: int
    tops: tuple[str, ...]

    @property
    def key(self) -> str:
        return self.day.isoformat()

    @property
    def top(self) -> str:
        return self.tops[0] if self.tops else ""

    @property
    def when(self) -> str:
        return render.long_date(self.day)


def neutral_html(page: str, newsletter: NewsletterSettings) -> str:
    """A rendering for the web: personalisation markers become neutral text."""
    address = newsletter.unsubscribe_mailto or newsletter.sender.rpartition("<")[2].rstrip(">")
    values = {
        NAME_MARK: "reader",
        EMAIL_MARK: "your address",
        UNSUBSCRIBE_MARK: html.escape(f"mailto:{address}?subject=unsubscribe"),
        PREFERENCES_MARK: html.escape(f"{newsletter.base_url}/subscribe"),  # a reader's own link is personal
    }
    for mark, value in values.items():
        page = page.replace(mark, value)
    return page


def listed(config: Config, limit: int = LIMIT) -> list[Listed]:
    """Past editions, newest first, read without decoding their stories."""
    with Store.read_only(config.state_path) as store:
        return [Listed(*row) for row in store.edition_index(limit)]


def parse_day(text: str) -> date | None:
    """The day an archive address names ("2026-11-21"), or None for anything else."""
    if not _DAY.fullmatch(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:  # 2026-13-45
        return None


def page(config: Config, day: date) -> str | None:
    """One day's edition on the web: every story, those the email had no room for included.

    An edition recorded before its web-only stories were kept, or one the current
    templates cannot render, is shown as it was sent (its generic rendering).
    """
    with Store.read_only(config.state_path) as store:
        edition = store.edition(day)
        if edition is None:
            return None
        if edition.more or not edition.overflow:
            stories = select.every_story(edition, config.sections)
            whole = replace(edition, overflow=0, more=())  # nothing left over on the web
            try:
                body = render.render(whole, stories, (), config.newsletter, config.templates_dir, web=True).html
                # a busy day's page has hundreds of story images: the browser fetches them as they scroll in
                return neutral_html(body.replace("<img ", '<img loading="lazy" '), config.newsletter)
            except RenderError as exc:
                log.warning("archive %s: %s; showing the edition as it was sent", day, exc)
        renders = store.renders(day)  # the stored emails, read only when they are what is shown
    if not renders:
        return None
    generic = renders.get(()) or max(renders.values(), key=lambda r: r.story_count)
    return neutral_html(generic.html, config.newsletter)


def index(config: Config, editions: list[Listed], *, back: str = "") -> str:
    """The list of past editions; `back` links to the page it was opened from (the preview)."""
    template = _pages().get_template("archive.html.j2")
    return template.render(newsletter=config.newsletter, editions=editions, back=back)


def feed(config: Config, editions: list[Listed], base: str) -> str:
    """The newest editions as an Atom feed, for readers who follow the newsletter in a feed reader.

    Links are `base`/archive/DAY/; without a base (no base_url, static files) they are
    relative to the feed, and ids are name-based UUIDs, stable across runs.
    """
    from xml.etree import ElementTree as ET  # builds and escapes our own document; never parses input

    newsletter = config.newsletter
    root = f"{base}/archive/" if base else ""

    def element(parent: ET.Element, tag: str, text: str = "", **attributes: str) -> ET.Element:
        node = ET.SubElement(parent, f"{{{ATOM}}}{tag}", attributes)
        node.text = text or None
        return node

    def ident(path: str) -> str:
        return root + path if base else uuid.uuid5(uuid.NAMESPACE_URL, f"digest:{newsletter.title}:{path}").urn

    ET.register_namespace("", ATOM)
    top = ET.Element(f"{{{ATOM}}}feed")
    element(top, "title", newsletter.title)
    if newsletter.tagline:
        element(top, "subtitle", newsletter.tagline)
    element(top, "id", ident(""))
    element(top, "link", rel="self", href=root + "feed.xml")
    element(top, "link", rel="alternate", type="text/html", href=root or "./")
    shown = editions[:FEED_ENTRIES]
    newest = max((e.created for e in shown), default=datetime(1970, 1, 1, tzinfo=UTC))
    element(top, "updated", _stamp(newest))
    element(element(top, "author"), "name", newsletter.title)
    element(top, "generator", "digest")
    for edition in shown:
        entry = element(top, "entry")
        element(entry, "title", f"{edition.when}: {edition.top}" if edition.top else edition.when)
        element(entry, "id", ident(edition.key + "/"))
        element(entry, "link", rel="alternate", type="text/html", href=f"{root}{edition.key}/")
        element(entry, "updated", _stamp(edition.created))
        count = f"{edition.stories} {'story' if edition.stories == 1 else 'stories'}"
        element(entry, "summary", f"{count}: {' · '.join(edition.tops)}" if edition.tops else count)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(top, encoding="unicode") + "\n"


def _stamp(moment: datetime) -> str:
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


@cache
def _pages() -> jinja2.Environment:
    from .pipeline import preview_templates

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(preview_templates())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=True,
    )


def write(config: Config, target: Path) -> int:
    """DIR/index.html and DIR/YYYY-MM-DD/index.html: static files any web server can host."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for entry in listed(config):
        body = page(config, entry.day)
        if body is not None:
            (target / entry.key).mkdir(exist_ok=True)
            (target / entry.key / "index.html").write_text(body, encoding="utf-8")
            written.append(entry)
    (target / "index.html").write_text(index(config, written), encoding="utf-8")
    (target / "feed.xml").write_text(feed(config, written, config.newsletter.base_url), encoding="utf-8")
    return len(written)
