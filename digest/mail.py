"""Rendered edition -> one RFC 5322 message per subscriber, by substitution.

The expensive work (render, inline, header encoding) happens once per rendering; each
subscriber's copy is the ready-made parts with their name, address and unsubscribe link
substituted. The parts are quoted-printable encoded once and per subscriber only the
substituted values are encoded, between soft line breaks, and the headers written as text:
a copy costs tens of microseconds, not milliseconds. Message-IDs are deterministic per (edition, subscriber) so a
duplicate after a crash is recognisable.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import hashlib
import hmac
import html
import re
from datetime import date, datetime
from email.utils import format_datetime, parseaddr
from urllib.parse import quote

from .models import EMAIL_MARK, NAME_MARK, PREFERENCES_MARK, UNSUBSCRIBE_MARK, Recipient, Rendered
from .settings import NewsletterSettings, Subscriber

_MARKS = re.compile(f"({NAME_MARK}|{EMAIL_MARK}|{UNSUBSCRIBE_MARK}|{PREFERENCES_MARK})")
PREFERENCES_PURPOSE = b"digest/preferences-link/v1"
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
MAX_HEADER_TEXT = 200
RUN_CONTEXT = 0
"""Characters of fixed text re-encoded per subscriber on each side of a marker, up to its line
end: a whole line re-encoded is byte for byte the one-go encoding, but b2a_qp costs ~60 ns a
byte. At 0 only the values are encoded per copy, between soft line breaks."""
_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~ -]+")
_PLAIN = re.compile(r"[ -<>-~]{0,74}[!-<>-~]\n?")  # one line, no "=", no trailing blank
_WORD_BYTES = 42  # UTF-8 bytes per RFC 2047 encoded-word: 68 characters, "To: " line < 78


def header_text(value: str, limit: int = MAX_HEADER_TEXT) -> str:
    """Single line, no control characters, bounded: feed text never shapes a header."""
    text = " ".join(_CONTROL.sub(" ", value).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def sender_domain(sender: str) -> str:
    return _address(sender).rpartition("@")[2] or "localhost"


@functools.lru_cache(maxsize=64)
def _address(sender: str) -> str:
    """The address of a `Name <addr>` setting; cached: `recipient` asks once per subscriber."""
    return parseaddr(sender)[1]


def message_id(day: date, email: str, domain: str) -> str:
    digest = hashlib.sha256(f"{day.isoformat()}\n{email.lower()}".encode()).hexdigest()[:24]
    return f"<digest.{day.isoformat()}.{digest}@{domain}>"


def unsubscribe_token(secret: bytes, email: str) -> str:
    """HMAC of the address: the link proves who it was mailed to, with no state to keep."""
    return hmac.new(secret, email.lower().encode(), hashlib.sha256).hexdigest()[:32]


def preferences_token(secret: bytes, email: str) -> str:
    """HMAC of the address under a key derived for this purpose only: no unsubscribe, confirm
    or VERP token can stand in for it (nor it for them)."""
    key = hmac.new(secret, PREFERENCES_PURPOSE, hashlib.sha256).digest()
    return hmac.new(key, email.lower().encode(), hashlib.sha256).hexdigest()[:32]


def preferences_url(base_url: str, secret: bytes, email: str) -> str:
    return f"{base_url}/preferences?email={quote(email)}&token={preferences_token(secret, email)}"


def recipient(subscriber: Subscriber, day: date, newsletter: NewsletterSettings, secret: bytes) -> Recipient:
    domain = sender_domain(newsletter.sender)
    mailto_addr = newsletter.unsubscribe_mailto or _address(newsletter.sender)
    mailto = f"mailto:{mailto_addr}?subject=" + quote(f"unsubscribe {subscriber.email}")
    url = preferences = ""
    if newsletter.base_url:
        token = unsubscribe_token(secret, subscriber.email)
        url = f"{newsletter.base_url}/unsubscribe?email={quote(subscriber.email)}&token={token}"
        preferences = preferences_url(newsletter.base_url, secret, subscriber.email)
    return Recipient(subscriber, message_id(day, subscriber.email, domain), url, mailto, preferences_url=preferences)


class Composer:
    """Holds one rendering's ready-made parts; `message()` personalises a copy."""

    def __init__(self, rendered: Rendered, html_body: str, newsletter: NewsletterSettings, day: date, now: datetime):
        self.html_parts = _MARKS.split(html_body)
        self.text_parts = _MARKS.split(rendered.text)
        self.newsletter = newsletter
        self.boundary = "=_digest_" + hashlib.sha256(html_body.encode()).hexdigest()[:24]
        self.html = _QuotedPrintable(html_body)
        self.text = _QuotedPrintable(rendered.text)
        from email import policy  # here, not at the top: an SMTP connection's process only fills in copies
        from email.message import EmailMessage

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
        values_text = {
            NAME_MARK: sub.name or "reader",
            EMAIL_MARK: sub.email,
            UNSUBSCRIBE_MARK: unsubscribe,
            PREFERENCES_MARK: to.preferences_url or unsubscribe,
        }
        values_html = {mark: html.escape(value) for mark, value in values_text.items()}
        b = self.boundary.encode()
        return b"".join(
            [
                self._personal_headers(to),
                self.common,
                self.body,
                b"--" + b + b"\r\n",
                _PART_HEAD % b"text/plain",
                *self.text.fill(values_text),
                b"--" + b + b"\r\n",
                _PART_HEAD % b"text/html",
                *self.html.fill(values_html),
                b"--" + b + b"--\r\n",
            ]
        )

    def _personal_headers(self, to: Recipient) -> bytes:
        """Written as text: an EmailMessage per subscriber cost milliseconds of header parsing."""
        lines = [_to_header(header_text(to.subscriber.name, 80), _one_line(to.subscriber.email))]
        lines.append("Message-ID: " + _one_line(to.message_id))
        links = [f"<{_one_line(to.unsubscribe_url)}>"] if to.unsubscribe_url else []
        links.append(f"<{_one_line(to.unsubscribe_mailto)}>")
        if to.unsubscribe_url:
            lines.append("List-Unsubscribe-Post: List-Unsubscribe=One-Click")
        return ("\r\n".join(lines) + "\r\n").encode() + _list_unsubscribe(links)


