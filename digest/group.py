"""Group entries that report the same event across outlets into Stories.

A pure, deterministic stage: the result does not depend on the input order. Precision
comes first: a wrong merge hides news, a missed one only repeats it.

1. Exact duplicates: entries with the same non-empty canonical ``link`` or ``guid``.
2. Terms (digest/textproc.py): Unicode words, CJK bigrams, per-language stop words and
   stems; names (capitalised mid-sentence somewhere in the batch) stay unstemmed. A
   feed's boilerplate says nothing about an event: three-word phrases repeated across
   several of one feed's texts, and terms in half or more of its entries, are dropped.
3. Each entry is a TF-IDF vector over its title and lede: names and numbers weigh more,
   IDF comes from the batch smoothed by imaginary entries and a word common in general
   use (wordfreq) weighs less, so a word rare *today* is trusted but not blindly; terms
   in a large share of the batch are topics, not events.
4. Pair score: cosine, damped by time (a day apart counts less) and by outlet (an outlet
   rarely reports one event twice, its site and its YouTube channel being one outlet). A
   pair that shares a single piece of evidence (one word, one name like "George Floyd",
   or one term that outweighs the rest) counts only in part, two pieces nearly in full:
   events are told apart by several shared specifics.
5. Clustering on the sparse pair graph, best first while the linkage (cross-sum over
   (|A| |B|) ** 0.85, close to average linkage) reaches ``settings.threshold``: members
   must agree on average, so no chain of one-word links melts a busy day into topic
   blobs, yet a big story of short headlines can still pool its evidence.

Lead entry: the highest feed ``priority``, then the longest summary, then the longest
title, then the earliest ``published``, then ``id``. The rest (``also``) go by priority,
published, id. Stories come most-covered first (distinct outlets), then by lead priority,
newest lead, lead id. ``terms`` are the shared terms that tied a story, best first, and
``why`` says for each other report the terms it shares with the story and its score.
"""

from __future__ import annotations

import gc
import heapq
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import chain, repeat

import numpy as np

from digest import textproc
from digest.models import Entry, Joined, Story, link_key, outlet_key
from digest.settings import GroupingSettings


@dataclass(frozen=True)
class Tuning:
    """Internal constants, gathered so that benchmarks can sweep them; not user config."""

    title_weight: float = 1.0
    name_weight: float = 1.5
    number_weight: float = 1.3
    unseen: float = 20.0  # IDF prior: imaginary entries holding none of the terms
    common_share: float = 0.2
    common_min: int = 25
    summary_words: int = 60
    same_outlet: float = 0.5
    single_term: float = 0.5  # factor for a pair sharing one unit of evidence
    two_terms: float = 0.8  # ... two units
    min_dot: float = 0.03  # pairs below this never link
    min_score: float = 0.03  # ... nor below this after the time, outlet and evidence factors
    near_hours: float = 6.0
    decay_hours: float = 18.0
    linkage: float = 0.85  # exponent on |A|*|B|: 1 average linkage, 0.5 centroid-like (big stories absorb)
    common_zipf: float = 6.5  # general-language prior: weight x (common_zipf - zipf) / zipf_span, clamped
    zipf_span: float = 3.0
    zipf_floor: float = 0.25
    candidate_cap: int = 100  # a term in more entries than this near one entry finds none of its pairs alone
    repeat_min: int = 3  # a phrase in this many of one feed's entries is furniture
    boiler_share: float = 0.5
    boiler_min: int = 4


TUNING = Tuning()
MAX_TERMS = 5
LEDE_TOKENS = 100  # the language is detected on the title and this many tokens of the summary
DAY_EARLY, DAY_LATE = 14 * 3600.0, 36 * 3600.0  # a date-only stamp: its day in UTC+14 .. UTC-12
_URL = re.compile(r"(?:https?://|www\.)\S+")

Vector = dict[str, float]


