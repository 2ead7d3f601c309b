"""Score and time the grouping stage on labelled story sets.

    python benchmarks/grouping.py INPUT.jsonl [INPUT.jsonl ...] [--output PRED.jsonl]
                                  [--threshold X] [--scale N[,N...]] [--multiday N] [--baseline]

Input lines: {"id", "title", "summary", "source", "published", "story"?} (the format of
shared/data/stories/). Runs digest.group.group with the DEFAULT settings unless
--threshold is given (for exploration only), writes {"id", "cluster"} lines with --output
(one input file only), and prints one row per file: B-cubed, pairwise and merge P/R/F1
when the input has `story` labels, the time of ONE run of the stage, and the process's
peak RSS so far (getrusage: no second, traced run). Files whose name starts with "uci-"
are also averaged (the UCI mean).

--baseline runs benchmarks/grouping_baseline.py's plain TF-IDF average-link instead of
the stage (same scoring and timing), for comparison.

--scale N[,N...] times the stage on N synthetic items instead: all inputs concatenated
and repeated with new ids, each repetition shifted by 30 days (a stream spread over
time), and again with every repetition on the original dates (N items crowded into the
same days, the worst case for candidate generation); one table row per size and layout.

--multiday N times the stage (and the baseline) on N items built from the inputs with
each repetition shifted by three days: with the dev files, 10,700 items spanning about
nine days of dates per original day (the multi-day timing set of the issue).

Scores are computed here (standard library) so the benchmark runs without shared/.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grouping_baseline

from digest.group import group
from digest.models import Entry
from digest.settings import GroupingSettings


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


def predict(
    entries: list[Entry], settings: GroupingSettings, baseline: bool = False
) -> tuple[dict[str, str], float, float]:
    """Cluster labels per id, and the wall and CPU seconds of one run (CPU is robust to a busy machine)."""
    start, cpu = time.perf_counter(), time.process_time()
    if baseline:
        clusters = grouping_baseline.cluster(entries)
    else:
        clusters = [[e.id for e in story.entries] for story in group(entries, settings)]
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    labels = {i: f"s{n}" for n, members in enumerate(clusters) for i in members}
    return labels, seconds, cpu


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
    # What a reader sees (as shared/data/stories/score.py): of the reports shown together,
    # the share in their story's main event; of the reports whose event has another report,
    # the share shown with at least one of them.
    main: Counter[str] = Counter()
    for (_g, p), c in cell.items():
        main[p] = max(main[p], c)
    shown = sum(k for k in psize.values() if k > 1)
    mp = sum(main[p] for p, k in psize.items() if k > 1) / shown if shown else float("nan")
    need = sum(k for k in gsize.values() if k > 1)
    found = sum(c for (g, _p), c in cell.items() if gsize[g] > 1 and c > 1)
    mr = found / need if need else float("nan")
    return {
        "b3_p": b3p, "b3_r": b3r, "b3_f1": f1(b3p, b3r), "pair_p": pp, "pair_r": pr, "pair_f1": f1(pp, pr),
        "merge_p": mp, "merge_r": mr, "gold": len(gsize), "pred": len(psize),
    }  # fmt: skip


COLUMNS = ("B3 P", "B3 R", "B3 F1", "pw P", "pw R", "pw F1", "mrg P", "mrg R")
KEYS = ("b3_p", "b3_r", "b3_f1", "pair_p", "pair_r", "pair_f1", "merge_p", "merge_r")
HEADER = (
    f"{'file':<30} {'items':>6} "
    + " ".join(f"{c:>6}" for c in COLUMNS)
    + f" {'gold':>5} {'pred':>5} {'sec':>6} {'cpu':>6} {'RSS':>6}"
)


def row(name: str, n: int, s: dict[str, float] | None, seconds: float, cpu: float, peak: float) -> str:
    timing = f"{seconds:>6.3f} {cpu:>6.3f} {peak:>6.1f}"
    if s is None:
        return f"{name:<30} {n:>6} " + " ".join(f"{'-':>6}" for _ in COLUMNS) + f" {'-':>5} {'-':>5} {timing}"
    nums = " ".join(f"{s[k]:>6.3f}" for k in KEYS)
    return f"{name:<30} {n:>6} {nums} {int(s['gold']):>5} {int(s['pred']):>5} {timing}"


def run_files(paths: list[Path], settings: GroupingSettings, output: Path | None, baseline: bool) -> None:
    print(HEADER)
    uci: list[float] = []
    for path in paths:
        items = load(path)
        entries = [to_entry(i) for i in items]
        labels, seconds, cpu = predict(entries, settings, baseline)
        peak = rss_mib()
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
    what = "TF-IDF average-link baseline" if baseline else f"threshold {settings.threshold}"
    print(f"{what}; sec/cpu: wall/CPU seconds of one run; RSS: process peak resident MiB so far (getrusage)")


def synthetic(entries: list[Entry], n: int, shift_days: int) -> list[Entry]:
    """n entries: copies of `entries` with new ids, copy k moved k * shift_days later."""
    out: list[Entry] = []
    for k in range(math.ceil(n / len(entries))):
        delta = timedelta(days=k * shift_days)
        out.extend(replace(e, id=f"{e.id}~{k}", published=e.published + delta) for e in entries)
    return out[:n]


def run_scale(paths: list[Path], sizes: list[int], settings: GroupingSettings, baseline: bool) -> None:
    """One row per size and layout; the last column is seconds per 1,000 items (flat = linear)."""
    base = [to_entry(i) for p in paths for i in load(p)]
    print(f"{'items':>7} {'layout':<8} {'sec':>7} {'cpu':>7} {'stories':>8} {'RSS MiB':>8} {'s/1k':>6}")
    for label, shift in (("spread", 30), ("crowded", 0)):
        for n in sizes:
            entries = synthetic(base, n, shift)
            labels, seconds, cpu = predict(entries, settings, baseline)
            stories = len(set(labels.values()))
            print(
                f"{n:>7} {label:<8} {seconds:>7.2f} {cpu:>7.2f} {stories:>8} {rss_mib():>8.0f} {cpu / n * 1000:>6.3f}"
            )
    print("spread: copies 30 days apart; crowded: copies on the same dates; RSS: process peak so far")


def run_multiday(paths: list[Path], n: int, settings: GroupingSettings) -> None:
    """The stage against the baseline on one multi-day set: time ratio and peak RSS."""
    entries = synthetic([to_entry(i) for p in paths for i in load(p)], n, 3)
    days = len({e.published.date() for e in entries})
    _, seconds, cpu = predict(entries, settings)
    rss = rss_mib()
    _, base_seconds, base_cpu = predict(entries, settings, baseline=True)
    print(
        f"{n} items on {days} dates: digest {seconds:.2f} s ({cpu:.2f} s CPU), peak RSS {rss:.0f} MiB; "
        f"TF-IDF average-link baseline {base_seconds:.2f} s ({base_cpu:.2f} s CPU); "
        f"ratio {cpu / base_cpu:.2f}x CPU"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("inputs", nargs="+", type=Path, help="story JSONL files")
    ap.add_argument("--output", type=Path, help="write {id, cluster} lines (one input only)")
    ap.add_argument("--threshold", type=float, help="override the default threshold (exploration only)")
    ap.add_argument("--scale", metavar="N[,N...]", help="time N synthetic items built from the inputs")
    ap.add_argument("--multiday", type=int, metavar="N", help="time N items spread over days, against the baseline")
    ap.add_argument("--baseline", action="store_true", help="run the TF-IDF average-link baseline instead")
    args = ap.parse_args()
    if args.output is not None and len(args.inputs) != 1:
        ap.error("--output takes exactly one input file")
    settings = GroupingSettings() if args.threshold is None else GroupingSettings(threshold=args.threshold)
    if args.scale:
        run_scale(args.inputs, [int(x) for x in args.scale.split(",")], settings, args.baseline)
    elif args.multiday:
        run_multiday(args.inputs, args.multiday, settings)
    else:
        run_files(args.inputs, settings, args.output, args.baseline)


if __name__ == "__main__":
    main()
