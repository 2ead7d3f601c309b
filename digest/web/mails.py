"""The signup emails: confirmation, "already subscribed", welcome; sent at once, one each.

They go through the configured transport (the Maildir of the bundled config, or SMTP)
with deliver.py's own Maildir writer and SMTP client, so their replies are classified the
same way as the digest's. Both parts carry the link. A failed hand-off is logged and
returned, never shown to the person at the form (the page is the same whatever happens).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from datetime import datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from typing import Any

from .. import deliver, mail
from ..models import Config, DeliveryOutcome, Recipient, Subscriber
from .pages import render

log = logging.getLogger(__name__)

SUBJECTS = {
    "confirm": "Confirm your subscription to {title}",
    "already": "You are already subscribed to {title}",
    "welcome": "Welcome to {title}",
}


def compose(config: Config, kind: str, to: Subscriber, now: datetime, **links: Any) -> EmailMessage:
    """A multipart/alternative message from mail/{kind}.txt.j2 and mail/{kind}.html.j2."""
    context = {"subscriber": to, "kind": kind, **links}
    message = EmailMessage(policy=policy.SMTP)
    message["Subject"] = mail.header_text(SUBJECTS[kind].format(title=config.newsletter.title))
    message["From"] = config.newsletter.sender
    if config.newsletter.reply_to:
        message["Reply-To"] = config.newsletter.reply_to
    message["To"] = formataddr((mail.header_text(to.name, 80), to.email)) if to.name else to.email
    message["Date"] = format_datetime(now)
    message["Message-ID"] = f"<digest.{kind}.{secrets.token_hex(12)}@{mail.sender_domain(config.newsletter.sender)}>"
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: vacation responders stay quiet
    message.set_content(render(config, f"mail/{kind}.txt.j2", **context))
    message.add_alternative(render(config, f"mail/{kind}.html.j2", **context), subtype="html")
    return message


def send(config: Config, message: EmailMessage, to: str) -> DeliveryOutcome:
    """Hand one message to the configured transport; the outcome says whether it was taken."""
    data = bytes(message)
    recipient = Recipient(Subscriber(to), str(message["Message-ID"]), "", "")
    outcomes: list[DeliveryOutcome] = []

    def record(results: Sequence[DeliveryOutcome]) -> None:
        outcomes.extend(results)

    try:
        if config.delivery.transport == "maildir":
            deliver.to_maildir(config.delivery.maildir, [recipient], lambda _: data, record)
        else:
            settings = config.smtp
            deliver.to_smtp(settings, config.newsletter.sender, [recipient], lambda _: data, record)
    except Exception as exc:  # noqa: BLE001 - a transport error must not become a page that tells
        log.error("signup email to %s not sent: %s", to, exc)
        return DeliveryOutcome(to, "failed", 0, str(exc))
    outcome = outcomes[-1] if outcomes else DeliveryOutcome(to, "failed", 0, "no reply")
    if outcome.status != "sent":
        log.warning("signup email to %s: %s %s %s", to, outcome.status, outcome.code, outcome.text)
    return outcome
