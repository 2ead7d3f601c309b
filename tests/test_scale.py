"""Sending to many: owed recipients are streamed, never all in memory at once (issue 17).

The 100,000-subscriber run itself is `benchmarks/run.py --subscribers 100000`; here the
mechanisms it rests on are checked on real SQLite files and a real SMTP server.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import MakeConfig, toml_value
from hypothesis import given, settings
from hypothesis import strategies as st
from smtp_fault import Fault, FaultySMTPServer

from digest import config as config_mod
from digest import deliver, store
from digest.cli import main
from digest.models import DeliveryOutcome, Recipient
from digest.settings import SmtpSettings, Subscriber
from digest.store import Store

DAY = date(2026, 11, 21)
NOW = datetime(2026, 11, 21, 7, tzinfo=UTC)


@settings(max_examples=25, deadline=None)
@given(
    states=st.lists(st.sampled_from(["pending", "sent", "failed", "retry-due", "retry-later"]), max_size=60),
    page=st.integers(1, 9),
)
def test_due_deliveries_yields_each_owed_address_once_while_rows_change(
    tmp_path_factory: pytest.TempPathFactory, states: list[str], page: int
) -> None:
    """Pages by address: rows marked sent (or retrying later) while reading are not read again."""
    path = tmp_path_factory.mktemp("due") / "state.sqlite3"
    emails = [f"r{i:03d}@example.com" for i in range(len(states))]
    with Store(path) as db:
        db.ensure_deliveries(DAY, emails, NOW)
        for email, state in zip(emails, states, strict=True):
            if state != "pending":
                status = "retrying" if state.startswith("retry") else state
                later = NOW + timedelta(hours=1) if state == "retry-later" else NOW - timedelta(minutes=1)
                db.record_deliveries(DAY, [(DeliveryOutcome(email, status, 451), later)], NOW)
        seen = []
        for email in db.due_deliveries(DAY, NOW, page=page):
            seen.append(email)
            outcome = DeliveryOutcome(email, "retrying", 451, "busy")  # what a send records meanwhile
            db.record_deliveries(DAY, [(outcome, NOW + timedelta(minutes=5))], NOW)
    owed = [e for e, s in zip(emails, states, strict=True) if s in ("pending", "retry-due")]
    assert seen == owed


def test_to_smtp_pulls_recipients_only_as_connections_free_up(smtp_server: FaultySMTPServer) -> None:
    """The recipients are a generator; at no time are more than a few per connection taken out."""
    settings_ = SmtpSettings(host="127.0.0.1", port=smtp_server.port, security="none", connections=2, timeout=10)
    pulled, recorded, worst = 0, 0, 0

    def recipients() -> Iterator[Recipient]:
        nonlocal pulled, worst
        for i in range(120):
            pulled += 1
            worst = max(worst, pulled - recorded)
            email = f"r{i:03d}@example.com"
            yield Recipient(Subscriber(email), f"<m{i}@example.com>", "", "mailto:x@example.com")

    def record(outcomes: Any) -> None:
        nonlocal recorded
        recorded += len(outcomes)

    def build(to: Recipient) -> bytes:
        return f"To: {to.subscriber.email}\r\nSubject: hi\r\n\r\nhello\r\n".encode()

    deliver.to_smtp(settings_, "News <news@example.com>", recipients(), build, record)
    assert recorded == pulled == 120
    assert len(smtp_server.by_recipient()) == 120
    # per connection: its queue (QUEUE_DEPTH), plus a reply settled but not yet recorded when the
    # next message is handed out (it goes out up to its final dot while the reply is committed)
    assert worst <= settings_.connections * (deliver.QUEUE_DEPTH + 1)


def test_a_send_over_many_pages_with_failures_reaches_everyone_once(
    make_config: MakeConfig, smtp_server: FaultySMTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "DUE_PAGE", 7)
    monkeypatch.setattr(deliver, "IN_RUN_DELAYS", (0.05,))
    emails = [f"reader{i:02d}@example.com" for i in range(45)]
    config = make_config(smtp=smtp_server, subscribers=[{"email": e} for e in emails])
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[smtp]\n", f"[smtp]\nconnections = {toml_value(3)}\n", 1), encoding="utf-8")
    smtp_server.add_fault(Fault("RCPT", 451, "4.2.0 busy", rcpt="reader03@example.com", times=2))
    smtp_server.add_fault(Fault("RCPT", 550, "5.1.1 unknown", rcpt="reader20@example.com", times=-1))

    def send(now: str) -> str:
        result = CliRunner().invoke(main, ["--config", str(config), "send", "--now", now], catch_exceptions=False)
        assert result.exit_code == 0, result.stderr
        return result.stdout

    assert "delivered to 43 of 45 subscribers, 1 to retry, 1 failed" in send("2026-11-21T07:00:00+00:00")
    assert "delivered to 44 of 45 subscribers" in send("2026-11-21T09:00:00+00:00")  # the backoff has passed
    got = smtp_server.by_recipient()
    assert sorted(got) == sorted(set(emails) - {"reader20@example.com"})
    assert all(len(items) == 1 for items in got.values())
    with Store(config_mod.load(config).state_path) as db:
        assert db.deliveries(DAY)["reader03@example.com"][:2] == ("sent", 3)


def test_replies_are_committed_without_fsync_but_once_a_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trade-off of Store.record_deliveries, observed on the connection's own setting."""
    syncs: list[int] = []
    with Store(tmp_path / "state.sqlite3") as db:
        db.ensure_deliveries(DAY, ["a@example.com"], NOW)
        real = db.transaction

        def spy() -> Any:
            syncs.append(db.db.execute("PRAGMA synchronous").fetchone()[0])
            return real()

        monkeypatch.setattr(db, "transaction", spy)
        clock = iter([100.0, 100.1, 100.2, 101.5, 101.6, 101.7, 101.8, 101.9])
        monkeypatch.setattr(store.time, "monotonic", lambda: next(clock))
        for _ in range(4):
            db.record_deliveries(DAY, [(DeliveryOutcome("a@example.com", "sent", 250), None)], NOW)
        assert db.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL again between batches
    assert syncs == [2, 1, 2, 1]  # FULL (2) at first and after a second, NORMAL (1) between
