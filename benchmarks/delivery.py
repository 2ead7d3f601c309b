"""Delivery benchmark: our whole delivery path against a bare smtplib loop, same sink, same run.

`run(n_messages, connections, delay_ms)` freezes an edition of the bundled sample feeds
for `n_messages` subscribers, then times `pipeline.send_edition` resuming it: recipients,
substitution per subscriber, `connections` SMTP connections, and one SQLite commit per
reply (batched per arrival). The ceiling is a bare smtplib loop per connection sending
one ready-made message of the same size to the same sink, as many times. The sink is
aiosmtpd in its own process (a subprocess, stops by itself after `lifetime` seconds), answering
every command `delay_ms` late.

    python benchmarks/delivery.py            # 10,000 x {1, 4} connections; 500 x {1, 4} at 20 ms
    python benchmarks/delivery.py --quick    # 2,000 and 200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import smtplib
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(HERE)]

from common import helper  # noqa: E402  (benchmarks/ is on sys.path)

from digest import config as config_mod  # noqa: E402
from digest import mail, pipeline  # noqa: E402
from digest.store import Store  # noqa: E402

NOW = datetime(2026, 11, 21, 7, 0, tzinfo=UTC)
FEEDS = [
    ("Space Policy Review", "space-policy-review.xml", "Politics"),
    ("Launch Report", "launch-report.atom", "Launch"),
    ("Orbital Wire", "orbital-wire.xml", "Launch"),
    ("Commercial Orbit", "commercial-orbit.atom", "Commercial"),
    ("Defence Space Monitor", "defence-space-monitor.xml", "Military"),
]


@contextmanager
def sink(delay_ms: float, workers: int = 1, lean: bool = False, lifetime: float = 1800.0) -> Iterator[int]:
    """The port of benchmarks/sink.py with `workers` server processes (stops by itself after `lifetime`)."""
    args = ["--workers", str(workers), "--delay", str(delay_ms), *(["--lean"] if lean else [])]
    with helper("sink.py", *args, lifetime=lifetime) as server:
        yield server.port


def _config(folder: Path, port: int, n: int, connections: int) -> Path:
    shutil.copytree(ROOT / "examples" / "feeds", folder / "feeds", dirs_exist_ok=True)
    lines = [
        '[newsletter]\ntitle = "Orbit Daily"\nfrom = "Orbit Daily <news@orbitdaily.example>"',
        'timezone = "UTC"\nbase_url = "https://news.example.com"\n',
        f'[delivery]\ntransport = "smtp"\n\n[smtp]\nhost = "127.0.0.1"\nport = {port}\nsecurity = "none"',
        f"connections = {connections}\ntimeout = 60\n",
    ]
    for name, file, section in FEEDS:
        lines.append(f'[[feeds]]\nname = "{name}"\nurl = "feeds/{file}"\nsection = "{section}"\n')
    lines += [f'[[subscribers]]\nemail = "reader{i:05d}@example.com"\nname = "Reader {i}"\n' for i in range(n)]
    path = folder / "config.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def _bare_loop(port: int, message: bytes, count: int) -> None:
    conn = smtplib.SMTP("127.0.0.1", port, timeout=60)
    for i in range(count):
        conn.sendmail("news@orbitdaily.example", [f"reader{i:05d}@example.com"], message)
    conn.quit()


def ceiling(port: int, message: bytes, n: int, connections: int) -> float:
    """Seconds for bare smtplib loops, one per connection and each in its own forked process
    (as our connections are), to send `message` n times in all."""
    per = [n // connections + (i < n % connections) for i in range(connections)]
    started = time.perf_counter()
    children = []
    for count in per:
        pid = os.fork()  # this benchmark process runs no threads
        if pid == 0:
            code = 0
            try:
                _bare_loop(port, message, count)
            except BaseException:
                code = 1
            os._exit(code)
        children.append(pid)
    codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in children]
    if any(codes):
        raise RuntimeError("a bare smtplib loop failed")
    return time.perf_counter() - started


def run(
    n_messages: int = 10_000, connections: int = 1, delay_ms: float = 0.0, repeats: int = 1, lean: bool = False
) -> dict[str, Any]:
    """Messages per second of ours and of the bare loop, and their ratio (`vs_ceiling`).

    The sink has one server process per connection. With `repeats` > 1 our send and the
    bare loop take turns and the medians are reported (this machine's noise is large).
    """
    with (
        tempfile.TemporaryDirectory(prefix="digest-bench-delivery-") as tmp,
        sink(delay_ms, connections, lean) as port,
    ):
        config = config_mod.load(_config(Path(tmp), port, n_messages, connections))
        ours_s, ceiling_s = [], []
        with Store(config.state_path) as store:
            pipeline.poll(config, store, NOW)
            edition = pipeline.build_edition(config, store, NOW)
            rendered = pipeline.render_edition(config, edition, ())
            store.record_edition(edition, [rendered])  # frozen: the timed send resumes it
            composer = mail.Composer(rendered, rendered.html, config.newsletter, edition.day, NOW)
            sample = composer.message(mail.recipient(config.subscribers[0], edition.day, config.newsletter, b"k"))
            for _ in range(repeats):
                store.db.execute("DELETE FROM deliveries")
                started = time.perf_counter()
                report = pipeline.send_edition(config, store, NOW)
                ours_s.append(time.perf_counter() - started)
                if report.delivered != n_messages:
                    raise RuntimeError(f"delivered {report.delivered} of {n_messages}: {report.summary()}")
                ceiling_s.append(ceiling(port, sample, n_messages, connections))
        ours, bare = statistics.median(ours_s), statistics.median(ceiling_s)
        return {
            "messages": n_messages,
            "connections": connections,
            "delay_ms": delay_ms,
            "repeats": repeats,
            "sink": f"{'LeanSMTP' if lean else 'aiosmtpd'} x {connections} processes",
            "message_bytes": len(sample),
            "ours_wall_s": round(ours, 3),
            "ours_messages_per_s": round(n_messages / ours, 1),
            "ceiling_wall_s": round(bare, 3),
            "ceiling_messages_per_s": round(n_messages / bare, 1),
            "vs_ceiling": round(statistics.median(c / o for c, o in zip(ceiling_s, ours_s, strict=True)), 3),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 messages, 200 with the slow sink")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of ours and the bare loop")
    parser.add_argument("--lean", action="store_true", help="the LeanSMTP sink instead of aiosmtpd")
    parser.add_argument("--no-slow", action="store_true", help="skip the 20 ms-per-reply sink")
    args = parser.parse_args()
    fast, slow = (2000, 200) if args.quick else (10_000, 500)
    cases = [(fast, 0.0)] + ([] if args.no_slow else [(slow, 20.0)])
    results = [run(n, c, d, args.repeats if not d else 1, args.lean) for n, d in cases for c in (1, 4)]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'messages':>8} {'conns':>5} {'delay':>6} {'ours/s':>9} {'ceiling/s':>10} {'vs ceiling':>10}  sink")
    for r in results:
        print(f"{r['messages']:>8} {r['connections']:>5} {r['delay_ms']:>4.0f}ms {r['ours_messages_per_s']:>9.1f}"
              f" {r['ceiling_messages_per_s']:>10.1f} {r['vs_ceiling']:>10.2f}  {r['sink']}")
    for d in sorted({r["delay_ms"] for r in results}):
        one, four = (next(r for r in results if r["delay_ms"] == d and r["connections"] == c) for c in (1, 4))
        print(f"{d:.0f} ms: 4 connections / 1 = {four['ours_messages_per_s'] / one['ours_messages_per_s']:.2f}"
              f" (bare loop: {four['ceiling_messages_per_s'] / one['ceiling_messages_per_s']:.2f})")


if __name__ == "__main__":
    main()
