"""Frozen values passed between stages.

Config values live in digest/settings.py: every stage receives the slice of
configuration it needs as a value, so no stage has to import the loader.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache

from .settings import FeedSpec, Subscriber

# --------------------------------------------------------------------------- fetch/parse


@dataclass(frozen=True)
class Validators:
    """HTTP cache validators remembered per feed for conditional GET."""

    etag: str | None = None
    last_modified: str | None = None


@dataclass(frozen=True)
class FetchResult:
    """What one feed's poll produced. `body` is None for 304 or on error."""

    feed: FeedSpec
    body: bytes | None
    validators: Validators = Validators()
    status: int = 200
    error: str | None = None
    new_url: str | None = None
    gone: bool = False
    elapsed: float = 0.0
    final_url: str = ""
    """Where the body came from after redirects (feed discovery resolves relative links against it)."""
    content_type: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Entry:
    """One normalised item. `id` is stable across polls; `link` is canonical."""

    id: str
    feed: str
    link: str
    title: str
    summary: str
    published: datetime
    section: str = "News"
    priority: int = 0
    guid: str = ""
    summary_html: str = ""
    categories: tuple[str, ...] = ()
    image: str | None = None
    image_alt: str = ""


@dataclass(frozen=True)
class ParseResult:
    feed: FeedSpec
    entries: tuple[Entry, ...]
    error: str | None = None


_PARENTHESES = re.compile(r"\([^)]*\)")
_SEPARATOR = re.compile(r"\s+(?:-|>|\||–|—)\s+|:\s+")
_DOMAIN_TAIL = re.compile(r"\.(?:com|co\.uk|co\.nz|com\.au|org|net|news)\b")
_SUFFIX_LABELS = frozenset({"com", "net", "org", "co", "gov", "edu", "ac", "info", "example"})
_SECTION_WORDS = frozenset({
    "rss", "feed", "feeds", "channel", "news", "latest", "top", "stories", "home", "articles", "headlines",
    "breaking", "all", "content", "edition",
})  # fmt: skip
"""A part of a feed's title made only of these names a section, whatever host it resembles ("RSS Channel")."""


def outlet_key(feed_name: str, link: str = "") -> str:
    """The outlet behind a feed's name: an outlet's site and its YouTube channel are one outlet.

    Feed titles name the outlet and a section ("CNN.com - RSS Channel", "NYT > U.S. News",
    "CNN (YouTube channel feed)", "FOX News latest"), but not always first: "Articles | Mail
    Online", "Breaking News | Daily Telegraph" (two News Corp papers share that section name).
    So with the report's `link`, the part of the name that its site's domain names is the
    outlet; else the first part. Then parentheses, a domain tail and a leading "The" go, and
    the first two words stay.
    """
    return _outlet_key(feed_name, _site(link))


def _site(link: str) -> str:
    """The label that names a link's site: "dailymail" for www.dailymail.co.uk, "cnn" for edition.cnn.com."""
    host = link.partition("://")[2].partition("/")[0].rpartition("@")[2].partition(":")[0].lower()
    labels = host.split(".")
    while labels and (len(labels[-1]) <= 2 or labels[-1] in _SUFFIX_LABELS):
        labels.pop()
    return labels[-1] if labels else ""


def _names_site(part: str, site: str) -> bool:
    """Whether a part of a feed's name ("mail online", "nyt", "bbc news") names `site`."""
    from difflib import SequenceMatcher  # once per feed and site (cached): not on every start-up

    words = re.findall(r"\w+", _DOMAIN_TAIL.sub("", part))
    squashed = "".join(words)
    if len(squashed) < 3 or not site or _SECTION_WORDS.issuperset(words):
        return False
    first = words[1] if words[0] == "the" and len(words) > 1 else words[0]
    if squashed in site or site in squashed or (len(first) >= 3 and site.startswith(first)):  # "bbc news"/bbci
        return True
    return SequenceMatcher(None, squashed, site, autojunk=False).find_longest_match().size >= 4  # "mail online"


@lru_cache(maxsize=4096)  # grouping asks once per report: a day has a few dozen feeds and sites
def _outlet_key(feed_name: str, site: str) -> str:
    parts = [p for p in _SEPARATOR.split(_PARENTHESES.sub("", feed_name.casefold()).strip()) if p.strip()]
    if not parts:
        return feed_name.casefold().strip()
    name = next((p for p in parts if _names_site(p, site)), parts[0]) if len(parts) > 1 else parts[0]
    name = _DOMAIN_TAIL.sub("", name.strip())
    words = re.findall(r"\w+", name)
    if words[:1] == ["the"] and len(words) > 1:
        words = words[1:]
    return " ".join(words[:2]) or feed_name.casefold().strip()


def link_key(link: str) -> str:
    """One key for the same page behind two links: http and https, www. or not, a trailing slash or not.

    Links arrive canonical (parse.canonical_link: tracking parameters gone); this drops
    only what readers would never call a different page.
    """
    _scheme, _, rest = link.partition("://")
    host, slash, path = rest.partition("/")
    host = host.removeprefix("www.")
    path, query_mark, query = path.partition("?")
    return f"{host}{slash}{path.rstrip('/')}{query_mark}{query}" if rest else ""


@dataclass(frozen=True)
class Outlet:
    """One outlet under "Also covered by": its best report, and how many it had in the story."""

    name: str
    entry: Entry
    count: int


# --------------------------------------------------------------------------- edition


