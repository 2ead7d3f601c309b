"""Hand each message to the Maildir or the SMTP relay; classify every reply.

Exactly-once rests on one rule: `on_results` is called right after the transport's answer
(the 250, or the error) and commits it before the connection that carried the message is
given its next one. So a crash re-sends at most the messages whose 250 was not yet
recorded: one per connection, each with the same deterministic Message-ID.

SMTP runs `connections` threads, each with its own reused smtplib connection. Workers
only talk SMTP; the calling thread hands out messages, collects replies (several at once
when they arrive together, one transaction for them all) and is the only one touching the
database. Per RFC 5321: 4xx, timeouts, refused and dropped connections are temporary,
5xx is permanent for that address, and 552 on RCPT is temporary (4.5.3.1.10). A
temporary failure is retried a couple of times in the same run after a short pause
(greylisting and momentary throttling usually pass), then left `retrying` for the next
`send` with exponential backoff. After `UNREACHABLE_AFTER` failed connects in a row the
relay counts as down: the untried messages are recorded `retrying` and the run ends.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import mailbox
import os
import queue
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.utils import parseaddr
from pathlib import Path

from .errors import MailError
from .models import DeliveryOutcome, Recipient, SmtpSettings

log = logging.getLogger(__name__)
_DOT = re.compile(rb"(?m)^\.")
Build = Callable[[Recipient], bytes]
OnResults = Callable[[Sequence[DeliveryOutcome]], None]

IN_RUN_DELAYS = (0.5, 2.0)
"""Seconds before the 2nd and the 3rd attempt of a temporary failure within one run."""
UNREACHABLE_AFTER = 3
"""Failed connects in a row (no reply from the relay in between) that end the run."""
BACKOFF_FIRST = 60.0
BACKOFF_CAP = 3600.0


def next_attempt(now: datetime, attempts: int) -> datetime:
    """Exponential backoff across runs: 1 min after the first failure, doubling, capped at 1 h."""
    return now + timedelta(seconds=min(BACKOFF_CAP, BACKOFF_FIRST * 2 ** max(0, attempts - 1)))


def give_up_reason(settings: SmtpSettings, day: date, created: datetime, today: date, now: datetime) -> str | None:
    """Why an edition's owed messages are no longer worth retrying, or None.

    A daily digest is stale once the next one is out, so retries end with the next
    edition; `max_retry_hours` (0 = no other limit) shortens that, counted from the
    edition's creation.
    """
    if today > day:
        return "gave up: a newer edition is out"
    if settings.max_retry_hours > 0 and now >= created + timedelta(hours=settings.max_retry_hours):
        return f"gave up after {settings.max_retry_hours:g} h of retries"
    return None


def to_maildir(folder: Path, recipients: Sequence[Recipient], build: Build, on_results: OnResults) -> None:
    """Write into Maildir `new/` (tmp + rename, as the Maildir format prescribes)."""
    try:
        box = mailbox.Maildir(folder, create=True)
    except OSError as exc:
        raise MailError(f"cannot open the Maildir {folder}: {exc}") from exc
    for to in recipients:
        try:
            box.add(build(to).replace(b"\r\n", b"\n"))
        except OSError as exc:
            on_results([DeliveryOutcome(to.subscriber.email, "retrying", 0, f"Maildir write failed: {exc}")])
            continue
        on_results([DeliveryOutcome(to.subscriber.email, "sent", 250, "written to Maildir", to.message_id)])


def to_smtp(
    settings: SmtpSettings,
    sender: str,
    recipients: Sequence[Recipient],
    build: Build,
    on_results: OnResults,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Deliver over `settings.connections` reused connections; returns when all are settled."""
    if not recipients:
        return
    results: queue.SimpleQueue[_Done] = queue.SimpleQueue()
    limiter = _Limiter(settings.rate_per_second)
    envelope_from = parseaddr(sender)[1]
    workers = [
        _Connection(i, settings, envelope_from, build, limiter, results)
        for i in range(max(1, min(settings.connections, len(recipients))))
    ]
    for worker in workers:
        worker.start()
    dispatcher = _Dispatcher(recipients, workers, on_results, should_stop)
    try:
        dispatcher.run(results)
    finally:
        for worker in workers:
            worker.closing.set()
            worker.inbox.put(None)
        for worker in workers:
            worker.join(settings.timeout + 5)
    if dispatcher.error is not None:
        raise dispatcher.error


@dataclass
class _Item:
    to: Recipient
    retries: int = 0


