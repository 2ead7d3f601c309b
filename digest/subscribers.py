"""Subscribers in config.toml: list, add, remove, import, prune.

People edit config.toml by hand, so commands edit it with tomlkit and change nothing but
the subscriber entries: every comment, blank line and key order elsewhere stays byte for
byte. A write is all or nothing: the new text is validated with the real loader first,
then written to a temporary file in the same folder, fsynced and renamed over the old one
(file mode kept), so a crash leaves either the old config or the new one, never half.

`remove` deletes the entry from the file but keeps the address on the suppression list
of the state database if the reader had unsubscribed, so re-adding them by mistake still
sends nothing; `add --resubscribe` lifts a suppression when a reader asks to come back.
`prune` removes every suppressed (unsubscribed) address from the file.
"""

from __future__ import annotations

import csv
import fcntl
import io
import os
import re
import stat
import tempfile
import tomllib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import AoT, Array, Comment, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

from . import config as config_mod
from .errors import ConfigError, SubscriberError
from .models import Config, Subscriber
from .store import Store

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]")
MAX_CSV_BYTES = 20 * 1024 * 1024


@dataclass(frozen=True)
class Row:
    """One line of `digest subscribers list`."""

    email: str
    name: str
    topics: tuple[str, ...]
    status: str  # "active" | "unsubscribed"


@dataclass
class ImportReport:
    """What `import` did, line by line, so the user can fix the rejected rows."""

    added: list[str] = field(default_factory=list)
    duplicates: list[tuple[int, str]] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"line {n}: skipped: {why}" for n, why in self.duplicates]
        out += [f"line {n}: rejected: {why}" for n, why in self.rejected]
        out.append(
            f"{len(self.added)} added, {len(self.duplicates)} skipped as duplicate, "
            f"{len(self.rejected)} rejected as invalid"
        )
        return out


# --------------------------------------------------------------------------- reading


def suppressed_addresses(config: Config) -> set[str]:
    """Lower-cased unsubscribed addresses; an absent state database means none (nothing created)."""
    if not config.state_path.exists():
        return set()
    store = Store.read_only(config.state_path)
    try:
        return store.suppressed()
    finally:
        store.close()


def listing(config: Config, suppressed: set[str]) -> list[Row]:
    return [
        Row(s.email, s.name, s.topics, "unsubscribed" if s.email.lower() in suppressed else "active")
        for s in config.subscribers
    ]


def format_table(rows: Sequence[Row]) -> str:
    """A plain aligned table (no colour, no box drawing: it ends up in scripts and mail)."""
    table = [("EMAIL", "NAME", "TOPICS", "STATUS")]
    table += [(r.email, r.name, ", ".join(r.topics) or "(all)", r.status) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(3)]
    text = [
        "  ".join([*(cell.ljust(w) for cell, w in zip(line[:3], widths, strict=True)), line[3]]) for line in table
    ]
    active = sum(r.status == "active" for r in rows)
    text.append(f"{len(rows)} subscribers, {active} active, {len(rows) - active} unsubscribed")
    return "\n".join(text)


# --------------------------------------------------------------------------- commands


def add(path: Path, email: str, name: str = "", topics: Sequence[str] = (), *, exist_ok: bool = False) -> Subscriber:
    """Append one [[subscribers]] entry; refuses invalid, duplicate or unknown-topic input.

    With `exist_ok` an address already in the file is left as it is (for --resubscribe).
    """
    with _editing(path) as draft:
        subscriber = draft.checked(email, name, topics)
        duplicate = draft.duplicate_of(subscriber.email)
        if duplicate and exist_ok:
            return draft.config.subscribers[draft.index_of(subscriber.email) or 0]
        if duplicate:
            raise SubscriberError(
                f"{path}: {subscriber.email!r} is already subscribed (as {duplicate!r}); nothing changed"
            )
        draft.append(subscriber)
    return subscriber


def remove(path: Path, emails: Sequence[str]) -> list[str]:
    """Delete the entries of these addresses (all must exist, or nothing changes)."""
    with _editing(path) as draft:
        indexes = []
        for email in emails:
            index = draft.index_of(_valid_address(email))
            if index is None:
                raise SubscriberError(f"{path}: no subscriber {email.strip()!r}; nothing changed")
            indexes.append(index)
        removed = [draft.config.subscribers[i].email for i in sorted(set(indexes))]
        draft.delete(set(indexes))
    return removed


