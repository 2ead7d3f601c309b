"""SQLite state: entries seen, HTTP validators, feed health, editions, deliveries.

WAL with synchronous=FULL; every state change is its own transaction, committed before
the next side effect, so a crash loses nothing that was acknowledged. A delivery row is
marked sent only after the SMTP server's 250 (see deliver.py). Two exceptions, both
for speed and both safe: a poll's feeds are recorded in one transaction (a crash loses
that poll, validators included, so the next one fetches it again), and delivery replies
are committed without fsync except once per SYNC_EVERY seconds (see record_deliveries).
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LockedError, StateError

if TYPE_CHECKING:  # imported where values are built: `digest status` reads state without creating them
    from .models import DeliveryOutcome, Edition, Entry, FetchResult, ParseResult, Rendered, Story, Validators

SCHEMA_VERSION = 1
DUE_PAGE = 1000
"""Rows per query of Store.due_deliveries."""
SYNC_EVERY = 1.0
"""Seconds between fsync'd commits of delivery replies (see Store.record_deliveries)."""
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS feeds (
    name TEXT PRIMARY KEY, etag TEXT, last_modified TEXT, first_polled TEXT,
    last_polled TEXT, last_ok TEXT, error TEXT, error_count INTEGER NOT NULL DEFAULT 0,
    error_since TEXT, new_url TEXT, gone INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY, feed TEXT NOT NULL, data TEXT NOT NULL, first_seen TEXT NOT NULL,
    eligible INTEGER NOT NULL, edition TEXT);
