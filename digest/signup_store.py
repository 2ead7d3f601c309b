"""Signup state beside the Store's tables: pending signups, consent records, rate limits.

Nothing reaches config.toml before a reader confirms, so a signup lives here until then:
the address, name and sections asked for, when, the page it came from and a keyed hash of
the client address (never the address itself). A confirmation, a preferences change and an
unsubscribe through the web leave a consent row (what, when, where from) that stays.

Rate limits count rows, in the same transaction that adds one (BEGIN IMMEDIATE), so 200
requests at once cannot all slip under a limit of 5.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .config import address_key
from .store import Store

if TYPE_CHECKING:
    from concurrent.futures import Future  # imported where used: it loads logging, which status never needs

_SCHEMA = """
CREATE TABLE IF NOT EXISTS signups (
    id INTEGER PRIMARY KEY, email TEXT NOT NULL, key TEXT NOT NULL, name TEXT NOT NULL,
    topics TEXT NOT NULL, created TEXT NOT NULL, source TEXT NOT NULL, client TEXT NOT NULL,
    nonce TEXT NOT NULL, mailed TEXT, confirmed TEXT);
CREATE INDEX IF NOT EXISTS signups_key ON signups (key, created);
CREATE INDEX IF NOT EXISTS signups_client ON signups (client, created);
CREATE TABLE IF NOT EXISTS consents (
    email TEXT NOT NULL, at TEXT NOT NULL, what TEXT NOT NULL, source TEXT NOT NULL,
    signup INTEGER, client TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS consents_email ON consents (email, at);
"""


CONFIRM_VALID = timedelta(days=7)
"""How long a confirmation link works."""
PENDING_KEPT = CONFIRM_VALID + timedelta(days=1)
"""An unconfirmed signup is an address nobody consented for: kept a day beyond its link, then deleted."""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


@dataclass(frozen=True)
class Signup:
    id: int
    email: str
    name: str
    topics: tuple[str, ...]
    created: datetime
    source: str
    nonce: str
    confirmed: datetime | None


@dataclass(frozen=True)
class Admission:
    """What `admit` decided: a new pending signup, or which limit stopped it."""

    signup: Signup | None
    limited: str = ""  # "" | "client" | "address"


T = TypeVar("T")


class GroupCommit:
    """Many threads' small writes, one transaction (one fsync) per batch.

    synchronous=FULL makes every commit an fsync, and under a burst of signups (each also
    fsyncing its Maildir file) one commit waits ~10 ms: 200 commits in a row take seconds.
    So the first caller leads: it runs every write queued meanwhile in one BEGIN IMMEDIATE
    transaction, each in its own savepoint (one failing rolls back only itself), commits,
    and only then hands each caller its result, so no email goes out for a row that is not
    on disk. In-process queueing also spares the threads SQLite's busy-wait sleeps.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[Path, list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]]] = {}

    def run(self, store: Store, work: Callable[[sqlite3.Connection], T]) -> T:
        from concurrent.futures import Future

        done: Future[T] = Future()
        with self._lock:
            lead = store.path not in self._queues
            self._queues.setdefault(store.path, []).append((work, done))
        while lead:
            with self._lock:
                batch = self._queues.pop(store.path)
                if batch:
                    self._queues[store.path] = []
            if not batch:
                break
            self._commit(store, batch)
        return done.result()

    def _commit(self, store: Store, batch: list[tuple[Callable[[sqlite3.Connection], Any], Future[Any]]]) -> None:
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            with store.transaction() as db:
                for work, done in batch:
                    db.execute("SAVEPOINT one")
                    try:
                        outcomes.append((done, work(db), None))
                    except Exception as exc:  # noqa: BLE001 - handed to its own caller
                        db.execute("ROLLBACK TO one")
                        outcomes.append((done, None, exc))
                    db.execute("RELEASE one")
        except BaseException as exc:
            for _, done in batch:
                done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for done, result, error in outcomes:
            if error is None:
                done.set_result(result)
            else:
                done.set_exception(error)


WRITES = GroupCommit()
_READY: weakref.WeakSet[Store] = weakref.WeakSet()
"""Stores whose connection has the tables already (the web app keeps one per thread)."""


class SignupBook:
    """The signup tables on an open Store's connection (created if missing, unless read-only)."""

    def __init__(self, store: Store, *, create: bool = True) -> None:
        self.store, self.db = store, store.db
        if create and store not in _READY:
            self.db.executescript(_SCHEMA)
            _READY.add(store)

    def admit(
        self,
        email: str,
        name: str,
        topics: tuple[str, ...],
        source: str,
        client: str,
        now: datetime,
        *,
        per_client_hour: int,
        mail_interval: float,
    ) -> Admission:
        """Record a pending signup unless the client or the address is over its limit.

        Checked and recorded in one transaction (batched with others, see GroupCommit), so
        200 requests at once cannot all slip under a limit of 5."""
        key = address_key(email).lower()
        source = source[:500]
        hour_ago = _iso(now - timedelta(hours=1))
        since = _iso(now - timedelta(seconds=mail_interval))

        def work(db: sqlite3.Connection) -> Admission:
            db.execute("DELETE FROM signups WHERE confirmed IS NULL AND created<?", (_iso(now - PENDING_KEPT),))
            count = db.execute("SELECT COUNT(*) FROM signups WHERE client=? AND created>?", (client, hour_ago))
            if count.fetchone()[0] >= per_client_hour:
                return Admission(None, "client")
            if mail_interval > 0:
                recent = db.execute("SELECT 1 FROM signups WHERE key=? AND created>? LIMIT 1", (key, since))
                if recent.fetchone():
                    return Admission(None, "address")
            import secrets  # only a new signup needs it; `digest status` reads this module too

            nonce = secrets.token_urlsafe(12)
            cursor = db.execute(  # mailed: the email goes out next (`unmailed` if it could not)
                "INSERT INTO signups (email, key, name, topics, created, source, client, nonce, mailed)"
                " VALUES (?,?,?,?,?,?,?,?,?)",
                (email, key, name, json.dumps(list(topics)), _iso(now), source, client, nonce, _iso(now)),
            )
            assert cursor.lastrowid is not None
            return Admission(Signup(cursor.lastrowid, email, name, topics, now, source, nonce, None))

        return WRITES.run(self.store, work)

    def unmailed(self, signup_id: int) -> None:
        """The confirmation email could not be handed over."""
        WRITES.run(self.store, lambda db: db.execute("UPDATE signups SET mailed=NULL WHERE id=?", (signup_id,)))

    def get(self, signup_id: int) -> Signup | None:
        row = self.db.execute(
            "SELECT id, email, name, topics, created, source, nonce, confirmed FROM signups WHERE id=?", (signup_id,)
        ).fetchone()
        if row is None:
            return None
        confirmed = datetime.fromisoformat(row[7]) if row[7] else None
        return Signup(
            row[0], row[1], row[2], tuple(json.loads(row[3])), datetime.fromisoformat(row[4]), row[5], row[6], confirmed
        )

    def confirm(self, signup: Signup, now: datetime, client: str) -> bool:
        """Mark confirmed and keep the consent record; False if it was confirmed already."""

        def work(db: sqlite3.Connection) -> bool:
            done = db.execute(
                "UPDATE signups SET confirmed=? WHERE id=? AND confirmed IS NULL", (_iso(now), signup.id)
            ).rowcount
            if done:
                db.execute(
                    "INSERT INTO consents VALUES (?,?,?,?,?,?)",
                    (signup.email, _iso(now), "confirmed", signup.source, signup.id, client),
                )
            return bool(done)

        return WRITES.run(self.store, work)

    def consent(self, email: str, what: str, source: str, client: str, now: datetime) -> None:
        """A preferences change or an unsubscribe made on the web."""
        row = (email, _iso(now), what, source[:500], client)
        WRITES.run(self.store, lambda db: db.execute("INSERT INTO consents VALUES (?,?,?,?,NULL,?)", row))

    def counts(self, since: datetime) -> tuple[int, int]:
        """(pending, confirmed) signups created since `since`."""
        try:
            row = self.db.execute(
                "SELECT COUNT(*) - COUNT(confirmed), COUNT(confirmed) FROM signups WHERE created>=?", (_iso(since),)
            ).fetchone()
        except sqlite3.OperationalError:  # a read-only view of a state without the table
            return 0, 0
        return int(row[0]), int(row[1])

    def confirmed_by_address(self) -> dict[str, tuple[datetime, str]]:
        """address key -> (when the latest web confirmation was, the page it came from)."""
        try:
            rows = self.db.execute(
                "SELECT s.key, s.confirmed, s.source FROM signups s WHERE s.confirmed IS NOT NULL ORDER BY s.confirmed"
            ).fetchall()
        except sqlite3.OperationalError:
            return {}
        return {key: (datetime.fromisoformat(at), source) for key, at, source in rows}
