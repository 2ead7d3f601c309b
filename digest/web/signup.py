"""Subscribe, confirm, preferences: double opt-in with config.toml as the subscriber list.

Framework-free: each function takes the loaded config, an open Store, the form fields and
a `Visit` (who, from where, when) and returns a `Page`; app.py only moves bytes.

- subscribe: syntax-checked address, honeypot, limits; a pending signup in the state
  database and an email at once. The page is the same for a new, pending, subscribed or
  unsubscribed address, so the form tells nobody who subscribes.
- confirm: GET shows a button and changes nothing (mail scanners open every link); POST
  adds the subscriber through the same editor as `digest subscribers add` (locked,
  validated, atomic, comments kept) and lifts an earlier unsubscribe: the reader asked back.
- preferences: name and sections saved through that editor; unsubscribe as the one-click
  link does (a suppression), so nothing else needs to know about the web.

Tokens name their purpose (a key derived per purpose from the shared secret, as verp.py
does), so none stands in for another; all are compared in constant time. A confirm token
is `ID.NONCE.ISSUED.MAC`: the signup row, its random nonce, the issue time (valid 7 days).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from .. import archive, mail
from .. import config as config_mod
from ..bounce_store import BounceBook
from ..settings import Config, Subscriber
from ..signup_store import CONFIRM_VALID, Signup, SignupBook
from ..store import Store
from . import mails
from .enroll import ENROLLER, Wish
from .pages import Page

log = logging.getLogger(__name__)

FORM_VALID = timedelta(days=1)
MAX_NAME = 100
HONEYPOT = "website"
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
_CONFIRM = re.compile(r"^(\d{1,12})\.([A-Za-z0-9_-]{8,32})\.(\d{1,12})\.([0-9a-f]{32})$")
Fields = Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class Visit:
    """One request as the logic sees it: the key, a hash of the client, the page it came from."""

    secret: bytes
    client: str
    source: str
    base: str
    now: datetime


def purpose_key(secret: bytes, purpose: str) -> bytes:
    return hmac.new(secret, f"digest/{purpose}/v1".encode(), hashlib.sha256).digest()


def client_hash(secret: bytes, host: str) -> str:
    """A keyed hash of the client address (IPv6: its /64, what one host usually holds)."""
    try:
        ip = ipaddress.ip_address(host)
        text = str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else str(ip)
    except ValueError:
        text = host
    return hmac.new(purpose_key(secret, "client"), text.encode(), hashlib.sha256).hexdigest()[:24]


def _mac(key: bytes, payload: str) -> str:
    return hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()[:32]


def confirm_token(secret: bytes, signup: Signup, issued: datetime) -> str:
    payload = f"{signup.id}.{signup.nonce}.{int(issued.timestamp())}"
    return f"{payload}.{_mac(purpose_key(secret, 'confirm'), payload)}"


def read_confirm_token(secret: bytes, token: str, now: datetime) -> tuple[int, str] | str:
    """(signup id, nonce), or "invalid" / "expired"."""
    match = _CONFIRM.match(token.strip())
    if not match:
        return "invalid"
    payload = token.strip().rpartition(".")[0]
    if not hmac.compare_digest(_mac(purpose_key(secret, "confirm"), payload), match.group(4)):
        return "invalid"
    issued = datetime.fromtimestamp(int(match.group(3)), UTC)
    if now - issued > CONFIRM_VALID:
        return "expired"
    return int(match.group(1)), match.group(2)


def form_token(secret: bytes, now: datetime) -> str:
    """For our own signup page: a POST without Origin or Referer still proves it came from a form."""
    issued = str(int(now.timestamp()))
    return f"{issued}.{_mac(purpose_key(secret, 'form'), issued)}"


def form_token_ok(secret: bytes, token: str, now: datetime) -> bool:
    issued, _, mac = token.partition(".")
    if not issued.isdigit() or not hmac.compare_digest(_mac(purpose_key(secret, "form"), issued), mac):
        return False
    return now - datetime.fromtimestamp(int(issued), UTC) <= FORM_VALID


def preferences_ok(secret: bytes, email: str, token: str) -> bool:
    if not email or not token or len(email) > 320 or _CONTROL.search(email):
        return False
    return hmac.compare_digest(mail.preferences_token(secret, email).encode(), token.encode("utf-8", "replace"))


def field(fields: Fields, name: str) -> str:
    """The first value of a form field, or ""."""
    return (fields.get(name) or [""])[0]


# --------------------------------------------------------------------------- subscribe


def subscribe_page(
    config: Config,
    visit: Visit,
    values: Fields | None = None,
    errors: dict[str, str] | None = None,
    store: Store | None = None,
) -> Page:
    """The signup form, with the latest edition's headlines: a reader deciding sees what comes."""
    values = values or {}
    latest = [archive.Listed(*row) for row in store.edition_index(1)] if store is not None else []
    return Page(
        400 if errors else 200,
        "web/subscribe.html.j2",
        {
            "email": field(values, "email"),
            "name": field(values, "name"),
            "chosen": [t.lower() for t in values.get("topics", [])],
            "errors": errors or {},
            "form_token": form_token(visit.secret, visit.now),
            "honeypot": HONEYPOT,
            "latest": latest,
        },
    )


