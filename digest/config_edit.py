"""The one editor of config.toml: comment-keeping, locked, validated, atomic.

People edit config.toml by hand, so commands (subscribers, feeds) and the web signup edit it
with tomlkit and change nothing but the entries they touch: every comment, blank line and
key order elsewhere stays byte for byte. A write is all or nothing: the new text is
validated with the real loader first, then written to a temporary file in the same folder,
fsynced and renamed over the old one (file mode kept), so a crash leaves either the old
config or the new one, never half. Every editor holds one lock on the config's folder, so
a `digest subscribers` command and a web confirmation at the same moment both land.
"""

from __future__ import annotations

import fcntl
import os
import stat
import tempfile
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import AoT, Array, Comment, Table, Whitespace
from tomlkit.toml_document import TOMLDocument

from . import config as config_mod
from .errors import ConfigEditError, ConfigError
from .settings import Config


class Draft:
    """The parsed document being edited plus the validated config it came from."""

    def __init__(self, path: Path, config: Config, doc: TOMLDocument) -> None:
        self.path, self.config, self.doc = path, config, doc
        self.changed = False

    def append(self, array: str, entry: dict[str, Any]) -> None:
        """A new `[[array]]` entry after the last one."""
        append_entry(self.doc, array, entry)
        self.changed = True

    def delete(self, array: str, indexes: set[int]) -> None:
        for index in sorted(indexes, reverse=True):
            delete_entry(self.doc, array, index)
            self.changed = True

    def update(self, array: str, index: int, values: dict[str, Any]) -> None:
        """Set (or, with a value of None, remove) keys of one entry in place, keeping its comments."""
        entry = self.doc[array][index]
        for key, value in values.items():
            if value is None:
                if key in entry:
                    del entry[key]
            elif entry.get(key) != value:
                entry[key] = value
            else:
                continue
            self.changed = True


@contextmanager
def editing(path: Path) -> Iterator[Draft]:
    """Read, let the caller edit, then validate and replace atomically (only if changed)."""
    target = Path(os.path.realpath(path))
    with folder_lock(target.parent):
        original = _read(path, target)
        try:
            config = config_mod.from_dict(tomllib.loads(original), path)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}; fix the file first") from exc
        draft = Draft(path, config, tomlkit.parse(original))
        yield draft
        if not draft.changed:
            return
        text = tomlkit.dumps(draft.doc)
        try:
            config_mod.from_dict(tomllib.loads(text), path)
        except (tomllib.TOMLDecodeError, ConfigError) as exc:
            raise ConfigEditError(f"refused: the edited config would not load ({exc}); {path} unchanged") from exc
        if _read(path, target) != original:
            raise ConfigEditError(f"{path} changed while it was being edited; nothing written, try again")
        write_atomic(target, text.encode("utf-8"))


def _read(path: Path, target: Path) -> str:
    try:
        return target.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found (pass --config FILE or set DIGEST_CONFIG)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from exc


@contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
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


def append_entry(doc: TOMLDocument, array: str, entry: dict[str, Any]) -> None:
    """A new [[array]] table after the last one, separated by one blank line."""
    existing = doc.get(array)
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
        doc.append(array, tomlkit.aot())
        doc[array].append(table)


def delete_entry(doc: TOMLDocument, array: str, index: int) -> None:
    """Delete one entry; the blank lines and comments trailing it stay in the file."""
    entries = doc[array]
    if isinstance(entries, Array):
        del entries[index]
        return
    assert isinstance(entries, AoT)
    trailing = _take_trailing(entries[index])
    host = entries[index - 1] if index > 0 else _table_before(doc, array)
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
        del doc[array]
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