def prune(path: Path, suppressed: set[str]) -> list[str]:
    """Remove every unsubscribed address from the file; returns the addresses removed."""
    with _editing(path) as draft:
        indexes = {i for i, s in enumerate(draft.config.subscribers) if s.email.lower() in suppressed}
        draft.delete(indexes)
    return [s.email for i, s in enumerate(draft.config.subscribers) if i in indexes]


def import_csv(path: Path, csv_path: Path) -> ImportReport:
    """Add the rows of `email,name,topics` (topics split on ; or |); one write for all rows."""
    report = ImportReport()
    rows = _csv_rows(csv_path)
    with _editing(path) as draft:
        for line, cells in rows:
            if len(cells) > 3:
                report.rejected.append((line, f"expected at most 3 columns (email,name,topics), got {len(cells)}"))
                continue
            email, name, topics = (*cells, "", "")[:3]
            try:
                subscriber = draft.checked(email, name, [t for t in re.split(r"[;|]", topics) if t.strip()])
            except SubscriberError as exc:
                report.rejected.append((line, str(exc)))
                continue
            duplicate = draft.duplicate_of(subscriber.email)
            if duplicate:
                report.duplicates.append((line, f"{subscriber.email} is already subscribed (as {duplicate})"))
                continue
            draft.append(subscriber)
            report.added.append(subscriber.email)
    return report


def _csv_rows(csv_path: Path) -> list[tuple[int, list[str]]]:
    try:
        if csv_path.stat().st_size > MAX_CSV_BYTES:
            raise SubscriberError(f"{csv_path}: larger than {MAX_CSV_BYTES >> 20} MiB; split it")
        text = csv_path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise SubscriberError(f"{csv_path}: cannot read the CSV file ({exc}); it must be UTF-8 text") from exc
    reader = csv.reader(io.StringIO(text, newline=""))
    rows: list[tuple[int, list[str]]] = []
    first = True
    try:
        for cells in reader:
            if not any(c.strip() for c in cells):
                continue
            header, first = first and cells[0].strip().lower() == "email", False
            if not header:
                rows.append((reader.line_num, [c.strip() for c in cells]))
    except csv.Error as exc:
        raise SubscriberError(f"{csv_path}: line {reader.line_num}: not valid CSV: {exc}") from exc
    return rows


def _valid_address(email: str) -> str:
    try:
        return config_mod.check_email(email)
    except ValueError as exc:
        raise SubscriberError(str(exc)) from None


# --------------------------------------------------------------------------- editing


class _Draft:
    """The parsed document being edited plus the validated config it came from."""

    def __init__(self, path: Path, config: Config, doc: TOMLDocument) -> None:
        self.path, self.config, self.doc = path, config, doc
        self.keys = [config_mod.address_key(s.email) for s in config.subscribers]
        self.known = {key: s.email for key, s in zip(self.keys, config.subscribers, strict=True)}
        self.changed = False

    def checked(self, email: str, name: str, topics: Sequence[str]) -> Subscriber:
        address = _valid_address(email)
        name = name.strip()
        if _CONTROL.search(name):
            raise SubscriberError(f"name of {address!r} must be one line without control characters")
        sections = {s.lower(): s for s in self.config.sections}
        chosen: list[str] = []
        for topic in topics:
            section = sections.get(topic.strip().lower())
            if section is None:
                valid = ", ".join(self.config.sections)
                raise SubscriberError(f"unknown topic {topic.strip()!r} for {address!r}: valid topics are {valid}")
            if section not in chosen:
                chosen.append(section)
        return Subscriber(address, name, tuple(chosen))

    def duplicate_of(self, email: str) -> str | None:
        """The address already listed under the same identity, if any."""
        return self.known.get(config_mod.address_key(email))

    def index_of(self, email: str) -> int | None:
        key = config_mod.address_key(email)
        return self.keys.index(key) if key in self.known else None

    def append(self, subscriber: Subscriber) -> None:
        entry: dict[str, Any] = {"email": subscriber.email}
        if subscriber.name:
            entry["name"] = subscriber.name
        if subscriber.topics:
            entry["topics"] = list(subscriber.topics)
        _append_entry(self.doc, entry)
        self.keys.append(config_mod.address_key(subscriber.email))
        self.known[self.keys[-1]] = subscriber.email
        self.changed = True

    def delete(self, indexes: set[int]) -> None:
        for index in sorted(indexes, reverse=True):
            _delete_entry(self.doc, index)
            del self.known[self.keys.pop(index)]
            self.changed = True


