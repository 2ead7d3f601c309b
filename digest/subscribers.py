"""Subscribers in config.toml: list, add, remove, import, prune.

Edits go through `config_edit` (comment-keeping, locked, validated, atomic) and change
nothing but the subscriber entries.

`remove` deletes the entry from the file but keeps the address on the suppression list
of the state database if the reader had unsubscribed, so re-adding them by mistake still
sends nothing; `add --resubscribe` lifts a suppression when a reader asks to come back.
`prune` removes every suppressed (unsubscribed) address from the file.
"""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config as config_mod
from . import config_edit
from .errors import SubscriberError
from .settings import Config, Subscriber
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
    held = Counter(r.status.split()[0] for r in rows if r.status not in ("active", "unsubscribed"))
    why = " (" + ", ".join(f"{n} {status}" for status, n in sorted(held.items())) + ")" if held else ""
    text.append(f"{len(rows)} subscribers, {active} active, {len(rows) - active} unsubscribed{why}")
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
    """The subscriber entries of a config being edited (see config_edit.editing)."""

    def __init__(self, draft: config_edit.Draft) -> None:
        self.draft, self.path, self.config = draft, draft.path, draft.config
        self.keys = [config_mod.address_key(s.email) for s in self.config.subscribers]
        self.known = {key: s.email for key, s in zip(self.keys, self.config.subscribers, strict=True)}

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
        self.draft.append("subscribers", entry)
        self.keys.append(config_mod.address_key(subscriber.email))
        self.known[self.keys[-1]] = subscriber.email

    def delete(self, indexes: set[int]) -> None:
        self.draft.delete("subscribers", indexes)
        for index in sorted(indexes, reverse=True):
            del self.known[self.keys.pop(index)]


@contextmanager
def _editing(path: Path) -> Iterator[_Draft]:
    with config_edit.editing(path) as draft:
        yield _Draft(draft)
