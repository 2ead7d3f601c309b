"""Configuration values: the validated config.toml, as immutable named tuples.

Apart from the stage values in digest/models.py (which re-exports these), and NamedTuple
rather than frozen dataclasses, because every command creates these classes at start-up:
eleven frozen dataclasses took 17 ms of `digest status` (each generates and compiles six
methods), these take 7 ms. Build changed copies with `_replace`.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class FeedSpec(NamedTuple):
    """A configured source. `url` is an http(s) URL or an absolute local path."""

    name: str
    url: str
    section: str = "News"
    priority: int = 0

    @property
    def is_local(self) -> bool:
        return not self.url.startswith(("http://", "https://"))


class Subscriber(NamedTuple):
    email: str
    name: str = ""
    topics: tuple[str, ...] = ()


class NewsletterSettings(NamedTuple):
    title: str = "Daily Digest"
    tagline: str = ""
    sender: str = "digest@localhost"
    reply_to: str = ""
    base_url: str = ""
    timezone: str = "UTC"
    max_stories: int = 40
    subject: str = "{title}: {date}: {top_story}"
    postal_address: str = ""
    unsubscribe_mailto: str = ""
    window: float = 48 * 3600.0
    """Seconds: on a feed's first poll, only entries this close to its newest are news."""


class ScheduleSettings(NamedTuple):
    send_at: str = "07:00"
    poll_every: float = 3600.0
    send_if_empty: bool = False
    weekdays: tuple[str, ...] = ()
    catch_up_grace: float = 6 * 3600.0


class FetchSettings(NamedTuple):
    timeout: float = 20.0
    max_bytes: int = 10 * 1024 * 1024
    allow_hosts: tuple[str, ...] = ()
    concurrency: int = 128
    """Feeds fetched at once: sockets are cheap and most of a poll is waiting (per_host_delay spaces one host)."""
    per_host_delay: float = 0.0
    max_redirects: int = 5
    max_entries: int = 200
    user_agent: str = "digest/0.1 (+https://github.com/digest/digest; daily newsletter)"
    proxy: str | None = None
    """http://[user:pass@]host:port for every feed; "" for none; None: from HTTPS_PROXY/HTTP_PROXY/NO_PROXY."""


class GroupingSettings(NamedTuple):
    threshold: float = 0.2


class SmtpSettings(NamedTuple):
    host: str = "localhost"
    port: int = 25
    security: str = "starttls"
    username: str = ""
    password_env: str = "DIGEST_SMTP_PASSWORD"  # noqa: S105 - a variable name, not a password
    connections: int = 2
    rate_per_second: float = 0.0
    timeout: float = 60.0
    max_retry_hours: float = 0.0
    """0 means: retry until the next edition."""


class DeliverySettings(NamedTuple):
    transport: str = "maildir"
    maildir: Path = Path("outbox")


class WebSettings(NamedTuple):
    listen: str = "127.0.0.1:8025"
    secret_env: str = "DIGEST_SECRET"  # noqa: S105 - a variable name
    signup_per_client_hour: int = 5
    """Signups accepted per client address (hashed) per hour; more get a 429 and no email."""
    confirm_email_interval: float = 600.0
    """Seconds: at most one confirmation email per address in this interval."""
    max_body: int = 16 * 1024
    welcome: bool = True
    """Send a welcome email once a subscription is confirmed."""
    embed_origins: tuple[str, ...] = ()
    """Other sites (scheme://host[:port]) whose pages may embed the signup form and POST to it."""


class BounceSettings(NamedTuple):
    """[bounces]: where bounces come back (VERP return path) and where digest reads them."""

    return_path: str = ""
    imap: str = ""
    imap_password_env: str = "DIGEST_IMAP_PASSWORD"  # noqa: S105 - a variable name
    maildir: Path | None = None
    mbox: Path | None = None


class Config(NamedTuple):
    path: Path
    newsletter: NewsletterSettings
    schedule: ScheduleSettings
    state_path: Path
    fetch: FetchSettings
    grouping: GroupingSettings
    delivery: DeliverySettings
    smtp: SmtpSettings
    web: WebSettings
    feeds: tuple[FeedSpec, ...]
    subscribers: tuple[Subscriber, ...]
    templates_dir: Path | None = None
    bounces: BounceSettings = BounceSettings()

    @property
    def sections(self) -> tuple[str, ...]:
        """Configured sections in first-seen feed order: the order of the email."""
        return tuple(dict.fromkeys(f.section for f in self.feeds))
