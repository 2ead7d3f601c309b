"""Hand each message to the Maildir or the SMTP relay; classify every reply.

Exactly-once rests on one rule: `on_results` is called right after the transport's answer
(the 250, or the error) and commits it before the connection that carried the message is
given its next one. So a crash re-sends at most the messages whose 250 was not yet
recorded: one per connection, each with the same deterministic Message-ID.

SMTP runs `connections` child processes, each with its own reused smtplib connection.
They only talk SMTP; the calling process builds and hands out messages, collects replies
(several at once when they arrive together, one transaction for them all) and is the only
one touching the database. Per RFC 5321: 4xx, timeouts, refused and dropped connections are temporary,
5xx is permanent for that address, and 552 on RCPT is temporary (4.5.3.1.10). A
temporary failure is retried a couple of times in the same run after a short pause
(greylisting and momentary throttling usually pass), then left `retrying` for the next
`send` with exponential backoff. After `UNREACHABLE_AFTER` failed connects in a row the
relay counts as down: the untried messages are recorded `retrying` and the run ends.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import fcntl
import heapq
import itertools
import json
import logging
import os
import pickle
import re
import selectors
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import BinaryIO

from .errors import MailError
from .models import DeliveryOutcome, Recipient
from .settings import SmtpSettings

log = logging.getLogger(__name__)
_DOT = re.compile(rb"(?m)^\.")
Build = Callable[[Recipient], bytes]
OnResults = Callable[[Sequence[DeliveryOutcome]], None]

IN_RUN_DELAYS = (0.5, 2.0)
"""Seconds before the 2nd and the 3rd attempt of a temporary failure within one run."""
QUEUE_DEPTH = 2
"""Messages handed to a connection ahead of its replies: it starts the next as soon as one is
answered, while this process commits (the next one's final dot still waits for that commit)."""
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


def to_maildir(folder: Path, recipients: Iterable[Recipient], build: Build, on_results: OnResults) -> None:
    """Write into Maildir `new/` (tmp + rename, as the Maildir format prescribes)."""
    import mailbox

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
    recipients: Iterable[Recipient],
    build: Build,
    on_results: OnResults,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Deliver over `settings.connections` reused connections; returns when all are settled.

    `recipients` is consumed lazily (100,000 of them need not be in memory at once).
    """
    fresh = iter(recipients)
    head = list(itertools.islice(fresh, max(1, settings.connections)))
    if not head:
        return
    limiter = _Limiter(settings.rate_per_second)
    envelope_from = parseaddr(sender)[1]
    workers: list[_Worker] = []
    try:
        workers += (_Worker(i, settings, envelope_from, build, limiter) for i in range(len(head)))
        dispatcher = _Dispatcher(itertools.chain(head, fresh), workers, on_results, should_stop)
        dispatcher.run()
    finally:
        for worker in workers:
            worker.close()
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
    """`rate_per_second` shared by all connections: evenly spaced starts, no burst.

    Start times are handed out here, in the dispatching process, and waited for by the
    connection (time.monotonic is one clock for every process of the machine)."""

    def __init__(self, rate: float) -> None:
        self.gap = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()

    def reserve(self) -> float:
        if not self.gap:
            return 0.0
        start = max(self.next, time.monotonic())
        self.next = start + self.gap
        return start


# --------------------------------------------------------------------------- connections
#
# Each connection is a child process (running `_child_main`): four connections run
# smtplib on four cores instead of taking turns on one interpreter lock, and a child that
# starts afresh inherits no lock held by the daemon's scheduler or web threads (a fork
# would). It talks to the dispatcher over its stdin/stdout in frames: a 5-byte header
# (length, kind) and a payload.
#
#   to the child:   S settings (JSON), NUL, the pickled `build` if it pickles, else nothing
#                   B a recipient to build: pickled (envelope, Recipient)
#                   M a message built here: JSON envelope, NUL, bytes
#                   A ack   Q quit
#   from the child: R result (JSON)     E error (JSON: type, text)
#
# A picklable `build` (pipeline's) runs in the child: the dispatcher then hands over a few
# hundred bytes per message instead of the message, and the copies are built on all cores.
#
# The message's final "." (the point where the server takes it over) waits for the ack of
# the previous message, i.e. for its outcome to be committed; a connection's first message
# needs none. So at most one accepted message per connection is ever unrecorded, and the
# commit hides behind the next message's transmission.

_CHILD = "from digest.deliver import _child_main; _child_main()"
_HEADER = struct.Struct(">IB")
_PIPE_SIZE = 1 << 20


def _frame(kind: bytes, payload: bytes = b"") -> bytes:
    return _HEADER.pack(len(payload), kind[0]) + payload


def _read_frame(stream: BinaryIO) -> tuple[int, bytes]:
    """(kind, payload); end of file reads as Q."""
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return ord("Q"), b""
    size, kind = _HEADER.unpack(header)
    payload = stream.read(size) if size else b""
    return (kind, payload) if len(payload) == size else (ord("Q"), b"")


class _Worker:
    """The dispatcher's handle on one connection's child process."""

    def __init__(self, index: int, settings: SmtpSettings, envelope_from: str, build: Build, limiter: _Limiter):
        self.index, self.envelope_from, self.build, self.limiter = index, envelope_from, build, limiter
        # This very package, wherever it was imported from; appended, so it shadows nothing.
        bootstrap = f"import sys; sys.path.append({str(Path(__file__).resolve().parent.parent)!r}); {_CHILD}"
        self.proc = subprocess.Popen([sys.executable, "-c", bootstrap], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.fd = self.proc.stdin, self.proc.stdout.fileno()
        with contextlib.suppress(OSError, AttributeError):  # Linux: room for a whole message, so that
            fcntl.fcntl(self.stdin.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_SIZE)  # handing it over never waits
        self.buffer = bytearray()
        self.queued: collections.deque[_Item] = collections.deque()  # given, no reply yet (oldest first)
        self.gone = False
        try:
            shipped = pickle.dumps(build)
        except (pickle.PicklingError, AttributeError, TypeError):  # a closure: built here, sent whole
            shipped = b""
        self.remote = bool(shipped)
        self.send(_frame(b"S", json.dumps(settings._asdict()).encode() + b"\0" + shipped))

    def send(self, frame: bytes) -> None:
        try:
            self.stdin.write(frame)
            self.stdin.flush()
        except OSError:  # the child is gone: its end of file is read as an error
            self.gone = True

    def give(self, item: _Item) -> None:
        """Hand over a recipient (or its message, built here); the child waits for its start time, then sends."""
        self.queued.append(item)
        to = item.to
        envelope = {"rcpt": to.subscriber.email, "sender": to.envelope_from or self.envelope_from,
                    "start": self.limiter.reserve(), "message_id": to.message_id}
        if self.remote:
            self.send(_frame(b"B", pickle.dumps((envelope, to))))
        else:
            self.send(_frame(b"M", json.dumps(envelope).encode() + b"\0" + self.build(to)))

    def ack(self) -> None:
        self.send(_frame(b"A"))

    def read(self) -> list[_Done]:
        """What the child has written since the last read (the dispatcher saw its pipe readable)."""
        chunk = os.read(self.fd, 1 << 16)
        if not chunk:
            code = self.proc.poll()
            error = MailError(f"SMTP connection {self.index}: its process ended unexpectedly (exit {code})")
            return [_Done(self.index, None, None, False, error)]
        self.buffer += chunk
        done = []
        while len(self.buffer) >= _HEADER.size:
            size, kind = _HEADER.unpack_from(self.buffer)
            if len(self.buffer) < _HEADER.size + size:
                break
            data = json.loads(bytes(self.buffer[_HEADER.size : _HEADER.size + size]))
            del self.buffer[: _HEADER.size + size]
            if kind == ord("E"):
                cls = MailError if data["type"] == "MailError" else RuntimeError
                done.append(_Done(self.index, None, None, False, cls(data["text"])))
                continue
            outcome = DeliveryOutcome(data["email"], data["status"], data["code"], data["text"], data["message_id"])
            log.debug("deliver %s: %s %s %s", outcome.email, outcome.status, outcome.code, outcome.text)
            done.append(_Done(self.index, self.queued.popleft() if self.queued else None, outcome, data["reached"]))
        return done

    def close(self) -> None:
        """Quit: a child waiting for an ack leaves without the final dot (the server discards that DATA)."""
        self.send(_frame(b"Q"))
        with contextlib.suppress(OSError):
            self.stdin.close()

    def join(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class _Abort(Exception):
    """The run is over while this connection waited: leave without the final dot."""


class _Connection:
    """The child's side: one SMTP connection, sending what the dispatcher hands it."""

    def __init__(self, settings: SmtpSettings, build: Build | None, inbox: BinaryIO, outbox: BinaryIO) -> None:
        self.settings, self.build, self.inbox, self.outbox = settings, build, inbox, outbox
        self.conn: smtplib.SMTP | None = None
        self.credit = 1  # acks received and not yet used: the first message needs none
        self.waited = False
        self.pending: collections.deque[tuple[int, bytes]] = collections.deque()  # read while waiting for an ack

    def frame(self) -> tuple[int, bytes]:
        return _read_frame(self.inbox)

    def run(self) -> None:
        try:
            while True:
                kind, payload = self.pending.popleft() if self.pending else self.frame()
                if kind == ord("A"):
                    self.credit += 1
                    continue
                if kind == ord("B") and self.build is not None:
                    envelope, to = pickle.loads(payload)  # noqa: S301 - from our own parent, over its pipe
                    message = self.build(to)
                elif kind == ord("M"):
                    head, _, message = payload.partition(b"\0")
                    envelope = json.loads(head)
                else:
                    return
                if envelope["start"] > time.monotonic():  # the shared rate limit
                    time.sleep(envelope["start"] - time.monotonic())
                self.waited = False
                outcome, reached = self.send(envelope["rcpt"], envelope["sender"], message, envelope["message_id"])
                self.wait_ack()  # also when no dot was sent: exactly one ack per message
                result = {**dataclasses.asdict(outcome), "reached": reached}
                self.outbox.write(_frame(b"R", json.dumps(result).encode()))
                self.outbox.flush()
        except _Abort:
            if self.conn is not None:  # mid-DATA: no QUIT, which would only become part of the body
                self.conn.close()
                self.conn = None
        finally:
            _drop(self.conn)

    def wait_ack(self) -> None:
        if self.waited:
            return
        while not self.credit:
            kind, payload = self.frame()
            if kind in (ord("M"), ord("B")):
                self.pending.append((kind, payload))
            elif kind == ord("A"):
                self.credit += 1
            else:
                raise _Abort
        self.credit -= 1
        self.waited = True

    def send(self, email: str, sender: str, message: bytes, message_id: str) -> tuple[DeliveryOutcome, bool]:
        if self.conn is None:
            try:
                self.conn = connect(self.settings)
            except (smtplib.SMTPException, OSError) as exc:
                where = f"{self.settings.host}:{self.settings.port}"
                return DeliveryOutcome(email, "retrying", 0, f"cannot connect to {where}: {_describe(exc)}"), False
        try:
            self.transmit(self.conn, email, message, sender)
            return DeliveryOutcome(email, "sent", 250, "accepted", message_id), True
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
        body = _DOT.sub(b"..", message) if b"\n." in message or message.startswith(b".") else message
        conn.send(body if body.endswith(b"\r\n") else body + b"\r\n")
        self.wait_ack()
        conn.send(b".\r\n")
        code, reply = conn.getreply()
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)