def _list_unsubscribe(links: list[str]) -> bytes:
    """Written raw, folded after each comma: the policy would RFC 2047-encode a long URI,
    and encoded-words inside <...> are not URIs to any client (RFC 2369)."""
    return ("List-Unsubscribe: " + ",\r\n ".join(links) + "\r\n").encode("ascii", "replace")


def _one_line(value: str) -> str:
    """Header data never carries a line break (or any control character) into the message."""
    return value if value.isprintable() else _CONTROL.sub("", value)


def _to_header(name: str, email: str) -> str:
    """`To: phrase <addr>`: the name atoms, quoted, or RFC 2047 words; the domain in IDNA."""
    local, _, domain = email.rpartition("@")
    if not domain.isascii():
        from email_validator import EmailNotValidError, validate_email

        with contextlib.suppress(EmailNotValidError):  # else as written: an RFC 6532 header
            domain = validate_email(email, check_deliverability=False).ascii_domain
    address = f"<{local}@{domain}>"
    if not name:
        return "To: " + address
    if not name.isascii() or "=?" in name:  # parsers decode encoded-words even when quoted
        phrase = _encoded_words(name)
    elif _ATEXT.fullmatch(name):
        phrase = name
    else:
        phrase = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    last_line = len(phrase) - phrase.rfind("\n")
    fold = " " if last_line + len(address) < 74 else "\r\n "  # keep lines under 78 where we can
    return f"To: {phrase}{fold}{address}"


def _encoded_words(text: str) -> str:
    """Base64 encoded-words of at most 68 characters (RFC 2047 allows 75), one per folded line;
    split between characters, since a word must decode on its own."""
    data, words = text.encode(), []
    while data:
        cut = min(len(data), _WORD_BYTES)
        while cut < len(data) and data[cut] & 0xC0 == 0x80:  # not inside a UTF-8 sequence
            cut -= 1
        words.append("=?utf-8?b?" + base64.b64encode(data[:cut]).decode() + "?=")
        data = data[cut:]
    return "\r\n ".join(words)


_PART_HEAD = b'Content-Type: %s; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'


