"""Where bounce messages are read from: a Maildir, an mbox, standard input, an IMAP mailbox.

Each source yields `Incoming` messages, at most `MAX_BYTES` (+1, to tell "too large") of
each, and never deletes anything: files stay where they are (the state database
remembers what was processed), IMAP messages get `\\Seen` plus the `$DigestProcessed`
keyword once their outcome is committed (`done`), and are not fetched again.
"""

from __future__ import annotations

import mailbox
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

from .errors import DigestError
from .settings import BounceSettings

MAX_BYTES = 1 << 20
KEYWORD = "$DigestProcessed"
IMAP_BATCH = 100


@dataclass(frozen=True)
class Incoming:
    raw: bytes
    truncated: bool
    where: str
    done: Callable[[], None] = field(default=lambda: None)
    """Called after the message's outcome is committed (IMAP: flag it)."""


def configured(settings: BounceSettings) -> list[Iterator[Incoming]]:
    """The [bounces] sources of the config (Maildir, mbox, IMAP), in that order; [] if none."""
    sources = []
    if settings.maildir is not None:
        sources.append(from_maildir(settings.maildir))
    if settings.mbox is not None:
        sources.append(from_mbox(settings.mbox))
    if settings.imap:
        sources.append(from_imap(settings.imap, settings.imap_password_env))
    return sources


def _capped(raw: bytes, where: str) -> Incoming:
    return Incoming(raw[:MAX_BYTES], len(raw) > MAX_BYTES, where)


def from_maildir(folder: Path) -> Iterator[Incoming]:
    if not (folder / "cur").is_dir() and not (folder / "new").is_dir():
        raise DigestError(f"{folder}: not a Maildir (no new/ or cur/ folder); check --maildir or [bounces] maildir")
    for sub in ("cur", "new"):
        try:
            names = sorted(os.listdir(folder / sub))
        except FileNotFoundError:
            continue
        for name in names:
            if name.startswith("."):
                continue
            try:
                with open(folder / sub / name, "rb") as handle:
                    raw = handle.read(MAX_BYTES + 1)
            except (FileNotFoundError, IsADirectoryError):  # moved by a mail client meanwhile
                continue
            yield _capped(raw, f"{sub}/{name}")


def from_mbox(path: Path) -> Iterator[Incoming]:
    if not path.is_file():
        raise DigestError(f"{path}: no such mbox file; check --mbox or [bounces] mbox")
    box = mailbox.mbox(path, create=False)
    try:
        for key in box.iterkeys():
            handle = box.get_file(key)
            try:
                raw = handle.read(MAX_BYTES + 1)
            finally:
                handle.close()
            yield _capped(raw, f"{path.name}#{key}")
    finally:
        box.close()


def from_stream(stream: IO[bytes], where: str = "stdin") -> Iterator[Incoming]:
    """One message (an MTA pipe transport): the rest beyond the cap is drained, not kept."""
    raw = stream.read(MAX_BYTES + 1)
    truncated = len(raw) > MAX_BYTES
    while truncated and stream.read(1 << 16):
        pass
    yield Incoming(raw[:MAX_BYTES], truncated, where)


def from_imap(url: str, password_env: str, *, timeout: float = 60.0) -> Iterator[Incoming]:
    """imaps://user@host[:port]/MAILBOX; only messages without the KEYWORD, read with BODY.PEEK."""
    from imapclient import IMAPClient
    from imapclient.exceptions import IMAPClientError

    parts = urlsplit(url)
    password = os.environ.get(password_env)
    if not password:
        raise DigestError(f"[bounces] imap is set but ${password_env} is empty: export the IMAP password")
    secure = parts.scheme == "imaps"
    folder = unquote(parts.path.lstrip("/")) or "INBOX"
    where = f"{parts.hostname}/{folder}"
    try:
        client = IMAPClient(parts.hostname or "", port=parts.port or (993 if secure else 143), ssl=secure,
                            timeout=timeout)
    except (OSError, IMAPClientError) as exc:
        raise DigestError(f"cannot connect to IMAP {parts.hostname}: {exc}") from exc
    try:
        client.login(unquote(parts.username or ""), password)
        client.select_folder(folder)
        uids: list[int] = client.search(["UNKEYWORD", KEYWORD])
        for start in range(0, len(uids), IMAP_BATCH):
            batch = uids[start : start + IMAP_BATCH]
            fetched: dict[int, dict[bytes, Any]] = client.fetch(batch, [f"BODY.PEEK[]<0.{MAX_BYTES + 1}>"])
            for uid in batch:
                data = fetched.get(uid, {})
                raw = next((v for k, v in data.items() if k.startswith(b"BODY[]")), b"") or b""
                yield Incoming(raw[:MAX_BYTES], len(raw) > MAX_BYTES, f"{where}#{uid}", _flagger(client, uid))
    except IMAPClientError as exc:
        raise DigestError(f"IMAP {where}: {exc}") from exc
    finally:
        try:
            client.logout()
        except (OSError, IMAPClientError):
            client.shutdown()


def _flagger(client: Any, uid: int) -> Callable[[], None]:
    def done() -> None:
        client.add_flags([uid], [b"\\Seen", KEYWORD.encode()])

    return done
