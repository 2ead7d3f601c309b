"""Bounce and complaint messages in, classified `Bounce` records out (pure: no state).

Strangers write these messages, so nothing here trusts them: a report's own fields
(RFC 3464 Action/Status, RFC 5965 Feedback-Type) decide first, flufl.bounce (Mailman's
detectors for Postfix, Exim, qmail, Sendmail, Microsoft, Yahoo, ... formats) second,
and anything unrecognised, auto-replied, malformed or over `MAX_BYTES` is "ignored".
`resolve` then names at most one subscriber: from a genuine VERP token first, else from
the addresses the report states, and only if that address is a current or past
subscriber. flufl.bounce is imported on first use (start-up time).
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

from . import verp
from .config import address_key
from .models import Bounce

MAX_BYTES = 1 << 20
"""Bytes of one message that are read: bounces are small; the rest is never looked at."""
_TOKEN_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To", "Return-Path")
_AUTO_SUBJECT = re.compile(
    r"^\s*(auto(matic)?[ -]?(reply|response|antwort)|auto:|out of (the )?office|vacation|abwesenheit|absence)",
    re.IGNORECASE,
)
_COMPLAINT_TYPES = {"abuse", "fraud", "virus", "other"}


@dataclass(frozen=True)
class Resolved:
    """Who a bounce is about (or why nobody): `verdict` is the counted outcome."""

    verdict: str  # "hard" | "soft" | "complaint" | "ignored"
    reason: str
    email: str | None = None


def message_key(raw: bytes, msg: Message | None = None) -> str:
    """Identity of a message across reads: its Message-ID, else a hash of its bytes."""
    try:
        if msg is None:
            head = raw.split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0]
            msg = email.message_from_bytes(head, policy=email.policy.compat32)
        mid = str(msg.get("Message-ID", "") or "").strip()
    except Exception:  # noqa: BLE001 - a stranger's header block
        mid = ""
    if mid and len(mid) < 500 and not any(ord(c) < 33 for c in mid):
        return f"mid:{mid}"
    return f"sha256:{hashlib.sha256(raw).hexdigest()}"


def classify(raw: bytes, return_path: str = "", *, truncated: bool = False) -> Bounce:
    """What one message is: hard / soft bounce, complaint, or ignored (with why)."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
        key = message_key(raw, msg)
    except Exception:  # noqa: BLE001 - a stranger's bytes: any parser failure means "malformed"
        return Bounce(f"sha256:{hashlib.sha256(raw).hexdigest()}", "ignored", "malformed")
    if truncated:
        return Bounce(key, "ignored", f"too large (over {MAX_BYTES // 1024} KiB)")
    try:
        token = _token(msg, return_path) if return_path else None
        kind, reason, addresses = _kind(msg)
    except Exception:  # noqa: BLE001 - malformed MIME of any shape counts, and stops nothing
        return Bounce(key, "ignored", "malformed")
    return Bounce(key, kind, reason, token, addresses, _date(msg))