@dataclass
class _Doc:
    """One entry's terms: keys in title and summary, and a display form per key."""

    title: list[str]
    summary: list[str]
    surface: dict[str, str]
    lang: str | None = None

    def sequence(self) -> list[str]:
        """Title then summary keys, with "" between (no phrase runs across the two)."""
        return [*self.title, "", *self.summary]


def group(
    entries: Sequence[Entry], settings: GroupingSettings = GroupingSettings(), tuning: Tuning = TUNING
) -> tuple[Story, ...]:
    """Group `entries` into stories; see the module docstring for the rules."""
    with _collector_paused():
        return _group(entries, settings, tuning)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cycle collector while the stage runs.

    A busy day makes millions of small tuples, dicts and lists and no reference cycles;
    with the collector on, its repeated scans of them took about 13 % of the stage.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _group(entries: Sequence[Entry], settings: GroupingSettings, tuning: Tuning) -> tuple[Story, ...]:
    items = sorted(entries, key=_canonical)
    if not items:
        return ()
    docs, names = _docs(items, tuning)
    vectors = _vectors(docs, names, tuning)
    outlets = [outlet_key(e.feed, e.link) for e in items]
    pairs, scores = _similarities(items, outlets, docs, names, vectors, tuning)
    if tuning.min_score > 0:
        keep = scores >= tuning.min_score
        pairs, scores = pairs[keep], scores[keep]
    labels = _cluster(len(items), pairs, scores, _duplicates(items), settings.threshold, tuning.linkage)
    agreement = _agreement(len(items), pairs, scores, labels)
    members: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        members[label].append(index)
    stories = (_story(items, docs, vectors, agreement, m) for m in members.values())
    return tuple(sorted(stories, key=_story_order))


# --------------------------------------------------------------------------- terms


def _canonical(entry: Entry) -> tuple[str, ...]:
    """A total order on entries, so that the input order never matters."""
    e = entry
    published = _utc(e.published).isoformat()
    return (e.id, e.feed, e.link, e.guid, e.title, e.summary, published, e.section, str(e.priority),
            e.summary_html, "\n".join(e.categories), e.image or "", e.image_alt)  # fmt: skip


def _languages(items: list[Entry], tokens: list[tuple[list[str], list[str]]]) -> list[str | None]:
    """Each entry's language from its stop words (title and lede), else its feed's most common one."""
    own = [textproc.detect([*title, *summary[:LEDE_TOKENS]]) for title, summary in tokens]
    by_feed: dict[str, Counter[str]] = defaultdict(Counter)
    for entry, lang in zip(items, own, strict=True):
        if lang:
            by_feed[entry.feed][lang] += 1
    feed_lang = {feed: c.most_common(1)[0][0] for feed, c in by_feed.items()}
    return [lang or feed_lang.get(e.feed) for e, lang in zip(items, own, strict=True)]


def _drop_repeats(items: list[Entry], texts: list[list[textproc.Word]], tuning: Tuning) -> list[list[textproc.Word]]:
    """Words covered by a three-word phrase that recurs in several of one feed's entries.

    A feed's furniture ("Subscribe to Fox News! Watch more ...", "George Floyd death: ...")
    repeats across its entries whatever they report; the same phrase in two outlets does not.
    """
    grams: list[list[tuple[str, str, str]]] = []
    count: Counter[tuple[str, tuple[str, str, str]]] = Counter()
    distinct: set[tuple[str, tuple[str, ...]]] = set()  # a text published twice is one text
    for entry, text in zip(items, texts, strict=True):
        keys = [w.lower for w in text]
        own = list(zip(keys, keys[1:], keys[2:], strict=False))  # the three-word phrases
        grams.append(own)
        if (entry.feed, tuple(keys)) not in distinct:
            distinct.add((entry.feed, tuple(keys)))
            count.update(zip(repeat(entry.feed), set(own)))
    furniture = {key for key, n in count.items() if n >= tuning.repeat_min}
    out: list[list[textproc.Word]] = []
    for entry, text, own in zip(items, texts, grams, strict=True):
        drop: set[int] = set()
        if not furniture.isdisjoint(zip(repeat(entry.feed), own)):
            for i, g in enumerate(own):
                if (entry.feed, g) in furniture:
                    drop.update((i, i + 1, i + 2))
        out.append([w for i, w in enumerate(text) if i not in drop] if drop else text)
    return out


