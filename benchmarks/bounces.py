"""`digest bounces` throughput: N VERP bounces (DSNs) in a Maildir, read into a fresh state.

    python benchmarks/bounces.py [--messages 2000] [--subscribers 10000] [--repeat 3]

Each run is the real CLI in a subprocess on a copy of a state that has one sent edition;
reported: median seconds, messages per second, and the same for a second read of the same
Maildir (everything already processed: the cost of `digest run` polling an old mailbox).
"""

from __future__ import annotations

import argparse
import mailbox
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

import bounce_samples  # noqa: E402

from digest import verp  # noqa: E402
from digest.store import Store  # noqa: E402

RETURN_PATH = "bounces@orbitdaily.example"
DAY = date(2026, 11, 21)


def prepare(folder: Path, messages: int, subscribers: int) -> tuple[Path, Path, Path]:
    emails = [f"reader{i:06d}@example.com" for i in range(subscribers)]
    shutil.copytree(HERE.parent / "examples" / "feeds", folder / "feeds")
    lines = ["[newsletter]", 'from = "news@orbitdaily.example"', "", "[bounces]", f'return_path = "{RETURN_PATH}"', ""]
    lines += ["[[feeds]]", 'name = "Orbital Wire"', 'url = "feeds/orbital-wire.xml"', ""]
    for email in emails:
        lines += ["[[subscribers]]", f'email = "{email}"', ""]
    config = folder / "config.toml"
    config.write_text("\n".join(lines))
    state = folder / ".digest" / "state.sqlite3"
    with Store(state) as store:
        key = verp.key(store.secret())
        store.ensure_deliveries(DAY, emails, datetime(2026, 11, 21, 8, tzinfo=UTC))
    box = mailbox.Maildir(folder / "box", create=True)
    for i in range(messages):
        email = emails[i % len(emails)]
        box.add(bounce_samples.dsn(verp.return_path(RETURN_PATH, key, DAY, email), email,
                                   status="4.2.2" if i % 2 else "5.1.1", action="delayed" if i % 2 else "failed"))
    return config, state, folder / "box"


def run(config: Path, box: Path) -> tuple[float, str]:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "digest", "--config", str(config), "bounces", "--maildir", str(box),
         "--now", "2026-11-21T09:00:00+00:00"],
        capture_output=True, text=True, check=True, cwd=HERE.parent,
    ).stdout.strip()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--subscribers", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config, state, box = prepare(Path(tmp), args.messages, args.subscribers)
        pristine = state.with_name("pristine.sqlite3")
        shutil.copy(state, pristine)
        first, again = [], []
        for _ in range(args.repeat):
            for suffix in ("", "-wal", "-shm"):
                state.with_name(state.name + suffix).unlink(missing_ok=True)
            shutil.copy(pristine, state)
            seconds, line = run(config, box)
            first.append(seconds)
            seconds, line_again = run(config, box)
            again.append(seconds)
        print(f"first read : {line}")
        print(f"second read: {line_again}")
        for name, times in (("first read", first), ("second read", again)):
            median = statistics.median(times)
            print(f"{name:11s}: median {median:.2f} s over {len(times)} runs, {args.messages / median:.0f} messages/s"
                  f" ({args.subscribers} subscribers)")


if __name__ == "__main__":
    main()