def _child_main() -> None:
    """A connection's process: one SMTP connection, driven over stdin/stdout by the dispatcher."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the dispatcher decides when to stop; EOF ends us
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    inbox = sys.stdin.buffer
    outbox = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a stray print must not corrupt the frames
    kind, payload = _read_frame(inbox)
    if kind != ord("S"):
        return
    head, _, shipped = payload.partition(b"\0")
    settings = SmtpSettings(**json.loads(head))
    try:
        build = pickle.loads(shipped) if shipped else None  # noqa: S301 - from our own parent, over its pipe
        _Connection(settings, build, inbox, outbox).run()
    except BrokenPipeError:  # the dispatcher is gone (killed): nothing to report to
        pass
    except Exception as exc:  # noqa: BLE001 - reported to the dispatcher, which raises it
        with contextlib.suppress(OSError):
            outbox.write(_frame(b"E", json.dumps({"type": type(exc).__name__, "text": str(exc)}).encode()))
            outbox.flush()


class _Dispatcher:
    """The calling process's side: commit each reply, then give that connection more work."""

    def __init__(
        self,
        recipients: Iterator[Recipient],
        workers: list[_Worker],
        on_results: OnResults,
        should_stop: Callable[[], bool],
    ) -> None:
        self.fresh = recipients
        self.later: list[tuple[float, int, _Item]] = []  # in-run retries: (due, seq, item)
        self.order = itertools.count()
        self.workers = workers
        self.on_results, self.should_stop = on_results, should_stop
        self.busy = 0
        self.failed_connects = 0
        self.unreachable = ""
        self.error: BaseException | None = None
        self.selector = selectors.DefaultSelector()
        for worker in workers:
            self.selector.register(worker.fd, selectors.EVENT_READ, worker)

    @property
    def stopping(self) -> bool:
        return bool(self.unreachable or self.error) or self.should_stop()

    def run(self) -> None:
        try:
            self.loop()
        finally:
            self.selector.close()

    def loop(self) -> None:
        self.feed()
        while self.busy or (self.later and not self.stopping):
            batch = self.collect()
            outcomes = [o for o in (self.settle(done) for done in batch) if o is not None]
            for done in batch:
                worker = self.workers[done.worker]
                if done.error is not None:
                    self.selector.unregister(worker.fd)  # that child is done for
                    self.busy -= len(worker.queued)
                    worker.queued.clear()
                    worker.gone = True
                    continue
                self.busy -= 1
            self.feed()  # the next messages go out up to their final dot meanwhile
            if outcomes:
                self.on_results(outcomes)
            for done in batch:
                if done.error is None:
                    self.workers[done.worker].ack()  # committed: that connection may finish its next
        if self.unreachable:
            untried = [DeliveryOutcome(to.subscriber.email, "retrying", 0, f"not tried: {self.unreachable}")
                       for to in self.fresh]
            if untried:
                self.on_results(untried)

    def collect(self) -> list[_Done]:
        """Wait for a reply, or until an in-run retry is due; take whatever else is ready."""
        timeout = max(0.0, self.later[0][0] - time.monotonic()) if self.later and self.free() else None
        batch: list[_Done] = []
        for key, _events in self.selector.select(timeout):
            batch += key.data.read()
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
        """Keep each connection's queue full with due retries and fresh messages."""
        while (worker := self.free()) is not None and not self.stopping:
            if self.later and self.later[0][0] <= time.monotonic():
                item = heapq.heappop(self.later)[2]
            else:
                to = next(self.fresh, None)
                if to is None:
                    return
                item = _Item(to)
            worker.give(item)
            self.busy += 1

    def free(self) -> _Worker | None:
        """The connection with the fewest messages given and not answered, if one has room."""
        ready = [w for w in self.workers if not w.gone and len(w.queued) < QUEUE_DEPTH]
        return min(ready, key=lambda w: len(w.queued)) if ready else None


def connect(settings: SmtpSettings) -> smtplib.SMTP:
    """Open, secure and log in; TLS certificates are verified."""
    context = ssl.create_default_context() if settings.security != "none" else None  # loading CAs takes 0.1 s
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

