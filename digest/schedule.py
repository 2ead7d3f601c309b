"""`digest run`: poll the feeds through the day and send the edition once, at `send_at`.

Our records decide, not the scheduler's memory: `due_send()` looks at today's edition and
its deliveries, so a restart, a catch-up after downtime, a DST day on which the cron
trigger fires twice (the repeated hour) or a manual `digest send` never deliver an edition
twice. APScheduler only wakes the `Daemon` up; `Daemon.tick(now)` does the work, so tests
drive it with any clock, and `run()` is thin wiring around it.
"""

from __future__ import annotations

import itertools
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from types import FrameType
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from . import config as config_mod
from . import pipeline
from .errors import DigestError, LockedError
from .settings import Config
from .store import Store

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]
POLL_SLACK = 0.9
"""A poll is due after this fraction of `poll_every`: a few minutes early beats a whole interval late."""


# ---------------------------------------------------------------------- when (pure)


def sends_on(config: Config, day: date) -> bool:
    days = config.schedule.weekdays
    return not days or config_mod.WEEKDAYS[day.weekday()] in days


def send_time(config: Config, day: date) -> datetime:
    """When the edition of `day` is due, in UTC.

    A wall time that a DST change skips or repeats resolves to its first instant (fold=0),
    as APScheduler's CronTrigger does: 02:30 on a spring-forward day is 03:30 summer time,
    on a fall-back day the first 02:30.
    """
    hour, minute = (int(part) for part in config.schedule.send_at.split(":"))
    local = datetime.combine(day, time(hour, minute), tzinfo=ZoneInfo(config.newsletter.timezone))
    return local.astimezone(UTC)


def next_send_time(config: Config, after: datetime) -> datetime:
    """The first scheduled send strictly after `after` (days outside `weekdays` skipped)."""
    first = pipeline.edition_day(config, after) - timedelta(days=1)
    for offset in range(9):
        day = first + timedelta(days=offset)
        if sends_on(config, day) and (moment := send_time(config, day)) > after:
            return moment
    raise RuntimeError(f"no send day in weekdays {config.schedule.weekdays!r}")  # config validation prevents it


@dataclass(frozen=True)
class Due:
    action: str  # "send" (build and deliver today's edition), "resume" (deliveries owed) or "wait"
    reason: str


def due_send(config: Config, store: Store, now: datetime, attempted: date | None = None) -> Due:
    """Whether a send is due at `now`, decided from today's edition record.

    Today's edition exists: resume only its unfinished deliveries. None yet: send from
    `send_at` until `catch_up_grace` later, once (`attempted` is the day this process
    already tried, e.g. with nothing new); never an edition for a past day.
    """
    day = pipeline.edition_day(config, now)
    if store.edition(day) is not None:
        owed = [
            email
            for email, (status, _attempts, next_attempt) in store.deliveries(day).items()
            if status == "pending" or (status == "retrying" and (next_attempt is None or next_attempt <= now))
        ]
        if owed:
            return Due("resume", f"edition {day}: {len(owed)} deliveries unfinished")
        return Due("wait", f"edition {day} already delivered")
    if not sends_on(config, day):
        return Due("wait", f"no edition on {day:%A}s (weekdays)")
    at = send_time(config, day)
    if now < at:
        return Due("wait", f"edition {day} due at {at:%Y-%m-%d %H:%M} UTC")
    if now - at > timedelta(seconds=config.schedule.catch_up_grace):
        return Due("wait", f"missed the send of {day} at {at:%H:%M} UTC by more than catch_up_grace")
    if attempted == day:
        return Due("wait", f"edition {day} already attempted: nothing new")
    late = now - at
    return Due("send", f"catching up the send due {late} ago" if late > timedelta(minutes=1) else "send_at")


# ---------------------------------------------------------------------- what (driven by tick)


class Daemon:
    """The scheduled work, clock-free: every wake-up calls `tick(now)`."""

    def __init__(self, config_path: Path, should_stop: Callable[[], bool] = lambda: False) -> None:
        self.config_path = config_path
        self.config = config_mod.load(config_path)
        self.should_stop = should_stop
        self.last_poll: datetime | None = None
        self.attempted: date | None = None
        self._lock = threading.Lock()

    def reload(self) -> Config:
        """Re-read config.toml (a subscriber added counts at the next send); keep the last good one on error."""
        try:
            self.config = config_mod.load(self.config_path)
        except DigestError as exc:
            log.error("config reload failed, keeping the last good config: %s", exc)
        return self.config

    def tick(self, now: datetime) -> str:
        """One wake-up: send if due (that polls too), else poll if due. Returns what it did."""
        with self._lock:
            if self.should_stop():
                return "stopped"
            config = self.reload()
            try:
                with Store(config.state_path) as store:
                    due = due_send(config, store, now, self.attempted)
                    if due.action != "wait":
                        return self._send(config, store, now, due)
                    if self.last_poll is None or (now - self.last_poll).total_seconds() >= (
                        config.schedule.poll_every * POLL_SLACK
                    ):
                        return self._poll(config, store, now)
            except LockedError as exc:
                log.warning("postponed to the next wake-up: %s", exc)
                return "locked"
            except DigestError as exc:
                log.error("%s", exc)
                return "error"
            return "idle"

    def _send(self, config: Config, store: Store, now: datetime, due: Due) -> str:
        self._bounces(config, store, now)  # first, so that an address that just bounced gets nothing
        report = pipeline.send_edition(config, store, now, should_stop=self.should_stop)
        self.last_poll = now
        self.attempted = pipeline.edition_day(config, now)
        log.info("send (%s): %s", due.reason, report.summary())
        edition = store.edition(self.attempted)
        if edition is not None and edition.feed_health:
            log.warning("feed health of edition %s: %s", edition.key, "; ".join(edition.feed_health))
        return "sent"

    def _poll(self, config: Config, store: Store, now: datetime) -> str:
        with store.lock("fetch", "polling"):
            pipeline.poll(config, store, now)  # logs its one line with counts
        self._bounces(config, store, now)
        self.last_poll = now
        return "polled"

    def _bounces(self, config: Config, store: Store, now: datetime) -> None:
        """Read the configured [bounces] source (if any); a failing source never stops polls or sends."""
        from . import mailboxes

        sources = mailboxes.configured(config.bounces)
        if not sources:
            return
        try:
            report = pipeline.read_bounces(config, store, itertools.chain.from_iterable(sources), now)
        except DigestError as exc:
            log.error("bounces: %s", exc)
            return
        log.info("bounces: %s", report.summary())