def check_inbox(email: str) -> Page:
    return Page(200, "web/check_inbox.html.j2", {"email": email, "valid_days": CONFIRM_VALID.days})


def subscribe(config: Config, store: Store, fields: Fields, visit: Visit) -> Page:
    """POST /subscribe: the same "check your inbox" page for every valid address."""
    if field(fields, HONEYPOT).strip():
        log.info("signup honeypot filled from client %s: ignored", visit.client)
        return check_inbox(field(fields, "email").strip()[:320])
    errors: dict[str, str] = {}
    try:
        email = config_mod.check_email(field(fields, "email"))
    except ValueError:
        email = ""
        errors["email"] = "Enter an email address like name@example.com."
    name = " ".join(field(fields, "name").split())
    if len(name) > MAX_NAME or _CONTROL.search(field(fields, "name").replace("\t", " ")):
        errors["name"] = f"Keep the name to one line of at most {MAX_NAME} characters."
    sections = {s.lower(): s for s in config.sections}
    topics = tuple(dict.fromkeys(sections.get(t.strip().lower(), "") for t in fields.get("topics", [])[:100]))
    if "" in topics:
        errors["topics"] = "Choose among the sections listed."
    if errors:
        return subscribe_page(config, visit, fields, errors, store)
    book = SignupBook(store)
    admitted = book.admit(
        email,
        name,
        topics,
        visit.source,
        visit.client,
        visit.now,
        per_client_hour=config.web.signup_per_client_hour,
        mail_interval=config.web.confirm_email_interval,
    )
    if admitted.signup is None:
        log.info("signup of %s refused: %s limit", email, admitted.limited)
        return Page(429, "web/message.html.j2", _too_many(admitted.limited))
    signup = admitted.signup
    listed = {config_mod.address_key(s.email) for s in config.subscribers}
    active = config_mod.address_key(email) in listed and email.lower() not in store.suppressed()
    who = Subscriber(email, name)
    if active:  # nothing to confirm: remind them where their settings are
        message = mails.compose(
            config, "already", who, visit.now, preferences_url=mail.preferences_url(visit.base, visit.secret, email)
        )
    else:
        link = f"{visit.base}/confirm?token={confirm_token(visit.secret, signup, visit.now)}"
        days = CONFIRM_VALID.days
        message = mails.compose(config, "confirm", who, visit.now, confirm_url=link, topics=topics, valid_days=days)
    if mails.send(config, message, email).status != "sent":
        book.unmailed(signup.id)
    return check_inbox(email)


def _too_many(which: str) -> dict[str, str]:
    if which == "address":
        text = "A confirmation email went to this address a few minutes ago: check your inbox (and spam folder)."
    else:
        text = "Too many signups from your network in the last hour. Please try again later."
    return {"title": "Too many requests", "message": text, "link": "", "link_text": ""}


# --------------------------------------------------------------------------- confirm


def _pending(config: Config, store: Store, token: str, visit: Visit) -> Signup | Page:
    found = read_confirm_token(visit.secret, token, visit.now)
    if found == "expired":
        return Page(410, "web/message.html.j2", _expired())
    signup = SignupBook(store).get(found[0]) if isinstance(found, tuple) else None
    if signup is None or not isinstance(found, tuple) or not hmac.compare_digest(signup.nonce, found[1]):
        return Page(400, "web/message.html.j2", _invalid())
    return signup


def _expired() -> dict[str, str]:
    return {
        "title": "Link expired",
        "message": f"This confirmation link is more than {CONFIRM_VALID.days} days old. "
        "Sign up again and use the new link.",
        "link": "subscribe",
        "link_text": "Sign up again",
    }


def _invalid() -> dict[str, str]:
    return {
        "title": "Link not valid",
        "message": "This link is not valid: use the one in your latest email, or sign up again.",
        "link": "subscribe",
        "link_text": "Sign up",
    }


def confirm_page(config: Config, store: Store, token: str, visit: Visit) -> Page:
    """GET /confirm: a button; changes nothing."""
    signup = _pending(config, store, token, visit)
    if isinstance(signup, Page):
        return signup
    if signup.confirmed:
        return _subscribed(config, signup, visit, again=True)
    return Page(200, "web/confirm.html.j2", {"email": signup.email, "token": token, "topics": signup.topics})