class _QuotedPrintable:
    """A marked text, quoted-printable encoded once; `fill` encodes only the runs with markers.

    b2a_qp's state resets at each hard line break, so lines encoded apart and joined equal the
    text encoded in one go: a run is the whole line(s) around a marker. On a line longer than
    RUN_CONTEXT the run stops at the marker instead, the text before it ending in a soft break
    (`=` CRLF) so the value starts a fresh line: same decoded text, other line breaks.
    """

    def __init__(self, text: str, context: int = RUN_CONTEXT) -> None:
        plan = [piece for piece in _plan(text, context) if piece]
        last = len(plan) - 1
        self.pieces = [_qp(p, i == last) if isinstance(p, str) else tuple(p) for i, p in enumerate(plan)]
        self.last = last

    def fill(self, values: dict[str, str]) -> list[bytes]:
        """The encoded text with `values` in place of the markers, as pieces to join."""
        if not self.pieces:
            return [b"\r\n"]
        out: list[bytes] = []
        for i, piece in enumerate(self.pieces):
            if isinstance(piece, bytes):
                out.append(piece)
                continue
            text = "".join([values.get(s, s) for s in piece])
            if not text and i == self.last and out and out[-1].endswith(b"\r\n"):
                continue  # an empty last run adds no empty line after the text's own last one
            out.append(_qp(text, i == self.last))
        return out


def _plan(text: str, context: int) -> list[str | list[str]]:
    """The text as fixed strings and runs (lists alternating fixed text and markers)."""
    parts = _MARKS.split(text)
    plan: list[str | list[str]] = [parts[0]]
    for i in range(1, len(parts), 2):
        mark, after = parts[i], parts[i + 1]
        run = plan[-1]
        if isinstance(run, str):  # start a run at the line start, if near enough
            start = run.rfind("\n") + 1
            start = start if len(run) - start <= context else len(run)
            plan[-1], run = run[:start], [run[start:]]
            plan.append(run)
        end = after.find("\n") + 1 or len(after)
        end = end if end <= context else 0
        run += [mark, after[:end]]
        if end < len(after) or after.endswith("\n"):  # else the run goes on to the next marker
            plan.append(after[end:])
    return plan


def _qp(text: str, last: bool) -> bytes:
    """Quoted-printable with CRLF line ends; a piece ending mid-line ends in a soft break."""
    if _PLAIN.fullmatch(text) and text[0] != ".":  # its own encoding (b2a_qp costs ~60 ns/byte)
        if text[-1] == "\n":
            return text[:-1].encode() + b"\r\n"
        return text.encode() + (b"\r\n" if last else b"=\r\n")
    mid_line = not last and not text.endswith("\n")
    if mid_line and not text:
        return b""
    # Mid-line, encode with one more character after: b2a_qp lets a line's last character reach
    # column 76, where the soft break's "=" would not fit.
    encoded = binascii.b2a_qp((text + "x" if mid_line else text).encode(), quotetabs=False, istext=True, header=False)
    encoded = _fold(encoded.replace(b"\r\n", b"\n")).replace(b"\n", b"\r\n")
    if mid_line:
        return encoded[:-1] if encoded.endswith(b"=\r\nx") else encoded[:-1] + b"=\r\n"
    return encoded if encoded.endswith(b"\r\n") else encoded + b"\r\n"


def _fold(encoded: bytes) -> bytes:
    """Soft-break lines over 76 characters: b2a_qp lets a line's trailing `=20` reach column 77."""
    lines = encoded.split(b"\n")
    if max(map(len, lines)) <= 76:
        return encoded
    out = []
    for line in lines:
        while len(line) > 76:
            cut = 75
            if line[cut - 1 : cut] == b"=":
                cut -= 1
            elif line[cut - 2 : cut - 1] == b"=":
                cut -= 2
            out.append(line[:cut] + b"=")
            line = line[cut:]
        out.append(line)
    return b"\n".join(out)


def html_part(message: bytes) -> str:
    """The decoded HTML of a message built here (for the preview and the checks)."""
    from email import message_from_bytes, policy

    parsed = message_from_bytes(message, policy=policy.default)
    body = parsed.get_body(("html",))
    return str(body.get_content()) if body is not None else ""
