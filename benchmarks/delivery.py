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
import asyncio
import json
import shutil
import subprocess
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

import stages  # noqa: E402  (benchmarks/ is on sys.path)

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


def _serve(delay: float, lifetime: float) -> None:
    """The sink process: accept and discard; every reply `delay` seconds late; prints its port."""
    from aiosmtpd.smtp import SMTP

    try:
        from sink import FastSMTP as Base  # DATA in 64 KiB chunks: keeps the sink from being the bottleneck
    except ImportError:
        Base = SMTP

    class Late(Base):  # type: ignore[misc, valid-type]
        async def push(self, status: Any) -> None:
            if delay:
                await asyncio.sleep(delay)
            await super().push(status)

    class Discard:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            return "250 OK"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: Late(Discard(), hostname="sink.localhost", data_size_limit=0), "127.0.0.1", 0, backlog=512
        )
        print(server.sockets[0].getsockname()[1], flush=True)
        await asyncio.sleep(lifetime)
        server.close()

    asyncio.run(main())


@contextmanager
def sink(delay_ms: float, lifetime: float = 1800.0) -> Iterator[int]:
    """The port of a sink in its own process, stopped on exit (or by itself after `lifetime`)."""
    with subprocess.Popen(
        [sys.executable, __file__, "--sink", str(delay_ms), str(lifetime)], stdout=subprocess.PIPE, text=True
    ) as proc:  # the context closes the stdout pipe
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if not line.strip().isdigit():
                raise RuntimeError("the benchmark sink did not start")
            yield int(line)
        finally:
            proc.terminate()
            proc.wait(10)


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


def _ceiling(port: int, message: bytes, n: int, connections: int) -> float:
    """Seconds for bare smtplib loops (one per connection) to send `message` n times in all."""
    return float(stages.ceiling(port, message, n, connections)["wall_s"])


def run(n_messages: int = 10_000, connections: int = 1, delay_ms: float = 0.0) -> dict[str, Any]:
    """Messages per second of ours and of the bare loop, and their ratio (`vs_ceiling`)."""
    with tempfile.TemporaryDirectory(prefix="digest-bench-delivery-") as tmp, sink(delay_ms) as port:
        config = config_mod.load(_config(Path(tmp), port, n_messages, connections))
        with Store(config.state_path) as store:
            pipeline.poll(config, store, NOW)
            edition = pipeline.build_edition(config, store, NOW)
            rendered = pipeline.render_edition(config, edition, ())
            store.record_edition(edition, [rendered])  # frozen: the timed send resumes it
            started = time.perf_counter()
            report = pipeline.send_edition(config, store, NOW)
            ours = time.perf_counter() - started
        if report.delivered != n_messages:
            raise RuntimeError(f"delivered {report.delivered} of {n_messages}: {report.summary()}")
        composer = mail.Composer(rendered, rendered.html, config.newsletter, edition.day, NOW)
        sample = composer.message(mail.recipient(config.subscribers[0], edition.day, config.newsletter, b"k"))
        ceiling = _ceiling(port, sample, n_messages, connections)
        return {
            "messages": n_messages,
            "connections": connections,
            "delay_ms": delay_ms,
            "message_bytes": len(sample),
            "ours_wall_s": round(ours, 3),
            "ours_messages_per_s": round(n_messages / ours, 1),
            "ceiling_wall_s": round(ceiling, 3),
            "ceiling_messages_per_s": round(n_messages / ceiling, 1),
            "vs_ceiling": round(ceiling / ours, 3),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 messages, 200 with the slow sink")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    fast, slow = (2000, 200) if args.quick else (10_000, 500)
    results = [run(n, c, d) for n, d in ((fast, 0.0), (slow, 20.0)) for c in (1, 4)]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{'messages':>8} {'conns':>5} {'delay':>6} {'ours/s':>9} {'ceiling/s':>10} {'vs ceiling':>10}")
    for r in results:
        print(f"{r['messages']:>8} {r['connections']:>5} {r['delay_ms']:>4.0f}ms {r['ours_messages_per_s']:>9.1f}"
              f" {r['ceiling_messages_per_s']:>10.1f} {r['vs_ceiling']:>10.2f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--sink"]:
        _serve(float(sys.argv[2]) / 1000, float(sys.argv[3]))
    else:
        main()
