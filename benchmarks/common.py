"""Shared pieces of the benchmarks: the item pool, the feeds built from it, helper processes.

Items come from the story development data in `shared/data/stories/` (real headlines from
many outlets, so grouping has real work to do); without it, synthetic items stand in.
Every server the benchmarks use runs in its own process on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STORIES = ROOT.parent / "shared" / "data" / "stories"
DAY_START = datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
"""The benchmark day: from one 07:00 UTC send to the next."""
SEND_AT = DAY_START + timedelta(days=1)


@dataclass(frozen=True)
class Item:
    id: str
    title: str
    summary: str
    source: str
    published: datetime
    story: str


def load_pool(limit: int = 100_000) -> list[Item]:
    """Real items (title, summary, outlet, story label) if the dev data is there, else synthetic."""
    items: list[Item] = []
    for path in sorted(STORIES.glob("*.jsonl")) if STORIES.is_dir() else []:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                raw = json.loads(line)
                stamp = datetime.fromisoformat(raw["published"].replace("Z", "+00:00"))
                story = str(raw.get("story", raw["id"]))
                items.append(Item(raw["id"], raw["title"], raw.get("summary", ""), raw["source"], stamp, story))
                if len(items) >= limit:
                    return items
    return items or synthetic_pool(min(limit, 4000))


def synthetic_pool(n: int) -> list[Item]:
    words = [
        "launch",
        "orbit",
        "lunar",
        "station",
        "rocket",
        "satellite",
        "probe",
        "crew",
        "mission",
        "agency",
        "budget",
        "contract",
    ]
    out = []
    for i in range(n):
        story = i // 5
        topic = " ".join(words[(story + k) % len(words)] for k in range(4))
        out.append(
            Item(
                f"syn-{i}",
                f"Story {story}: {topic} report {i % 5}",
                f"Outlet {i % 5} reports on {topic}. " * 4,
                f"Outlet {i % 5}",
                DAY_START - timedelta(minutes=i),
                f"s{story}",
            )
        )
    return out


def scaled(pool: Sequence[Item], n: int) -> list[Item]:
    """`n` items with unique ids: the pool cycled, each further lap moved a few days on."""
    out = []
    for i in range(n):
        item = pool[i % len(pool)]
        lap = i // len(pool)
        if lap:
            item = Item(
                f"{item.id}-{lap}",
                item.title,
                item.summary,
                item.source,
                item.published + timedelta(days=3 * lap),
                f"{item.story}-{lap}",
            )
        out.append(item)
    return out


def rss(feed: int, items: Sequence[tuple[int, Item, datetime]]) -> bytes:
    """An RSS 2.0 document for feed number `feed`; each item gets a link and guid of its own."""
    parts = [
        '<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>',
        f"<title>Outlet {feed}</title><link>http://outlet{feed}.example/</link>",
        f"<description>Benchmark feed {feed}</description>",
    ]
    for number, item, published in items:
        link = f"http://outlet{feed}.example/news/{number}/{escape(item.id)}"
        parts.append(
            f"<item><title>{escape(item.title)}</title><link>{link}</link>"
            f'<guid isPermaLink="false">f{feed}-{number}-{escape(item.id)}</guid>'
            f"<pubDate>{format_datetime(published)}</pubDate>"
            f"<description>{escape(item.summary)}</description></item>"
        )
    parts.append("</channel></rss>\n")
    return "".join(parts).encode()


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def timed(func: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, result)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = func()
    return time.perf_counter() - wall, time.process_time() - cpu, result


@dataclass
class Helper:
    """A helper process (feed server or SMTP sink) and the port it announced."""

    process: subprocess.Popen[str]
    port: int
    extra: dict[str, int]


@contextmanager
def helper(script: str, *args: str, lifetime: float = 900.0) -> Iterator[Helper]:
    """Start `benchmarks/<script>` in its own process; it prints `PORT n` lines, then serves."""
    cmd = [sys.executable, str(HERE / script), "--lifetime", str(lifetime), *args]
    process = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    ports: dict[str, int] = {}
    try:
        assert process.stdout is not None
        for _ in range(10):
            line = process.stdout.readline()
            if not line or line.strip() == "READY":
                break
            key, value = line.split()
            ports[key] = int(value)
        if "PORT" not in ports:
            raise RuntimeError(f"{script} did not start (exit {process.poll()})")
        yield Helper(process, ports.pop("PORT"), ports)
    finally:
        if process.stdout is not None:
            process.stdout.close()
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def day_polls(polls: int) -> list[datetime]:
    """When `digest fetch` runs through the benchmark day (the last one half an hour before the send)."""
    step = timedelta(days=1) / polls
    return [DAY_START + step * (g + 1) - timedelta(minutes=30) for g in range(polls)]


def day_entry_time(k: int, per_feed: int) -> datetime:
    """Entry `k` of a day feed: the feed's `per_feed` entries spread evenly over the day."""
    return DAY_START + timedelta(days=1) * (k + 0.5) / per_feed
