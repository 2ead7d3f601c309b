"""The benchmark feed server: its own process, 127.0.0.1 only, every answer 100 ms late.

asyncio, so hundreds of concurrent connections cost nothing; HTTP/1.1 keep-alive and
conditional GET (ETag / If-None-Match -> 304). Routes:

    /slow/fN.xml   feed N with --entries items, answered after --delay seconds
    /fast/fN.xml   the same feed with no delay (to time rss2email's sending alone)
    /spread/fN.xml the same feed, answered after --delay + --spread x N / (feeds - 1) seconds
                   (servers that answer at different paces, as real ones do)
    /day/fN.xml    feed N of the benchmark day: the items published before poll number G
    /_gen/G        set G (which poll of the day is next); answered at once
    /_stats        JSON counts of answers by status

Prints `PORT n` then `READY`; exits by itself after --lifetime seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import day_entry_time, day_polls, load_pool, rss, scaled

MAX_HEAD = 16 * 1024


class Feeds:
    def __init__(
        self, feeds: int, entries: int, day_entries: int, polls: int, delay: float = 0.0, spread: float = 0.0
    ) -> None:
        self.count, self.day_entries, self.generation = feeds, day_entries, 0
        self.delay, self.spread = delay, spread
        pool = load_pool()
        items = scaled(pool, feeds * entries)
        self.static = [
            rss(f, [(k, items[f * entries + k], items[f * entries + k].published) for k in range(entries)])
            for f in range(feeds)
        ]
        self.day_items = scaled(pool[::-1], feeds * day_entries)
        self.cutoffs = day_polls(polls)
        self.day_cache: dict[tuple[int, int], tuple[str, bytes]] = {}
        self.stats: Counter[str] = Counter()

    def day(self, feed: int) -> tuple[str, bytes]:
        gen = min(self.generation, len(self.cutoffs) - 1)
        key = (feed, gen)
        if key not in self.day_cache:
            cutoff = self.cutoffs[gen]
            items = [
                (k, self.day_items[k * self.count + feed], day_entry_time(k, self.day_entries))
                for k in range(self.day_entries)
                if day_entry_time(k, self.day_entries) < cutoff
            ]
            self.day_cache[key] = (f'"d{feed}-{len(items)}"', rss(feed, items[::-1][:10]))
        return self.day_cache[key]

    def route(self, path: str) -> tuple[float, int, str | None, bytes]:
        """(seconds to wait before answering, status, etag, body)."""
        parts = path.split("?")[0].strip("/").split("/")
        if len(parts) == 2 and parts[0] == "_gen" and parts[1].isdigit():
            self.generation = int(parts[1])
            return 0.0, 200, None, b"ok\n"
        if parts == ["_stats"]:
            return 0.0, 200, None, json.dumps(self.stats).encode()
        if len(parts) != 2 or not parts[1].startswith("f") or not parts[1].endswith(".xml"):
            return 0.0, 404, None, b"not found\n"
        number = parts[1][1:-4]
        if not number.isdigit() or int(number) >= self.count:
            return 0.0, 404, None, b"not found\n"
        feed = int(number)
        if parts[0] in ("slow", "fast", "spread"):
            wait = 0.0 if parts[0] == "fast" else self.delay
            if parts[0] == "spread":
                wait += self.spread * feed / max(1, self.count - 1)
            return wait, 200, f'"s{feed}"', self.static[feed]
        if parts[0] == "day":
            etag, body = self.day(feed)
            return self.delay, 200, etag, body
        return 0.0, 404, None, b"not found\n"


REASONS = {200: "OK", 304: "Not Modified", 404: "Not Found", 400: "Bad Request"}


async def serve(feeds: Feeds, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        for _ in range(10_000):  # requests on one connection: bounded
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
            lines = head.decode("latin-1").split("\r\n")
            request = lines[0].split(" ")
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:] if h)}
            if len(request) != 3:
                break
            wait, status, etag, body = feeds.route(request[1])
            if wait:
                await asyncio.sleep(wait)
            if etag and headers.get("if-none-match") == etag:
                status, body = 304, b""
            feeds.stats[str(status)] += 1
            close = headers.get("connection", "").lower() == "close" or request[2] == "HTTP/1.0"
            out = [f"HTTP/1.1 {status} {REASONS.get(status, 'OK')}", f"Content-Length: {len(body)}"]
            if status != 304:
                out.append("Content-Type: application/rss+xml; charset=utf-8")
            if etag:
                out.append(f"ETag: {etag}")
            out.append("Connection: close" if close else "Connection: keep-alive")
            writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + (b"" if request[0] == "HEAD" else body))
            await writer.drain()
            if close:
                break
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, TimeoutError, ValueError):
        pass
    finally:
        writer.close()


async def main(args: argparse.Namespace) -> None:
    feeds = Feeds(args.feeds, args.entries, args.day_entries, args.polls, args.delay, args.spread)
    server = await asyncio.start_server(
        lambda r, w: serve(feeds, r, w), "127.0.0.1", 0, backlog=2048, limit=MAX_HEAD
    )
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    print("READY", flush=True)
    async with server:
        await asyncio.sleep(args.lifetime)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--entries", type=int, default=50)
    parser.add_argument("--day-entries", type=int, default=10)
    parser.add_argument("--polls", type=int, default=4)
    parser.add_argument("--delay", type=float, default=0.1)
    parser.add_argument("--spread", type=float, default=3.0, help="/spread/ feeds: the last answers this much later")
    parser.add_argument("--lifetime", type=float, default=900.0)
    asyncio.run(main(parser.parse_args()))
