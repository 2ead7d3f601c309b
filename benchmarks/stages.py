"""In-process stage benchmarks: fetch, parse, group, render + inline, message building, delivery.

Each function returns a flat dict of figures (seconds, rates, counts); `run.py` prints and
records them. Servers are passed in as ports: they run in their own processes.
"""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from common import SEND_AT, Item, median, timed

from digest import config as config_mod
from digest import deliver, fetch, group, mail, parse, pipeline, select
from digest.models import Entry, FetchResult
from digest.settings import Config, FeedSpec, FetchSettings, GroupingSettings, SmtpSettings

DELAY = 0.1
"""Seconds the feed server waits before each answer (the latency floor of one round)."""


def fetch_rounds(port: int, feeds: int, repeats: int) -> tuple[dict[str, Any], list[FetchResult]]:
    """Round 1: every feed answers 200 with an ETag; round 2: every feed answers 304."""
    specs = [FeedSpec(f"f{i}", f"http://127.0.0.1:{port}/slow/f{i}.xml") for i in range(feeds)]
    settings = FetchSettings(allow_hosts=("127.0.0.1",), concurrency=max(feeds, 32), timeout=30.0)
    first: list[tuple[float, float]] = []
    second: list[tuple[float, float]] = []
    bodies: list[FetchResult] = []
    for _ in range(repeats):
        wall1, cpu1, bodies = timed(lambda: fetch.fetch_all(specs, {}, settings))
        _check(bodies, 200)
        validators = {r.feed.name: r.validators for r in bodies}
        wall2, cpu2, again = timed(lambda v=validators: fetch.fetch_all(specs, v, settings))  # type: ignore[misc]
        _check(again, 304)
        first.append((wall1, cpu1))
        second.append((wall2, cpu2))
    polls = [a[0] + b[0] for a, b in zip(first, second, strict=True)]
    figures = {
        "feeds": feeds,
        "concurrency": settings.concurrency,
        "round1_200_wall_s": median([w for w, _ in first]),
        "round1_200_cpu_s": median([c for _, c in first]),
        "round2_304_wall_s": median([w for w, _ in second]),
        "round2_304_cpu_s": median([c for _, c in second]),
        "poll_wall_s": median(polls),
        "floor_s": 2 * DELAY,
        "bytes": sum(len(r.body or b"") for r in bodies),
        "repeats": repeats,
    }
    return figures, bodies


def _check(results: Sequence[FetchResult], status: int) -> None:
    bad = [f"{r.feed.name}: {r.error or r.status}" for r in results if r.status != status or r.error]
    if bad:
        raise RuntimeError(f"expected HTTP {status} from every feed; {len(bad)} did not: {bad[:3]}")


def parse_all(results: Sequence[FetchResult]) -> dict[str, Any]:
    def work() -> int:  # as `digest fetch` parses: in worker processes when there are many bodies
        return sum(len(p.entries) for p in parse.parse_all(results, SEND_AT) if p)

    wall, cpu, entries = timed(work)
    return {"feeds": len(results), "entries": entries, "wall_s": wall, "cpu_s": cpu, "entries_per_s": entries / wall}


def entries_from(items: Sequence[Item], sections: Sequence[str] = ("News",)) -> list[Entry]:
    out = []
    for i, item in enumerate(items):
        slug = "".join(c for c in item.source.lower() if c.isalnum())[:30] or "outlet"
        out.append(
            Entry(
                id=f"e{i}-{item.id}",
                feed=item.source,
                link=f"http://{slug}.example/{item.id}",
                title=item.title,
                summary=item.summary,
                published=item.published,
                section=sections[i % len(sections)],
            )
        )
    return out