@dataclass(frozen=True)
class Joined:
    """Why one report joined its story: the terms it shares with the rest, and its score against them."""

    entry_id: str
    score: float
    terms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Story:
    """One event: a lead report, other outlets' reports, and the terms that tied them."""

    lead: Entry
    also: tuple[Entry, ...] = ()
    terms: tuple[str, ...] = ()
    why: tuple[Joined, ...] = ()
    """One Joined per `also` report, in the same order (empty for stories recorded before it existed)."""

    @property
    def section(self) -> str:
        return self.lead.section

    @property
    def entries(self) -> tuple[Entry, ...]:
        return (self.lead, *self.also)

    @property
    def outlets(self) -> tuple[Outlet, ...]:
        """"Also covered by", each OTHER outlet once: its first (best) report in `also` order, with its count.

        The lead's own outlet is not "also covered by" itself: its other reports are `own`.
        """
        lead = outlet_key(self.lead.feed, self.lead.link)
        best: dict[str, Entry] = {}
        count: dict[str, int] = {}
        for entry in self.also:
            key = outlet_key(entry.feed, entry.link)
            if key == lead:
                continue
            best.setdefault(key, entry)
            count[key] = count.get(key, 0) + 1
        return tuple(Outlet(entry.feed, entry, count[key]) for key, entry in best.items())

    @property
    def own(self) -> tuple[Entry, ...]:
        """The lead's outlet's other reports of the story (its site and its video channel are one outlet)."""
        lead = outlet_key(self.lead.feed, self.lead.link)
        return tuple(e for e in self.also if outlet_key(e.feed, e.link) == lead)


@dataclass(frozen=True)
class Edition:
    """One day's digest: frozen once recorded.

    `stories` go in the email (at most `max_stories`); `more` are the day's other stories,
    which the email counts ("N more on the web") and the web archive shows. `overflow` is
    their number, kept on its own for editions recorded before `more` was.
    """

    day: date
    stories: tuple[Story, ...]
    created_at: datetime
    overflow: int = 0
    feed_health: tuple[str, ...] = ()
    more: tuple[Story, ...] = ()

    @property
    def key(self) -> str:
        return self.day.isoformat()

    def more_count(self, topics: Sequence[str] = (), shown: Sequence[Story] = ()) -> int:
        """How many of the day's web-only stories a reader of `topics` (none: all) has beyond
        those `shown` in their email."""
        if not self.more:  # recorded before `more` was kept: only the count is known
            return self.overflow
        seen = {id(s) for s in shown}
        return sum(1 for s in self.more if (not topics or s.section in topics) and id(s) not in seen)


@dataclass(frozen=True)
class Rendered:
    """One rendering of an edition for a set of sections, with personalisation markers."""

    topics: tuple[str, ...]
    subject: str
    html: str
    text: str
    story_count: int


@dataclass(frozen=True)
class Recipient:
    """A subscriber plus what substitution needs for their copy."""

    subscriber: Subscriber
    message_id: str
    unsubscribe_url: str
    unsubscribe_mailto: str
    envelope_from: str = ""
    preferences_url: str = ""
    """{base_url}/preferences?... signed for this subscriber; empty without base_url."""
    """The SMTP MAIL FROM for this copy (a VERP return path); empty: the newsletter's sender."""


@dataclass(frozen=True)
class DeliveryOutcome:
    email: str
    status: str  # "sent" | "retrying" | "failed"
    code: int = 0
    text: str = ""
    message_id: str = ""


@dataclass(frozen=True)
class SendReport:
    """What one `send` did, for the one summary line."""

    feeds: int
    feeds_failed: int
    new_entries: int
    stories: int
    delivered: int
    recipients: int
    retrying: int = 0
    failed: int = 0
    edition: str = ""
    note: str = ""
    destination: str = ""
    per_subscriber: dict[str, str] = field(default_factory=dict)
    web_only: int = 0  # stories beyond max_stories: on the edition's web page when there is one
    archive: bool = True  # base_url is set, so the email links that page

    def summary(self) -> str:
        feeds = f"{self.feeds} feeds" + (f" ({self.feeds_failed} failed)" if self.feeds_failed else "")
        where = "on the web" if self.archive else "did not fit"
        stories = f"{self.stories} stories" + (f" ({self.web_only} more {where})" if self.web_only else "")
        parts = [feeds, f"{self.new_entries} new entries", stories]
        if self.note:
            parts.append(self.note)
        else:
            parts.append(f"delivered to {self.delivered} of {self.recipients} subscribers")
            if self.retrying:
                parts.append(f"{self.retrying} to retry")
            if self.failed:
                parts.append(f"{self.failed} failed")
        line = ", ".join(parts)
        return f"{line} ({self.destination})" if self.destination else line


@dataclass(frozen=True)
class Bounce:
    """One bounce or complaint message, classified (digest/bounces.py); nothing resolved yet.

    kind: "hard" (5.x.x, suppress now), "soft" (4.x.x / delayed: counted), "complaint"
    (ARF: unsubscribe now) or "ignored" (auto-reply, unrecognised, malformed, too large).
    `token` is the VERP token the message came back to, if any; `addresses` are the
    recipients the report itself names (Final-/Original-Recipient, or the detectors').
    """

    key: str
    kind: str
    reason: str
    token: str | None = None
    addresses: tuple[str, ...] = ()
    date: datetime | None = None
    """The message's Date (aware), if it has a readable one."""


# Personalisation markers: rendered into the edition once, replaced per subscriber after
# inlining (plain ASCII word characters so that no HTML or URL serialiser alters them).
NAME_MARK = "__DIGEST_SUBSCRIBER_NAME__"
EMAIL_MARK = "__DIGEST_SUBSCRIBER_EMAIL__"
UNSUBSCRIBE_MARK = "__DIGEST_UNSUBSCRIBE_URL__"
PREFERENCES_MARK = "__DIGEST_PREFERENCES_URL__"
