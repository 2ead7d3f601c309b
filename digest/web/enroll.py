"""config.toml edits of the web (confirmations, preferences), batched into one editor session.

Every edit goes through config_edit.editing, the editor of `digest subscribers add`:
locked against other digest processes, validated, written atomically, comments kept. One
edit re-parses and re-writes the whole file (tomlkit, two fsyncs), so 200 readers
confirming at once would queue for seconds. Instead the first request to arrive leads:
it applies every edit queued meanwhile in one session, hands each its outcome, and goes
on until the queue is empty (group commit). If a batch cannot be written, each of its
edits is tried alone, so one bad edit fails only its own request.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import address_key
from ..config_edit import Draft, editing
from ..errors import ConfigEditError, DigestError


@dataclass(frozen=True)
class Wish:
    """One subscriber's entry as a reader asked for it."""

    email: str
    name: str | None  # None: keep the name the entry has
    topics: Sequence[str]  # () means every section
    add: bool  # add the address if it is not listed (a confirmation); else only update


class Enroller:
    """Applies Wishes from concurrent requests; `apply` returns once the file holds them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[Path, Wish, Future[bool]]] = []
        self._leading = False

    def apply(self, path: Path, wish: Wish) -> bool:
        """True if the entry is new. Raises ConfigEditError / ConfigError as the editor does."""
        done: Future[bool] = Future()
        with self._lock:
            self._pending.append((path, wish, done))
            lead, self._leading = not self._leading, True
        while lead:  # the leader writes what the others queued meanwhile
            with self._lock:
                batch, self._pending = self._pending, []
                if not batch:
                    self._leading = False
                    break
            _write(batch)
        return done.result()


def _write(batch: list[tuple[Path, Wish, Future[bool]]]) -> None:
    by_path: dict[Path, list[tuple[Wish, Future[bool]]]] = {}
    for path, wish, done in batch:
        by_path.setdefault(path, []).append((wish, done))
    for path, items in by_path.items():
        try:
            with editing(path) as draft:
                results = _apply(draft, [wish for wish, _ in items])
        except DigestError as exc:
            if len(items) == 1:
                _settle(items[0][1], None, exc)
                continue
            for wish, done in items:  # one at a time: only the bad edit fails
                try:
                    with editing(path) as draft:
                        [result] = _apply(draft, [wish])
                    _settle(done, result, None)
                except DigestError as exc:
                    _settle(done, None, exc)
            continue
        except BaseException as exc:
            for _, done in items:
                _settle(done, None, exc)
            raise
        for (_, done), result in zip(items, results, strict=True):
            _settle(done, result, None)


def _settle(done: Future[bool], result: bool | None, error: BaseException | None) -> None:
    if error is not None:
        done.set_exception(error)
    else:
        done.set_result(bool(result))


def _apply(draft: Draft, wishes: Sequence[Wish]) -> list[bool]:
    keys = [address_key(s.email) for s in draft.config.subscribers]
    sections = {s.lower(): s for s in draft.config.sections}
    added: list[bool] = []
    for wish in wishes:
        topics = [sections[t.lower()] for t in wish.topics if t.lower() in sections]
        key = address_key(wish.email)
        if key in keys:
            values: dict[str, Any] = {"topics": topics or None}
            if wish.name is not None:
                values["name"] = wish.name or None
            draft.update("subscribers", keys.index(key), values)
            added.append(False)
        elif wish.add:
            entry: dict[str, Any] = {"email": wish.email}
            if wish.name:
                entry["name"] = wish.name
            if topics:
                entry["topics"] = topics
            draft.append("subscribers", entry)
            keys.append(key)
            added.append(True)
        else:
            raise ConfigEditError(f"{draft.path}: {wish.email} is no longer a subscriber; nothing changed")
    return added


ENROLLER = Enroller()
"""One per process: the batches of every request of this server."""