def grouping(items: Sequence[Item], sizes: Sequence[int], repeats: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for n in sizes:
        entries = entries_from(items[:n])
        walls = []
        stories: tuple[Any, ...] = ()
        for _ in range(repeats if n <= 2000 else 1):
            wall, _cpu, stories = timed(lambda e=entries: group.group(e, GroupingSettings()))  # type: ignore[misc]
            walls.append(wall)
        figures[f"group_{n}_s"] = median(walls)
        figures[f"group_{n}_stories"] = len(stories)
        if n <= 4000:
            figures[f"group_{n}_b3_f1"] = _quality(items[:n], entries, stories)
    return figures


def _quality(items: Sequence[Item], entries: Sequence[Entry], stories: Sequence[Any]) -> float | None:
    """B-cubed F1 against the gold story labels, scored by benchmarks/grouping.py (None without it)."""
    try:
        from grouping import score
    except ImportError:
        return None
    gold = {e.id: item.story for item, e in zip(items, entries, strict=True)}
    pred = {e.id: f"s{n}" for n, story in enumerate(stories) for e in story.entries}
    return float(score(gold, pred)["b3_f1"])


def load_config(path: Path) -> Config:
    return config_mod.load(path)


def render_editions(config: Config, entries: Sequence[Entry], repeats: int) -> tuple[dict[str, Any], Any]:
    """Group the day's entries, arrange the edition, render + inline once per section set."""
    stories = group.group(list(entries), config.grouping)
    day = pipeline.edition_day(config, SEND_AT)
    edition = select.arrange(stories, config.sections, config.newsletter.max_stories, day, SEND_AT, [])
    keys = sorted({pipeline.topic_key(s) for s in config.subscribers})
    walls, rendered = [], {}
    for _ in range(repeats):
        wall, _cpu, rendered = timed(lambda: {k: pipeline.render_edition(config, edition, k) for k in keys})
        walls.append(wall / len(keys))
    everything = rendered[()] if () in rendered else next(iter(rendered.values()))
    return {
        "section_sets": len(keys),
        "stories": len(edition.stories),
        "per_edition_s": median(walls),
        "html_bytes": len(everything.html.encode()),
    }, (edition, rendered)


def recipients(config: Config, edition: Any) -> list[Any]:
    return [mail.recipient(s, edition.day, config.newsletter, b"bench-secret") for s in config.subscribers]


def build_messages(config: Config, edition: Any, rendered: dict[Any, Any], n: int) -> tuple[dict[str, Any], Any]:
    subscribers = config.subscribers[:n]
    composers = {
        k: mail.Composer(r, r.html, config.newsletter, edition.day, SEND_AT - timedelta(seconds=1))
        for k, r in rendered.items()
    }
    wall_r, _cpu, owed = timed(lambda: [mail.recipient(s, edition.day, config.newsletter, b"k") for s in subscribers])
    keys = [pipeline.topic_key(s) for s in subscribers]
    wall, _cpu, sizes = timed(lambda: [len(composers[k].message(to)) for k, to in zip(keys, owed, strict=True)])
    figures = {
        "messages": len(owed),
        "recipients_s": wall_r,
        "build_s": wall,
        "messages_per_s": len(owed) / wall,
        "avg_bytes": sum(sizes) // max(1, len(sizes)),
    }

    def build(to: Any) -> bytes:
        return composers[pipeline.topic_key(to.subscriber)].message(to)

    return figures, (owed, build, composers[keys[0]].message(owed[0]))


def deliver_smtp(port: int, owed: Sequence[Any], build: Any, connections: int) -> dict[str, Any]:
    """Our delivery stage (build + send per message) to the sink, `connections` connections."""
    settings = SmtpSettings(host="127.0.0.1", port=port, security="none", connections=connections, timeout=60.0)
    outcomes: list[Any] = []

    def record(result: Any) -> None:
        outcomes.extend(result if isinstance(result, list | tuple) else [result])

    wall, cpu, _ = timed(lambda: deliver.to_smtp(settings, "bench@example.com", owed, build, record))
    sent = sum(1 for o in outcomes if o.status == "sent")
    return {"messages": sent, "wall_s": wall, "cpu_s": cpu, "messages_per_s": sent / wall}


def ceiling(port: int, message: bytes, n: int, connections: int) -> dict[str, Any]:
    """A bare smtplib loop of one ready-made message: the most the sink takes from Python."""
    per = [n // connections + (i < n % connections) for i in range(connections)]
    errors: list[BaseException] = []

    def loop(count: int) -> None:
        try:
            conn = smtplib.SMTP("127.0.0.1", port, timeout=60)
            for i in range(count):
                conn.sendmail("bench@example.com", [f"sub{i}@example.com"], message)
            conn.quit()
        except (smtplib.SMTPException, OSError) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=loop, args=(c,)) for c in per]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    wall = time.perf_counter() - start
    if errors:
        raise RuntimeError(f"sink ceiling loop failed: {errors[0]!r}")
    return {"messages": n, "wall_s": wall, "messages_per_s": n / wall}
