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
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from .config import address_key
from .store import Store

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


class SignupBook:
    """The signup tables on an open Store's connection (created if missing, unless read-only)."""

    def __init__(self, store: Store, *, create: bool = True) -> None:
        self.store, self.db = store, store.db
        if create:
            self.db.executescript(_SCHEMA)

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
        """Record a pending signup unless the client or the address is over its limit (atomic)."""
        key = address_key(email).lower()
        self.db.execute("BEGIN IMMEDIATE")
        try:
            hour_ago = _iso(now - timedelta(hours=1))
            count = self.db.execute(
                "SELECT COUNT(*) FROM signups WHERE client=? AND created>?", (client, hour_ago)
            ).fetchone()[0]
            if count >= per_client_hour:
                self.db.execute("ROLLBACK")
                return Admission(None, "client")
            if mail_interval > 0:
                since = _iso(now - timedelta(seconds=mail_interval))
                recent = self.db.execute(
                    "SELECT 1 FROM signups WHERE key=? AND created>? LIMIT 1", (key, since)
                ).fetchone()
                if recent:
                    self.db.execute("ROLLBACK")
                    return Admission(None, "address")
            nonce = secrets.token_urlsafe(12)
            cursor = self.db.execute(
                "INSERT INTO signups (email, key, name, topics, created, source, client, nonce)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (email, key, name, json.dumps(list(topics)), _iso(now), source[:500], client, nonce),
            )
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        assert cursor.lastrowid is not None
        return Admission(Signup(cursor.lastrowid, email, name, topics, now, source[:500], nonce, None))

    def mailed(self, signup_id: int, now: datetime) -> None:
        self.db.execute("UPDATE signups SET mailed=? WHERE id=?", (_iso(now), signup_id))

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
        with self.store.transaction():
            done = self.db.execute(
                "UPDATE signups SET confirmed=? WHERE id=? AND confirmed IS NULL", (_iso(now), signup.id)
            ).rowcount
            if done:
                self.db.execute(
                    "INSERT INTO consents VALUES (?,?,?,?,?,?)",
                    (signup.email, _iso(now), "confirmed", signup.source, signup.id, client),
                )
        return bool(done)

    def consent(self, email: str, what: str, source: str, client: str, now: datetime) -> None:
        """A preferences change or an unsubscribe made on the web."""
        self.db.execute("INSERT INTO consents VALUES (?,?,?,?,NULL,?)", (email, _iso(now), what, source[:500], client))

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
