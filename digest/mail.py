"""Rendered edition -> one RFC 5322 message per subscriber, by substitution.

The expensive work (render, inline, header encoding) happens once per rendering; each
subscriber's copy is the ready-made parts with their name, address and unsubscribe link
substituted, then quoted-printable encoded in C (binascii). Message-IDs are deterministic
per (edition, subscriber) so a duplicate after a crash is recognisable.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import html
import re
from datetime import date, datetime
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from urllib.parse import quote

from .models import EMAIL_MARK, NAME_MARK, UNSUBSCRIBE_MARK, NewsletterSettings, Recipient, Rendered, Subscriber

_MARKS = re.compile(f"({NAME_MARK}|{EMAIL_MARK}|{UNSUBSCRIBE_MARK})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
MAX_HEADER_TEXT = 200


def header_text(value: str, limit: int = MAX_HEADER_TEXT) -> str:
    """Single line, no control characters, bounded: feed text never shapes a header."""
    text = " ".join(_CONTROL.sub(" ", value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sender_domain(sender: str) -> str:
    return parseaddr(sender)[1].rpartition("@")[2] or "localhost"


def message_id(day: date, email: str, domain: str) -> str:
    digest = hashlib.sha256(f"{day.isoformat()}\n{email.lower()}".encode()).hexdigest()[:24]
    return f"<digest.{day.isoformat()}.{digest}@{domain}>"


def unsubscribe_token(secret: bytes, email: str) -> str:
    """HMAC of the address: the link proves who it was mailed to, with no state to keep."""
    return hmac.new(secret, email.lower().encode(), hashlib.sha256).hexdigest()[:32]


def recipient(subscriber: Subscriber, day: date, newsletter: NewsletterSettings, secret: bytes) -> Recipient:
    domain = sender_domain(newsletter.sender)
    mailto_addr = newsletter.unsubscribe_mailto or parseaddr(newsletter.sender)[1]
    mailto = f"mailto:{mailto_addr}?subject=" + quote(f"unsubscribe {subscriber.email}")
    url = ""
    if newsletter.base_url:
        token = unsubscribe_token(secret, subscriber.email)
        url = f"{newsletter.base_url}/unsubscribe?email={quote(subscriber.email)}&token={token}"
    return Recipient(subscriber, message_id(day, subscriber.email, domain), url, mailto)


class Composer:
    """Holds one rendering's ready-made parts; `message()` personalises a copy."""

    def __init__(self, rendered: Rendered, html_body: str, newsletter: NewsletterSettings, day: date, now: datetime):
        self.html_parts = _MARKS.split(html_body)
        self.text_parts = _MARKS.split(rendered.text)
        self.newsletter = newsletter
        self.boundary = "=_digest_" + hashlib.sha256(html_body.encode()).hexdigest()[:24]
        common = EmailMessage(policy=policy.SMTP)
        common["Subject"] = header_text(rendered.subject, 250)
        common["From"] = newsletter.sender
        if newsletter.reply_to:
            common["Reply-To"] = newsletter.reply_to
        common["Date"] = format_datetime(now)
        domain = sender_domain(newsletter.sender)
        common["List-Id"] = f"{header_text(newsletter.title, 80)} <{day.strftime('%Y')}.digest.{domain}>"
        common["MIME-Version"] = "1.0"
        self.common = bytes(common).rstrip(b"\r\n") + b"\r\n"
        self.body = (
            f'Content-Type: multipart/alternative; boundary="{self.boundary}"\r\n\r\n'
            "This is a multi-part message in MIME format.\r\n"
        ).encode()

    def message(self, to: Recipient) -> bytes:
        """The full message for one subscriber (CRLF line ends, quoted-printable parts)."""
        sub = to.subscriber
        unsubscribe = to.unsubscribe_url or to.unsubscribe_mailto
        values_html = {
            NAME_MARK: html.escape(sub.name or "reader"),
            EMAIL_MARK: html.escape(sub.email),
            UNSUBSCRIBE_MARK: html.escape(unsubscribe),
        }
        values_text = {NAME_MARK: sub.name or "reader", EMAIL_MARK: sub.email, UNSUBSCRIBE_MARK: unsubscribe}
        text = _fill(self.text_parts, values_text)
        page = _fill(self.html_parts, values_html)
        b = self.boundary.encode()
        return b"".join(
            (
                self._personal_headers(to),
                self.common,
                self.body,
                b"--" + b + b"\r\n",
                _part("text/plain", text),
                b"--" + b + b"\r\n",
                _part("text/html", page),
                b"--" + b + b"--\r\n",
            )
        )

    def _personal_headers(self, to: Recipient) -> bytes:
        head = EmailMessage(policy=policy.SMTP)
        sub = to.subscriber
        head["To"] = Address(display_name=header_text(sub.name, 80), addr_spec=sub.email)
        head["Message-ID"] = to.message_id
        links = [f"<{to.unsubscribe_url}>"] if to.unsubscribe_url else []
        links.append(f"<{to.unsubscribe_mailto}>")
        head["List-Unsubscribe"] = ", ".join(links)
        if to.unsubscribe_url:
            head["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        return bytes(head).rstrip(b"\r\n") + b"\r\n"


def _fill(parts: list[str], values: dict[str, str]) -> str:
    return "".join(values.get(p, p) if i % 2 else p for i, p in enumerate(parts))


def _part(content_type: str, text: str) -> bytes:
    encoded = binascii.b2a_qp(text.encode("utf-8"), quotetabs=False, istext=True, header=False)
    encoded = encoded.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    if not encoded.endswith(b"\r\n"):
        encoded += b"\r\n"
    return (
        f'Content-Type: {content_type}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
    ).encode() + encoded


def html_part(message: bytes) -> str:
    """The decoded HTML of a message built here (for the preview and the checks)."""
    parsed = message_from_bytes(message, policy=policy.default)
    body = parsed.get_body(("html",))
    return str(body.get_content()) if body is not None else ""
