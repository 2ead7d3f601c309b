"""Hand each message to the Maildir or the SMTP relay; classify every reply.

`on_result` is called right after the transport's answer for each message (after the
250, or the error), so the caller commits it before the next message goes out: a crash
re-sends at most the message whose 250 was not yet recorded. Per RFC 5321, 4xx,
timeouts and dropped connections are temporary (retry later), 5xx is permanent for that
address, and 552 on RCPT is treated as temporary (RFC 5321 4.5.3.1.10).
"""

from __future__ import annotations

import logging
import mailbox
import os
import smtplib
import ssl
import time
from collections.abc import Callable, Sequence
from email.utils import parseaddr
from pathlib import Path

from .errors import MailError
from .models import DeliveryOutcome, Recipient, SmtpSettings

log = logging.getLogger(__name__)
Build = Callable[[Recipient], bytes]
OnResult = Callable[[DeliveryOutcome], None]


def to_maildir(folder: Path, recipients: Sequence[Recipient], build: Build, on_result: OnResult) -> None:
    """Write into Maildir `new/` (tmp + rename, as the Maildir format prescribes)."""
    try:
        box = mailbox.Maildir(folder, create=True)
    except OSError as exc:
        raise MailError(f"cannot open the Maildir {folder}: {exc}") from exc
    for to in recipients:
        try:
            box.add(build(to).replace(b"\r\n", b"\n"))
        except OSError as exc:
            on_result(DeliveryOutcome(to.subscriber.email, "retrying", 0, f"Maildir write failed: {exc}"))
            continue
        on_result(DeliveryOutcome(to.subscriber.email, "sent", 250, "written to Maildir", to.message_id))


def to_smtp(
    settings: SmtpSettings,
    sender: str,
    recipients: Sequence[Recipient],
    build: Build,
    on_result: OnResult,
    should_stop: Callable[[], bool] = lambda: False,
) -> None:
    """Send over one reused connection, reconnecting after a 421 or a drop."""
    envelope_from = parseaddr(sender)[1]
    gap = 1.0 / settings.rate_per_second if settings.rate_per_second > 0 else 0.0
    conn: smtplib.SMTP | None = None
    next_slot = time.monotonic()
    try:
        for to in recipients:
            if should_stop():
                break
            if gap:
                time.sleep(max(0.0, next_slot - time.monotonic()))
                next_slot = max(next_slot + gap, time.monotonic())
            email = to.subscriber.email
            try:
                if conn is None:
                    conn = connect(settings)
                conn.sendmail(envelope_from, [email], build(to))
                outcome = DeliveryOutcome(email, "sent", 250, "accepted", to.message_id)
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = next(iter(exc.recipients.values()))
                outcome = _classify(email, code, text)
            except smtplib.SMTPResponseException as exc:
                outcome = _classify(email, exc.smtp_code, exc.smtp_error)
                conn = _drop(conn) if exc.smtp_code == 421 else _reset(conn)
            except (smtplib.SMTPException, OSError) as exc:
                outcome = DeliveryOutcome(email, "retrying", 0, f"connection problem: {type(exc).__name__}: {exc}")
                conn = _drop(conn)
            log.info("deliver %s: %s %s", email, outcome.status, outcome.code)
            on_result(outcome)
    finally:
        _drop(conn)


def connect(settings: SmtpSettings) -> smtplib.SMTP:
    """Open, secure and log in; TLS certificates are verified."""
    context = ssl.create_default_context()
    if settings.security == "tls":
        conn: smtplib.SMTP = smtplib.SMTP_SSL(settings.host, settings.port, timeout=settings.timeout, context=context)
    else:
        conn = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
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


def _classify(email: str, code: int, text: bytes | str) -> DeliveryOutcome:
    reply = _text(text)
    permanent = code >= 500 and code != 552
    return DeliveryOutcome(email, "failed" if permanent else "retrying", code, reply)


def _reset(conn: smtplib.SMTP | None) -> smtplib.SMTP | None:
    if conn is None:
        return None
    try:
        conn.rset()
        return conn
    except (smtplib.SMTPException, OSError):
        return _drop(conn)


def _drop(conn: smtplib.SMTP | None) -> smtplib.SMTP | None:
    """Close quietly; returns None so callers can write `conn = _drop(conn)`."""
    if conn is not None:
        try:
            conn.quit()
        except (smtplib.SMTPException, OSError):
            conn.close()
    return None
