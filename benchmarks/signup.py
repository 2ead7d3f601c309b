"""The public signup under load: `digest serve` in its own process, clients in this one.

    python benchmarks/signup.py [--signups 200] [--slow 200] [--flood 1000] [--repeat 3]

Measured against the real server on 127.0.0.1 (bundled sample feeds, Maildir transport):
- `signups`: that many POST /subscribe at once (each from its own client address, as a
  reverse proxy reports it in X-Forwarded-For): seconds until all are answered, and
  whether every one got its confirmation email;
- `confirmations`: the links of those emails POSTed at once: seconds until config.toml
  holds every new subscriber (none lost);
- `GET /subscribe`: median latency of sequential requests when idle, and while `slow`
  clients hold connections open (half-sent requests, a byte every second);
- `flood`: `flood` signups of different addresses from ONE client: emails sent and 429s.
Medians of `repeat` runs, each on a fresh folder. Writes benchmarks/results/signup.json.

The concurrent clients are plain asyncio streams (one connection per request, as
browsers of different people would open): httpx's pool at 200 connections costs more
than the server does, and the figure would measure the client.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import mailbox
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results" / "signup.json"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def prepare(folder: Path, port: int) -> Path:
    shutil.copytree(ROOT / "examples" / "feeds", folder / "examples" / "feeds")
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    text = re.sub(r'^base_url = ".*"$', f'base_url = "http://127.0.0.1:{port}"', text, count=1, flags=re.M)
    config = folder / "config.toml"
    config.write_text(text, encoding="utf-8")
    return config


class Server:
    """`digest serve` in a subprocess; stops when the block ends."""

    def __init__(self, config: Path, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log = config.with_name("serve.log")
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "digest", "--config", str(config), "serve", "--listen", f"127.0.0.1:{port}"],
                stdout=log,
                stderr=log,
            )

    def __enter__(self) -> Server:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/subscribe", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.process.kill()
        raise RuntimeError("digest serve did not start: " + self.log.read_text()[-2000:])

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def links(maildir: Path) -> list[str]:
    found = []
    for message in mailbox.Maildir(maildir.parent, create=False):
        parsed = message_from_bytes(message.as_bytes(), policy=policy.default)
        body = parsed.get_body(("plain",))
        match = re.search(r"(http://\S+/confirm\?token=\S+)", str(body.get_content()) if body else "")
        if match:
            found.append(match.group(1))
    return found


async def request(base: str, method: str, path: str, form: dict[str, str] | None = None, **headers: str) -> int:
    """One HTTP/1.1 request on its own connection; the status code."""
    where = urlsplit(base)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    body = urlencode(form).encode() if form is not None else b""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {where.netloc}", "Connection: close", f"Content-Length: {len(body)}"]
    if form is not None:
        lines.append("Content-Type: application/x-www-form-urlencoded")
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    answer = await reader.read()
    writer.close()
    return int(answer.split(b" ", 2)[1])


async def signups(base: str, count: int) -> float:
    def client(i: int) -> str:
        return f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"

    started = time.perf_counter()
    codes = await asyncio.gather(
        *(
            request(
                base, "POST", "/subscribe", {"email": f"crowd{i}@example.com"}, Origin=base, X_Forwarded_For=client(i)
            )
            for i in range(count)
        )
    )
    took = time.perf_counter() - started
    assert codes == [200] * count, sorted(set(codes))
    return took


async def confirmations(base: str, urls: list[str]) -> float:
    started = time.perf_counter()
    codes = await asyncio.gather(
        *(request(base, "POST", "/confirm", {"token": url.partition("token=")[2]}, Origin=base) for url in urls)
    )
    took = time.perf_counter() - started
    assert codes == [200] * len(urls), sorted(set(codes))
    return took


def latency(base: str, requests: int = 200) -> float:
    """Median milliseconds of sequential GET /subscribe on one keep-alive connection."""
    where = urlsplit(base)
    connection = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=30)
    times = []
    for i in range(requests + 1):
        started = time.perf_counter()
        connection.request("GET", "/subscribe")
        answer = connection.getresponse()
        answer.read()
        assert answer.status == 200
        if i:  # the first one opens the connection
            times.append(time.perf_counter() - started)
    connection.close()
    return statistics.median(times) * 1000


async def hold_slow(base: str, count: int, stop: asyncio.Event) -> int:
    """`count` connections that each send half a request, then a header byte a second."""
    port = int(base.rpartition(":")[2])
    pairs = []
    for i in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /subscribe HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " if i % 2 else b"GET /subscr")
        pairs.append((reader, writer))
    while not stop.is_set():
        for _, writer in pairs:
            writer.write(b"a")
        await asyncio.sleep(1)
    held = sum(not reader.at_eof() for reader, _ in pairs)  # the server did not drop them meanwhile
    for _, writer in pairs:
        writer.close()
    return held


async def latency_under_slow_clients(base: str, slow: int) -> tuple[float, int]:
    stop = asyncio.Event()
    holder = asyncio.create_task(hold_slow(base, slow, stop))
    await asyncio.sleep(1.5)
    measured = await asyncio.to_thread(latency, base)
    stop.set()
    return measured, await holder


async def flood(base: str, count: int) -> dict[str, int]:
    """`count` signups from one client, 20 at a time."""
    gate = asyncio.Semaphore(20)

    async def one(i: int) -> int:
        async with gate:
            return await request(base, "POST", "/subscribe", {"email": f"flood{i}@example.com"}, Origin=base)

    codes: dict[str, int] = {}
    for code in await asyncio.gather(*(one(i) for i in range(count))):
        codes[str(code)] = codes.get(str(code), 0) + 1
    return codes


def one_run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="digest-signup-bench-") as tmp:
        folder, port = Path(tmp), free_port()
        config = prepare(folder, port)
        maildir = folder / "outbox"
        before = len(tomllib.loads(config.read_text())["subscribers"])
        with Server(config, port) as server:
            idle = latency(server.base)
            loaded, held = asyncio.run(latency_under_slow_clients(server.base, args.slow))
            signup_s = asyncio.run(signups(server.base, args.signups))
            urls = links(maildir / "new")
            mailed = len(urls)
            confirm_s = asyncio.run(confirmations(server.base, urls))
            after = tomllib.loads(config.read_text())["subscribers"]
            confirmed = len(after) - before
        # the flood on a fresh state: one client, many addresses
        shutil.rmtree(folder / ".digest")
        shutil.rmtree(maildir)
        with Server(config, port) as server:
            codes = asyncio.run(flood(server.base, args.flood))
            flood_mails = len(list((maildir / "new").iterdir())) if (maildir / "new").exists() else 0
    return {
        "signups": args.signups,
        "signups_s": signup_s,
        "signups_mailed": mailed,
        "confirmations_s": confirm_s,
        "confirmed": confirmed,
        "get_ms_idle": idle,
        "get_ms_slow_clients": loaded,
        "slow_clients": args.slow,
        "slow_clients_held": held,
        "flood": args.flood,
        "flood_emails": flood_mails,
        "flood_codes": codes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signups", type=int, default=200)
    parser.add_argument("--slow", type=int, default=200)
    parser.add_argument("--flood", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run(args) for _ in range(args.repeat)]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    summary = {key: med(key) for key in ("signups_s", "confirmations_s", "get_ms_idle", "get_ms_slow_clients")}
    summary |= {key: min(r[key] for r in runs) for key in ("signups_mailed", "confirmed")}
    summary["flood_emails_max"] = max(r["flood_emails"] for r in runs)
    print(f"{'figure':<44} {'median':>10}   runs")
    rows = [
        (f"{args.signups} concurrent signups (s)", "signups_s", "{:.2f}"),
        (f"{args.signups} confirmations at once (s)", "confirmations_s", "{:.2f}"),
        ("GET /subscribe idle (ms)", "get_ms_idle", "{:.2f}"),
        (f"GET /subscribe with {args.slow} slow clients (ms)", "get_ms_slow_clients", "{:.2f}"),
    ]
    for label, key, fmt in rows:
        print(f"{label:<44} {fmt.format(med(key)):>10}   " + ", ".join(fmt.format(r[key]) for r in runs))
    print(f"slow clients still connected at the end: {min(r['slow_clients_held'] for r in runs)} of {args.slow}")
    print(f"confirmation emails for the signups: {summary['signups_mailed']} of {args.signups} (worst run)")
    print(f"subscribers added by the confirmations: {summary['confirmed']} of {args.signups} (worst run)")
    for r in runs:
        print(f"flood of {args.flood} from one client: {r['flood_emails']} emails, status codes {r['flood_codes']}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"summary": summary, "runs": runs}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
