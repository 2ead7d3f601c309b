"""config.toml -> one frozen, validated `Config`.

Everything is checked once, here, and every problem is reported at once with the file
and the key path (`config.toml: feeds[2].url: ...`), because a mailer that silently falls
back to a default sends the wrong mail.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tomli as tomllib  # the stdlib's tomllib as a compiled wheel: 3x faster on 100,000 subscribers

from .errors import ConfigError
from .settings import (
    BounceSettings,
    Config,
    DeliverySettings,
    FeedSpec,
    FetchSettings,
    GroupingSettings,
    NewsletterSettings,
    ScheduleSettings,
    SmtpSettings,
    Subscriber,
    WebSettings,
)

DEFAULT_PATH = Path("config.toml")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN_ADDRESS = re.compile(rf"({_ATOM}(?:\.{_ATOM})*)@((?:{_LABEL}\.)+[A-Za-z]{{2,63}})")
# email_validator's special-use names, and labels like "ab--" (R-LDH, Punycode): left to it
_NOT_PLAIN_DOMAIN = re.compile(r"(?:^|\.)(?:..--|(?:arpa|invalid|local|localhost|onion|test)$)", re.IGNORECASE)
_CONTROL = re.compile("[\x00-\x1f\x7f\u2028\u2029]")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

Check = Callable[[Any], Any]
"""A field check: returns the converted value or raises ValueError with the reason."""


def resolve_path(cli_value: str | os.PathLike[str] | None) -> Path:
    """`--config`, else `$DIGEST_CONFIG`, else `./config.toml`."""
    if cli_value:
        return Path(cli_value)
    env = os.environ.get("DIGEST_CONFIG")
    return Path(env) if env else DEFAULT_PATH


# --------------------------------------------------------------------------- checks


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_kind(value)}")
    return value


def _line(value: Any) -> str:
    text = _str(value)
    if _CONTROL.search(text):
        raise ValueError("must be one line without control characters")
    return text


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_kind(value)}")
    return value


def _int(lo: int, hi: int) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {_kind(value)}")
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value

    return check


def _num(lo: float, hi: float) -> Check:
    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {_kind(value)}")
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return float(value)

    return check


def _duration(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    match = _DURATION.match(value) if isinstance(value, str) else None
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f'expected a duration like "30m" or "1h" (number with s, m, h or d), got {value!r}')
    return float(match.group(1)) * _UNITS[match.group(2)]


def _choice(*options: str) -> Check:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError(f"must be one of {', '.join(map(repr, options))}, got {value!r}")
        return str(value)

    return check


def _hhmm(value: Any) -> str:
    if not isinstance(value, str) or not _HHMM.match(value):
        raise ValueError(f'expected a time "HH:MM" (24 h), got {value!r}')
    return value


def _timezone(value: Any) -> str:
    name = _str(value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like 'Europe/Paris')") from None
    return name


def check_email(value: Any) -> str:
    """Syntax only: no DNS at run time (a digest must not depend on resolvers).

    Plain ASCII addresses are checked here; anything else (IDNA, quoted local parts, odd
    labels) goes to email_validator, whose import costs a cron-run command ~40 ms.
    """
    text = _str(value).strip()
    plain = _plain_address(text)
    if plain is not None:
        return plain
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address {text!r}: {exc}") from None


def _plain_address(text: str) -> str | None:
    """`text` normalised as email_validator would (domain lower-cased), if it is a plain
    dot-atom address that email_validator accepts; None when only it can decide."""
    match = _PLAIN_ADDRESS.fullmatch(text)
    if match is None or len(text) > 254 or len(match.group(1)) > 64:
        return None
    domain = match.group(2).lower()
    if len(domain) > 253 or _NOT_PLAIN_DOMAIN.search(domain):
        return None
    return f"{match.group(1)}@{domain}"


def address_key(email: str) -> str:
    """Identity of an address: the local part as written (RFC 5321 lets it be case-sensitive),
    the domain lower-cased. Duplicates are refused on this key."""
    local, _, domain = email.strip().rpartition("@")
    return f"{local}@{domain.lower()}"


def _mailbox(value: Any) -> str:
    """`addr@host` or `Name <addr@host>`."""
    text = _line(value)
    match = re.match(r"^\s*(.*?)\s*<([^<>]+)>\s*$", text)
    check_email(match.group(2) if match else text)
    return text


def _url(value: Any) -> str:
    text = _line(value).rstrip("/")
    if text and not re.match(r"^https?://[^\s/]+", text):
        raise ValueError(f"expected an http(s) URL, got {text!r}")
    return text


def _proxy(value: Any) -> str:
    """"" (no proxy, whatever the environment says) or http://[user:password@]host[:port]."""
    text = _line(value).strip()
    if text and not re.match(r"^http://[^\s/]+/?$", text):
        raise ValueError(f'expected "" or an http://host:port proxy (https goes through its CONNECT), got {text!r}')
    return text


