"""`digest init`: a commented config.toml for a new newsletter.

The file is the packaged template (digest/init_config.toml) with four values filled in,
validated by the real loader before it is written, and never written over an existing
file: an operator's config is the one thing here that cannot be rebuilt.
"""

from __future__ import annotations

import contextlib
import json
import os
import tomllib
from importlib.resources import files
from pathlib import Path
from string import Template
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import config as config_mod
from .errors import ConfigError, DigestError


def template() -> str:
    return (files("digest") / "init_config.toml").read_text(encoding="utf-8")


def render(title: str, sender: str, timezone: str, email: str) -> str:
    """The template with the answers as TOML strings (JSON string escapes are valid TOML)."""

    def toml(value: str) -> str:
        return json.dumps(value, ensure_ascii=False)

    def comment(value: str) -> str:
        return " ".join(value.split())

    return Template(template()).substitute(
        title=toml(title),
        sender=toml(sender),
        timezone=toml(timezone),
        email=toml(email),
        title_comment=comment(title),
        email_comment=comment(email),
    )


def local_timezone() -> str:
    """The machine's IANA zone name if it can be told ($TZ, /etc/timezone, /etc/localtime), else UTC."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    with contextlib.suppress(OSError, IndexError):
        candidates.append(str(Path("/etc/localtime").resolve()).split("/zoneinfo/", 1)[1])
    for name in filter(None, candidates):
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            continue
        return name
    return "UTC"


def write(path: Path, title: str, sender: str, timezone: str, email: str) -> Path:
    """Create `path` (and its folder); refuses to overwrite, and to write a config that would not load."""
    text = render(title, sender, timezone, email)
    try:
        config_mod.from_dict(tomllib.loads(text), path)
    except (tomllib.TOMLDecodeError, ConfigError) as exc:
        raise DigestError(f"{exc}; nothing written") from None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("x", encoding="utf-8") as handle:  # O_EXCL: never over an existing file
            handle.write(text)
    except FileExistsError:
        raise DigestError(f"{path} already exists; not overwritten (edit it, or init another folder)") from None
    return path
