"""`digest feeds add/list/remove`: [[feeds]] in config.toml, edited like subscribers are.

Every write goes through `config_edit.editing` (locked, validated, atomic, every other byte
of the file kept); the health columns come from the state database, read only.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import config_edit
from .errors import ConfigEditError
from .settings import Config, FeedSpec
from .store import Store


@dataclass(frozen=True)
class FeedRow:
    name: str
    section: str
    url: str
    status: str
    """"ok", "never polled", or the last poll's error."""
    entries: int


def add(path: Path, url: str, name: str, section: str | None, priority: int | None) -> FeedSpec:
    """Append one [[feeds]] entry; refuses a name or URL that is already there."""
    with config_edit.editing(path) as draft:
        for feed in draft.config.feeds:
            if feed.name.casefold() == name.casefold():
                raise ConfigEditError(f"a feed named {feed.name!r} is already in {path}; pick another with --name")
            if feed.url == url:
                raise ConfigEditError(f"{url} is already in {path} as {feed.name!r}")
        entry: dict[str, Any] = {"name": name, "url": url}
        if section:
            entry["section"] = section
        if priority is not None:
            entry["priority"] = priority
        draft.append("feeds", entry)
    return FeedSpec(name, url, section or FeedSpec.section, priority or 0)


def remove(path: Path, name: str) -> FeedSpec:
    """Delete the [[feeds]] entry named `name` (its entries stay in the state, unused)."""
    with config_edit.editing(path) as draft:
        feeds = draft.config.feeds
        indexes = {i for i, feed in enumerate(feeds) if feed.name == name}
        if not indexes:
            indexes = {i for i, feed in enumerate(feeds) if feed.name.casefold() == name.casefold()}
        if not indexes:
            known = ", ".join(repr(f.name) for f in feeds) or "none"
            raise ConfigEditError(f"no feed named {name!r} in {path} (feeds: {known})")
        removed = feeds[min(indexes)]
        draft.delete("feeds", indexes)
    return removed


def listing(config: Config) -> list[FeedRow]:
    """Each configured feed with its last poll's outcome and how many entries the state holds."""
    with Store.read_only(config.state_path) as store:
        try:
            polled = {
                name: (error, last_polled)
                for name, error, last_polled in store.db.execute("SELECT name, error, last_polled FROM feeds")
            }
            counts = dict(store.db.execute("SELECT feed, COUNT(*) FROM entries GROUP BY feed").fetchall())
        except sqlite3.Error:  # a state without our tables (never polled) is not an error
            polled, counts = {}, {}
    rows = []
    for feed in config.feeds:
        error, last = polled.get(feed.name, (None, None))
        status = error or ("ok" if last else "never polled")
        rows.append(FeedRow(feed.name, feed.section, feed.url, status, int(counts.get(feed.name, 0))))
    return rows


def format_table(rows: list[FeedRow]) -> str:
    if not rows:
        return "No feeds yet: add one with `digest feeds add URL`."
    width = max(len(r.name) for r in rows)
    section = max(len(r.section) for r in rows)
    lines = [f"{'NAME':<{width}}  {'SECTION':<{section}}  {'ENTRIES':>7}  LAST POLL"]
    lines += [f"{r.name:<{width}}  {r.section:<{section}}  {r.entries:>7}  {r.status}" for r in rows]
    return "\n".join(lines)