def _docs(items: list[Entry], tuning: Tuning) -> tuple[list[_Doc], set[str]]:
    tokens = [(textproc.raw_tokens(e.title), textproc.raw_tokens(_URL.sub(" ", e.summary))) for e in items]
    langs = _languages(items, tokens)
    by_lang = list(zip(tokens, langs, strict=True))
    titles = _drop_repeats(items, [textproc.content(title, lang) for (title, _), lang in by_lang], tuning)
    summaries = _drop_repeats(items, [textproc.content(summary, lang) for (_, summary), lang in by_lang], tuning)
    raw = [(t, s[: tuning.summary_words]) for t, s in zip(titles, summaries, strict=True)]
    every = [w for title, summary in raw for part in (title, summary) for w in part]
    seen = Counter(w.lower for w in every if w.cap is not None)
    capital = Counter(w.lower for w in every if w.cap)
    names = {word for word, n in seen.items() if capital[word] * 2 >= n}
    key = {
        w: w.lower if w.kind == "c" or w.lower in names else w.stem if w.kind == "w" else "#" + w.stem
        for w in set(every)
    }
    docs: list[_Doc] = []
    for (title, summary), lang in zip(raw, langs, strict=True):
        title_keys = [key[w] for w in title]
        summary_keys = [key[w] for w in summary]
        surface: dict[str, str] = {}
        for k, w in zip(title_keys + summary_keys, title + summary, strict=True):
            if k not in surface:
                surface[k] = w.lower
        docs.append(_Doc(title_keys, summary_keys, surface, lang))
    for doc in docs:
        for k in doc.surface:
            if k in names:
                doc.surface[k] = k.title() if k.isalpha() and k.islower() else k
    # Terms in half of one feed's entries are that feed's furniture, not an event.
    feed_size: Counter[str] = Counter()
    feed_df: Counter[tuple[str, str]] = Counter()
    seen_texts: set[tuple[str, tuple[str, ...], tuple[str, ...]]] = set()
    for entry, doc in zip(items, docs, strict=True):
        text = (entry.feed, tuple(doc.title), tuple(doc.summary))
        if text not in seen_texts:
            seen_texts.add(text)
            feed_size[entry.feed] += 1
            feed_df.update((entry.feed, k) for k in set(doc.title) | set(doc.summary))
    for entry, doc in zip(items, docs, strict=True):
        limit = max(tuning.boiler_min, tuning.boiler_share * feed_size[entry.feed])
        if feed_size[entry.feed] >= 2 * tuning.boiler_min:
            doc.title = [k for k in doc.title if feed_df[(entry.feed, k)] < limit]
            doc.summary = [k for k in doc.summary if feed_df[(entry.feed, k)] < limit]
    return docs, names


def _vectors(docs: list[_Doc], names: set[str], tuning: Tuning) -> list[Vector]:
    """Unit TF-IDF vectors (sublinear tf, smoothed batch IDF, title/name/number boosts)."""
    n = len(docs)
    df: Counter[str] = Counter()
    for doc in docs:
        df.update(set(doc.title) | set(doc.summary))
    common = max(tuning.common_min, tuning.common_share * n)
    idf = {k: math.log((n + 1 + tuning.unseen) / (d + 0.5)) for k, d in df.items() if d <= common}
    boosts: dict[tuple[str | None, str, str], float] = {}

    def boost(lang: str | None, k: str, surface: str) -> float:
        """Names and numbers weigh more, words common in general use less."""
        value = tuning.name_weight if k in names else tuning.number_weight if k[0] == "#" else 1.0
        if k[0] != "#":
            z = textproc.zipf(lang, surface.lower())
            value *= min(1.0, max(tuning.zipf_floor, (tuning.common_zipf - z) / tuning.zipf_span))
        return value

    vectors: list[Vector] = []
    for doc in docs:
        tf: dict[str, float] = dict(Counter(doc.title + doc.summary))  # title terms first, as read
        if tuning.title_weight != 1.0:
            for k in doc.title:
                tf[k] += tuning.title_weight - 1.0
        weights: Vector = {}
        for k, f in tf.items():
            if k in idf:
                key = (doc.lang, k, doc.surface.get(k, k))
                b = boosts.get(key)
                if b is None:
                    b = boosts[key] = boost(*key)
                weights[k] = (1.0 + math.log(f)) * idf[k] * b
        vectors.append(weights)
    return _unit(vectors)


