"""The signup emails: confirmation, "already subscribed", welcome; sent at once, one each.

They go through the configured transport: written into the Maildir (tmp, fsync, rename
into new/, as deliver.to_maildir does, with a name unique across threads), or handed to
the SMTP relay with deliver.py's client, so replies are classified as for the digest.
Both parts carry the link. Messages are built with the compat32 email classes: the
modern header registry costs ~10 ms of CPU per message, and 200 signups at once queue
behind the GIL. A failed hand-off is logged and returned, never shown to the person at
the form (the page is the same whatever happens).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Sequence
from datetime import datetime
from email import charset as charset_mod
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr, parseaddr
from pathlib import Path
from typing import Any

from .. import deliver, mail
from ..models import DeliveryOutcome, Recipient
from ..settings import Config, Subscriber
from .pages import render

log = logging.getLogger(__name__)
_UTF8_QP = charset_mod.Charset("utf-8")
_UTF8_QP.body_encoding = charset_mod.QP  # the links stay readable in the raw message
_CRLF = compat32.clone(linesep="\r\n")

SUBJECTS = {
    "confirm": "Confirm your subscription to {title}",
    "already": "You are already subscribed to {title}",
    "welcome": "Welcome to {title}",
}


def compose(config: Config, kind: str, to: Subscriber, now: datetime, **links: Any) -> MIMEMultipart:
    """A multipart/alternative message from mail/{kind}.txt.j2 and mail/{kind}.html.j2."""
    context = {"subscriber": to, "kind": kind, **links}
    message = MIMEMultipart("alternative")
    subject = mail.header_text(SUBJECTS[kind].format(title=config.newsletter.title))
    message["Subject"] = _text_header(subject)  # type: ignore[assignment]
    message["From"] = _address_header(config.newsletter.sender)
    if config.newsletter.reply_to:
        message["Reply-To"] = _address_header(config.newsletter.reply_to)
    message["To"] = formataddr((mail.header_text(to.name, 80), to.email), charset="utf-8")
    message["Date"] = format_datetime(now)
    message["Message-ID"] = f"<digest.{kind}.{secrets.token_hex(12)}@{mail.sender_domain(config.newsletter.sender)}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: vacation responders stay quiet
    for subtype in ("plain", "html"):
        body = render(config, f"mail/{kind}.{'txt' if subtype == 'plain' else 'html'}.j2", **context)
        message.attach(MIMEText(body, subtype, _UTF8_QP))  # type: ignore[arg-type]
    return message


def _text_header(value: str) -> str | Header:
    return value if value.isascii() else Header(value, "utf-8")


def _address_header(value: str) -> str:
    name, address = parseaddr(value)
    return formataddr((name, address), charset="utf-8")


def send(config: Config, message: MIMEMultipart, to: str) -> DeliveryOutcome:
    """Hand one message to the configured transport; the outcome says whether it was taken."""
    data = message.as_bytes(policy=_CRLF)  # SMTP wants CRLF; the Maildir file gets LF
    if config.delivery.transport == "maildir":
        try:
            _to_maildir(config.delivery.maildir, data)
        except OSError as exc:
            log.error("signup email to %s not written to the Maildir %s: %s", to, config.delivery.maildir, exc)
            return DeliveryOutcome(to, "failed", 0, str(exc))
        return DeliveryOutcome(to, "sent", 250, "written to Maildir", str(message["Message-ID"]))
    recipient = Recipient(Subscriber(to), str(message["Message-ID"]), "", "")
    outcomes: list[DeliveryOutcome] = []

    def record(results: Sequence[DeliveryOutcome]) -> None:
        outcomes.extend(results)

    try:
        deliver.to_smtp(config.smtp, config.newsletter.sender, [recipient], lambda _: data, record)
    except Exception as exc:  # noqa: BLE001 - a transport error must not become a page that tells
        log.error("signup email to %s not sent: %s", to, exc)
        return DeliveryOutcome(to, "failed", 0, str(exc))
    outcome = outcomes[-1] if outcomes else DeliveryOutcome(to, "failed", 0, "no reply")
    if outcome.status != "sent":
        log.warning("signup email to %s: %s %s %s", to, outcome.status, outcome.code, outcome.text)
    return outcome


def _to_maildir(folder: Path, data: bytes) -> None:
    """tmp/NAME written and fsynced, then renamed into new/: a reader never sees half a message."""
    for sub in ("tmp", "new", "cur"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    name = f"{time.time():.6f}.{os.getpid()}_{secrets.token_hex(8)}.{socket.gethostname().replace('/', '_')}"
    tmp = folder / "tmp" / name
    with open(tmp, "xb") as handle:
        handle.write(data.replace(b"\r\n", b"\n"))
        handle.flush()
        os.fsync(handle.fileno())
    os.rename(tmp, folder / "new" / name)
