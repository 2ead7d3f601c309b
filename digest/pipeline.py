"""The flow, in one place: poll -> build the edition -> render -> deliver.

    config -> fetch -> parse -> store -> select -> group -> render -> inline -> deliver

Drivers (cli, schedule, preview) call these functions and never copy them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from .models import DeliveryOutcome, Edition, Entry, FetchResult, Recipient, Rendered, SendReport
from .progress import LogProgress, Progress
from .settings import Config, Subscriber
from .store import Store

if TYPE_CHECKING:
    from . import mail
    from .mailboxes import Incoming

# Each stage is imported by the function that runs it: a cron-run `digest fetch` loads the
# fetcher and the parser, not the inliner (premailer) or the grouping (tests/test_startup.py).

log = logging.getLogger(__name__)
MAX_AGE = 7 * 86400.0
"""Entries first seen longer ago than this and never mailed are no longer news."""


@dataclass(frozen=True)
class PollReport:
    feeds: int
    failed: int
    new_entries: int
    fresh: tuple[Entry, ...] = ()


def poll(
    config: Config, store: Store, now: datetime, *, persist: bool = True, progress: Progress | None = None
) -> PollReport:
    """Fetch and parse every feed; store new entries unless `persist` is off (preview)."""
    from . import fetch, parse

    gone = store.gone_feeds()  # 410 Gone: not polled again until its url changes in config.toml
    feeds = [f for f in config.feeds if f.url not in gone.get(f.name, "")]
    progress = progress or LogProgress()
    progress.start("polling", len(feeds), "feeds")
    validators = store.validators() if persist else {}
    # feeds with nothing to revalidate answer in full: with many of them, parsing starts during the fetch
    full = sum(1 for f in feeds if not (v := validators.get(f.name)) or not (v.etag or v.last_modified))
    with parse.Parsing(now, config.fetch.max_entries, full) as parsing:

        def fetched(result: FetchResult) -> None:
            parsing.take(result)
            progress.advance()

        results = fetch.fetch_all(feeds, validators, config.fetch, fetched)
        progress.done()
        parsed_all = parsing.results(results)
    failed, new, fresh = 0, 0, []
    with store.transaction() if persist else contextlib.nullcontext():  # one commit (one fsync) per poll
        for result, parsed in zip(results, parsed_all, strict=True):
            failed += bool(result.error or (parsed and parsed.error))
            if persist:
                new += store.record_poll(result, parsed, now, config.newsletter.window)
            elif parsed:
                fresh.extend(store.unseen(parsed, config.newsletter.window))
    log.info("poll: %d feeds, %d failed, %d new entries", len(results), failed, new)
    return PollReport(len(results), failed, new, tuple(fresh))


def edition_day(config: Config, now: datetime) -> date:
    return now.astimezone(ZoneInfo(config.newsletter.timezone)).date()


def build_edition(config: Config, store: Store, now: datetime, extra: Sequence[Entry] = ()) -> Edition:
    """The edition that a send at `now` would freeze: pending entries, grouped and arranged."""
    from . import group, select

    entries = {e.id: e for e in store.pending_entries(now, MAX_AGE)}
    entries.update({e.id: e for e in extra})
    stories = group.group(list(entries.values()), config.grouping)
    health = [f"{name}: {reason} ({count} polls)" for name, reason, count, _ in store.feed_health(min_errors=3)]
    return select.arrange(
        stories, config.sections, config.newsletter.max_stories, edition_day(config, now), now, health
    )


def render_edition(config: Config, edition: Edition, topics: Sequence[str]) -> Rendered:
    """One section set: render, then inline once; personalisation comes later by substitution."""
    from . import inline, render, select

    stories = select.for_topics(edition, topics, config.newsletter.max_stories, config.sections)
    return render.render_within(edition, stories, topics, config.newsletter, config.templates_dir, inline.inline_css)


def topic_key(subscriber: Subscriber) -> tuple[str, ...]:
    return tuple(sorted(set(subscriber.topics)))


def send_edition(
    config: Config,
    store: Store,
    now: datetime,
    *,
    dry_run: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
    progress: Progress | None = None,
) -> SendReport:
    """Poll, freeze (or resume) today's edition, deliver what is still owed. Exactly once per day."""
    progress = progress or LogProgress()
    with store.lock("send", "sending"):
        polled = poll(config, store, now, progress=progress)
        day = edition_day(config, now)
        edition = store.edition(day)
        if edition is None:
            edition = build_edition(config, store, now)
            if not edition.stories and not config.schedule.send_if_empty:
                return _report(config, polled, edition, note="nothing new: no edition sent")
            if dry_run:
                return _report(config, polled, edition, note="dry run: nothing recorded or sent")
            renders = {k: render_edition(config, edition, k) for k in {topic_key(s) for s in config.subscribers}}
            store.record_edition(edition, list(renders.values()))
        elif dry_run:
            return _report(config, polled, edition, note=f"dry run: edition {day} exists")
        return _deliver(config, store, edition, now, polled, should_stop, progress)