def _unit(vectors: list[Vector]) -> list[Vector]:
    out = []
    for v in vectors:
        norm = math.sqrt(sum(w * w for w in v.values())) or 1.0
        out.append({k: w / norm for k, w in v.items()})
    return out


# --------------------------------------------------------------------------- pairs


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _span(moment: datetime) -> tuple[float, float]:
    """When an entry may have appeared: a date-only stamp (00:00 UTC) spans its day everywhere."""
    moment = _utc(moment)
    stamp = moment.timestamp()
    if (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0):
        return stamp - DAY_EARLY, stamp + DAY_LATE
    return stamp, stamp


def _units(sequence: list[str], shared: set[str] | dict[str, float], names: set[str], enough: int = 1 << 30) -> int:
    """Independent pieces of shared evidence: a run of adjacent shared names or numbers
    ("George Floyd", "Covid 19", "Tiger King") is one piece, each other shared word one.
    Counting stops at `enough`, when the caller needs to know no more."""
    units = 0
    seen: set[str] = set()
    glued = False
    for k in sequence:
        if k in shared and k not in seen:
            seen.add(k)
            gluey = k in names or k[0] == "#"
            if not (gluey and glued):
                units += 1
                if units >= enough:
                    break
            glued = gluey
        else:
            glued = glued and k in seen and (k in names or k[:1] == "#")
    return units


