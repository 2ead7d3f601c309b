"""Whole-program runs as subprocesses: the `digest` CLI through a day, and rss2email beside it.

Both are timed as a user would run them (interpreter start-up included), against the same
feed server and the same SMTP sink. Each child's peak RSS comes from `os.wait4`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from common import HERE, SEND_AT, day_polls

SECTIONS = ("World", "Business", "Science", "Culture")


def run_child(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> dict[str, Any]:
    """Run to completion (killed after `timeout`): wall seconds, the child's own peak RSS, exit code, output.

    Linux keeps a process's peak RSS across exec, so a child forked from this (large)
    process would report at least this process's size: GNU time, small, starts the
    command instead when it is there and reports the command's own peak.
    """
    gnu_time = Path("/usr/bin/time")
    with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile("r") as peak:
        if gnu_time.exists():
            cmd = [str(gnu_time), "-q", "-o", peak.name, "-f", "%M", *cmd]
        start = time.perf_counter()
        child = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        timer = threading.Timer(timeout, child.kill)
        timer.start()
        try:
            _pid, status, usage = os.wait4(child.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        output = out.read().decode(errors="replace").strip()
        measured = peak.read().strip().splitlines()
        peak_kib = int(measured[-1]) if measured and measured[-1].isdigit() else usage.ru_maxrss
    return {
        "wall_s": wall,
        "code": child.returncode,
        "output": output,
        "peak_rss_mib": peak_kib / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


def digest_config(folder: Path, feed_port: int, smtp_port: int, feeds: int, subscribers: int, route: str) -> Path:
    """A config of `feeds` http feeds on the local server and `subscribers` subscribers (1 in 5 picks a section)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "[newsletter]",
        'title = "Bench Daily"',
        'from = "Bench Daily <bench@example.com>"',
        'base_url = "https://bench.example"',
        'timezone = "UTC"',
        "[schedule]",
        'send_at = "07:00"',
        "[state]",
        'path = "state.sqlite3"',
        "[fetch]",
        'allow_hosts = ["127.0.0.1"]',
        f"concurrency = {max(32, feeds)}",
        "timeout = 30",
        "[delivery]",
        'transport = "smtp"',
        "[smtp]",
        'host = "127.0.0.1"',
        f"port = {smtp_port}",
        'security = "none"',
        "connections = 4",
        "timeout = 60",
    ]
    for i in range(feeds):
        url = f"http://127.0.0.1:{feed_port}/{route}/f{i}.xml"
        lines += ["[[feeds]]", f'name = "Outlet {i}"', f'url = "{url}"', f'section = "{SECTIONS[i % 4]}"']
    for i in range(subscribers):
        lines += ["[[subscribers]]", f'email = "sub{i}@example.com"', f'name = "Reader {i}"']
        if i % 5 == 4:
            lines.append(f'topics = ["{SECTIONS[i % 4]}"]')
    path = folder / "config.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def digest_cmd(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "digest", "--config", str(config), *args]


