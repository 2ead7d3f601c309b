"""The reference the grouping stage is timed and scored against: plain TF-IDF average-link.

    python benchmarks/grouping.py INPUT.jsonl --baseline      # scores and time of this baseline

Title + summary, lower-cased word tokens minus a few stop words, IDF log(N / df) from the
batch, cosine similarity, then average-link agglomeration (mean pair similarity between
two groups >= THRESHOLD, best pair first). Candidate pairs come from an inverted index,
so it is as fair a baseline as a plain method can be on speed. The clustering loop is
the stage's own (digest.group._cluster with linkage exponent 1): the comparison measures
what the stage does before and around it.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from digest.group import _cluster
from digest.models import Entry

THRESHOLD = 0.1  # between the per-family optima (UCI 0.05, BASIL 0.20)
_WORD = re.compile(r"\w+")
_STOP = frozenset(
    ("a", "an", "and", "are", "as", "at", "be", "by", "for", "from", "has", "have", "in", "is", "it", "its", "of", "on",
     "or", "that", "the", "to", "was", "were", "will", "with")
)  # fmt: skip


def cluster(entries: Sequence[Entry], threshold: float = THRESHOLD) -> list[list[str]]:
    """Groups of entry ids."""
    docs = [Counter(w for w in _WORD.findall(f"{e.title} {e.summary}".lower()) if w not in _STOP) for e in entries]
    n = len(docs)
    df: Counter[str] = Counter()
    for doc in docs:
        df.update(doc.keys())
    vectors: list[dict[str, float]] = []
    for doc in docs:
        weights = {w: c * math.log(n / df[w]) for w, c in doc.items() if df[w] < n}
        norm = math.sqrt(sum(x * x for x in weights.values())) or 1.0
        vectors.append({w: x / norm for w, x in weights.items()})
    postings: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for index, vector in enumerate(vectors):
        for w, x in vector.items():
            postings[w].append((index, x))
    sims: dict[int, float] = defaultdict(float)
    for posting in postings.values():
        for a, (i, xi) in enumerate(posting):
            for j, xj in posting[a + 1 :]:
                sims[i * n + j] += xi * xj
    keys = np.array(sorted(sims), dtype=np.int64)
    labels = _cluster(n, keys, np.array([sims[k] for k in keys.tolist()]), (), threshold, 1.0)
    groups: dict[int, list[str]] = defaultdict(list)
    for entry, label in zip(entries, labels, strict=True):
        groups[label].append(entry.id)
    return list(groups.values())
