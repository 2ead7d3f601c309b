"""Shared fixtures: real local servers only, and a guard against any other traffic.

- `network_guard` (autouse): any socket connect outside 127.0.0.0/8 / ::1 fails the test.
- `smtp_server`: an aiosmtpd server on 127.0.0.1 with fault injection (see smtp_fault.py).
- `feed_server`: a threaded HTTP server on 127.0.0.1:0 serving routes you register.
- `make_config`: writes a config.toml (with the bundled sample feeds by default) in tmp.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from feedserver import FeedServer
from smtp_fault import FaultySMTPServer

Server = TypeVar("Server", FaultySMTPServer, FeedServer)
ROOT = Path(__file__).resolve().parent.parent
SAMPLE_FEEDS = ROOT / "examples" / "feeds"

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _check_address(address: Any) -> None:
    if isinstance(address, tuple) and address:
        host = address[0]
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise AssertionError(f"test tried to connect to a host name {host!r}: resolve to 127.0.0.1") from None
        if not ip.is_loopback:
            raise AssertionError(f"test tried to connect outside loopback: {address!r}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check_address(address)
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if self.family in (socket.AF_INET, socket.AF_INET6):
        _check_address(address)
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fails a test that connects anywhere but loopback (even a broken policy sends nothing)."""
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded_connect_ex)
    yield


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("DIGEST_"):
            monkeypatch.delenv(name)


def running(server: Server) -> Iterator[Server]:
    """Start a local test server, hand it to the test, and always stop it."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp_server() -> Iterator[FaultySMTPServer]:
    yield from running(FaultySMTPServer())


@pytest.fixture
def second_server() -> Iterator[FeedServer]:
    """A feed server on another loopback address (127.0.0.2), for redirect refusals."""
    yield from running(FeedServer("127.0.0.2"))


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    yield from running(FeedServer())


SUBSCRIBERS = [
    {"email": "ada@example.com", "name": "Ada Lovelace"},
    {"email": "yuri@example.com", "name": "Yuri", "topics": ["Launch", "Commercial"]},
    {"email": "valentina@example.org", "name": "Valentina Tereshkova"},
]


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def write_config(
    path: Path, tables: dict[str, dict[str, Any]], feeds: list[dict[str, Any]], subscribers: list[dict[str, Any]]
) -> Path:
    lines: list[str] = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        lines.append("")
    for name, items in (("feeds", feeds), ("subscribers", subscribers)):
        for item in items:
            lines.append(f"[[{name}]]")
            lines += [f"{k} = {toml_value(v)}" for k, v in item.items()]
            lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def sample_feeds(folder: Path) -> list[dict[str, Any]]:
    """Copies the bundled sample feeds into `folder` and returns their [[feeds]] tables."""
    target = folder / "feeds"
    shutil.copytree(SAMPLE_FEEDS, target, dirs_exist_ok=True)
    return [
        {"name": "Space Policy Review", "url": "feeds/space-policy-review.xml", "section": "Politics", "priority": 2},
        {"name": "Launch Report", "url": "feeds/launch-report.atom", "section": "Launch", "priority": 1},
        {"name": "Orbital Wire", "url": "feeds/orbital-wire.xml", "section": "Launch"},
        {"name": "Commercial Orbit", "url": "feeds/commercial-orbit.atom", "section": "Commercial", "priority": 1},
        {"name": "Defence Space Monitor", "url": "feeds/defence-space-monitor.xml", "section": "Military"},
    ]


MakeConfig = Callable[..., Path]


def base_tables(**extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The tests' newsletter (Maildir delivery, 100 stories), with `extra` keys merged per table."""
    tables: dict[str, dict[str, Any]] = {
        "newsletter": {
            "title": "Orbit Daily",
            "from": "Orbit Daily <news@orbitdaily.example>",
            "timezone": "UTC",
            "base_url": "https://news.example.com",
            "max_stories": 100,
        },
        "delivery": {"transport": "maildir", "maildir": "outbox"},
    }
    for name, values in extra.items():
        tables[name] = {**tables.get(name, {}), **values}
    return tables


@pytest.fixture
def make_config(tmp_path: Path) -> MakeConfig:
    """make_config(smtp=server, feeds=[...], subscribers=[...], **tables) -> config path."""

    def make(
        smtp: FaultySMTPServer | None = None,
        feeds: list[dict[str, Any]] | None = None,
        subscribers: list[dict[str, Any]] | None = None,
        **tables: dict[str, Any],
    ) -> Path:
        base = base_tables()
        if smtp is not None:
            base["delivery"] = {"transport": "smtp"}
            base["smtp"] = {"host": "127.0.0.1", "port": smtp.port, "security": "none", "timeout": 10}
        for name, values in tables.items():
            base[name] = {**base.get(name, {}), **values}
        return write_config(
            tmp_path / "config.toml",
            base,
            feeds if feeds is not None else sample_feeds(tmp_path),
            subscribers if subscribers is not None else SUBSCRIBERS,
        )

    return make
