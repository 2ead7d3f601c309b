"""How far a poll or a send has got: a bar on a terminal, a line now and then in logs.

The pipeline only calls `start` / `advance` / `done` on a reporter it is handed, so no stage
knows about terminals. The CLI picks the reporter: a tqdm bar (count, rate, time left) when
standard error is a terminal; otherwise `LogProgress`, which under systemd and cron writes
plain log lines (one every `interval` seconds of a long stage, and its total), never a `\\r`.
"""

from __future__ import annotations

import logging
import time
from typing import IO, Any, Protocol

log = logging.getLogger("digest.progress")


class Progress(Protocol):
    def start(self, what: str, total: int, unit: str) -> None: ...

    def advance(self, count: int = 1) -> None: ...

    def done(self) -> None: ...


class LogProgress:
    """Log lines for long stages only: short ones are said by the stage's own summary line."""

    def __init__(self, interval: float = 10.0, clock: Any = time.monotonic) -> None:
        self.interval, self.clock = interval, clock
        self.what, self.unit, self.total, self.count = "", "", 0, 0
        self.started = self.last = 0.0
        self.lines = 0

    def start(self, what: str, total: int, unit: str) -> None:
        self.what, self.total, self.unit, self.count, self.lines = what, total, unit, 0, 0
        self.started = self.last = self.clock()

    def advance(self, count: int = 1) -> None:
        self.count += count
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self.lines += 1
            log.info("%s", self.line(now))

    def done(self) -> None:
        if self.lines:
            elapsed = self.clock() - self.started
            log.info("%s: %d/%d %s in %.0f s", self.what, self.count, self.total, self.unit, elapsed)

    def line(self, now: float) -> str:
        elapsed = max(now - self.started, 1e-9)
        rate = self.count / elapsed
        left = f", ~{(self.total - self.count) / rate:.0f} s left" if rate > 0 and self.total > self.count else ""
        return f"{self.what}: {self.count}/{self.total} {self.unit} ({rate:.1f}/s{left})"


class BarProgress:
    """tqdm on a terminal (imported here only: a cron run never pays for it)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.bar: Any = None

    def start(self, what: str, total: int, unit: str) -> None:
        from tqdm import tqdm

        self.done()
        self.bar = tqdm(total=total, desc=what, unit=f" {unit}", file=self.stream, dynamic_ncols=True, leave=True)

    def advance(self, count: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def done(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def for_stream(stream: IO[str]) -> Progress:
    """A bar if `stream` is a terminal, else log lines."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return BarProgress(stream) if tty else LogProgress()