@dataclass(frozen=True)
class _Done:
    worker: int
    item: _Item | None
    outcome: DeliveryOutcome | None
    reached: bool  # the relay answered on this attempt (for the unreachable-relay rule)
    error: BaseException | None = None


class _Limiter:
    """`rate_per_second` shared by all connections: evenly spaced starts, no burst."""

    def __init__(self, rate: float) -> None:
        self.gap = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.gap:
            return
        with self.lock:
            now = time.monotonic()
            start = max(self.next, now)
            self.next = start + self.gap
        time.sleep(start - now)


class _Abort(Exception):
    """The run is over while this connection waited: leave without the final dot."""


class _Connection(threading.Thread):
    """One SMTP connection: sends what its inbox gives it, reports every reply.

    The next message is transmitted while the previous reply is being committed, all but
    its final "." (the point where the server takes it over): that dot waits for `ack`,
    released once the previous outcome is committed. A crash mid-body leaves the server a
    truncated DATA it must discard, so at most one accepted message per connection is
    ever unrecorded, and the commit's fsync hides behind the transmission.
    """

    def __init__(
        self,
        index: int,
        settings: SmtpSettings,
        envelope_from: str,
        build: Build,
        limiter: _Limiter,
        results: queue.SimpleQueue[_Done],
    ) -> None:
        super().__init__(name=f"digest-smtp-{index}", daemon=True)
        self.index, self.settings, self.envelope_from = index, settings, envelope_from
        self.build, self.limiter, self.results = build, limiter, results
        self.inbox: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self.ack = threading.Semaphore(1)  # one per message: "the previous outcome is committed"
        self.closing = threading.Event()
        self.conn: smtplib.SMTP | None = None
        self.waited = False

    def run(self) -> None:
        try:
            while (item := self.inbox.get()) is not None:
                self.limiter.wait()
                self.waited = False
                outcome, reached = self.send(item.to)
                self.wait_ack()  # also when no dot was sent: exactly one ack per message
                log.debug("deliver %s: %s %s %s", outcome.email, outcome.status, outcome.code, outcome.text)
                self.results.put(_Done(self.index, item, outcome, reached))
        except _Abort:
            pass
        except BaseException as exc:  # noqa: BLE001 - handed to the calling thread, which re-raises
            self.results.put(_Done(self.index, None, None, False, exc))
        finally:
            _drop(self.conn)

    def wait_ack(self) -> None:
        while not self.waited:
            if self.closing.is_set():
                raise _Abort
            self.waited = self.ack.acquire(timeout=0.1)

    def send(self, to: Recipient) -> tuple[DeliveryOutcome, bool]:
        email = to.subscriber.email
        if self.conn is None:
            try:
                self.conn = connect(self.settings)
            except (smtplib.SMTPException, OSError) as exc:
                where = f"{self.settings.host}:{self.settings.port}"
                return DeliveryOutcome(email, "retrying", 0, f"cannot connect to {where}: {_describe(exc)}"), False
        try:
            self.transmit(self.conn, email, self.build(to), to.envelope_from or self.envelope_from)
            return DeliveryOutcome(email, "sent", 250, "accepted", to.message_id), True
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            outcome = _classify(email, code, text, on_rcpt=True)
        except smtplib.SMTPResponseException as exc:
            outcome = _classify(email, exc.smtp_code, exc.smtp_error, on_rcpt=False)
        except (smtplib.SMTPException, OSError) as exc:  # dropped, timed out, reset
            _drop(self.conn)
            self.conn = None
            return DeliveryOutcome(email, "retrying", 0, f"connection lost: {_describe(exc)}"), True
        if outcome.code == 421 or not _reset(self.conn):
            _drop(self.conn)
            self.conn = None
        return outcome, True

    def transmit(self, conn: smtplib.SMTP, email: str, message: bytes, sender: str) -> None:
        """smtplib's sendmail, with the final dot held back until the previous record is committed."""
        code, reply = conn.mail(sender)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, reply, sender)
        code, reply = conn.rcpt(email)
        if code not in (250, 251):
            raise smtplib.SMTPRecipientsRefused({email: (code, reply)})
        code, reply = conn.docmd("DATA")
        if code != 354:
            raise smtplib.SMTPDataError(code, reply)
        body = _DOT.sub(b"..", message)
        conn.send(body if body.endswith(b"\r\n") else body + b"\r\n")
        self.wait_ack()
        conn.send(b".\r\n")
        code, reply = conn.getreply()
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)