def confirm(config: Config, store: Store, token: str, visit: Visit) -> Page:
    """POST /confirm: config.toml gains the subscriber; an unsubscribe is lifted; welcome email."""
    signup = _pending(config, store, token, visit)
    if isinstance(signup, Page):
        return signup
    if signup.confirmed:  # a replay: nothing changes (not even after a later unsubscribe)
        return _subscribed(config, signup, visit, again=True)
    sections = {s.lower(): s for s in config.sections}
    topics = [sections[t.lower()] for t in signup.topics if t.lower() in sections]
    ENROLLER.apply(config.path, Wish(signup.email, signup.name or None, topics, add=True))
    _lift(store, signup.email)
    if not SignupBook(store).confirm(signup, visit.now, visit.client):
        return _subscribed(config, signup, visit, again=True)  # a concurrent POST of the same token won
    log.info("confirmed %s (signup %d from %s)", signup.email, signup.id, signup.source)
    if config.web.welcome:
        who = Subscriber(signup.email, signup.name)
        message = mails.compose(
            config,
            "welcome",
            who,
            visit.now,
            topics=tuple(topics),
            preferences_url=mail.preferences_url(visit.base, visit.secret, signup.email),
        )
        mails.send(config, message, signup.email)
    return _subscribed(config, signup, visit, again=False)


def _subscribed(config: Config, signup: Signup, visit: Visit, *, again: bool) -> Page:
    return Page(
        200,
        "web/subscribed.html.j2",
        {
            "email": signup.email,
            "again": again,
            "preferences_url": preferences_link(signup.email, visit.secret),
        },
    )


def _lift(store: Store, email: str) -> None:
    """Confirming is the reader asking back: an unsubscribe, a bounce or a complaint is lifted.

    Read first, so that the usual case (nothing to lift) writes nothing."""
    if email.lower() in store.suppressed():
        store.unsuppress(email)
    book = BounceBook(store)
    if config_mod.address_key(email) in book.suppressions():
        book.lift(email)


# --------------------------------------------------------------------------- preferences


def preferences_page(config: Config, store: Store, fields: Fields, visit: Visit, saved: str = "") -> Page:
    """GET /preferences?email=...&token=...: name and sections, or unsubscribe."""
    email, token = field(fields, "email").strip(), field(fields, "token").strip()
    if not preferences_ok(visit.secret, email, token):
        return Page(
            403,
            "web/message.html.j2",
            {**_invalid(), "message": "This link is not valid: use the one in your latest email."},
        )
    key = config_mod.address_key(email)
    current = next((s for s in config.subscribers if config_mod.address_key(s.email) == key), None)
    state = "absent" if current is None else "unsubscribed" if email.lower() in store.suppressed() else "active"
    return Page(
        200,
        "web/preferences.html.j2",
        {
            "email": email,
            "token": token,
            "state": state,
            "name": current.name if current else "",
            "chosen": [t.lower() for t in current.topics] if current else [],
            "saved": saved,
            "errors": {},
        },
    )


def save_preferences(config: Config, store: Store, fields: Fields, visit: Visit) -> Page:
    """POST /preferences: action=save (name, topics) or action=unsubscribe."""
    page = preferences_page(config, store, fields, visit)
    if page.status != 200 or page.context["state"] != "active":
        return page
    email = page.context["email"]
    if field(fields, "action") == "unsubscribe":
        store.suppress(email, visit.now, "preferences")
        SignupBook(store).consent(email, "unsubscribed", visit.source, visit.client, visit.now)
        log.info("unsubscribed %s (preferences page)", email)
        return Page(
            200,
            "web/message.html.j2",
            {
                "title": "Unsubscribed",
                "message": f"{email} gets no more emails from {config.newsletter.title}.",
                "link": "subscribe",
                "link_text": "Changed your mind? Subscribe again",
            },
        )
    name = " ".join(field(fields, "name").split())
    sections = {s.lower(): s for s in config.sections}
    topics = list(dict.fromkeys(sections.get(t.strip().lower(), "") for t in fields.get("topics", [])[:100]))
    errors = {}
    if len(name) > MAX_NAME or _CONTROL.search(field(fields, "name").replace("\t", " ")):
        errors["name"] = f"Keep the name to one line of at most {MAX_NAME} characters."
    if "" in topics:
        errors["topics"] = "Choose among the sections listed."
    if errors:
        chosen = [t.lower() for t in fields.get("topics", [])]
        return Page(400, page.template, {**page.context, "name": name, "chosen": chosen, "errors": errors})
    ENROLLER.apply(config.path, Wish(email, name, topics, add=False))
    SignupBook(store).consent(
        email, "preferences: " + (", ".join(topics) or "all sections"), visit.source, visit.client, visit.now
    )
    return Page(
        200, page.template, {**page.context, "name": name, "chosen": [t.lower() for t in topics], "saved": "Saved."}
    )


def preferences_link(email: str, secret: bytes) -> str:
    """The relative link (for pages served under any prefix)."""
    return f"preferences?email={quote(email)}&token={mail.preferences_token(secret, email)}"
