"""`digest run` (issue 5): the daily send at send_at, polls between, catch-up, DST, one daemon.

The schedule logic is driven through `Daemon.tick(now)` with a controllable clock; the
wiring (APScheduler, signals, the daemon lock) through real `digest run` subprocesses
whose clock starts a few seconds before send_at (`run --now`).
"""

from __future__ import annotations

import itertools
import logging
import mailbox
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from conftest import MakeConfig
from smtp_fault import FaultySMTPServer

from digest import config as config_mod
from digest.cli import main
from digest.schedule import Daemon, due_send, next_send_time, send_time, send_trigger
from digest.store import Store

FEED = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Tiny Wire</title><link>https://tiny.example/</link>
<description>two items</description>
<item><title>Kazakhstan joins the lunar research station</title><link>https://tiny.example/a</link>
<guid>https://tiny.example/a</guid><pubDate>Fri, 20 Nov 2026 18:00:00 +0000</pubDate>
<description>Kazakhstan signs on to the China-led lunar station.</description></item>
<item><title>Bulgaria signs the Artemis Accords</title><link>https://tiny.example/b</link>
<guid>https://tiny.example/b</guid><pubDate>Fri, 20 Nov 2026 19:00:00 +0000</pubDate>
<description>Bulgaria becomes the latest signatory.</description></item>
</channel></rss>
"""
SUBSCRIBERS = [{"email": f"reader{i}@example.com", "name": f"Reader {i}"} for i in range(3)]
WAIT = 20.0  # seconds: the bound of every wait on a subprocess


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.fixture
def tiny(tmp_path: Path, make_config: MakeConfig) -> Any:
    """make(**tables) -> config path: one small local feed, three readers, Maildir delivery."""
    (tmp_path / "tiny.xml").write_text(FEED, encoding="utf-8")

    def make(
        subscribers: list[dict[str, Any]] = SUBSCRIBERS, smtp: FaultySMTPServer | None = None, **tables: dict[str, Any]
    ) -> Path:
        feeds = [{"name": "Tiny Wire", "url": "tiny.xml", "section": "Politics"}]
        return make_config(smtp=smtp, feeds=feeds, subscribers=subscribers, **tables)

    return make


def delivered(config_path: Path) -> Counter[str]:
    box = mailbox.Maildir(config_path.parent / "outbox", create=True)
    return Counter(str(message["To"]).split("<")[-1].rstrip(">") for message in box)


def drive(daemon: Daemon, start: datetime, end: datetime, step: timedelta) -> list[tuple[datetime, str]]:
    """Wake the daemon every `step` from start to end, as the scheduler would."""
    done, now = [], start
    while now <= end:
        done.append((now, daemon.tick(now)))
        now += step
    return done


# ---------------------------------------------------------------------- send time and polls


def test_the_send_fires_at_send_at_in_the_newsletter_timezone_and_polls_run_between(
    tiny: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config = tiny(newsletter={"timezone": "America/New_York"}, schedule={"send_at": "07:00", "poll_every": "2h"})
    caplog.set_level(logging.INFO, logger="digest")
    daemon = Daemon(config)
    # 2026-11-21 in New York is EST (UTC-5): 07:00 there is 12:00 UTC.
    done = drive(daemon, at("2026-11-21T05:00:00+00:00"), at("2026-11-22T04:30:00+00:00"), timedelta(minutes=30))
    sends = [when for when, what in done if what == "sent"]
    assert sends == [at("2026-11-21T12:00:00+00:00")]
    assert delivered(config) == Counter({s["email"]: 1 for s in SUBSCRIBERS})
    polls = [when for when, what in done if what in ("polled", "sent")]
    assert polls[0] == at("2026-11-21T05:00:00+00:00")  # at start
    gaps = {b - a for a, b in itertools.pairwise(polls)}
    assert all(timedelta(hours=1) <= gap <= timedelta(hours=2) for gap in gaps), gaps  # every poll_every, not more
    assert len(polls) >= 12  # through the whole day, not only at the send
    assert sum("poll: 1 feeds" in r.getMessage() for r in caplog.records) == len(polls)
    send_lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("send (")]
    assert len(send_lines) == 1 and "delivered to 3 of 3 subscribers" in send_lines[0]


def test_next_send_time_honours_weekdays(tiny: Any) -> None:
    cfg = config_mod.load(tiny(schedule={"send_at": "07:00", "weekdays": ["mon", "fri"]}))
    # 2026-11-21 is a Saturday
    assert next_send_time(cfg, at("2026-11-21T08:00:00+00:00")) == at("2026-11-23T07:00:00+00:00")
    assert next_send_time(cfg, at("2026-11-23T07:00:00+00:00")) == at("2026-11-27T07:00:00+00:00")
    with Store(cfg.state_path) as store:
        assert due_send(cfg, store, at("2026-11-21T07:30:00+00:00")).action == "wait"
        assert due_send(cfg, store, at("2026-11-23T07:30:00+00:00")).action == "send"


# ---------------------------------------------------------------------- restarts and catch-up


def test_a_restart_after_send_at_catches_up_once_and_a_second_restart_does_not_resend(tiny: Any) -> None:
    config = tiny(schedule={"send_at": "07:00", "catch_up_grace": "6h"})
    assert Daemon(config).tick(at("2026-11-21T06:00:00+00:00")) == "polled"  # then the process dies
    assert delivered(config) == Counter()
    assert Daemon(config).tick(at("2026-11-21T09:30:00+00:00")) == "sent"  # back the same day: catch up
    assert delivered(config) == Counter({s["email"]: 1 for s in SUBSCRIBERS})
    again = Daemon(config)
    assert again.tick(at("2026-11-21T10:00:00+00:00")) == "polled"
    assert again.tick(at("2026-11-21T10:30:00+00:00")) == "idle"
    assert delivered(config) == Counter({s["email"]: 1 for s in SUBSCRIBERS})


def test_no_catch_up_beyond_the_grace_nor_for_a_past_day(tiny: Any) -> None:
    config = tiny(schedule={"send_at": "07:00", "catch_up_grace": "6h"})
    cfg = config_mod.load(config)
    assert Daemon(config).tick(at("2026-11-21T13:30:00+00:00")) == "polled"  # 6.5 h late
    assert Daemon(config).tick(at("2026-11-22T06:00:00+00:00")) == "polled"  # the next morning
    with Store(cfg.state_path) as store:
        assert store.edition(date(2026, 11, 21)) is None and store.edition(date(2026, 11, 22)) is None
    assert delivered(config) == Counter()
    assert Daemon(config).tick(at("2026-11-22T07:00:00+00:00")) == "sent"
    with Store(cfg.state_path) as store:
        assert store.edition(date(2026, 11, 21)) is None and store.edition(date(2026, 11, 22)) is not None


def test_a_manual_send_and_the_daemon_deliver_one_edition(tiny: Any) -> None:
    config = tiny(schedule={"send_at": "07:00"})
    result = CliRunner().invoke(main, ["--config", str(config), "send", "--now", "2026-11-21T05:00:00+00:00"])
    assert result.exit_code == 0, result.output
    daemon = Daemon(config)
    assert [daemon.tick(at(f"2026-11-21T{h:02}:00:00+00:00")) for h in (6, 7, 8)] == ["polled", "polled", "polled"]
    assert delivered(config) == Counter({s["email"]: 1 for s in SUBSCRIBERS})


def test_nothing_new_means_no_edition_and_no_retry_the_same_day(tiny: Any) -> None:
    config = tiny(schedule={"send_at": "07:00", "send_if_empty": False})
    cfg = config_mod.load(config)
    daemon = Daemon(config)
    assert daemon.tick(at("2026-11-21T07:00:00+00:00")) == "sent"
    assert daemon.tick(at("2026-11-22T07:00:00+00:00")) == "sent"  # attempted: nothing new since yesterday
    assert daemon.tick(at("2026-11-22T08:00:00+00:00")) == "polled"  # not attempted again
    with Store(cfg.state_path) as store:
        assert store.edition(date(2026, 11, 22)) is None
    assert delivered(config) == Counter({s["email"]: 1 for s in SUBSCRIBERS})


def test_config_changes_count_at_the_next_send_and_a_broken_config_keeps_the_last_good(
    tiny: Any, caplog: pytest.LogCaptureFixture
) -> None:
    config = tiny(schedule={"send_at": "07:00", "send_if_empty": True})
    daemon = Daemon(config)
    assert daemon.tick(at("2026-11-21T07:00:00+00:00")) == "sent"
    tiny(
        subscribers=[*SUBSCRIBERS, {"email": "new@example.com", "name": "New"}],
        schedule={"send_at": "07:00", "send_if_empty": True},
    )
    good = config.read_text(encoding="utf-8")
    config.write_text("[schedule\nbroken", encoding="utf-8")
    assert daemon.tick(at("2026-11-21T09:00:00+00:00")) == "polled"
    assert any("config reload failed" in r.getMessage() for r in caplog.records)
    config.write_text(good, encoding="utf-8")
    assert daemon.tick(at("2026-11-22T07:00:00+00:00")) == "sent"
    assert delivered(config) == Counter({**{s["email"]: 2 for s in SUBSCRIBERS}, "new@example.com": 1})


# ---------------------------------------------------------------------- daylight saving time


@pytest.mark.parametrize(
    ("first", "dst_day", "sent_utc"),
    [
        ("2026-03-28", date(2026, 3, 29), "2026-03-29T01:30:00+00:00"),  # 02:30 does not exist: 03:30 CEST
        ("2026-10-24", date(2026, 10, 25), "2026-10-25T00:30:00+00:00"),  # 02:30 happens twice: the first
    ],
)
def test_a_dst_day_is_neither_skipped_nor_doubled(tiny: Any, first: str, dst_day: date, sent_utc: str) -> None:
    config = tiny(
        newsletter={"timezone": "Europe/Berlin"},
        schedule={"send_at": "02:30", "poll_every": "3h", "send_if_empty": True},
    )
    cfg = config_mod.load(config)
    assert send_time(cfg, dst_day) == at(sent_utc)
    start = at(f"{first}T00:00:00+01:00")
    end = start + timedelta(days=3)
    # Wake-ups as `digest run` has them: the cron trigger's fire times and the poll interval.
    trigger, fires, previous = send_trigger(cfg), [], None
    for _ in range(10):  # bounded: three days hold at most four fires
        fire = trigger.get_next_fire_time(previous, previous or start)
        if fire >= end:
            break
        fires.append(fire.astimezone(UTC))
        previous = fire
    polls = [start + timedelta(hours=3 * i) for i in range(24)]
    daemon = Daemon(config)
    done = [(now, daemon.tick(now)) for now in sorted({*fires, *polls})]
    days = [now.astimezone(ZoneInfo("Europe/Berlin")).date() for now, what in done if what == "sent"]
    assert days == [dst_day - timedelta(days=1), dst_day, dst_day + timedelta(days=1)]
    assert at(sent_utc) in [now for now, what in done if what == "sent"]
    assert delivered(config) == Counter({s["email"]: 3 for s in SUBSCRIBERS})
    if dst_day.month == 10:  # the cron trigger itself fires twice that night; our edition record holds
        assert sum(f.date() == dst_day for f in fires) == 2


# ---------------------------------------------------------------------- the real process


def start_daemon(config: Path, log: Path, now: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "digest", "--config", str(config), "run", "--now", now],
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def wait_for(condition: Any, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f"\n{log.read_text()}" if log else ""))
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout=WAIT)


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=WAIT)


def test_a_second_daemon_on_the_same_state_exits_with_an_error(
    tiny: Any, tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    config = tiny(web={"listen": "127.0.0.1:0"})
    log = tmp_path / "first.log"
    first = start_daemon(config, log, "2026-11-21T03:00:00+00:00")
    processes.append(first)
    wait_for(lambda: "digest run: next send at" in log.read_text(), "the first daemon to start", log)
    second = subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(config), "run", "--now", "2026-11-21T03:00:00+00:00"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    assert second.returncode == 1
    assert second.stderr.startswith("Error: another digest process is already running the scheduler"), second.stderr
    assert len(second.stderr.strip().splitlines()) == 1
    # The running daemon serves the unsubscribe endpoint: a forged token changes nothing.
    wait_for(lambda: "unsubscribe endpoint on" in log.read_text(), "the unsubscribe endpoint", log)
    url = re.search(r"unsubscribe endpoint on (http://127\.0\.0\.1:\d+/unsubscribe)", log.read_text())
    assert url is not None
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url.group(1) + "?email=reader0%40example.com&token=forged", timeout=WAIT)
    refused.value.close()
    assert refused.value.code == 403
    assert stop(first) == 0
    assert "stopped" in log.read_text()


def test_sigterm_mid_send_finishes_the_message_in_flight_and_a_restart_resumes(
    tiny: Any, tmp_path: Path, smtp_server: FaultySMTPServer, processes: list[subprocess.Popen[bytes]]
) -> None:
    # Each connection keeps two messages queued, so what is "in flight" at SIGTERM can be a few
    # messages: enough readers that stopping visibly leaves some for the restart.
    readers = [{"email": f"reader{i}@example.com", "name": f"Reader {i}"} for i in range(16)]
    config = tiny(subscribers=readers, smtp=smtp_server, schedule={"send_at": "07:00"}, web={"listen": "127.0.0.1:0"})
    smtp_server.handler.delay = 0.15  # per SMTP command: about half a second per message
    log = tmp_path / "first.log"
    # The daemon's clock starts 2 s before send_at: the send comes from the cron trigger, not the start-up catch-up.
    first = start_daemon(config, log, "2026-11-21T06:59:58+00:00")
    processes.append(first)
    wait_for(lambda: len(smtp_server.received) >= 1, "the first message", log)
    assert stop(first) == 0
    got = len(smtp_server.received)
    print(f"SIGTERM after {got} of {len(readers)} messages")
    assert 1 <= got < len(readers), got
    cfg = config_mod.load(config)
    with Store(cfg.state_path) as store:
        states = store.deliveries(date(2026, 11, 21))
    assert sum(status == "sent" for status, _, _ in states.values()) == got  # the message in flight was recorded
    assert "send_at" in log.read_text()

    log = tmp_path / "second.log"
    second = start_daemon(config, log, "2026-11-21T07:20:00+00:00")
    processes.append(second)
    wait_for(lambda: len(smtp_server.received) >= len(readers), "the remaining messages", log)
    wait_for(lambda: "send (edition 2026-11-21" in log.read_text(), "the send line", log)
    assert stop(second) == 0
    assert Counter(r for item in smtp_server.received for r in item.rcpt_tos) == Counter(
        {r["email"]: 1 for r in readers}
    )
    with Store(cfg.state_path) as store:
        assert {s for s, _, _ in store.deliveries(date(2026, 11, 21)).values()} == {"sent"}