class _Dispatcher:
    """The calling thread's side: commit each reply, then give that connection more work."""

    def __init__(
        self,
        recipients: Sequence[Recipient],
        workers: list[_Connection],
        on_results: OnResults,
        should_stop: Callable[[], bool],
    ) -> None:
        self.fresh = iter(recipients)
        self.later: list[tuple[float, int, _Item]] = []  # in-run retries: (due, seq, item)
        self.order = itertools.count()
        self.workers, self.idle = workers, list(workers)
        self.on_results, self.should_stop = on_results, should_stop
        self.busy = 0
        self.failed_connects = 0
        self.unreachable = ""
        self.error: BaseException | None = None

    @property
    def stopping(self) -> bool:
        return bool(self.unreachable or self.error) or self.should_stop()

    def run(self, results: queue.SimpleQueue[_Done]) -> None:
        self.feed()
        while self.busy or (self.later and not self.stopping):
            batch = self.collect(results)
            outcomes = [o for o in (self.settle(done) for done in batch) if o is not None]
            for done in batch:
                self.busy -= 1
                self.idle.append(self.workers[done.worker])
            self.feed()  # the next messages go out up to their final dot meanwhile
            if outcomes:
                self.on_results(outcomes)
            for done in batch:
                self.workers[done.worker].ack.release()  # committed: that connection may finish its next
        if self.unreachable:
            untried = [DeliveryOutcome(to.subscriber.email, "retrying", 0, f"not tried: {self.unreachable}")
                       for to in self.fresh]
            if untried:
                self.on_results(untried)

    def collect(self, results: queue.SimpleQueue[_Done]) -> list[_Done]:
        """Wait for a reply, or until an in-run retry is due; take whatever else is ready."""
        timeout = max(0.0, self.later[0][0] - time.monotonic()) if self.later and self.idle else None
        try:
            batch = [results.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                batch.append(results.get_nowait())
            except queue.Empty:
                return batch

    def settle(self, done: _Done) -> DeliveryOutcome | None:
        if done.error is not None or done.item is None or done.outcome is None:
            self.error = self.error or done.error
            return None
        outcome, item = done.outcome, done.item
        self.failed_connects = 0 if done.reached else self.failed_connects + 1
        if self.failed_connects >= UNREACHABLE_AFTER:
            self.unreachable = f"the relay is unreachable ({outcome.text})"
        if outcome.status == "retrying" and item.retries < len(IN_RUN_DELAYS) and not self.stopping:
            due = time.monotonic() + IN_RUN_DELAYS[item.retries]
            item.retries += 1
            heapq.heappush(self.later, (due, next(self.order), item))
        return outcome

    def feed(self) -> None:
        """Give each idle connection a due retry or the next fresh message."""
        while self.idle and not self.stopping:
            if self.later and self.later[0][0] <= time.monotonic():
                item = heapq.heappop(self.later)[2]
            else:
                to = next(self.fresh, None)
                if to is None:
                    return
                item = _Item(to)
            self.idle.pop().inbox.put(item)
            self.busy += 1


def connect(settings: SmtpSettings) -> smtplib.SMTP:
    """Open, secure and log in; TLS certificates are verified."""
    context = ssl.create_default_context()
    if settings.security == "tls":
        conn: smtplib.SMTP = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=context)
    else:
        conn = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
    if conn.sock is not None:  # the held-back dot is a small write: Nagle would delay it by an ACK
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.ehlo()
    if settings.security == "starttls":
        conn.starttls(context=context)
        conn.ehlo()
    if settings.username:
        password = os.environ.get(settings.password_env)
        if password is None:
            conn.close()
            raise MailError(f"[smtp] username is set but ${settings.password_env} is empty: export the SMTP password")
        try:
            conn.login(settings.username, password)
        except smtplib.SMTPAuthenticationError as exc:
            conn.close()
            raise MailError(
                f"SMTP login refused for {settings.username} at {settings.host}:{settings.port}: "
                f"{exc.smtp_code} {_text(exc.smtp_error)}; check [smtp] username and ${settings.password_env}"
            ) from exc
    return conn


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _classify(email: str, code: int, text: bytes | str, *, on_rcpt: bool) -> DeliveryOutcome:
    permanent = code >= 500 and not (on_rcpt and code == 552)
    return DeliveryOutcome(email, "failed" if permanent else "retrying", code, _text(text))


def _reset(conn: smtplib.SMTP) -> bool:
    """RSET after a refusal, as smtplib's sendmail does; False if the connection is gone."""
    try:
        return conn.sock is not None and conn.rset()[0] == 250
    except (smtplib.SMTPException, OSError):
        return False


def _drop(conn: smtplib.SMTP | None) -> None:
    """Close quietly: the connection is being given up anyway."""
    if conn is not None:
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            conn.close()
    return None