def set_generation(feed_port: int, generation: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{feed_port}/_gen/{generation}", timeout=10) as answer:
        answer.read()


def day(folder: Path, feed_port: int, smtp_port: int, feeds: int, subscribers: int, polls: int) -> dict[str, Any]:
    """`digest fetch` at each poll of the day, then `digest send` at 07:00: the whole day, timed."""
    config = digest_config(folder, feed_port, smtp_port, feeds, subscribers, "day")
    env = {"DIGEST_SECRET": "bench-secret"}
    steps: list[dict[str, Any]] = []
    start = time.perf_counter()
    for generation, moment in enumerate(day_polls(polls)):
        set_generation(feed_port, generation)
        steps.append(run_child(digest_cmd(config, "fetch", "--now", moment.isoformat()), env))
    steps.append(run_child(digest_cmd(config, "send", "--now", SEND_AT.isoformat()), env))
    total = time.perf_counter() - start
    failed = [s for s in steps if s["code"] != 0]
    if failed:
        raise RuntimeError(f"digest exited {failed[0]['code']}: {failed[0]['output'][-500:]}")
    return {
        "feeds": feeds,
        "subscribers": subscribers,
        "polls": polls,
        "fetch_s": [round(s["wall_s"], 3) for s in steps[:-1]],
        "send_s": steps[-1]["wall_s"],
        "day_s": total,
        "send_summary": steps[-1]["output"].splitlines()[-1] if steps[-1]["output"] else "",
        "peak_rss_mib": max(s["peak_rss_mib"] for s in steps),
        "steps_peak_rss_mib": [round(s["peak_rss_mib"]) for s in steps],  # the fetches, then the send
    }


def digest_polls(folder: Path, feed_port: int, smtp_port: int, feeds: int, route: str = "slow") -> dict[str, Any]:
    """`digest fetch` twice on the slow feeds (200s, then 304s): the CLI's poll, like rss2email's.
    `route="spread"`: the servers answer at different paces, so parsing can overlap the fetch."""
    config = digest_config(folder, feed_port, smtp_port, feeds, 1, route)
    first = run_child(digest_cmd(config, "fetch", "--now", SEND_AT.isoformat()))
    second = run_child(digest_cmd(config, "fetch", "--now", SEND_AT.isoformat()))
    for step in (first, second):
        if step["code"] != 0:
            raise RuntimeError(f"digest fetch exited {step['code']}: {step['output'][-500:]}")
    return {
        "round1_s": first["wall_s"],
        "round2_s": second["wall_s"],
        "poll_s": first["wall_s"] + second["wall_s"],
        "round1_cpu_s": first["cpu_s"],
        "round2_cpu_s": second["cpu_s"],
    }


# --------------------------------------------------------------------------- rss2email


def find_r2e() -> str | None:
    """`$R2E`, else benchmarks/.venv-r2e, else /tmp/r2e-venv, else `r2e` on PATH."""
    candidates = [os.environ.get("R2E", ""), str(HERE / ".venv-r2e" / "bin" / "r2e"), "/tmp/r2e-venv/bin/r2e"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    return shutil.which("r2e")


def r2e_config(folder: Path, feed_port: int, smtp_port: int, feeds: int, route: str) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "[DEFAULT]",
        "from = bench@example.com",
        "to = reader@example.com",
        "email-protocol = smtp",
        f"smtp-server = 127.0.0.1:{smtp_port}",
        "smtp-auth = False",
        "smtp-ssl = False",
        "digest = True",
        "feed-timeout = 30",
    ]
    for i in range(feeds):
        lines += [f"[feed.f{i}]", f"url = http://127.0.0.1:{feed_port}/{route}/f{i}.xml"]
    config = folder / "r2e.cfg"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config, folder / "r2e.json"


def r2e(binary: str, folder: Path, feed_port: int, smtp_port: int, feeds: int, sink_count: Any) -> dict[str, Any]:
    """rss2email on the same feeds and sink: two polls (200s, then 304s), then a timed send."""

    def run(config: Path, data: Path, *args: str) -> float:
        step = run_child([binary, "-c", str(config), "-d", str(data), "run", *args])
        if step["code"] != 0:
            raise RuntimeError(f"r2e exited {step['code']}: {step['output'][-500:]}")
        return float(step["wall_s"])

    config, data = r2e_config(folder / "poll", feed_port, smtp_port, feeds, "slow")
    round1 = run(config, data, "--no-send")
    round2 = run(config, data, "--no-send")
    # Sending alone: the same run with and without sending, on feeds that answer at once.
    config, data = r2e_config(folder / "nosend", feed_port, smtp_port, feeds, "fast")
    without = run(config, data, "--no-send")
    config, data = r2e_config(folder / "send", feed_port, smtp_port, feeds, "fast")
    before = sink_count()
    with_send = run(config, data)
    after = sink_count()
    sent = after[0] - before[0]
    send_s = max(with_send - without, 1e-3)
    return {
        "feeds": feeds,
        "round1_s": round1,
        "round2_s": round2,
        "poll_s": round1 + round2,
        "run_nosend_s": without,
        "run_send_s": with_send,
        "messages": sent,
        "avg_bytes": (after[1] - before[1]) // max(1, sent),
        "send_s": send_s,
        "messages_per_s": sent / send_s,
    }
