"""The exceptions a user can meet, under one root.

    DigestError                 anything the CLI prints as one line `Error: ...`
     +-- ConfigError            config.toml is missing, unreadable or invalid
     +-- StateError             the state database is unusable, locked or too new
     |    +-- LockedError       another `digest` process holds the state lock
     +-- FetchError             one feed could not be fetched (contained per feed)
     +-- ParseError             one feed could not be parsed (contained per feed)
     +-- RenderError            a template is missing or broken
     +-- MailError              the mail transport failed as a whole
     +-- ConfigEditError        an edit of config.toml was refused (nothing written)
          +-- SubscriberError   a subscriber edit was refused

Per-feed and per-recipient errors are recorded and reported, not raised to the user.
"""

from __future__ import annotations


class DigestError(Exception):
    """Root: the message is what the user sees, so it says what, where and what to do."""


class ConfigError(DigestError):
    pass


class StateError(DigestError):
    pass


class LockedError(StateError):
    pass


class FetchError(DigestError):
    pass


class ParseError(DigestError):
    pass


class RenderError(DigestError):
    pass


class MailError(DigestError):
    pass


class ConfigEditError(DigestError):
    pass


class SubscriberError(ConfigEditError):
    pass