def _deliver(
    config: Config,
    store: Store,
    edition: Edition,
    now: datetime,
    polled: PollReport,
    should_stop: Callable[[], bool],
    progress: Progress,
) -> SendReport:
    from . import deliver, mail, verp
    from .bounce_store import BounceBook

    _give_up_stale(config, store, edition.day, now)
    suppressed = store.suppressed()
    subscribers = {s.email: s for s in config.subscribers if s.email.lower() not in suppressed}
    renders = store.renders(edition.day)
    composers: dict[tuple[str, ...], mail.Composer] = {}
    for key in {topic_key(s) for s in subscribers.values()}:
        if key not in renders:  # a subscriber added after the edition was frozen
            renders[key] = render_edition(config, edition, key)
            store.add_render(edition.day, renders[key])
        composers[key] = mail.Composer(renders[key], renders[key].html, config.newsletter, edition.day, now)
    wanted = {e for e, s in subscribers.items() if renders[topic_key(s)].story_count or config.schedule.send_if_empty}
    store.ensure_deliveries(edition.day, (e for e in subscribers if e in wanted), now)
    secret = unsubscribe_secret(config, store)
    vkey, base = (verp.key(secret), config.bounces.return_path) if config.bounces.return_path else (b"", "")
    owed_count = sum(1 for email in store.due_deliveries(edition.day, now) if email in wanted)

    def owed() -> Iterator[Recipient]:
        """Streamed from the database (pages by address): 100,000 recipients are never all in memory."""
        for email in store.due_deliveries(edition.day, now):
            if email not in wanted:
                continue
            to = mail.recipient(subscribers[email], edition.day, config.newsletter, secret)
            if base:  # VERP: each copy's bounce names its edition and subscriber
                to = replace(to, envelope_from=verp.return_path(base, vkey, edition.day, email))
            yield to

    build = _Copies(composers, return_path=config.delivery.transport == "maildir")

    def record(outcomes: Sequence[DeliveryOutcome]) -> None:
        retrying = [o.email for o in outcomes if o.status == "retrying"]
        attempts = store.delivery_attempts(edition.day, retrying) if retrying else {}
        rows = [
            (o, deliver.next_attempt(now, attempts.get(o.email, 0) + 1) if o.status == "retrying" else None)
            for o in outcomes
        ]
        store.record_deliveries(edition.day, rows, now)
        progress.advance(len(outcomes))

    progress.start("sending", owed_count, "messages")
    where = _transport(config, owed(), build, record, should_stop)
    progress.done()
    for email in BounceBook(store).suppress_refused(edition.key, now):
        log.warning("suppressed %s: refused with 5xx in two editions in a row", email)
    counts = store.delivery_counts(edition.day)
    settled = not owed_count and counts.keys() <= {"sent"}
    note = f"edition {edition.key} already delivered: nothing new to send" if settled else ""
    return _report(config, polled, edition, counts=counts, recipients=len(wanted), note=note, where=where)


@dataclass(frozen=True)
class _Copies:
    """Each subscriber's copy, from the Composer of their section set. A value, not a closure:
    it pickles, so each SMTP connection's process builds its own messages (see deliver.py)."""

    composers: dict[tuple[str, ...], mail.Composer]
    return_path: bool  # Maildir: add the Return-Path a delivering MTA would

    def __call__(self, to: Recipient) -> bytes:
        message = self.composers[topic_key(to.subscriber)].message(to)
        if to.envelope_from and self.return_path:
            return f"Return-Path: <{to.envelope_from}>\r\n".encode() + message
        return message


