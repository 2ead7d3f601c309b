"""Start-up benchmark: whole `digest` processes as cron or a person runs them.

    python benchmarks/startup.py            # 15 runs of each command, medians
    python benchmarks/startup.py --runs 5 --json
    python benchmarks/startup.py --instructions   # also each command's instruction count (valgrind)

Times `digest --help`, `digest status` (a state with a week of editions, the newest delivered; 200
feeds, 100 subscribers) and `digest fetch` of 200 feeds that all answer 304 (the feed server
answers 100 ms late, so 0.1 s of each fetch is the server's), each as a fresh subprocess;
also `import digest.cli` in-process figures from `python -X importtime` (what each command
pays before it does anything).

Bytecode: an installed package has its .pyc files (pip compiles them); a checkout run with
PYTHONDONTWRITEBYTECODE=1 recompiles every module on every start. The timed runs use a
private PYTHONPYCACHEPREFIX, warmed first, i.e. as installed; `cold_*` runs show the rest.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peers  # noqa: E402
from common import SEND_AT, helper  # noqa: E402

TARGETS = {"help_s": 0.150, "status_s": 0.150, "fetch_304_s": 0.5}


def _env(cache: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    if cache is None:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    else:
        env["PYTHONPYCACHEPREFIX"] = str(cache)
    return env


def _time(cmd: list[str], env: dict[str, str], runs: int) -> list[float]:
    walls = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, capture_output=True, timeout=120, check=False)
        walls.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.decode()[-500:]}")
    return walls


def instructions(cmd: list[str], env: dict[str, str]) -> int | None:
    """Instructions one run of `cmd` executes, by valgrind's callgrind; None without valgrind."""
    if not shutil.which("valgrind"):
        return None
    with tempfile.TemporaryDirectory(prefix="digest-bench-cg-") as tmp:
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/out", *cmd],
            env=env, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
    found = re.search(r"Collected : (\d+)", done.stderr)
    return int(found.group(1)) if done.returncode == 0 and found else None


def import_ms(env: dict[str, str], module: str = "digest.cli") -> dict[str, float]:
    """`python -X importtime -c 'import module'`: cumulative ms of the heaviest top-level imports."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    out: dict[str, float] = {}
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            name = parts[2].rstrip()
            depth = (len(name) - len(name.lstrip())) // 2
            if depth <= 1:
                out[name.strip()] = int(parts[1]) / 1000
    return dict(sorted(out.items(), key=lambda kv: -kv[1])[:8])


def week(state: Path, days: int = 7) -> None:
    """A week of editions, as an operator's state holds (status reports the last 7): the
    delivered edition recorded again for each of the six days before, outside the timing."""
    from dataclasses import replace
    from datetime import timedelta

    from digest.store import Store

    with Store(state) as store:
        edition = store.edition(SEND_AT.date())
        if edition is None:
            raise RuntimeError("the benchmark send recorded no edition")
        renders = list(store.renders(edition.day).values())
        for back in range(1, days):
            earlier = replace(edition, day=edition.day - timedelta(days=back))
            store.record_edition(replace(earlier, created_at=edition.created_at - timedelta(days=back)), renders)


def run(runs: int = 15, feeds: int = 200, count_instructions: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="digest-bench-startup-") as tmp, helper(
        "feedsrv.py", "--feeds", str(feeds), "--entries", "20", "--delay", "0.1"
    ) as feedsrv:
        folder = Path(tmp)
        cache = folder / "pycache"
        warm, cold = _env(cache), _env(None)
        config = peers.digest_config(folder / "state", feedsrv.port, 25, feeds, 100, "slow")
        digest = peers.digest_cmd(config)
        first = subprocess.run([*digest, "fetch", "--now", SEND_AT.isoformat()], env=warm, capture_output=True)
        if first.returncode != 0:
            raise RuntimeError(first.stderr.decode()[-500:])
        # an edition to report on: built and recorded with a Maildir transport, outside the timing
        maildir = folder / "state" / "maildir.toml"
        text = config.read_text(encoding="utf-8")
        text = text.replace('transport = "smtp"', 'transport = "maildir"\nmaildir = "out"')
        maildir.write_text(text, encoding="utf-8")
        sent = subprocess.run(
            [sys.executable, "-m", "digest", "--config", str(maildir), "send", "--now", SEND_AT.isoformat()],
            env={**warm, "DIGEST_SECRET": "x"},
            capture_output=True,
        )
        if sent.returncode != 0:
            raise RuntimeError(sent.stderr.decode()[-500:])
        week(folder / "state" / "state.sqlite3")
        fetch = [*digest, "fetch", "--now", SEND_AT.isoformat()]
        results: dict[str, Any] = {"runs": runs, "feeds": feeds}
        for name, cmd in (("help", [*digest, "--help"]), ("status", [*digest, "status"]), ("fetch_304", fetch)):
            walls = _time(cmd, warm, runs)
            results[f"{name}_s"] = statistics.median(walls)
            results[f"{name}_min_s"] = min(walls)
            results[f"cold_{name}_s"] = statistics.median(_time(cmd, cold, max(3, runs // 3)))
            if count_instructions:
                results[f"{name}_instructions"] = instructions(cmd, warm)
        results["import_digest_cli_ms"] = import_ms(warm)
        results["import_fetch_path_ms"] = import_ms(warm, "digest.pipeline, digest.fetch, digest.parse")
    results["targets"] = {k: {"value": results[k], "goal": v, "met": results[k] < v} for k, v in TARGETS.items()}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--instructions", action="store_true", help="also count instructions (valgrind)")
    args = parser.parse_args()
    out = run(args.runs, count_instructions=args.instructions)
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for name in ("help", "status", "fetch_304"):
        goal = TARGETS[f"{name}_s"]
        print(
            f"digest {name:<10} {out[f'{name}_s'] * 1000:7.0f} ms median (min {out[f'{name}_min_s'] * 1000:.0f})"
            f"  goal < {goal * 1000:.0f} ms  {'met' if out[f'{name}_s'] < goal else 'MISSED'}"
            f"   without bytecode: {out[f'cold_{name}_s'] * 1000:.0f} ms"
        )
    if args.instructions:
        counts = {name: out.get(f"{name}_instructions") for name in ("help", "status", "fetch_304")}
        shown = (f"{k} {v / 1e6:.0f}M" if v else f"{k} -" for k, v in counts.items())
        print("instructions (callgrind):", ", ".join(shown))
    print("import digest.cli (ms):", ", ".join(f"{k} {v:.0f}" for k, v in out["import_digest_cli_ms"].items()))


if __name__ == "__main__":
    main()
