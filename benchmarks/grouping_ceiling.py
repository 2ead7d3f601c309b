"""How far can the lexical evidence go? A pair model trained on each labelled set itself.

    pip install -e ".[research]"   # scikit-learn, for this script only: not a dependency of digest
    python benchmarks/grouping_ceiling.py ../shared/data/stories/*.jsonl

For every candidate pair of the grouping stage (two entries sharing a term within the
time horizon) this computes the evidence the stage can see: its damped score and cosine,
the time gap, same outlet, independent pieces of shared evidence, how spread the shared
weight is, the shares of it in titles, names and numbers, the largest single term, the
rarest shared term, how much of each title is left unshared, and the text lengths.

A gradient-boosted model learns "same event" from those features ON THE SET ITSELF,
with event-disjoint folds (a pair is scored by a model that saw neither of its events),
and its probabilities replace the stage's scores in the stage's own clustering. That is
an optimistic ceiling for any rule built on these features: the model is fitted to the
very day and outlets it is scored on. It prints, per set and clustering threshold, the
merge and B-cubed precision/recall, next to the stage's default, and an oracle that
clusters the candidate pairs with their true labels (the limit set by candidate
generation alone).
"""

from __future__ import annotations

import argparse
import math
import sys
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from grouping import load, score, to_entry

from digest import group as G
from digest.models import Entry, outlet_key
from digest.settings import GroupingSettings

FOLDS = 5


def features(items: list[Entry]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pair keys (i * n + j), the stage's damped scores, and one feature row per pair."""
    tuning = G.Tuning(min_dot=0.0, min_score=0.0)  # every candidate pair, not only those the stage keeps
    docs, names = G._docs(items, tuning)
    vectors = G._vectors(docs, names, tuning)
    outlets = [outlet_key(e.feed, e.link) for e in items]
    pairs, scores = G._similarities(items, outlets, docs, names, vectors, tuning)
    n = len(items)
    df: Counter[str] = Counter(k for v in vectors for k in v)
    spans = [G._span(e.published) for e in items]
    sequences = [d.sequence() for d in docs]
    rows = []
    for key, s in zip(pairs.tolist(), scores.tolist(), strict=True):
        i, j = divmod(key, n)
        vi, vj = vectors[i], vectors[j]
        common = vi.keys() & vj.keys()
        parts = {k: vi[k] * vj[k] for k in common}
        dot = sum(parts.values()) or 1e-9
        (si, ei), (sj, ej) = spans[i], spans[j]
        gap = max(0.0, si - ej, sj - ei) / 3600.0
        in_titles = set(docs[i].title) & set(docs[j].title)
        shorter = i if len(vi) <= len(vj) else j

        def unshared(a: dict[str, float], b: dict[str, float], title: list[str]) -> float:
            keys = [k for k in set(title) if k in a]
            total = sum(a[k] ** 2 for k in keys)
            return sum(a[k] ** 2 for k in keys if k not in b) / total if total else 1.0

        ui, uj = unshared(vi, vj, docs[i].title), unshared(vj, vi, docs[j].title)
        rows.append([
            s, dot, math.log1p(gap), float(outlets[i] == outlets[j]),
            min(G._units(sequences[shorter], common, names), 5),
            min(dot * dot / (sum(c * c for c in parts.values()) or 1e-9), 6.0),
            sum(c for k, c in parts.items() if k in in_titles) / dot,
            sum(c for k, c in parts.items() if k in names) / dot,
            sum(c for k, c in parts.items() if k[0] == "#") / dot,
            max(parts.values(), default=0.0) / dot,
            math.log(min((df[k] for k in common), default=n)),
            len(common), max(ui, uj), min(ui, uj),
            len(docs[i].summary) + len(docs[j].summary),
        ])  # fmt: skip
    return pairs, scores, np.array(rows, dtype=np.float64)


def cross_validated(x: np.ndarray, y: np.ndarray, events: list[tuple[str, str]]) -> np.ndarray:
    """P(same event) per pair, each from a model trained without either of the pair's events."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    fa = np.array([zlib.crc32(a.encode()) % FOLDS for a, _ in events])
    fb = np.array([zlib.crc32(b.encode()) % FOLDS for _, b in events])
    out = np.zeros(len(y))
    for p in range(FOLDS):
        for q in range(p, FOLDS):
            test = ((fa == p) & (fb == q)) | ((fa == q) & (fb == p))
            train = ~np.isin(fa, [p, q]) & ~np.isin(fb, [p, q])
            if not test.any() or y[train].min() == y[train].max():
                continue
            model = HistGradientBoostingClassifier(
                max_depth=3, max_iter=200, learning_rate=0.05, early_stopping=False, random_state=0
            )
            out[test] = model.fit(x[train], y[train]).predict_proba(x[test])[:, 1]
    return out


def row(name: str, what: str, gold: dict[str, str], items: list[Entry], labels: list[int] | dict[str, str]) -> None:
    """One table row: merge and B-cubed precision/recall of one clustering."""
    pred = labels if isinstance(labels, dict) else {items[k].id: f"s{v}" for k, v in enumerate(labels)}
    r = score(gold, pred)
    cells = " ".join(f"{r[c]:>6.3f}" for c in ("merge_p", "merge_r", "b3_p", "b3_r", "b3_f1"))
    print(f"{name[:26]:<26} {what:<22} {cells}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path)
    parser.add_argument("--thresholds", default="0.2,0.3,0.4,0.5,0.6,0.7")
    args = parser.parse_args()
    thresholds = [float(t) for t in args.thresholds.split(",")]
    linkage = G.TUNING.linkage
    print(f"{'set':<26} {'what':<22} {'mrg P':>6} {'mrg R':>6} {'B3 P':>6} {'B3 R':>6} {'B3 F1':>6}")
    for path in args.inputs:
        raw = load(path)
        gold = {str(r["id"]): str(r["story"]) for r in raw}
        items = sorted((to_entry(r) for r in raw), key=G._canonical)
        n = len(items)
        pairs, _, x = features(items)
        events = [(gold[items[k // n].id], gold[items[k % n].id]) for k in pairs.tolist()]
        y = np.array([a == b for a, b in events], dtype=np.int64)

        stage = G.group(items, GroupingSettings())
        name = path.stem
        row(name, "stage default", gold, items, {e.id: f"s{k}" for k, s in enumerate(stage) for e in s.entries})
        row(name, "oracle on candidates", gold, items, G._cluster(n, pairs, y.astype(np.float64), [], 0.5, 1.0))
        probability = cross_validated(x, y, events)
        for t in thresholds:
            row(name, f"in-set model at {t:g}", gold, items, G._cluster(n, pairs, probability, [], t, linkage))


if __name__ == "__main__":
    main()