@contextmanager
def _editing(path: Path) -> Iterator[_Draft]:
    """Read, let the caller edit, then validate and replace atomically (only if changed)."""
    target = Path(os.path.realpath(path))
    with _folder_lock(target.parent):
        original = _read(path, target)
        try:
            config = config_mod.from_dict(tomllib.loads(original), path)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}; fix the file first") from exc
        draft = _Draft(path, config, tomlkit.parse(original))
        yield draft
        if not draft.changed:
            return
        text = tomlkit.dumps(draft.doc)
        try:
            config_mod.from_dict(tomllib.loads(text), path)
        except (tomllib.TOMLDecodeError, ConfigError) as exc:
            raise SubscriberError(f"refused: the edited config would not load ({exc}); {path} unchanged") from exc
        if _read(path, target) != original:
            raise SubscriberError(f"{path} changed while it was being edited; nothing written, try again")
        write_atomic(target, text.encode("utf-8"))


def _read(path: Path, target: Path) -> str:
    try:
        return target.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (pass --config FILE or set DIGEST_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from exc


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Serialises our own concurrent edits (two `add`s must not lose one); creates no file."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, *, before_replace: Callable[[Path], None] | None = None) -> None:
    """Temp file in the same folder, fsync, keep the mode, rename over, fsync the folder."""
    mode = stat.S_IMODE(path.stat().st_mode) if path.exists() else 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        if before_replace:
            before_replace(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


# --------------------------------------------------------------------------- tomlkit surgery
#
# tomlkit keeps the blank lines and comments that precede a table header at the end of the
# previous table's body. So a new entry takes over the last entry's trailing lines (they
# introduce whatever follows the subscribers), and a deleted entry hands its trailing lines
# back to the entry (or table) before it. Add then remove therefore restores every byte.


def _append_entry(doc: TOMLDocument, entry: dict[str, Any]) -> None:
    """A new [[subscribers]] table after the last one, separated by one blank line."""
    existing = doc.get("subscribers")
    if isinstance(existing, Array):  # subscribers = [{...}, ...] written inline
        inline = tomlkit.inline_table()
        inline.update(entry)
        existing.append(inline)
        return
    table = tomlkit.table()
    for key, value in entry.items():
        table[key] = value
    if isinstance(existing, AoT) and len(existing):
        last = existing[-1]
        for item in _take_trailing(last):
            table.value.append(None, item)
        before = last.as_string()
    else:
        before = tomlkit.dumps(doc)
    table.trivia.indent = "" if not before or before.endswith("\n\n") else "\n" if before.endswith("\n") else "\n\n"
    if isinstance(existing, AoT):
        existing.append(table)
    else:
        doc.append("subscribers", tomlkit.aot())
        doc["subscribers"].append(table)


def _delete_entry(doc: TOMLDocument, index: int) -> None:
    """Delete one entry; the blank lines and comments trailing it stay in the file."""
    entries = doc["subscribers"]
    if isinstance(entries, Array):
        del entries[index]
        return
    assert isinstance(entries, AoT)
    trailing = _take_trailing(entries[index])
    host = entries[index - 1] if index > 0 else _table_before(doc, "subscribers")
    if host is not None:
        gap = _take_trailing(host)  # the lines between the host's keys and the deleted header
        if any(isinstance(item, Comment) for item in gap):  # a heading: keep it
            for item in gap:
                host.value.append(None, item)
            while trailing and isinstance(trailing[0], Whitespace) and host.as_string().endswith("\n\n"):
                trailing.pop(0)  # the heading already ends with a blank line
        for item in trailing:
            host.value.append(None, item)
    if len(entries) == 1:
        del doc["subscribers"]
    else:
        del entries[index]


def _take_trailing(table: Table) -> list[Comment | Whitespace]:
    """Cut the lines after the table's last key, from the first blank line on, out of its body.

    Comments right under the last key (no blank line between) belong to the entry.
    """
    body = table.value.body
    start = len(body)
    while start > 0 and body[start - 1][0] is None and isinstance(body[start - 1][1], Comment | Whitespace):
        start -= 1
    while start < len(body) and not (isinstance(body[start][1], Whitespace) and "\n" in body[start][1].as_string()):
        start += 1
    items = [item for _, item in body[start:] if isinstance(item, Comment | Whitespace)]
    del body[start:]
    return items


def _table_before(doc: TOMLDocument, key: str) -> Table | None:
    """The table whose body precedes `key` in the file (to host lines that must stay)."""
    previous: Table | None = None
    for item_key, item in doc.body:
        if item_key is not None and item_key.key == key:
            return previous
        if isinstance(item, Table):
            previous = item
        elif isinstance(item, AoT) and len(item):
            previous = item[-1]
    return None
