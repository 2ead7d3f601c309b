"""Score and time the grouping stage on labelled story sets.

    python benchmarks/grouping.py INPUT.jsonl [INPUT.jsonl ...] [--output PRED.jsonl]
                                  [--threshold X] [--scale N]

Input lines: {"id", "title", "summary", "source", "published", "story"?} (the format of
shared/data/stories/). Runs digest.group.group with the DEFAULT settings unless
--threshold is given (for exploration only), writes {"id", "cluster"} lines with --output
(one input file only), and prints one row per file: B-cubed and pairwise P/R/F1 when the
input has `story` labels, the run time and the peak traced memory. Files whose name
starts with "uci-" are also averaged (the UCI mean).

--scale N times the stage on N synthetic items instead: all inputs concatenated and
repeated with new ids, each repetition shifted by 30 days (a stream of N items), and
again with every repetition on the original dates (N items crowded into the same days,
the worst case for candidate generation).

Scores are computed here (standard library) so the benchmark runs without shared/.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
import tracemalloc
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from digest.group import group
from digest.models import Entry, GroupingSettings


def load(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def parse_time(text: str) -> datetime:
    """ISO date or date-time; naive values are UTC."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def to_entry(item: dict[str, str]) -> Entry:
    """Benchmark items have no links or guids: empty, so nothing is an exact duplicate."""
    return Entry(
        id=str(item["id"]),
        feed=str(item.get("source", "")),
        link="",
        title=str(item.get("title", "")),
        summary=str(item.get("summary", "") or ""),
        published=parse_time(str(item["published"])),
        section="News",
    )


def predict(entries: list[Entry], settings: GroupingSettings) -> tuple[dict[str, str], float, float]:
    """Cluster labels per id, and the stage's wall and CPU seconds (CPU is robust to a busy machine)."""
    start, cpu = time.perf_counter(), time.process_time()
    stories = group(entries, settings)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    labels = {e.id: f"s{n}" for n, story in enumerate(stories) for e in story.entries}
    return labels, seconds, cpu


def traced_peak(entries: list[Entry], settings: GroupingSettings) -> float:
    """Peak MiB the stage allocates, from a second run under tracemalloc (slow, so untimed)."""
    tracemalloc.start()
    group(entries, settings)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return peak


def rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def f1(p: float, r: float) -> float:
    p, r = (0.0 if math.isnan(p) else p), (0.0 if math.isnan(r) else r)
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def score(gold: dict[str, str], pred: dict[str, str]) -> dict[str, float]:
    """B-cubed (per item, averaged) and pairwise (over item pairs) precision/recall/F1."""
    n = len(gold)
    cell = Counter((gold[i], pred[i]) for i in gold)
    gsize, psize = Counter(gold.values()), Counter(pred.values())
    b3p = sum(c * c / psize[p] for (g, p), c in cell.items()) / n
    b3r = sum(c * c / gsize[g] for (g, p), c in cell.items()) / n

    def pairs(k: int) -> int:
        return k * (k - 1) // 2

    tp = sum(pairs(c) for c in cell.values())
    pred_pairs, gold_pairs = sum(map(pairs, psize.values())), sum(map(pairs, gsize.values()))
    pp = tp / pred_pairs if pred_pairs else float("nan")
    pr = tp / gold_pairs if gold_pairs else float("nan")
    return {
        "b3_p": b3p, "b3_r": b3r, "b3_f1": f1(b3p, b3r), "pair_p": pp, "pair_r": pr, "pair_f1": f1(pp, pr),
        "gold": len(gsize), "pred": len(psize),
    }  # fmt: skip


COLUMNS = ("B3 P", "B3 R", "B3 F1", "pw P", "pw R", "pw F1")
HEADER = (
    f"{'file':<30} {'items':>6} "
    + " ".join(f"{c:>6}" for c in COLUMNS)
    + f" {'gold':>5} {'pred':>5} {'sec':>6} {'cpu':>6} {'MiB':>6}"
)


def row(name: str, n: int, s: dict[str, float] | None, seconds: float, cpu: float, peak: float) -> str:
    timing = f"{seconds:>6.3f} {cpu:>6.3f} {peak:>6.1f}"
    if s is None:
        return f"{name:<30} {n:>6} " + " ".join(f"{'-':>6}" for _ in COLUMNS) + f" {'-':>5} {'-':>5} {timing}"
    nums = " ".join(f"{s[k]:>6.3f}" for k in ("b3_p", "b3_r", "b3_f1", "pair_p", "pair_r", "pair_f1"))
    return f"{name:<30} {n:>6} {nums} {int(s['gold']):>5} {int(s['pred']):>5} {timing}"


def run_files(paths: list[Path], settings: GroupingSettings, output: Path | None) -> None:
    print(HEADER)
    uci: list[float] = []
    for path in paths:
        items = load(path)
        entries = [to_entry(i) for i in items]
        labels, seconds, cpu = predict(entries, settings)
        peak = traced_peak(entries, settings)
        if output is not None:
            with output.open("w", encoding="utf-8") as f:
                for item in items:
                    f.write(json.dumps({"id": str(item["id"]), "cluster": labels[str(item["id"])]}) + "\n")
        gold = {str(i["id"]): str(i["story"]) for i in items if "story" in i}
        s = score(gold, labels) if gold and len(gold) == len(items) else None
        if s is not None and path.name.startswith("uci-"):
            uci.append(s["b3_f1"])
        print(row(path.name, len(items), s, seconds, cpu, peak))
    if uci:
        print(f"UCI mean B-cubed F1 over {len(uci)} files: {sum(uci) / len(uci):.4f}")
    print(f"threshold {settings.threshold}; sec/cpu: wall/CPU seconds of group(); MiB: peak it allocates (tracemalloc)")


def synthetic(entries: list[Entry], n: int, shift_days: int) -> list[Entry]:
    """n entries: copies of `entries` with new ids, copy k moved k * shift_days later."""
    out: list[Entry] = []
    for k in range(math.ceil(n / len(entries))):
        delta = timedelta(days=k * shift_days)
        out.extend(replace(e, id=f"{e.id}~{k}", published=e.published + delta) for e in entries)
    return out[:n]


def run_scale(paths: list[Path], n: int, settings: GroupingSettings) -> None:
    base = [to_entry(i) for p in paths for i in load(p)]
    for label, shift in (("stream (copies 30 days apart)", 30), ("crowded (copies on same dates)", 0)):
        entries = synthetic(base, n, shift)
        labels, seconds, cpu = predict(entries, settings)
        stories = len(set(labels.values()))
        print(f"{n} items, {label}: {seconds:.2f} s wall, {cpu:.2f} s CPU, {stories} stories, "
              f"process peak RSS {rss_mib():.0f} MiB")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", type=Path, help="story JSONL files")
    ap.add_argument("--output", type=Path, help="write {id, cluster} lines (one input only)")
    ap.add_argument("--threshold", type=float, help="override the default threshold (exploration only)")
    ap.add_argument("--scale", type=int, metavar="N", help="time N synthetic items built from the inputs")
    args = ap.parse_args()
    if args.output is not None and len(args.inputs) != 1:
        ap.error("--output takes exactly one input file")
    settings = GroupingSettings() if args.threshold is None else GroupingSettings(threshold=args.threshold)
    if args.scale:
        run_scale(args.inputs, args.scale, settings)
    else:
        run_files(args.inputs, settings, args.output)


if __name__ == "__main__":
    main()
