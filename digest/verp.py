"""VERP return paths: `bounces+TOKEN@example.org`, TOKEN naming the edition and the subscriber.

A bounce comes back to the envelope sender, so the address it reached tells us who
bounced, whatever the bounce's format. The token is short enough for a local part
(23 base32 characters): 2 bytes of edition day, 6 bytes of a hash of the subscriber's
address (`config.address_key`), 6 bytes of HMAC over both under a key derived for this
purpose only, so no other token of digest (unsubscribe, confirm) can stand in for it.
Checked in constant time; anything else is "forged" and suppresses nobody.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass
from datetime import date, timedelta

from .config import address_key

PURPOSE = b"digest/verp-return-path/v1"
_EPOCH = date(2020, 1, 1)
_TOKEN = re.compile(r"^[a-z2-7]{23}$")


@dataclass(frozen=True)
class Token:
    """What a valid token names: the edition day and the hash of the subscriber's address."""

    day: date
    address_hash: bytes


def key(secret: bytes) -> bytes:
    """The VERP key: derived from the shared secret with its own purpose label."""
    return hmac.new(secret, PURPOSE, hashlib.sha256).digest()


def address_hash(email: str) -> bytes:
    return hashlib.sha256(address_key(email).encode()).digest()[:6]


def make_token(verp_key: bytes, day: date, email: str) -> str:
    payload = (day - _EPOCH).days.to_bytes(2, "big") + address_hash(email)
    mac = hmac.new(verp_key, payload, hashlib.sha256).digest()[:6]
    return base64.b32encode(payload + mac).decode().rstrip("=").lower()


def read_token(verp_key: bytes, token: str) -> Token | None:
    """The day and address hash a genuine token names; None for anything forged or mangled."""
    token = token.lower()
    if not _TOKEN.match(token):
        return None
    try:
        raw = base64.b32decode(token.upper() + "=")
    except (binascii.Error, ValueError):
        return None
    if base64.b32encode(raw).decode().rstrip("=").lower() != token:  # the last character's spare bits
        return None
    payload, mac = raw[:8], raw[8:]
    if not hmac.compare_digest(mac, hmac.new(verp_key, payload, hashlib.sha256).digest()[:6]):
        return None
    return Token(_EPOCH + timedelta(days=int.from_bytes(payload[:2], "big")), payload[2:])


def return_path(base: str, verp_key: bytes, day: date, email: str) -> str:
    """`bounces@example.org` -> `bounces+TOKEN@example.org` for this edition and subscriber."""
    local, _, domain = base.rpartition("@")
    return f"{local}+{make_token(verp_key, day, email)}@{domain}"


def token_in(base: str, address: str) -> str | None:
    """The TOKEN of `local+TOKEN@domain` when `address` is a return path made from `base`, else None."""
    local, _, domain = base.rpartition("@")
    got_local, _, got_domain = address.strip().strip("<>").rpartition("@")
    prefix = f"{local}+"
    if got_domain.lower() != domain.lower() or not got_local.lower().startswith(prefix.lower()):
        return None
    return got_local[len(prefix) :]