def _similarities(
    items: list[Entry], outlets: list[str], docs: list[_Doc], names: set[str], vectors: list[Vector], tuning: Tuning
) -> tuple[np.ndarray, np.ndarray]:
    """Pair keys i * n + j (i < j, ascending) and their damped cosines, for pairs sharing a
    term within the horizon.

    Array arithmetic (NumPy) over the postings: a busy day has millions of term-sharing
    pairs, too many for a Python loop. Products are summed in term, time, entry order,
    the order a loop over sorted postings would use, so the scores do not depend on it.
    """
    n = len(items)
    sizes = [len(v) for v in vectors]
    if n < 2 or not any(sizes):
        return np.zeros(0, np.int64), np.zeros(0, np.float64)
    spans = np.array([_span(e.published) for e in items], dtype=np.float64)
    starts, ends = spans[:, 0], spans[:, 1]
    terms = sorted(set(chain.from_iterable(vectors)))
    term_id = {k: t for t, k in enumerate(terms)}
    total = sum(sizes)
    p_term = np.fromiter(map(term_id.__getitem__, chain.from_iterable(vectors)), np.int64, total)
    p_entry = np.repeat(np.arange(n, dtype=np.int64), sizes)
    p_weight = np.fromiter(chain.from_iterable(v.values() for v in vectors), np.float64, total)
    # Times as ranks among the distinct start times: exact comparisons on small integers.
    moments = np.unique(starts)
    horizon = (tuning.near_hours + tuning.decay_hours * math.log(100.0)) * 3600.0
    start_rank = np.searchsorted(moments, starts[p_entry])
    limit_rank = np.searchsorted(moments, ends[p_entry] + horizon, side="right") - 1
    order = np.lexsort((p_entry, start_rank, p_term))
    p_term, p_entry, p_weight = p_term[order], p_entry[order], p_weight[order]
    start_rank, limit_rank = start_rank[order], limit_rank[order]
    width = np.int64(len(moments) + 1)
    position = p_term * width + start_rank
    # Each posting pairs with the later postings of its term inside its horizon. A term held
    # by more than `candidate_cap` entries within one entry's horizon is a topic there, not
    # an event: it adds nothing to that entry's pairs. This bounds the work per entry, so a
    # batch crowding thousands of reports of one topic into one day stays near-linear.
    stop = np.searchsorted(position, p_term * width + limit_rank, side="right")
    count = stop - np.arange(total) - 1
    count[count > tuning.candidate_cap] = 0
    first = np.repeat(np.arange(total), count)
    offsets = np.arange(len(first)) - np.repeat(np.cumsum(count) - count, count)
    second = first + 1 + offsets
    i, j = p_entry[first], p_entry[second]
    keys = np.minimum(i, j) * n + np.maximum(i, j)
    product = p_weight[first] * p_weight[second]
    gluey = np.array([k in names or k[0] == "#" for k in terms], dtype=np.float64)[p_term[first]]
    pairs, slot = np.unique(keys, return_inverse=True)
    dots = np.bincount(slot, weights=product)
    squares = np.bincount(slot, weights=product * product)
    glued = np.bincount(slot, weights=gluey)
    plain = np.bincount(slot, weights=1.0 - gluey)
    keep = dots >= tuning.min_dot
    pairs, dots, squares, glued, plain = pairs[keep], dots[keep], squares[keep], glued[keep], plain[keep]
    i, j = pairs // n, pairs % n
    hours = np.maximum(0.0, np.maximum(starts[i] - ends[j], starts[j] - ends[i])) / 3600.0
    factor = np.where(hours <= tuning.near_hours, 1.0, np.exp(-(hours - tuning.near_hours) / tuning.decay_hours))
    outlet_id = {o: t for t, o in enumerate(sorted(set(outlets)))}
    outlet = np.array([outlet_id[o] for o in outlets], dtype=np.int64)
    factor[outlet[i] == outlet[j]] *= tuning.same_outlet
    # Evidence: the effective number of shared terms (one dominant term counts once), and
    # no more than the independent pieces among them (_units). A run of shared names counts
    # once, but every shared plain word and the first name always count, so _units runs only
    # where that lower bound leaves the answer open.
    units = np.ceil(dots * dots / squares - 0.25)
    bound = plain + np.minimum(glued, 1.0)
    sequences: dict[int, list[str]] = {}
    for index in np.flatnonzero((units > 1) & (bound < np.minimum(units, 3.0))).tolist():
        a, b = int(i[index]), int(j[index])
        if sizes[a] > sizes[b]:
            a, b = b, a
        if a not in sequences:
            sequences[a] = docs[a].sequence()
        common = vectors[b].keys() & vectors[a].keys()
        enough = int(min(units[index], 3.0))
        units[index] = min(units[index], _units(sequences[a], common, names, enough))
    factor *= np.where(units < 2, tuning.single_term, np.where(units < 3, tuning.two_terms, 1.0))
    return pairs, dots * factor


def _duplicates(items: list[Entry]) -> list[tuple[int, int]]:
    """Pairs that must merge: same non-empty link or same non-empty guid."""
    pairs: list[tuple[int, int]] = []
    for key in (lambda e: link_key(e.link), lambda e: e.guid.strip()):
        first: dict[str, int] = {}
        for index, entry in enumerate(items):
            value = key(entry)
            if value:
                pairs.append((first.setdefault(value, index), index))
    return [(i, j) for i, j in pairs if i != j]


# --------------------------------------------------------------------------- clustering


