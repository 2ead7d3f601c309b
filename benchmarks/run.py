"""Benchmarks: each stage and a whole day, side by side with rss2email, in one run.

    python benchmarks/run.py           # 200 feeds x 50 entries, 10,000 subscribers: a few minutes
    python benchmarks/run.py --quick   # 40 feeds, 1,000 subscribers: under a minute
    python benchmarks/run.py --subscribers 100000   # the day (and its send) at 100,000 subscribers

Prints a table and writes benchmarks/results/latest.json (or --out). The feed server and
the SMTP sink run in their own processes on 127.0.0.1 and stop by themselves.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import peers
import sink
import stages
import startup
from common import HERE, helper, load_pool, scaled


@dataclass(frozen=True)
class Scale:
    feeds: int = 200
    entries: int = 50
    day_entries: int = 10
    polls: int = 4
    subscribers: int = 10_000
    messages: int = 10_000
    ceiling_messages: int = 5_000
    group_sizes: tuple[int, ...] = (2_000, 10_000)
    repeats: int = 3
    r2e_feeds: int = 200
    spread: float = 3.0  # seconds between the first and the last answer of the "paced" feeds


FULL = Scale()
QUICK = Scale(
    feeds=40,
    subscribers=1_000,
    messages=1_000,
    ceiling_messages=1_000,
    group_sizes=(2_000,),
    repeats=3,
    r2e_feeds=20,
)
TINY = Scale(
    feeds=5,
    entries=5,
    day_entries=4,
    polls=2,
    subscribers=20,
    messages=20,
    ceiling_messages=20,
    group_sizes=(50,),
    repeats=1,
    r2e_feeds=3,
    spread=0.3,
)


def run(scale: Scale, with_r2e: bool = True, log: Any = print) -> dict[str, Any]:
    """Every benchmark at `scale`; returns the results document (also what latest.json holds)."""
    out: dict[str, Any] = {}
    pool = load_pool()
    args = ["--feeds", str(scale.feeds), "--entries", str(scale.entries)]
    args += ["--day-entries", str(scale.day_entries), "--polls", str(scale.polls), "--delay", str(stages.DELAY)]
    args += ["--spread", str(scale.spread)]
    with (
        tempfile.TemporaryDirectory(prefix="digest-bench-") as tmp,
        helper("feedsrv.py", *args) as feeds,
        helper("sink.py", "--workers", "4") as smtp,  # the day sends over 4 connections
    ):
        folder = Path(tmp)
        log("start-up: digest --help, status, fetch (all 304) as whole processes")
        out["startup"] = startup.run(runs=max(3, 3 * scale.repeats), feeds=scale.feeds)
        log(f"fetch: {scale.feeds} feeds x {scale.entries} entries, {stages.DELAY * 1000:.0f} ms late")
        out["fetch"], bodies = stages.fetch_rounds(feeds.port, scale.feeds, scale.repeats)
        log("parse")
        out["parse"] = stages.parse_all(bodies)
        log(f"grouping: {scale.group_sizes}")
        out["grouping"] = stages.grouping(scaled(pool, max(scale.group_sizes)), scale.group_sizes, scale.repeats)
        config = stages.load_config(
            peers.digest_config(folder / "stages", feeds.port, smtp.port, scale.feeds, scale.subscribers, "day")
        )
        day_items = scaled(pool[::-1], scale.feeds * scale.day_entries)
        log("render + inline")
        out["render"], (edition, rendered) = stages.render_editions(
            config, stages.entries_from(day_items, peers.SECTIONS), scale.repeats
        )
        log(f"message building: {scale.messages}")
        out["messages"], (owed, build, sample) = stages.build_messages(config, edition, rendered, scale.messages)
        out["delivery"] = {}
        for connections in (1, 4):
            log(f"delivery: {len(owed)} messages, {connections} connection(s); sink ceiling")
            out["delivery"][f"c{connections}"] = delivery_figures(smtp.port, owed, build, sample, connections, scale)
        out["delivery"]["sink_accepted"] = sink.count(smtp.extra["STATS"])[0]
        log("digest fetch x2 (CLI, slow feeds)")
        out["digest_cli_poll"] = peers.digest_polls(folder / "cli-poll", feeds.port, smtp.port, scale.feeds)
        log(f"digest fetch x2 (CLI, feeds answering 0.1 to {0.1 + scale.spread:.1f} s late)")
        out["digest_cli_poll_spread"] = peers.digest_polls(
            folder / "cli-poll-spread", feeds.port, smtp.port, scale.feeds, route="spread"
        )
        out["digest_cli_poll_spread"]["spread_s"] = scale.spread
        binary = peers.find_r2e() if with_r2e else None
        if binary:
            log(f"rss2email: {scale.r2e_feeds} feeds ({binary})")
            out["rss2email"] = peers.r2e(
                binary,
                folder / "r2e",
                feeds.port,
                smtp.port,
                scale.r2e_feeds,
                lambda: sink.count(smtp.extra["STATS"]),
            )
        else:
            why = "rss2email not installed: pip install rss2email (see README)" if with_r2e else "--no-rss2email"
            out["rss2email"] = {"skipped": why}
            log(f"rss2email: skipped ({why})")
        log(f"day: {scale.feeds} feeds, {scale.polls} polls, {scale.subscribers} subscribers")
        out["day"] = peers.day(folder / "day", feeds.port, smtp.port, scale.feeds, scale.subscribers, scale.polls)
    out["memory"] = {
        "bench_process_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "digest_send_peak_mib": out["day"]["peak_rss_mib"],
    }
    out["day"]["send_messages_per_s"] = out["day"]["subscribers"] / out["day"]["send_s"]
    out["targets"] = targets(out, scale)
    return out


def delivery_figures(port: int, owed: Any, build: Any, sample: bytes, connections: int, scale: Scale) -> dict[str, Any]:
    """benchmarks/delivery.py (the whole send path: SQLite commits included) when it is there, else the stage alone."""
    try:
        import delivery
    except ImportError:
        delivery = None
    if delivery is not None and hasattr(delivery, "run"):
        d = delivery.run(len(owed), connections, 0.0)
        return {
            "messages": d["messages"],
            "messages_per_s": d["ours_messages_per_s"],
            "ceiling_messages_per_s": d["ceiling_messages_per_s"],
            "vs_ceiling": d["vs_ceiling"],
            "message_bytes": d.get("message_bytes", 0),
            "measured_by": "benchmarks/delivery.py: pipeline.send_edition resuming a frozen edition",
        }
    ours = stages.deliver_smtp(port, owed, build, connections)
    bare = stages.ceiling(port, sample, min(len(owed), scale.ceiling_messages), connections)
    return {
        **ours,
        "ceiling_messages_per_s": bare["messages_per_s"],
        "vs_ceiling": ours["messages_per_s"] / bare["messages_per_s"],
        "message_bytes": len(sample),
        "measured_by": "benchmarks/stages.py: deliver.to_smtp with per-message building, no store",
    }


def targets(out: dict[str, Any], scale: Scale) -> dict[str, Any]:
    fetch, r2e = out["fetch"], out["rss2email"]
    delivery = [out["delivery"][k] for k in ("c1", "c4")]
    result: dict[str, Any] = {
        "poll_vs_floor": fetch["poll_wall_s"] / fetch["floor_s"],
        "poll_304_cpu_s": fetch["round2_304_cpu_s"],
        "delivery_vs_ceiling": min(d["vs_ceiling"] for d in delivery),
        "delivery_c1_vs_ceiling": delivery[0]["vs_ceiling"],
        "delivery_c4_vs_c1": delivery[1]["messages_per_s"] / delivery[0]["messages_per_s"],
        "day_s": out["day"]["day_s"],
        "day_peak_rss_mib": out["day"]["peak_rss_mib"],
        "help_s": out["startup"]["help_s"],
        "status_s": out["startup"]["status_s"],
        "fetch_304_cli_s": out["startup"]["fetch_304_s"],
    }
    if "poll_s" in r2e:
        # Like for like: both as CLI runs on the same feeds (start-up, fetch, parse, state).
        result["poll_speedup_vs_rss2email"] = (
            r2e["poll_s"] / out["digest_cli_poll"]["poll_s"] * (scale.feeds / r2e["feeds"])
        )
        # The daemon (`digest run`) polls in-process: no interpreter start-up per poll.
        in_process = fetch["round1_200_wall_s"] + out["parse"]["wall_s"] + fetch["round2_304_wall_s"]
        result["poll_speedup_vs_rss2email_in_process"] = r2e["poll_s"] / in_process * (scale.feeds / r2e["feeds"])
        result["send_speedup_vs_rss2email"] = out["delivery"]["c1"]["messages_per_s"] / r2e["messages_per_s"]
    return result


GOALS = {
    "poll_vs_floor": ("<=", 1.3),
    "poll_speedup_vs_rss2email": (">=", 20.0),
    "poll_304_cpu_s": ("<", 0.5),
    "delivery_vs_ceiling": (">=", 0.8),
    "delivery_c1_vs_ceiling": (">=", 0.9),
    "delivery_c4_vs_c1": (">=", 2.5),
    "day_s": ("<", 60.0),
    "day_peak_rss_mib": ("<", 300.0),
    "help_s": ("<", 0.15),
    "status_s": ("<", 0.15),
    "fetch_304_cli_s": ("<", 0.5),
}


def met(name: str, value: float) -> str:
    if name not in GOALS:
        return ""
    op, goal = GOALS[name]
    ok = value <= goal if op == "<=" else value >= goal if op == ">=" else value < goal
    return f"{'met' if ok else 'MISSED'} ({op} {goal:g})"


def table(out: dict[str, Any]) -> str:
    f, p, g, r, m, d = (out[k] for k in ("fetch", "parse", "grouping", "render", "messages", "day"))
    st = out["startup"]
    rows = [
        ("digest --help", f"{st['help_s'] * 1000:.0f} ms", f"median of {st['runs']}, as installed (bytecode)"),
        ("digest status", f"{st['status_s'] * 1000:.0f} ms", f"{st['feeds']} feeds, a week of editions"),
        ("digest fetch, all 304", f"{st['fetch_304_s'] * 1000:.0f} ms", "whole process, server 100 ms late"),
        ("fetch, round 1 (200s)", f"{f['round1_200_wall_s']:.3f} s wall, {f['round1_200_cpu_s']:.3f} s CPU", ""),
        ("fetch, round 2 (304s)", f"{f['round2_304_wall_s']:.3f} s wall, {f['round2_304_cpu_s']:.3f} s CPU", ""),
        ("latency floor (2 rounds)", f"{f['floor_s']:.3f} s", f"{f['feeds']} feeds, concurrency {f['concurrency']}"),
        ("parse", f"{p['wall_s']:.2f} s", f"{p['entries']} entries, {p['entries_per_s']:.0f}/s"),
    ]
    for key, value in g.items():
        if key.endswith("_s"):
            n = key.split("_")[1]
            quality = g.get(f"group_{n}_b3_f1")
            note = f"{g[f'group_{n}_stories']} stories" + (f", B-cubed F1 {quality:.3f}" if quality is not None else "")
            rows.append((f"grouping {n} items", f"{value:.3f} s", note))
    rows += [
        ("render + inline", f"{r['per_edition_s']:.3f} s / edition", f"{r['stories']} stories, {r['html_bytes']} B"),
        ("message building", f"{m['messages_per_s']:.0f} msg/s", f"{m['messages']} x {m['avg_bytes']} B"),
    ]
    for key in ("c1", "c4"):
        dd = out["delivery"][key]
        rows.append(
            (
                f"delivery, {key[1:]} connection(s)",
                f"{dd['messages_per_s']:.0f} msg/s",
                f"ceiling {dd['ceiling_messages_per_s']:.0f} msg/s ({dd['vs_ceiling']:.0%})",
            )
        )
    cli = out["digest_cli_poll"]
    rows.append(("digest fetch CLI x2", f"{cli['poll_s']:.2f} s", f"{cli['round1_s']:.2f} + {cli['round2_s']:.2f}"))
    rows.append(("digest fetch CLI, 304s", f"{cli['round2_cpu_s']:.2f} s CPU", "whole process, start-up included"))
    if "digest_cli_poll_spread" in out:
        spread = out["digest_cli_poll_spread"]
        late = f"servers 0.1-{0.1 + spread['spread_s']:.1f} s late"
        rows.append(("digest fetch CLI, paced", f"{spread['round1_s']:.2f} s", f"first poll, {late}"))
    r2e = out["rss2email"]
    if "poll_s" in r2e:
        rows += [
            (
                "rss2email poll x2",
                f"{r2e['poll_s']:.2f} s",
                f"{r2e['feeds']} feeds: {r2e['round1_s']:.2f} + {r2e['round2_s']:.2f}",
            ),
            (
                "rss2email send",
                f"{r2e['messages_per_s']:.0f} msg/s",
                f"{r2e['messages']} digests x {r2e['avg_bytes']} B",
            ),
        ]
    else:
        rows.append(("rss2email", "skipped", r2e["skipped"]))
    rows += [
        ("day: fetch x polls", " + ".join(f"{s:.2f}" for s in d["fetch_s"]) + " s", f"{d['feeds']} feeds"),
        ("day: send", f"{d['send_s']:.2f} s", d["send_summary"][:70]),
        ("day: send rate", f"{d['send_messages_per_s']:.0f} msg/s", f"{d['subscribers']} subscribers, whole run"),
        ("peak memory", f"{out['memory']['digest_send_peak_mib']:.0f} MiB", "largest digest CLI process of the day"),
        ("peak memory per run", " / ".join(map(str, d.get("steps_peak_rss_mib", []))) + " MiB", "fetches, then send"),
    ]
    lines = [f"{a:<28} {b:<34} {c}" for a, b, c in rows]
    lines.append("")
    lines.append("targets")
    for name, value in out["targets"].items():
        lines.append(f"  {name:<28} {value:>10.3f}   {met(name, value)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller run, under a minute")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # the test suite's smoke run
    parser.add_argument("--no-rss2email", action="store_true", help="skip the rss2email comparison")
    parser.add_argument("--subscribers", type=int, help="subscribers of the day (default 10,000; 1,000 --quick)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "latest.json")
    args = parser.parse_args(argv)
    scale = TINY if args.tiny else QUICK if args.quick else FULL
    if args.subscribers:
        scale = replace(scale, subscribers=args.subscribers)
    start = time.perf_counter()
    out = run(
        scale,
        with_r2e=not args.no_rss2email,
        log=lambda msg: print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr),
    )
    out["meta"] = {
        "date": datetime.now(UTC).date().isoformat(),
        "quick": args.quick,
        "scale": scale.__dict__,
        "python": platform.python_version(),
        "machine": f"{platform.system()} {platform.machine()}",
        "cpus": len(__import__("os").sched_getaffinity(0)),
        "total_s": time.perf_counter() - start,
    }
    print(table(out))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nwritten {args.out} in {out['meta']['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
