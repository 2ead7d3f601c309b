"""What progress reporting costs per step: a no-op, log lines (LogProgress), a tqdm bar on a pty.

    python benchmarks/progress.py [--steps 200000] [--repeats 7]

A send calls advance() once per batch of delivery outcomes and a poll once per feed; the
figures are nanoseconds per call, medians of the repeats, next to the ~4 ms a message
takes to deliver (benchmarks/delivery.py), to show the bar costs nothing that matters.
"""

from __future__ import annotations

import argparse
import os
import pty
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from digest.progress import BarProgress, LogProgress, Progress


class Null:
    def start(self, what: str, total: int, unit: str) -> None:
        pass

    def advance(self, count: int = 1) -> None:
        pass

    def done(self) -> None:
        pass


def per_call(progress: Progress, steps: int) -> float:
    progress.start("sending", steps, "messages")
    start = time.perf_counter()
    for _ in range(steps):
        progress.advance()
    elapsed = time.perf_counter() - start
    progress.done()
    return elapsed / steps * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    master, slave = pty.openpty()
    stop = threading.Event()

    def drain() -> None:  # a terminal that reads what the bar writes
        while not stop.is_set():
            try:
                if not os.read(master, 65536):
                    return
            except OSError:
                return

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    terminal = os.fdopen(slave, "w", buffering=1)
    reporters: dict[str, Progress] = {
        "no-op": Null(),
        "LogProgress": LogProgress(),
        "tqdm on a pty": BarProgress(terminal),
    }
    print(f"{'reporter':<16} {'ns/call':>9}  (median of {args.repeats} x {args.steps:,} calls)")
    for name, reporter in reporters.items():
        runs = [per_call(reporter, args.steps) for _ in range(args.repeats)]
        print(f"{name:<16} {statistics.median(runs):>9.0f}")
    stop.set()
    terminal.close()
    os.close(master)


if __name__ == "__main__":
    main()