class _Clusters:
    """Sparse agglomeration state: sizes, and cross sums between live clusters.

    Built from pair keys i * n + j and their scores: each item's links in key order, and
    each item's first best link (`best`, `partner`: the first in key order among equals,
    -1 without links), found on the arrays rather than by scanning every item in Python.
    """

    def __init__(self, n: int, pairs: np.ndarray, scores: np.ndarray, power: float) -> None:
        self.parent = list(range(n))
        self.size = [1] * n
        self.power = power
        self.scale = [1.0] * n  # 1 / size ** power: linkage = cross * scale[a] * scale[b]
        self.version = [0] * n
        keep = scores > 0
        pairs, scores = pairs[keep], scores[keep]
        src = np.concatenate((pairs // n, pairs % n))
        order = np.lexsort((np.concatenate((pairs, pairs)), src))
        src = src[order]
        dst = np.concatenate((pairs % n, pairs // n))[order]
        score = np.concatenate((scores, scores))[order]
        bounds = np.searchsorted(src, np.arange(n + 1)).tolist()
        dst_list, score_list = dst.tolist(), score.tolist()
        self.links: list[dict[int, float]] = [
            dict(zip(dst_list[bounds[a] : bounds[a + 1]], score_list[bounds[a] : bounds[a + 1]], strict=True))
            for a in range(n)
        ]
        self.best, self.partner = [-1.0] * n, [-1] * n
        if len(src):
            starts = np.flatnonzero(np.r_[True, src[1:] != src[:-1]])
            peak = np.maximum.reduceat(score, starts)
            counts = np.diff(np.r_[starts, len(src)])
            at_peak = np.where(score == np.repeat(peak, counts), np.arange(len(src)), len(src))
            first = np.minimum.reduceat(at_peak, starts)
            for node, value, other in zip(src[starts].tolist(), peak.tolist(), dst[first].tolist(), strict=True):
                self.best[node], self.partner[node] = value, other

    def force(self, pairs: Iterable[tuple[int, int]]) -> set[int]:
        """Merge each pair's clusters (exact duplicates); return the items whose links changed."""
        touched: set[int] = set()
        for i, j in pairs:
            a, b = self.find(i), self.find(j)
            if a != b:
                touched.update((a, b), self.links[a], self.links[b])
                self.merge(a, b)
        return touched

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def merge(self, a: int, b: int) -> int:
        """Fold the cluster with fewer links into the other; return the survivor."""
        links = self.links
        if len(links[a]) < len(links[b]) or (len(links[a]) == len(links[b]) and b < a):
            a, b = b, a
        into, gone = links[a], links[b]
        into.pop(b, None)
        gone.pop(a, None)
        get = into.get
        for k, s in gone.items():  # the hot loop of a busy day: names bound, links symmetric
            total = get(k, 0.0) + s
            into[k] = total
            other = links[k]
            del other[b]
            other[a] = total
        self.links[b] = {}
        self.size[a] += self.size[b]
        self.scale[a] = 1.0 / float(self.size[a]) ** self.power
        self.parent[b] = a
        self.version[a] += 1
        self.version[b] += 1
        return a


def _cluster(
    n: int,
    pairs: np.ndarray,
    scores: np.ndarray,
    forced: Iterable[tuple[int, int]],
    threshold: float,
    power: float,
) -> list[int]:
    """Best-first agglomeration over pair keys i * n + j and their scores; a label per item.

    Items untouched by the forced merges start from their first best link; the others
    are rescanned."""
    state = _Clusters(n, pairs, scores, power)
    touched = state.force(forced)
    best, partner = state.best, state.partner
    heap = [(-best[a], a, partner[a], 0, 0) for a in range(n) if best[a] >= threshold and a not in touched]
    return _agglomerate(state, heap, sorted(touched), threshold)


def _agglomerate(
    state: _Clusters, heap: list[tuple[float, int, int, int, int]], rescan_first: Iterable[int], threshold: float
) -> list[int]:
    """Merge the best pair of clusters while its linkage reaches `threshold`; a label per item.

    The heap holds each cluster's best neighbour, not every pair: after a merge only the
    survivor is rescanned, and a neighbour is re-queued when the survivor beats its best.
    A popped entry whose partner has changed since is rescanned then. `heap` holds
    entries (-linkage, a, partner, versions) known at the start; the clusters in
    `rescan_first` are scanned before the loop.
    """
    links, version, parent, scale, best = state.links, state.version, state.parent, state.scale, state.best
    heapq.heapify(heap)

    def rescan(a: int, update: bool = False) -> None:
        top, partner, sa = -1.0, -1, scale[a]
        va = version[a]
        for k, cross in links[a].items():
            s = cross * sa * scale[k]
            if s > top:
                top, partner = s, k
            if update and s > best[k]:
                best[k] = s
                if s >= threshold:
                    heapq.heappush(heap, (-s, k, a, version[k], va))
        best[a] = top
        if top >= threshold:
            heapq.heappush(heap, (-top, a, partner, va, version[partner]))

    for a in rescan_first:
        if parent[a] == a:
            rescan(a)
    while heap:
        _, a, b, va, vb = heapq.heappop(heap)
        if parent[a] != a or version[a] != va:
            continue
        if parent[b] != b or version[b] != vb:
            rescan(a)
        else:
            rescan(state.merge(a, b), update=True)
    return [state.find(i) for i in range(len(parent))]


def _agreement(n: int, pairs: np.ndarray, scores: np.ndarray, labels: list[int]) -> list[float]:
    """Each item's summed pair score with the other members of its story."""
    label = np.array(labels, dtype=np.int64)
    first, second = pairs // n, pairs % n
    inside = label[first] == label[second]
    total = np.bincount(first[inside], weights=scores[inside], minlength=n)
    total += np.bincount(second[inside], weights=scores[inside], minlength=n)
    return [float(x) for x in total.tolist()]


# --------------------------------------------------------------------------- stories


def _lead_key(entry: Entry) -> tuple[int, int, int, float, str]:
    return (-entry.priority, -len(entry.summary), -len(entry.title), _utc(entry.published).timestamp(), entry.id)


def _also_key(entry: Entry) -> tuple[int, float, str]:
    return (-entry.priority, _utc(entry.published).timestamp(), entry.id)


def _story(
    items: list[Entry], docs: list[_Doc], vectors: list[Vector], agreement: list[float], members: list[int]
) -> Story:
    # The lead is the report the others agree with most (after the editor's priority), so that
    # "Also covered by" reads against the story's core, not a side report that joined it.
    if len(members) == 1:
        return Story(lead=items[members[0]])
    ordered = sorted(members, key=lambda i: (-items[i].priority, -round(agreement[i], 6), *_lead_key(items[i])[1:]))
    lead = ordered[0]
    also = sorted(ordered[1:], key=lambda i: _also_key(items[i]))
    if not also:
        return Story(lead=items[lead])
    centroid: Vector = defaultdict(float)
    count: Counter[str] = Counter()
    for i in members:
        vector = vectors[i]
        count.update(vector.keys())
        for k, w in vector.items():
            centroid[k] += w
    shared = heapq.nsmallest(MAX_TERMS, (k for k, n in count.items() if n > 1), key=lambda k: (-centroid[k], k))

    def show(key: str) -> str:
        """How the first member (in `members` order) that has the term wrote it."""
        for i in members:
            written = docs[i].surface.get(key)
            if written is not None:
                return written
        return key.lstrip("#")

    joined = []
    for i in also:
        own = vectors[i]
        rest = {k: centroid[k] - w for k, w in own.items()}
        score = agreement[i] / (len(members) - 1)
        terms = heapq.nsmallest(MAX_TERMS, (k for k in own if rest[k] > 1e-9), key=lambda k: (-own[k] * rest[k], k))
        joined.append(Joined(items[i].id, round(score, 3), tuple(map(show, terms))))
    return Story(
        lead=items[lead],
        also=tuple(items[i] for i in also),
        terms=tuple(map(show, shared)),
        why=tuple(joined),
    )


def _story_order(story: Story) -> tuple[int, int, float, str]:
    lead = story.lead
    outlets = len({outlet_key(e.feed, e.link) for e in story.entries})
    return (-outlets, -lead.priority, -_utc(lead.published).timestamp(), lead.id)