# ---------------------------------------------------------------------- wiring (APScheduler)


class ShiftedTrigger(BaseTrigger):  # type: ignore[misc]
    """Evaluates `inner` on the daemon's clock (real time + offset) and fires in real time."""

    def __init__(self, inner: BaseTrigger, offset: timedelta) -> None:
        self.inner = inner
        self.offset = offset

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        previous = previous_fire_time + self.offset if previous_fire_time else None
        fire: datetime | None = self.inner.get_next_fire_time(previous, now + self.offset)
        return fire - self.offset if fire else None

    def __str__(self) -> str:
        return f"{self.inner} shifted by {self.offset}"


def send_trigger(config: Config) -> CronTrigger:
    hour, minute = config.schedule.send_at.split(":")
    weekdays = ",".join(config.schedule.weekdays) or "*"
    return CronTrigger(hour=hour, minute=minute, day_of_week=weekdays, timezone=ZoneInfo(config.newsletter.timezone))


def _triggers(config: Config, offset: timedelta) -> tuple[BaseTrigger, BaseTrigger]:
    poll = IntervalTrigger(seconds=config.schedule.poll_every, timezone=UTC)
    return ShiftedTrigger(send_trigger(config), offset), poll


def run(config_path: Path, start: datetime | None = None) -> None:
    """`digest run`: one daemon per state; tick at send_at and every poll_every until SIGTERM/SIGINT.

    `start` sets the daemon's clock to that moment, then it advances in real time (tests).
    """
    offset = start - datetime.now(UTC) if start else timedelta(0)
    stop = threading.Event()
    daemon = Daemon(config_path, should_stop=stop.is_set)
    with Store(daemon.config.state_path) as store, store.lock("daemon", "running the scheduler"):
        previous = _on_signals(stop)
        stop_web = _start_web(config_path)
        scheduler = _scheduler(daemon, offset, stop)
        try:
            scheduler.start()
            while not stop.wait(0.5):
                pass
            log.info("stopping: finishing the message in flight; the rest resumes at the next start")
        finally:
            stop.set()
            if scheduler.running:
                scheduler.shutdown(wait=True)  # waits for the job in flight, which sees `stop`
            stop_web()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    log.info("stopped")


def _scheduler(daemon: Daemon, offset: timedelta, stop: threading.Event) -> BackgroundScheduler:
    """One worker thread, so wake-ups never overlap; a late wake-up still runs (tick decides)."""

    def clock() -> datetime:
        return datetime.now(UTC) + offset

    scheduler = BackgroundScheduler(
        timezone=UTC,
        executors={"default": ThreadPoolExecutor(1)},
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
    )
    config = daemon.config
    shape = (config.schedule, config.newsletter.timezone)

    def wake() -> None:
        nonlocal shape
        daemon.tick(clock())
        now_shape = (daemon.config.schedule, daemon.config.newsletter.timezone)
        if now_shape != shape and not stop.is_set():  # send_at / poll_every edited: follow without a restart
            shape = now_shape
            send, poll = _triggers(daemon.config, offset)
            scheduler.reschedule_job("send", trigger=send)
            scheduler.reschedule_job("poll", trigger=poll)
            log.info("schedule changed: next send at %s", next_send_time(daemon.config, clock()))

    send, poll = _triggers(config, offset)
    scheduler.add_job(wake, send, id="send")
    scheduler.add_job(wake, poll, id="poll", next_run_time=datetime.now(UTC))  # at once: poll, catch up
    log.info(
        "digest run: next send at %s, polling every %gs",
        next_send_time(config, clock()).astimezone(ZoneInfo(config.newsletter.timezone)),
        config.schedule.poll_every,
    )
    return scheduler


def _on_signals(stop: threading.Event) -> dict[int, Any]:
    def handle(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    return {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}


def _start_web(config_path: Path) -> Callable[[], None]:
    """The web app (signup, confirm, preferences, one-click unsubscribe) on [web] listen, while the daemon runs."""
    from . import web  # the HTTP side; Starlette and uvicorn load in start_server only

    server, thread = web.start_server(config_path)  # re-reads config.toml per request
    host, port = server.server_address[:2]
    log.info("unsubscribe endpoint on http://%s:%s/unsubscribe", host, port)
    log.info("signup form on http://%s:%s/subscribe", host, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