def _transport(
    config: Config,
    owed: Iterable[Recipient],
    build: Callable[[Recipient], bytes],
    record: Callable[[Sequence[DeliveryOutcome]], None],
    should_stop: Callable[[], bool] = lambda: False,
) -> str:
    """Hand the messages to the configured transport; returns where they went."""
    from . import deliver

    if config.delivery.transport == "maildir":
        deliver.to_maildir(config.delivery.maildir, owed, build, record)
        return f"Maildir {config.delivery.maildir}"
    deliver.to_smtp(config.smtp, config.newsletter.sender, owed, build, record, should_stop)
    return f"SMTP {config.smtp.host}:{config.smtp.port}"


def _give_up_stale(config: Config, store: Store, today: date, now: datetime) -> None:
    """Owed messages past their retry lifetime (see deliver.give_up_reason) become `failed`."""
    from . import deliver

    for day, created in store.owing_editions():
        reason = deliver.give_up_reason(config.smtp, day, created, today, now)
        if reason:
            log.warning("edition %s: %d deliveries %s", day, store.give_up_deliveries(day, now, reason), reason)


def unsubscribe_secret(config: Config, store: Store) -> bytes:
    """The HMAC key of unsubscribe links, for the mailer and the web endpoint alike.

    From the environment variable named by [web] secret_env, else a random key kept in
    the state database (so links keep working across restarts without configuration).
    """
    return os.environ.get(config.web.secret_env, "").encode() or store.secret()


def _report(
    config: Config,
    polled: PollReport,
    edition: Edition,
    *,
    counts: dict[str, int] | None = None,
    recipients: int = 0,
    note: str = "",
    where: str = "",
) -> SendReport:
    counts = counts or {}
    return SendReport(
        feeds=polled.feeds,
        feeds_failed=polled.failed,
        new_entries=polled.new_entries,
        stories=len(edition.stories),
        web_only=len(edition.more),
        archive=bool(config.newsletter.base_url),
        delivered=counts.get("sent", 0),
        recipients=recipients,
        retrying=counts.get("retrying", 0),
        failed=counts.get("failed", 0),
        edition=edition.key,
        note=note,
        destination=where,
    )


def next_edition(
    config: Config, store: Store, now: datetime, *, offline: bool = False, fresh: Sequence[Entry] | None = None
) -> Edition:
    """What the next send would deliver, built in memory: nothing is stored (preview).

    `fresh`: entries already polled with persist=False (the preview server polls once).
    """
    day = edition_day(config, now)
    existing = store.edition(day)
    if existing is not None:
        return existing
    if fresh is None:
        fresh = () if offline else poll(config, store, now, persist=False).fresh
    return build_edition(config, store, now, extra=fresh)


def preview_templates() -> Path:
    """The packaged templates of the preview pages (not the email's)."""
    from . import render

    return render.packaged_templates() / "preview"


def preview_message(
    config: Config, edition: Edition, subscriber: Subscriber | None, now: datetime
) -> tuple[Rendered, bytes]:
    """One subscriber's copy (or a sample reader's) exactly as it would be mailed."""
    from . import mail

    reader = subscriber or Subscriber("reader@example.com", "Reader")
    rendered = render_edition(config, edition, topic_key(reader))
    composer = mail.Composer(rendered, rendered.html, config.newsletter, edition.day, now)
    to = mail.recipient(reader, edition.day, config.newsletter, b"preview")
    return rendered, composer.message(to)


def preview_html(config: Config, store: Store, now: datetime, subscriber: Subscriber | None = None) -> str:
    from . import mail

    _rendered, message = preview_message(config, next_edition(config, store, now), subscriber, now)
    return mail.html_part(message)


@dataclasses.dataclass(frozen=True)
class TestSend:
    edition: Edition
    outcomes: tuple[DeliveryOutcome, ...]
    destination: str