def _hosts(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("expected a list of host names")
    return tuple(v.lower() for v in value)


def _weekdays(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or any(str(v).lower()[:3] not in WEEKDAYS for v in value):
        raise ValueError(f"expected a list of weekdays from {', '.join(WEEKDAYS)}")
    return tuple(str(v).lower()[:3] for v in value)


def _listen(value: Any) -> str:
    text = _str(value)
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f'expected "HOST:PORT", got {text!r}')
    return text


def _origins(value: Any) -> tuple[str, ...]:
    """Web origins as browsers send them in `Origin:`: scheme://host[:port], no path."""
    items = _list(value)
    for item in items:
        if not isinstance(item, str) or not re.match(r"^https?://[^\s/]+$", item.rstrip("/")):
            raise ValueError(f'expected origins like "https://www.example.org" (no path), got {item!r}')
    return tuple(item.rstrip("/").lower() for item in items)


def _envname(value: Any) -> str:
    text = _str(value)
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", text):
        raise ValueError(f"expected an environment variable name, got {text!r}")
    return text


def _return_path(address: str) -> str:
    if "+" in address.rpartition("@")[0]:
        raise ValueError(f"{address!r}: no '+' in the local part: digest adds +TOKEN itself (VERP)")
    return address


def _imap_url(text: str) -> str:
    """imap[s]://user@host[:port][/MAILBOX]: checked here so `digest bounces` never fails on a typo."""
    match = re.match(r"^imaps?://([^@/\s]+)@([^/:\s]+)(?::(\d{1,5}))?(?:/(.*))?$", text)
    if not match:
        raise ValueError(f'expected "imaps://user@host/INBOX" (imap:// for no TLS), got {text!r}')
    return text


def _kind(value: Any) -> str:
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }.get(type(value), type(value).__name__)


# --------------------------------------------------------------------------- schema