CREATE INDEX IF NOT EXISTS entries_pending ON entries (edition, eligible, first_seen);
CREATE TABLE IF NOT EXISTS editions (
    day TEXT PRIMARY KEY, created_at TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS edition_summaries (
    day TEXT PRIMARY KEY, stories INTEGER NOT NULL, feed_health TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS renders (
    day TEXT NOT NULL, topics TEXT NOT NULL, subject TEXT NOT NULL, html TEXT NOT NULL,
    text TEXT NOT NULL, story_count INTEGER NOT NULL, PRIMARY KEY (day, topics));
CREATE TABLE IF NOT EXISTS deliveries (
    day TEXT NOT NULL, email TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt TEXT, code INTEGER, text TEXT, message_id TEXT, updated TEXT,
    PRIMARY KEY (day, email));
CREATE TABLE IF NOT EXISTS suppressions (email TEXT PRIMARY KEY, at TEXT NOT NULL, reason TEXT NOT NULL);
"""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text)


class Store:
    """One open state database. Use as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=30, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.executescript(_SCHEMA)
            self._check_version()
        except sqlite3.Error as exc:
            raise StateError(f"{path}: cannot open the state database: {exc}") from exc
        self._locks: list[int] = []
        self._synced = 0.0

    @classmethod
    def read_only(cls, path: Path) -> Store:
        """A view that cannot write and creates no file (the preview): an empty state if none exists.

        With no -wal beside the file no other connection is open, so `immutable` reads it
        without creating -wal/-shm files; with one, a plain read-only open shares them.
        """
        store = cls.__new__(cls)
        store.path, store._locks, store._synced = path, [], 0.0
        try:
            if path.exists():
                flags = "mode=ro" if path.with_name(path.name + "-wal").exists() else "mode=ro&immutable=1"
                store.db = sqlite3.connect(f"{path.resolve().as_uri()}?{flags}", uri=True, isolation_level=None)
            else:
                store.db = sqlite3.connect(":memory:", isolation_level=None)
                store.db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StateError(f"{path}: cannot read the state database: {exc}") from exc
        return store

    def _check_version(self) -> None:
        row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:  # OR IGNORE: two first opens may race
            self.db.execute("INSERT OR IGNORE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif int(row[0]) > SCHEMA_VERSION:
            raise StateError(f"{self.path}: state was written by a newer digest (schema {row[0]}); upgrade digest")

    def close(self) -> None:
        for fd in self._locks:
            os.close(fd)
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT; inside another transaction, part of that one."""
        if self.db.in_transaction:
            yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextmanager
    def lock(self, name: str, what: str) -> Iterator[None]:
        """An exclusive advisory lock beside the database: held for the whole job, freed by the OS on a crash."""
        lock_path = self.path.with_name(f"{self.path.name}.{name}.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LockedError(
                f"another digest process is already {what} with {self.path} (lock {lock_path}); wait for it to finish"
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    # ------------------------------------------------------------------ feeds

    def validators(self) -> dict[str, Validators]:
        from .models import Validators

        rows = self.db.execute("SELECT name, etag, last_modified FROM feeds")
        return {name: Validators(etag, lm) for name, etag, lm in rows}

    def record_poll(self, fetched: FetchResult, parsed: ParseResult | None, now: datetime, window: float) -> int:
        """Store one feed's poll; returns how many entries were new. One transaction per feed."""
        name = fetched.feed.name
        error = fetched.error or (parsed.error if parsed else None)
        with self.transaction() as db:
            row = db.execute("SELECT first_polled FROM feeds WHERE name=?", (name,)).fetchone()
            first_poll = row is None or row[0] is None
            db.execute("INSERT OR IGNORE INTO feeds (name) VALUES (?)", (name,))
            if error:
                db.execute(
                    "UPDATE feeds SET last_polled=?, error=?, error_count=error_count+1,"
                    " error_since=COALESCE(error_since, ?), gone=?, new_url=COALESCE(?, new_url) WHERE name=?",
                    (_iso(now), error, _iso(now), int(fetched.gone), fetched.new_url, name),
                )
                return 0
            db.execute(
                "UPDATE feeds SET etag=?, last_modified=?, first_polled=COALESCE(first_polled, ?),"
                " last_polled=?, last_ok=?, error=NULL, error_count=0, error_since=NULL, new_url=?, gone=0"
                " WHERE name=?",
                (
                    fetched.validators.etag,
                    fetched.validators.last_modified,
                    _iso(now),
                    _iso(now),
                    _iso(now),
                    fetched.new_url,
                    name,
                ),
            )
            entries = parsed.entries if parsed else ()
            cutoff = _backlog_cutoff(entries, window) if first_poll else None
            new = 0
            for entry in entries:
                eligible = cutoff is None or entry.published >= cutoff
                cursor = db.execute(
                    "INSERT OR IGNORE INTO entries (id, feed, data, first_seen, eligible) VALUES (?,?,?,?,?)",
                    (entry.id, name, json.dumps(_entry_dict(entry)), _iso(now), int(eligible)),
                )
                new += cursor.rowcount * int(eligible)
            return new

    def unseen(self, parsed: ParseResult, window: float) -> list[Entry]:
        """What `record_poll` would store as news, without writing (for the preview)."""
        known = {i for (i,) in self.db.execute("SELECT id FROM entries WHERE feed=?", (parsed.feed.name,))}
        polled = self.db.execute("SELECT first_polled FROM feeds WHERE name=?", (parsed.feed.name,)).fetchone()
        cutoff = _backlog_cutoff(parsed.entries, window) if not polled or not polled[0] else None
        return [e for e in parsed.entries if e.id not in known and (cutoff is None or e.published >= cutoff)]

    def secret(self) -> bytes:
        """A random key made once per state, used for unsubscribe tokens when none is configured."""
        row = self.db.execute("SELECT value FROM meta WHERE key='secret'").fetchone()
        if row:
            return bytes.fromhex(row[0])
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('secret', ?)", (os.urandom(32).hex(),))
        return self.secret()

    def gone_feeds(self) -> dict[str, str]:
        """name -> reason for feeds that answered 410 Gone (the reason names the URL that went)."""
        rows = self.db.execute("SELECT name, COALESCE(error, '') FROM feeds WHERE gone=1")
        return {name: error for name, error in rows}

    def moved_feeds(self) -> list[tuple[str, str]]:
        """(name, new URL) for feeds whose URL answered 301/308: the config should follow."""
        rows = self.db.execute("SELECT name, new_url FROM feeds WHERE new_url IS NOT NULL ORDER BY name")
        return [(name, url) for name, url in rows]

    def feed_health(self, min_errors: int = 1) -> list[tuple[str, str, int, str | None]]:
        """(name, reason, consecutive failures, failing since) for feeds now failing."""
        rows = self.db.execute(
            "SELECT name, error, error_count, error_since FROM feeds WHERE error IS NOT NULL AND error_count>=?"
            " ORDER BY name",
            (min_errors,),
        )
        return [(n, e, c, s) for n, e, c, s in rows]

    # ------------------------------------------------------------------ entries

    def pending_entries(self, now: datetime, max_age: float) -> list[Entry]:
        """Entries first seen within `max_age` before `now`, in no edition yet."""
        since = _iso(now - timedelta(seconds=max_age))
        rows = self.db.execute(
            "SELECT data FROM entries WHERE edition IS NULL AND eligible=1 AND first_seen>=? AND first_seen<=?",
            (since, _iso(now)),
        )
        return [_entry_from(json.loads(data)) for (data,) in rows]

    # ------------------------------------------------------------------ editions

    def edition(self, day: date) -> Edition | None:
        row = self.db.execute("SELECT data FROM editions WHERE day=?", (day.isoformat(),)).fetchone()
        return _edition_from(json.loads(row[0])) if row else None

    def edition_index(self, limit: int = 30) -> list[tuple[date, datetime, int, tuple[str, ...]]]:
        """(day, created, stories on its web page, first three headlines) of the newest
        editions, for the archive and its feed.

        SQLite reads these out of each edition's JSON in C; decoding every edition into
        Stories for an index line took ~20 ms per busy day.
        """
        rows = self.db.execute(
            "SELECT day, created_at,"
            " json_array_length(data, '$.stories') + coalesce(json_array_length(data, '$.more'), 0),"
            " json_extract(data, '$.stories[0].lead.title'), json_extract(data, '$.stories[1].lead.title'),"
            " json_extract(data, '$.stories[2].lead.title') FROM editions ORDER BY day DESC LIMIT ?",
            (limit,),
        )
        return [
            (date.fromisoformat(day), _when(created), int(count), tuple(str(t) for t in tops if t))
            for day, created, count, *tops in rows
        ]

    def edition_summaries(self, limit: int = 7) -> list[tuple[date, int, tuple[str, ...]]]:
        """(day, story count, feed health) of the newest editions, for `digest status`.

        Read from a few bytes kept beside each edition: its JSON (0.7 MB for 40 stories)
        takes SQLite ~6 ms to parse, so a week of editions cost status 40 ms. Editions
        recorded before that table existed are read from their JSON.
        """
        rows = self.db.execute(
            "SELECT e.day, s.stories, s.feed_health FROM editions e"
            " LEFT JOIN edition_summaries s ON s.day = e.day ORDER BY e.day DESC LIMIT ?",
            (limit,),
        ).fetchall()
        out = []
        for day, stories, health in rows:
            if stories is None:
                stories, health = self.db.execute(
                    "SELECT json_array_length(data, '$.stories'), json_extract(data, '$.feed_health')"
                    " FROM editions WHERE day=?",
                    (day,),
                ).fetchone()
            out.append((date.fromisoformat(day), stories, tuple(json.loads(health)) if health else ()))
        return out

    def latest_edition_time(self) -> datetime | None:
        row = self.db.execute("SELECT MAX(created_at) FROM editions").fetchone()
        return _when(row[0]) if row and row[0] else None

    def record_edition(self, edition: Edition, renders: Sequence[Rendered]) -> None:
        """Freeze the edition, its renderings and its entries in one transaction."""
        day = edition.key
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM editions WHERE day=?", (day,)).fetchone():
                raise StateError(f"edition {day} already exists; it is never rebuilt silently")
            db.execute(
                "INSERT INTO editions VALUES (?,?,?)",
                (day, _iso(edition.created_at), json.dumps(_edition_dict(edition))),
            )
            db.execute(
                "INSERT INTO edition_summaries VALUES (?,?,?)",
                (day, len(edition.stories), json.dumps(list(edition.feed_health))),
            )
            # the web-only stories are published too (the email links to them): none waits for tomorrow
            ids = [e.id for story in (*edition.stories, *edition.more) for e in story.entries]
            db.executemany("UPDATE entries SET edition=? WHERE id=?", [(day, i) for i in ids])
            db.executemany(
                "INSERT INTO renders VALUES (?,?,?,?,?,?)",
                [(day, json.dumps(list(r.topics)), r.subject, r.html, r.text, r.story_count) for r in renders],
            )

    def renders(self, day: date) -> dict[tuple[str, ...], Rendered]:
        from .models import Rendered

        rows = self.db.execute(
            "SELECT topics, subject, html, text, story_count FROM renders WHERE day=?", (day.isoformat(),)
        )
        out = {}
        for topics, subject, html_, text, count in rows:
            key = tuple(json.loads(topics))
            out[key] = Rendered(key, subject, html_, text, count)
        return out

    def add_render(self, day: date, rendered: Rendered) -> None:
        """A topic set first met after the edition was frozen (a subscriber added later)."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO renders VALUES (?,?,?,?,?,?)",
                (
                    day.isoformat(),
                    json.dumps(list(rendered.topics)),
                    rendered.subject,
                    rendered.html,
                    rendered.text,
                    rendered.story_count,
                ),
            )

    # ------------------------------------------------------------------ deliveries

    def ensure_deliveries(self, day: date, emails: Iterable[str], now: datetime) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO deliveries (day, email, status, updated) VALUES (?,?,'pending',?)",
                [(day.isoformat(), e, _iso(now)) for e in emails],
            )

    def deliveries(self, day: date) -> dict[str, tuple[str, int, datetime | None]]:
        """email -> (status, attempts, next attempt)."""
        rows = self.db.execute(
            "SELECT email, status, attempts, next_attempt FROM deliveries WHERE day=?", (day.isoformat(),)
        )
        return {e: (s, a, _when(n) if n else None) for e, s, a, n in rows}

    def due_deliveries(self, day: date, now: datetime, page: int = 0) -> Iterator[str]:
        """Addresses owed a message of `day` now (pending, or retrying and due), in address order.

        Read a page at a time, each page a query of its own after the last address seen: rows
        updated meanwhile (sent, or retrying later) are behind the cursor and never read twice.
        """
        after, key, page = "", day.isoformat(), page or DUE_PAGE
        while True:
            rows = self.db.execute(
                "SELECT email, status, next_attempt FROM deliveries WHERE day=? AND email>?"
                " AND status IN ('pending','retrying') ORDER BY email LIMIT ?",
                (key, after, page),
            ).fetchall()
            for email, status, next_attempt in rows:
                if status == "pending" or next_attempt is None or _when(next_attempt) <= now:
                    yield email
            if len(rows) < page:
                return
            after = rows[-1][0]

    def delivery_attempts(self, day: date, emails: Sequence[str]) -> dict[str, int]:
        """email -> attempts recorded so far (for the backoff of a new failure)."""
        marks = ",".join("?" * len(emails))
        rows = self.db.execute(
            f"SELECT email, attempts FROM deliveries WHERE day=? AND email IN ({marks})",  # noqa: S608 - only ?s
            (day.isoformat(), *emails),
        )
        return dict(rows.fetchall())

    def record_delivery(
        self, day: date, outcome: DeliveryOutcome, now: datetime, next_attempt: datetime | None
    ) -> None:
        """Committed right after the server's reply, before the next message goes out."""
        self.db.execute(
            "UPDATE deliveries SET status=?, attempts=attempts+1, next_attempt=?, code=?, text=?,"
            " message_id=?, updated=? WHERE day=? AND email=?",
            (
                outcome.status,
                _iso(next_attempt) if next_attempt else None,
                outcome.code,
                outcome.text[:500],
                outcome.message_id,
                _iso(now),
                day.isoformat(),
                outcome.email,
            ),
        )

    def record_deliveries(
        self, day: date, outcomes: Sequence[tuple[DeliveryOutcome, datetime | None]], now: datetime
    ) -> None:
        """Replies that arrived together (one per connection), in one commit before any connection goes on.

        The commit is durable against a crash of this process at once (WAL), and against a
        power loss within SYNC_EVERY seconds: between fsync'd commits they use
        synchronous=NORMAL, a tenth of the cost. A power loss can thus forget up to a second
        of replies; those messages are sent again, with the same Message-ID. Nobody is lost:
        nothing is marked sent before its 250.
        """
        durable = time.monotonic() - self._synced >= SYNC_EVERY
        if not durable:
            self.db.execute("PRAGMA synchronous=NORMAL")
        try:
            with self.transaction() as db:
                db.executemany(
                    "UPDATE deliveries SET status=?, attempts=attempts+1, next_attempt=?, code=?, text=?,"
                    " message_id=?, updated=? WHERE day=? AND email=?",
                    [
                        (o.status, _iso(n) if n else None, o.code, o.text[:500], o.message_id, _iso(now),
                         day.isoformat(), o.email)
                        for o, n in outcomes
                    ],
                )
        finally:
            if durable:
                self._synced = time.monotonic()
            else:
                self.db.execute("PRAGMA synchronous=FULL")

    def owing_editions(self) -> list[tuple[date, datetime]]:
        """(day, created) of editions with deliveries still pending or retrying."""
        rows = self.db.execute(
            "SELECT e.day, e.created_at FROM editions e WHERE EXISTS (SELECT 1 FROM deliveries d"
            " WHERE d.day=e.day AND d.status IN ('pending','retrying')) ORDER BY e.day"
        )
        return [(date.fromisoformat(d), _when(c)) for d, c in rows]

    def give_up_deliveries(self, day: date, now: datetime, reason: str) -> int:
        """Owed messages of `day` become `failed`, keeping the last server reply after the reason."""
        cursor = self.db.execute(
            "UPDATE deliveries SET status='failed', next_attempt=NULL, updated=?, code=NULL,"
            " text=substr(? || COALESCE('; last reply: ' || CASE WHEN code>0 THEN code || ' ' || text ELSE text END,"
            " ''), 1, 500) WHERE day=? AND status IN ('pending','retrying')",
            (_iso(now), reason, day.isoformat()),
        )
        return cursor.rowcount

    def delivery_problems(self, day: date) -> list[tuple[str, str, int, str, datetime | None]]:
        """(email, status, code, text, next attempt) of the retrying and failed deliveries of `day`."""
        rows = self.db.execute(
            "SELECT email, status, code, text, next_attempt FROM deliveries WHERE day=?"
            " AND status IN ('failed','retrying') ORDER BY status, email",
            (day.isoformat(),),
        )
        return [(e, s, c or 0, t or "", _when(n) if n else None) for e, s, c, t, n in rows]

    def delivery_counts(self, day: date) -> dict[str, int]:
        rows = self.db.execute(
            "SELECT status, COUNT(*) FROM deliveries WHERE day=? GROUP BY status", (day.isoformat(),)
        )
        return dict(rows.fetchall())

    def failures(self, day: date) -> list[tuple[str, str, int, str]]:
        rows = self.db.execute(
            "SELECT email, status, code, text FROM deliveries WHERE day=? AND status IN ('failed','retrying')"
            " ORDER BY email",
            (day.isoformat(),),
        )
        return [(e, s, c or 0, t or "") for e, s, c, t in rows]

    # ------------------------------------------------------------------ suppressions

    def suppressed(self) -> set[str]:
        return {e for (e,) in self.db.execute("SELECT email FROM suppressions")}

    def suppress(self, email: str, now: datetime, reason: str) -> bool:
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO suppressions VALUES (?,?,?)", (email.lower(), _iso(now), reason)
        )
        return cursor.rowcount > 0

    def unsuppress(self, email: str) -> bool:
        """Lift a suppression (the reader asked to come back): `subscribers add --resubscribe`."""
        return self.db.execute("DELETE FROM suppressions WHERE email=?", (email.lower(),)).rowcount > 0


def _backlog_cutoff(entries: Sequence[Entry], window: float) -> datetime | None:
    """On a feed's first poll only its latest `window` is news: no months-long backlog."""
    if not entries:
        return None
    return max(e.published for e in entries) - timedelta(seconds=window)


def _entry_dict(entry: Entry) -> dict[str, Any]:
    from dataclasses import fields  # here: `digest status` never writes an entry

    data = {f.name: getattr(entry, f.name) for f in fields(entry)}  # flat values: asdict's deep copy is 10x slower
    data["published"] = _iso(entry.published)
    return data


def _entry_from(data: dict[str, Any]) -> Entry:
    from .models import Entry

    data = dict(data)
    data["published"] = _when(data["published"])
    data["categories"] = tuple(data.get("categories", ()))
    return Entry(**data)


def _edition_dict(edition: Edition) -> dict[str, Any]:
    return {
        "day": edition.key,
        "created_at": _iso(edition.created_at),
        "overflow": edition.overflow,
        "feed_health": list(edition.feed_health),
        "stories": [_story_dict(s) for s in edition.stories],
        "more": [_story_dict(s) for s in edition.more],
    }


def _story_dict(story: Story) -> dict[str, Any]:
    return {
        "lead": _entry_dict(story.lead),
        "also": [_entry_dict(e) for e in story.also],
        "terms": list(story.terms),
        "why": [{"entry_id": j.entry_id, "score": j.score, "terms": list(j.terms)} for j in story.why],
    }


def _edition_from(data: dict[str, Any]) -> Edition:
    from .models import Edition

    return Edition(
        day=date.fromisoformat(data["day"]),
        stories=tuple(map(_story_from, data["stories"])),
        created_at=_when(data["created_at"]),
        overflow=data.get("overflow", 0),
        feed_health=tuple(data.get("feed_health", ())),
        more=tuple(map(_story_from, data.get("more", ()))),  # absent in editions recorded before it was kept
    )


def _story_from(s: dict[str, Any]) -> Story:
    from .models import Joined, Story

    return Story(
        _entry_from(s["lead"]),
        tuple(_entry_from(e) for e in s["also"]),
        tuple(s["terms"]),
        tuple(Joined(j["entry_id"], float(j["score"]), tuple(j["terms"])) for j in s.get("why", ())),
    )