def send_test(
    config: Config, store: Store, now: datetime, emails: Sequence[str], progress: Progress | None = None
) -> TestSend:
    """`digest send --test`: the edition a send at `now` would deliver, to `emails` only; records nothing.

    Built like the preview (polled without storing, from a read-only store). Each copy is the
    matching subscriber's (else a reader of every section), its subject marked [TEST], with a
    Message-ID of its own (so the real edition is not dropped as a duplicate of the test) and
    unsubscribe links signed with a throwaway key (a click on a test copy unsubscribes nobody).
    """
    import secrets
    from email.utils import make_msgid

    from . import mail

    progress = progress or LogProgress()
    edition = next_edition(config, store, now)
    known = {s.email.lower(): s for s in config.subscribers}
    throwaway, domain = secrets.token_bytes(32), mail.sender_domain(config.newsletter.sender)
    composers: dict[tuple[str, ...], mail.Composer] = {}
    owed, keys = [], {}
    for email in emails:
        reader = known.get(email.lower()) or Subscriber(email)
        key = keys[reader.email] = topic_key(reader)
        if key not in composers:
            rendered = render_edition(config, edition, key)
            rendered = dataclasses.replace(rendered, subject=f"[TEST] {rendered.subject}")
            composers[key] = mail.Composer(rendered, rendered.html, config.newsletter, edition.day, now)
        to = mail.recipient(reader, edition.day, config.newsletter, throwaway)
        owed.append(dataclasses.replace(to, message_id=make_msgid("test", domain)))
    outcomes: list[DeliveryOutcome] = []

    def record(done: Sequence[DeliveryOutcome]) -> None:
        outcomes.extend(done)
        progress.advance(len(done))

    progress.start("sending test", len(owed), "messages")
    where = _transport(config, owed, lambda to: composers[keys[to.subscriber.email]].message(to), record)
    progress.done()
    return TestSend(edition, tuple(outcomes), where)


# --------------------------------------------------------------------------- bounces


@dataclass
class BounceReport:
    """What one `digest bounces` read did, for its one summary line."""

    read: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    ignored: Counter[str] = field(default_factory=Counter)
    already: int = 0
    suppressed: list[str] = field(default_factory=list)

    def summary(self) -> str:
        v = self.verdicts
        line = (
            f"{self.read} messages read: {v['hard']} hard bounces, {v['soft']} soft, {v['complaint']} complaints,"
            f" {v['ignored']} ignored"
        )
        if self.ignored:
            line += " (" + ", ".join(f"{n} {why}" for why, n in self.ignored.most_common()) + ")"
        if self.already:
            line += f"; {self.already} already processed"
        return line + f"; {len(self.suppressed)} addresses suppressed"


def read_bounces(config: Config, store: Store, messages: Iterable[Incoming], now: datetime) -> BounceReport:
    """Classify each message, name its subscriber, commit its outcome and effects: one transaction each."""
    from . import bounces, verp
    from .bounce_store import BounceBook
    from .config import address_key

    book = BounceBook(store)
    return_path = config.bounces.return_path
    key = verp.key(unsubscribe_secret(config, store)) if return_path else None
    known: dict[str, str] = {}
    for email in book.known_addresses(s.email for s in config.subscribers):
        known.setdefault(address_key(email), email)
    by_hash: dict[bytes, list[str]] = {}
    for email in known.values():
        by_hash.setdefault(verp.address_hash(email), []).append(email)
    report = BounceReport()
    for incoming in messages:
        report.read += 1
        if book.seen(bounces.message_key(incoming.raw)):  # headers only: rereading an old mailbox is cheap
            report.already += 1
            incoming.done()
            continue
        bounce = bounces.classify(incoming.raw, return_path, truncated=incoming.truncated)
        found = bounces.resolve(bounce, key, known, by_hash)
        recorded, suppressed = book.record(bounce.key, found.verdict, found.reason, found.email, now, bounce.date)
        incoming.done()
        if not recorded:  # another run took it meanwhile
            report.already += 1
            continue
        report.verdicts[found.verdict] += 1
        if found.verdict == "ignored":
            report.ignored[_ignored_reason(found.reason)] += 1
        if suppressed and found.email:
            report.suppressed.append(found.email)
            log.info("suppressed %s: %s (%s)", found.email, found.verdict, found.reason)
    return report


def _ignored_reason(reason: str) -> str:
    return "too large" if reason.startswith("too large") else reason