def _date(msg: Message) -> datetime | None:
    try:
        moment = parsedate_to_datetime(str(msg.get("Date", "")))
    except (TypeError, ValueError, IndexError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def resolve(
    bounce: Bounce, verp_key: bytes | None, known: Mapping[str, str], by_hash: Mapping[bytes, list[str]]
) -> Resolved:
    """The one subscriber a bounce suppresses, if any.

    known: address_key -> address of current and past subscribers;
    by_hash: verp.address_hash -> those addresses (to read a token back).
    A bounce whose report names recipients must name the token's subscriber among them
    ("mismatched" otherwise); a complaint need not, as feedback loops redact recipients.
    """
    if bounce.kind == "ignored":
        return Resolved("ignored", bounce.reason)
    stated = [known[address_key(a)] for a in bounce.addresses if address_key(a) in known]
    if bounce.token is not None and verp_key is not None:
        token = verp.read_token(verp_key, bounce.token)
        if token is None:
            return Resolved("ignored", "forged token")
        owners = by_hash.get(token.address_hash, [])
        if len(owners) != 1:
            return Resolved("ignored", "token names no single subscriber")
        owner = owners[0]
        named = {address_key(a) for a in bounce.addresses}
        if bounce.kind != "complaint" and named and address_key(owner) not in named:
            return Resolved("ignored", "mismatched token")
        return Resolved(bounce.kind, bounce.reason, owner)
    if not stated:
        return Resolved("ignored", "not a subscriber")
    return Resolved(bounce.kind, bounce.reason, stated[0])


# --------------------------------------------------------------------------- reading a message


def _token(msg: Message, return_path: str) -> str | None:
    """The VERP token of the address this message came back to (or of the original's return path)."""
    for part in [msg, *_originals(msg)]:
        for header in _TOKEN_HEADERS:
            for _name, address in getaddresses([str(v) for v in part.get_all(header, [])]):
                token = verp.token_in(return_path, address)
                if token:
                    return token
    return None


def _originals(msg: Message) -> Iterator[Message]:
    """Headers of the original message a report quotes (message/rfc822 or text/rfc822-headers)."""
    for part in msg.walk():
        kind = part.get_content_type()
        if kind in ("message/rfc822", "message/global") and part.is_multipart():
            inner = part.get_payload(0)
            if isinstance(inner, Message):
                yield inner
        elif kind in ("text/rfc822-headers", "message/global-headers"):
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                yield email.message_from_bytes(payload.split(b"\n\n", 1)[0])


def _kind(msg: Message) -> tuple[str, str, tuple[str, ...]]:
    if msg.get_content_type() == "multipart/report":
        report = str(msg.get_param("report-type", "", header="content-type") or "").lower()
        if report == "feedback-report":
            return _arf(msg)
        if report == "delivery-status":
            found = _dsn(msg)
            if found is not None:
                return found
    if _vacation(msg):
        return "ignored", "auto-reply", ()
    found = _flufl(msg)
    if found[0] == "ignored" and str(msg.get("Auto-Submitted", "")).strip().lower().startswith("auto-replied"):
        return "ignored", "auto-reply", ()
    return found


def _fields(msg: Message, content_type: str) -> list[Message]:
    """The header blocks of a message/delivery-status or message/feedback-report part."""
    for part in msg.walk():
        if part.get_content_type() != content_type:
            continue
        payload = part.get_payload()
        if isinstance(payload, list):
            return [p for p in payload if isinstance(p, Message)]
        text = part.get_payload(decode=True)
        if not isinstance(text, bytes):
            return []
        return [email.message_from_bytes(block) for block in re.split(rb"\r?\n\r?\n", text) if block.strip()]
    return []


def _dsn(msg: Message) -> tuple[str, str, tuple[str, ...]] | None:
    """RFC 3464: each recipient's Action and Status; None when the report holds no recipient."""
    hard: list[str] = []
    soft: list[str] = []
    hard_why = soft_why = ""
    delivered = False
    for block in _fields(msg, "message/delivery-status"):
        recipient = _address(block.get("Final-Recipient")) or _address(block.get("Original-Recipient"))
        action = str(block.get("Action", "")).strip().lower()
        status = str(block.get("Status", "")).strip()
        if not recipient or not action:
            continue
        original = _address(block.get("Original-Recipient"))
        names = [recipient] + ([original] if original and original != recipient else [])
        why = _one_line(f"{status} {block.get('Diagnostic-Code', '')}")
        if action == "failed" and status.startswith("5"):
            hard += names
            hard_why = hard_why or why
        elif action in ("failed", "delayed"):
            soft += names
            soft_why = soft_why or why
        else:
            delivered = True
    if hard:
        return "hard", hard_why, tuple(hard)
    if soft:
        return "soft", soft_why, tuple(soft)
    if delivered:
        return "ignored", "delivery notice (not a failure)", ()
    return None


def _arf(msg: Message) -> tuple[str, str, tuple[str, ...]]:
    """RFC 5965: a complaint unless the report says not-spam; the recipient from Original-Rcpt-To."""
    blocks = _fields(msg, "message/feedback-report")
    if not blocks:
        return "ignored", "malformed feedback report", ()
    report = blocks[0]
    kind = str(report.get("Feedback-Type", "")).strip().lower()
    if kind not in _COMPLAINT_TYPES:
        return "ignored", f"feedback report of type {kind or 'none'!r}", ()
    addresses = [a for a in (_address(v) for v in report.get_all("Original-Rcpt-To", [])) if a]
    if not addresses:
        for original in _originals(msg):
            addresses += [a for _n, a in getaddresses([str(v) for v in original.get_all("To", [])]) if "@" in a]
    return "complaint", f"spam complaint ({kind})", tuple(addresses)


def _vacation(msg: Message) -> bool:
    """Vacation / out-of-office replies (bounces carry Auto-Submitted too, so that alone is no sign)."""
    if msg.get("X-Autoreply") or msg.get("X-Autorespond"):
        return True
    if str(msg.get("Precedence", "")).strip().lower() == "auto_reply":
        return True
    return bool(_AUTO_SUBJECT.match(str(msg.get("Subject", ""))))


def _flufl(msg: Message) -> tuple[str, str, tuple[str, ...]]:
    from flufl.bounce import all_failures

    logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)  # a detector's crash is our "malformed"
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # noqa: BLE001 - a detector tripped over a stranger's message (no From:, ...)
        return "ignored", "not a bounce", ()
    if permanent:
        return "hard", "permanent failure (flufl.bounce)", _decoded(permanent)
    if temporary:
        return "soft", "temporary failure (flufl.bounce)", _decoded(temporary)
    return "ignored", "not a bounce", ()


def _decoded(addresses: frozenset[bytes] | set[bytes]) -> tuple[str, ...]:
    out = (a.decode("utf-8", "replace").strip().strip("<>") for a in addresses)
    return tuple(sorted(a for a in out if "@" in a))


def _address(value: object) -> str:
    """`rfc822; user@host` -> `user@host` (the address type is optional in practice)."""
    text = str(value or "").strip()
    if ";" in text:
        text = text.split(";", 1)[1]
    text = text.strip().strip("<>").strip()
    return text if "@" in text and len(text) <= 320 and not any(c.isspace() for c in text) else ""


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
