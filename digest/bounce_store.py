"""Bounce state beside the Store's tables: messages processed, soft bounces, suppressions.

Each message's outcome and its effects (a soft-bounce count, a suppression) are written
in ONE transaction keyed by the message, so a crash mid-batch loses nothing and counts
nothing twice, and two `digest bounces` runs at once skip each other's messages (BEGIN
IMMEDIATE serialises them; the key is checked inside). Suppressions go into the Store's
`suppressions` table too (reason "bounce" / "complaint"), so every send path skips them;
the detail (reason, date) lives here for `status` and `subscribers list`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from .config import address_key
from .store import Store

SOFT_LIMIT = 3
SOFT_WINDOW = timedelta(days=14)
"""A temporary failure suppresses once there were SOFT_LIMIT of them within SOFT_WINDOW."""
KINDS = {"bounce": "bounced", "complaint": "complained"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS bounce_messages (
    key TEXT PRIMARY KEY, at TEXT NOT NULL, verdict TEXT NOT NULL, reason TEXT NOT NULL, email TEXT);
CREATE TABLE IF NOT EXISTS bounce_soft (email TEXT NOT NULL, at TEXT NOT NULL, key TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS bounce_soft_email ON bounce_soft (email, at);
CREATE TABLE IF NOT EXISTS bounce_suppressions (
    email TEXT PRIMARY KEY, kind TEXT NOT NULL, reason TEXT NOT NULL, at TEXT NOT NULL);
"""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


class BounceBook:
    """The bounce tables on an open Store's connection (created if missing, unless read-only)."""

    def __init__(self, store: Store, *, create: bool = True) -> None:
        self.store = store
        if create:
            store.db.executescript(_SCHEMA)

    def seen(self, key: str) -> bool:
        try:
            return self.store.db.execute("SELECT 1 FROM bounce_messages WHERE key=?", (key,)).fetchone() is not None
        except sqlite3.OperationalError:  # read-only view of a state without the table
            return False

    def record(
        self, key: str, verdict: str, reason: str, email: str | None, now: datetime, happened: datetime | None = None
    ) -> tuple[bool, bool]:
        """One message's outcome and effects, atomically: (recorded now, someone suppressed).

        `happened`: when the failure was reported (the message's Date, never after `now`),
        so that an old Maildir read for the first time does not look like a burst.
        (False, False) when another run recorded this message first.
        """
        with self.store.transaction() as db:
            if db.execute("SELECT 1 FROM bounce_messages WHERE key=?", (key,)).fetchone():
                return False, False
            db.execute("INSERT INTO bounce_messages VALUES (?,?,?,?,?)", (key, _iso(now), verdict, reason, email))
            if email is None:
                return True, False
            if verdict == "hard":
                return True, self._suppress(email, "bounce", reason, now)
            if verdict == "complaint":
                return True, self._suppress(email, "complaint", reason, now)
            if verdict == "soft":
                ident, at = address_key(email), min(happened or now, now)
                db.execute("INSERT INTO bounce_soft VALUES (?,?,?)", (ident, _iso(at), key))
                count = self._soft_burst(ident, at)
                if count >= SOFT_LIMIT:
                    why = f"{count} temporary failures within {SOFT_WINDOW.days} days, last: {reason}"
                    return True, self._suppress(email, "bounce", why, now)
            return True, False

    def _soft_burst(self, ident: str, at: datetime) -> int:
        """The most temporary failures of this address in any SOFT_WINDOW around `at`."""
        times = [
            datetime.fromisoformat(t)
            for (t,) in self.store.db.execute(
                "SELECT at FROM bounce_soft WHERE email=? AND at>=? AND at<=? ORDER BY at",
                (ident, _iso(at - SOFT_WINDOW), _iso(at + SOFT_WINDOW)),
            )
        ]
        best, start = 0, 0
        for end, moment in enumerate(times):
            while moment - times[start] > SOFT_WINDOW:
                start += 1
            best = max(best, end - start + 1)
        return best

    def _suppress(self, email: str, kind: str, reason: str, now: datetime) -> bool:
        """Inside the caller's transaction: the Store's suppression list plus our detail row."""
        added = self.store.suppress(email, now, kind)
        if added:  # an address the reader unsubscribed stays "unsubscribed"
            self.store.db.execute(
                "INSERT OR REPLACE INTO bounce_suppressions VALUES (?,?,?,?)",
                (address_key(email), kind, reason, _iso(now)),
            )
        return added

    def suppress_refused(self, day_key: str, now: datetime) -> list[str]:
        """Send-time rule: addresses refused with 5xx in this edition and in their delivery before it."""
        db = self.store.db
        refused = db.execute(
            "SELECT email, code, text FROM deliveries WHERE day=? AND status='failed' AND code>=500", (day_key,)
        ).fetchall()
        rows = []
        for email, code, text in refused:
            before = db.execute(
                "SELECT day, status, code FROM deliveries WHERE email=? AND day<? ORDER BY day DESC LIMIT 1",
                (email, day_key),
            ).fetchone()
            if before and before[1] == "failed" and (before[2] or 0) >= 500:
                rows.append((email, code, text, before[0]))
        done = []
        with self.store.transaction():
            for email, code, text, before in rows:
                why = f"refused with {code} in two editions in a row ({before}, {day_key}): {text}"[:300]
                if self._suppress(email, "bounce", why, now):
                    done.append(email)
        return done

    def lift(self, email: str) -> bool:
        """`subscribers add --resubscribe`: forget the bounce record and the soft count too."""
        ident = address_key(email)
        with self.store.transaction() as db:
            gone = db.execute("DELETE FROM bounce_suppressions WHERE email=?", (ident,)).rowcount
            db.execute("DELETE FROM bounce_soft WHERE email=?", (ident,))
        return gone > 0

    def suppressions(self) -> dict[str, tuple[str, str, str]]:
        """address_key -> (status word "bounced"/"complained", reason, date) of suppressions still in force."""
        try:
            rows = self.store.db.execute(
                "SELECT b.email, b.kind, b.reason, b.at FROM bounce_suppressions b"
                " JOIN suppressions s ON s.email=lower(b.email) ORDER BY b.at DESC"
            ).fetchall()
        except sqlite3.OperationalError:  # read-only view of a state without the table
            return {}
        return {email: (KINDS.get(kind, kind), reason, at[:10]) for email, kind, reason, at in rows}

    def known_addresses(self, current: Iterable[str]) -> list[str]:
        """Current and past subscribers: the config's, plus everyone ever mailed or suppressed."""
        past = [e for (e,) in self.store.db.execute("SELECT DISTINCT email FROM deliveries")]
        past += [e for (e,) in self.store.db.execute("SELECT email FROM suppressions")]
        return list(dict.fromkeys([*current, *past]))
