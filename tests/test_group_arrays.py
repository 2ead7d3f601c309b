"""The grouping's array code (NumPy pair scores, link tables, agreement) against plain loops.

digest/group.py computes pair scores, the first best link of each item and each report's
agreement with its story as arrays, for speed on busy days. These tests hold each to the
definition written as a straightforward Python loop, on random batches that exercise
shared names and numbers, same-outlet pairs, date-only stamps, reports days apart, exact
duplicates, and terms crowded past `candidate_cap`.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from digest import group as G
from digest.models import Entry, outlet_key

T0 = datetime(2026, 6, 2, 8, 0, tzinfo=UTC)
WORDS = ("fire", "forest", "giant", "rally", "vote", "Korea", "Floyd", "George", "Putin", "summit", "flood",
         "19,000", "2026", "strike", "court", "ruling", "nurses", "pay", "landslide", "Ardern")  # fmt: skip
FEEDS = ("CNN", "CNN (YouTube channel feed)", "BBC News", "RNZ", "Daily Mail")

texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=8).map(" ".join)
entries = st.lists(
    st.tuples(texts, texts, st.sampled_from(FEEDS), st.integers(0, 24 * 6), st.booleans(), st.integers(0, 3)),
    min_size=2,
    max_size=40,
)


def batch(rows: list[tuple[str, str, str, int, bool, int]]) -> list[Entry]:
    out = []
    for n, (title, summary, feed, hours, date_only, link) in enumerate(rows):
        published = T0 + timedelta(hours=hours)
        if date_only:
            published = published.replace(hour=0, minute=0)
        summary_text = f"Reporters said {summary.lower()} on {summary}."  # mid-sentence capitals: names
        out.append(Entry(id=f"e{n}", feed=feed, link=f"https://x.example/{n if link else 'same'}",
                         title=title, summary=summary_text, published=published))  # fmt: skip
    return sorted(out, key=G._canonical)


def reference_scores(items: list[Entry], tuning: G.Tuning) -> dict[int, float]:
    """Pair scores by a loop over each term's time-sorted postings (the stage's definition)."""
    docs, names = G._docs(items, tuning)
    vectors = G._vectors(docs, names, tuning)
    n = len(items)
    spans = [G._span(e.published) for e in items]
    postings: dict[str, list[tuple[float, int, float]]] = defaultdict(list)
    for index, vector in enumerate(vectors):
        for k, weight in vector.items():
            postings[k].append((spans[index][0], index, weight))
    horizon = (tuning.near_hours + tuning.decay_hours * math.log(100.0)) * 3600.0
    dots: dict[int, float] = {}
    squares: dict[int, float] = {}
    shared: dict[int, set[str]] = defaultdict(set)
    for k in sorted(postings):
        posting = sorted(postings[k])
        starts = [p[0] for p in posting]
        for a, (_, i, wi) in enumerate(posting):
            end = bisect.bisect_right(starts, spans[i][1] + horizon, a + 1)
            if end - a - 1 > tuning.candidate_cap:
                continue  # a topic within this report's horizon: none of its pairs
            for _, j, wj in posting[a + 1 : end]:
                key = min(i, j) * n + max(i, j)
                dots[key] = dots.get(key, 0.0) + wi * wj
                squares[key] = squares.get(key, 0.0) + (wi * wj) ** 2
                shared[key].add(k)
    scores: dict[int, float] = {}
    for key, dot in dots.items():
        if dot < tuning.min_dot:
            continue
        i, j = divmod(key, n)
        (si, ei), (sj, ej) = spans[i], spans[j]
        hours = max(0.0, si - ej, sj - ei) / 3600.0
        factor = 1.0 if hours <= tuning.near_hours else math.exp(-(hours - tuning.near_hours) / tuning.decay_hours)
        if outlet_key(items[i].feed) == outlet_key(items[j].feed):
            factor *= tuning.same_outlet
        if len(vectors[i]) > len(vectors[j]):
            i, j = j, i
        units = math.ceil(dot * dot / squares[key] - 0.25)
        if units > 1:
            units = min(units, G._units(docs[i].sequence(), vectors[j].keys() & vectors[i].keys(), names))
        if units < 3:
            factor *= tuning.single_term if units < 2 else tuning.two_terms
        scores[key] = dot * factor
    return scores


def reference_cluster(n: int, scores: dict[int, float], forced: list[tuple[int, int]], threshold: float) -> list[int]:
    """The same agglomeration, started by scanning every cluster in Python (no array shortcut)."""
    keys = np.array(sorted(scores), dtype=np.int64)
    state = G._Clusters(n, keys, np.array([scores[k] for k in keys.tolist()]), G.TUNING.linkage)
    state.force(forced)
    state.best[:] = [-1.0] * n  # forget the first best links found on the arrays
    return G._agglomerate(state, [], range(n), threshold)


def partition(labels: list[int]) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = defaultdict(set)
    for index, label in enumerate(labels):
        groups[label].add(index)
    return {frozenset(g) for g in groups.values()}


@settings(max_examples=60, deadline=None)
@given(entries, st.sampled_from([100, 3]))
def test_array_pair_scores_equal_the_posting_loop(rows: list[tuple[str, str, str, int, bool, int]], cap: int) -> None:
    tuning = replace(G.TUNING, candidate_cap=cap)  # 3: most terms crowd past the cap
    items = batch(rows)
    docs, names = G._docs(items, tuning)
    vectors = G._vectors(docs, names, tuning)
    pairs, scores = G._similarities(items, [outlet_key(e.feed) for e in items], docs, names, vectors, tuning)
    got = dict(zip(pairs.tolist(), scores.tolist(), strict=True))
    want = reference_scores(items, tuning)
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert math.isclose(got[key], value, rel_tol=1e-9, abs_tol=1e-12), key
    assert list(pairs) == sorted(pairs)


@settings(max_examples=60, deadline=None)
@given(entries, st.sampled_from([0.05, 0.2]))
def test_clustering_and_agreement_equal_plain_loops(
    rows: list[tuple[str, str, str, int, bool, int]], threshold: float
) -> None:
    items = batch(rows)
    scores = reference_scores(items, G.TUNING)
    forced = G._duplicates(items)  # the shared links force merges before the best-first loop
    keys = np.array(sorted(scores), dtype=np.int64)
    values = np.array([scores[k] for k in keys.tolist()], dtype=np.float64)
    labels = G._cluster(len(items), keys, values, forced, threshold, G.TUNING.linkage)
    assert partition(labels) == partition(reference_cluster(len(items), scores, forced, threshold))
    agreement = G._agreement(len(items), keys, values, labels)
    n = len(items)
    for i in range(n):
        same = [scores.get(min(i, j) * n + max(i, j), 0.0) for j in range(n) if j != i and labels[j] == labels[i]]
        assert math.isclose(agreement[i], sum(same), rel_tol=1e-9, abs_tol=1e-12)