# table -> {toml key: (dataclass field, check)}
_TABLES: dict[str, dict[str, tuple[str, Check]]] = {
    "newsletter": {
        "title": ("title", _line),
        "tagline": ("tagline", _line),
        "from": ("sender", _mailbox),
        "reply_to": ("reply_to", _mailbox),
        "base_url": ("base_url", _url),
        "timezone": ("timezone", _timezone),
        "max_stories": ("max_stories", _int(1, 1000)),
        "subject": ("subject", _line),
        "postal_address": ("postal_address", _line),
        "unsubscribe_mailto": ("unsubscribe_mailto", check_email),
        "window": ("window", _duration),
        "templates": ("templates", _str),
    },
    "schedule": {
        "send_at": ("send_at", _hhmm),
        "poll_every": ("poll_every", _duration),
        "send_if_empty": ("send_if_empty", _bool),
        "weekdays": ("weekdays", _weekdays),
        "catch_up_grace": ("catch_up_grace", _duration),
    },
    "state": {"path": ("path", _str)},
    "fetch": {
        "timeout": ("timeout", _num(0.1, 600)),
        "max_bytes": ("max_bytes", _int(1024, 1 << 30)),
        "allow_hosts": ("allow_hosts", _hosts),
        "concurrency": ("concurrency", _int(1, 512)),
        "per_host_delay": ("per_host_delay", _num(0, 60)),
        "max_entries": ("max_entries", _int(1, 10000)),
        "max_redirects": ("max_redirects", _int(0, 5)),
        "user_agent": ("user_agent", _line),
        "proxy": ("proxy", _proxy),
    },
    "grouping": {"threshold": ("threshold", _num(0.0, 1.0))},
    "delivery": {"transport": ("transport", _choice("maildir", "smtp")), "maildir": ("maildir", _str)},
    "smtp": {
        "host": ("host", _line),
        "port": ("port", _int(1, 65535)),
        "security": ("security", _choice("none", "starttls", "tls")),
        "username": ("username", _line),
        "password_env": ("password_env", _envname),
        "connections": ("connections", _int(1, 64)),
        "rate_per_second": ("rate_per_second", _num(0, 100000)),
        "timeout": ("timeout", _num(1, 3600)),
        "max_retry_hours": ("max_retry_hours", _num(0, 24 * 30)),
    },
    "web": {
        "listen": ("listen", _listen),
        "secret_env": ("secret_env", _envname),
        "signup_per_client_hour": ("signup_per_client_hour", _int(0, 100000)),
        "confirm_email_interval": ("confirm_email_interval", lambda v: 0.0 if v == 0 else _duration(v)),
        "max_body": ("max_body", _int(1024, 1 << 20)),
        "welcome": ("welcome", _bool),
        "embed_origins": ("embed_origins", lambda v: _origins(v)),
    },
    "bounces": {
        "return_path": ("return_path", lambda v: _return_path(check_email(v))),
        "imap": ("imap", lambda v: _imap_url(_line(v))),
        "imap_password_env": ("imap_password_env", _envname),
        "maildir": ("maildir", _str),
        "mbox": ("mbox", _str),
    },
}
_FEED_KEYS: dict[str, tuple[str, Check]] = {
    "name": ("name", _line),
    "url": ("url", _str),
    "section": ("section", _line),
    "priority": ("priority", _int(-1000, 1000)),
}
_SUBSCRIBER_KEYS: dict[str, tuple[str, Check]] = {
    "email": ("email", check_email),
    "name": ("name", _line),
    "topics": ("topics", lambda v: tuple(_line(t) for t in _list(v))),
}


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {_kind(value)}")
    return value


class _Problems:
    """Collects every problem so the user fixes the file in one go."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[str] = []

    def add(self, key: str, reason: str) -> None:
        self.items.append(f"{self.path}: {key}: {reason}")

    def table(self, data: Mapping[str, Any], prefix: str, schema: dict[str, tuple[str, Check]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in data.items():
            if key not in schema:
                self.add(f"{prefix}.{key}", f"unknown key (known: {', '.join(schema)})")
                continue
            name, check = schema[key]
            try:
                out[name] = check(value)
            except ValueError as exc:
                self.add(f"{prefix}.{key}", str(exc))
        return out


def load(path: Path, *, require_feeds: bool = True) -> Config:
    """Read and validate; raise one ConfigError naming every problem.

    A config without feeds is valid to edit (`digest init` writes one, `digest feeds add`
    fills it) but not to run: `require_feeds` says which.
    """
    config = _load(path)
    if require_feeds and not config.feeds:
        raise ConfigError(f"{path}: feeds: no [[feeds]] configured: add one with `digest feeds add URL`")
    return config


def _load(path: Path) -> Config:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (pass --config FILE or set DIGEST_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return from_dict(raw, path)


def from_dict(raw: Mapping[str, Any], path: Path) -> Config:
    problems = _Problems(path)
    base = path.resolve().parent
    tables: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        if key in _TABLES:
            if not isinstance(value, dict):
                problems.add(key, "expected a table")
                continue
            tables[key] = problems.table(value, key, _TABLES[key])
        elif key not in ("feeds", "subscribers"):
            problems.add(key, f"unknown table (known: {', '.join([*_TABLES, 'feeds', 'subscribers'])})")
    feeds = _feeds(raw.get("feeds", []), problems, base)
    subscribers = _subscribers(raw.get("subscribers", []), problems, {f.section for f in feeds})
    if problems.items:
        raise ConfigError(_joined(problems.items))
    news = tables.get("newsletter", {})
    templates = news.pop("templates", None)
    state = tables.get("state", {})
    delivery = tables.get("delivery", {})
    return Config(
        path=path,
        newsletter=NewsletterSettings(**news),
        schedule=ScheduleSettings(**tables.get("schedule", {})),
        state_path=base / state.get("path", ".digest/state.sqlite3"),
        fetch=FetchSettings(**tables.get("fetch", {})),
        grouping=GroupingSettings(**tables.get("grouping", {})),
        delivery=DeliverySettings(
            transport=delivery.get("transport", "maildir"), maildir=base / delivery.get("maildir", "outbox")
        ),
        smtp=SmtpSettings(**tables.get("smtp", {})),
        web=WebSettings(**tables.get("web", {})),
        feeds=feeds,
        subscribers=subscribers,
        templates_dir=base / templates if templates else None,
        bounces=_bounce_settings(tables.get("bounces", {}), base),
    )


def _bounce_settings(table: dict[str, Any], base: Path) -> BounceSettings:
    """Relative Maildir / mbox paths resolve against the config file's folder."""
    paths: dict[str, Path] = {key: base / table[key] for key in ("maildir", "mbox") if key in table}
    return BounceSettings(**{**table, **paths})


def _joined(items: list[str]) -> str:
    """One line for the user: the first problem, and how many more follow."""
    if len(items) == 1:
        return items[0]
    return f"{len(items)} problems in config: " + "; ".join(items)


def _feeds(value: Any, problems: _Problems, base: Path) -> tuple[FeedSpec, ...]:
    if not isinstance(value, list):
        problems.add("feeds", "expected [[feeds]] entries")
        return ()
    feeds: list[FeedSpec] = []
    names: set[str] = set()
    for i, item in enumerate(value):
        key = f"feeds[{i}]"
        if not isinstance(item, dict):
            problems.add(key, "expected a table")
            continue
        fields = problems.table(item, key, _FEED_KEYS)
        for required in ("name", "url"):
            if required not in item:
                problems.add(f"{key}.{required}", "missing")
        if "name" not in fields or "url" not in fields:
            continue
        url = fields["url"]
        if "://" in url and not url.startswith(("http://", "https://")):
            problems.add(f"{key}.url", f"only http(s) URLs or local paths are allowed, got {url!r}")
            continue
        if "://" not in url:
            local = base / url
            if not local.is_file():
                problems.add(f"{key}.url", f"local feed file not found: {local}")
                continue
            fields["url"] = str(local)
        if fields["name"] in names:
            problems.add(f"{key}.name", f"duplicate feed name {fields['name']!r}")
        names.add(fields["name"])
        feeds.append(FeedSpec(**fields))
    return tuple(feeds)


def _subscribers(value: Any, problems: _Problems, sections: set[str]) -> tuple[Subscriber, ...]:
    if not isinstance(value, list):
        problems.add("subscribers", "expected [[subscribers]] entries")
        return ()
    subs: list[Subscriber] = []
    seen: set[str] = set()
    for i, item in enumerate(value):
        key = f"subscribers[{i}]"
        if not isinstance(item, dict):
            problems.add(key, "expected a table")
            continue
        fields = problems.table(item, key, _SUBSCRIBER_KEYS)
        if "email" not in item:
            problems.add(f"{key}.email", "missing")
        if "email" not in fields:
            continue
        identity = address_key(fields["email"])
        if identity in seen:
            problems.add(f"{key}.email", f"duplicate subscriber {fields['email']!r}")
        seen.add(identity)
        unknown = [t for t in fields.get("topics", ()) if t not in sections]
        if unknown and sections:
            problems.add(f"{key}.topics", f"unknown topic {unknown[0]!r} (sections: {', '.join(sorted(sections))})")
        subs.append(Subscriber(**fields))
    return tuple(subs)
