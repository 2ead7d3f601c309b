"""Group entries that report the same event across outlets into Stories.

A pure, deterministic stage: the result does not depend on the input order.

1. Exact duplicates: entries with the same non-empty canonical ``link`` or the same
   non-empty ``guid`` are one story whatever else differs (empty values never match).
2. Same event, different wording: every entry becomes a TF-IDF vector over stemmed,
   stop-word-free terms of its title (counted twice: headlines carry the event) and
   summary. IDF comes from the batch itself, so what is rare *today* weighs most (smoothed
   by 20 imaginary entries that hold none of the terms, so a batch of three still works).
   Terms the batch writes capitalised mid-sentence (names, places, acronyms) weigh 1.5
   times more: events are told apart by who and where. Terms in over a fifth of the
   batch say nothing about any one event and are dropped.
3. Pair similarity is the cosine of two vectors, damped by time and outlet: reports more
   than 6 hours apart lose weight (e-fold every 18 hours: a follow-up the next day about
   another country is another event); a date without a time of day stands for the whole
   calendar day in any time zone, so only hours that must separate two entries count.
   Two entries of one feed count half: an outlet rarely reports one event twice.
4. Clustering is agglomerative on the sparse pair graph (candidates come from an
   inverted index, never an n-by-n matrix): repeatedly merge the two groups whose
   centroids are most similar while that similarity reaches ``settings.threshold``.
   Centroid similarity is computed from pair sums alone: cross / sqrt(self_a * self_b).
   It lets a big loose story absorb a new report sharing its key names, yet two small
   groups still need a real shared core; there is no single-link chaining.

The threshold (default 0.18) is the one knob: a centroid cosine. It serves headline-only
batches (short vectors) and title-plus-lede batches alike because both the vectors and the
linkage are length-normalised.

Lead entry: the highest feed ``priority`` (larger wins), then the most informative report
(longest summary, then longest title), then the earliest ``published``, then ``id``. The
rest (``also``) go by priority (high first), published (early first), id. A Story's section
is its lead's. Stories come most-covered first (distinct feeds), then by lead priority,
newest lead, lead id. ``terms`` are the shared terms that tied a story, best first.
"""

from __future__ import annotations

import heapq
import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from functools import lru_cache

from digest.models import Entry, GroupingSettings, Story, link_key

TITLE_WEIGHT = 2.0  # a title term counts as two summary terms
NAME_WEIGHT = 1.5  # boost for terms the batch capitalises mid-sentence
SAME_FEED = 0.5  # factor on the similarity of two entries from one feed
NEAR_HOURS = 6.0  # no time penalty below this gap
DECAY_HOURS = 18.0  # then the similarity e-folds every DECAY_HOURS
HORIZON_HOURS = NEAR_HOURS + DECAY_HOURS * math.log(100.0)  # factor < 1 %: no link
DAY_EARLY, DAY_LATE = 14 * 3600.0, 36 * 3600.0  # a calendar day, UTC+14 .. UTC-12
COMMON_SHARE, COMMON_MIN = 0.2, 25  # a term in more entries than this is noise
MAX_TERMS = 5
UNSEEN = 20  # IDF prior: documents assumed to hold none of the terms

# fmt: off
_STOP = frozenset({
    "a", "about", "above", "after", "again", "against", "all", "also", "am", "amid", "an", "and", "any", "are",
    "as", "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could",
    "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "get", "gets", "got",
    "had", "has", "have", "having", "he", "her", "here", "hers", "herself", "him", "himself", "his", "how", "i",
    "if", "in", "including", "into", "is", "it", "its", "itself", "just", "last", "led", "like", "made", "make",
    "makes", "many", "may", "me", "might", "more", "most", "much", "must", "my", "myself", "new", "news", "no",
    "nor", "not", "now", "of", "off", "on", "once", "one", "only", "or", "other", "our", "ours", "ourselves", "out",
    "over", "own", "photo", "photos", "report", "reported", "reports", "same", "said", "say", "saying", "says",
    "she", "should", "so", "some", "still", "such", "than", "that", "the", "their", "theirs", "them", "themselves",
    "then", "there", "these", "they", "this", "those", "through", "time", "to", "too", "two", "under", "until",
    "up", "update", "updates", "us", "very", "via", "video", "was", "watch", "way", "we", "week", "weeks", "well",
    "were", "what", "when", "where", "which", "while", "who", "whom", "why", "will", "with", "would", "year",
    "years", "you", "your", "yours",
})
# fmt: on
_TOKEN = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?|[.!?:;\"|]")
_DOTTED = re.compile(r"\b(?:[A-Za-z]\.){2,}")  # U.N., G.O.P. -> UN, GOP
_BREAKS = frozenset('.!?:;"|')

Token = tuple[str, str, bool | None]  # stem, surface form, capitalised mid-sentence?
Vector = dict[str, float]


def group(entries: Sequence[Entry], settings: GroupingSettings = GroupingSettings()) -> tuple[Story, ...]:
    """Group `entries` into stories; see the module docstring for the rules."""
    items = sorted(entries, key=_canonical)
    if not items:
        return ()
    docs = [(_tokens(e.title), _tokens(e.summary)) for e in items]
    names = _names(docs)
    vectors = _vectors(docs, names)
    sims = _similarities(items, vectors)
    labels = _cluster(len(items), sims, _duplicates(items), settings.threshold)
    members: dict[int, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        members[label].append(index)
    stories = (_story(items, docs, vectors, names, m) for m in members.values())
    return tuple(sorted(stories, key=_story_order))


# --------------------------------------------------------------------------- text


def _canonical(entry: Entry) -> tuple[str, ...]:
    """A total order on entries, so that the input order never matters."""
    e = entry
    published = _utc(e.published).isoformat()
    return (e.id, e.feed, e.link, e.guid, e.title, e.summary, published, e.section, str(e.priority),
            e.summary_html, "\n".join(e.categories), e.image or "", e.image_alt)  # fmt: skip


@lru_cache(maxsize=1 << 16)
def _stem(word: str) -> str:
    """A light suffix stripper: plurals, -ing, -ed, final e (vetoes/vetoed/veto)."""
    if word.endswith("'s"):
        word = word[:-2]
    word = word.replace("'", "")
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if len(word) > 5 and word.endswith("ing"):
        word = word[:-3]
    elif len(word) > 4 and word.endswith("ed"):
        word = word[:-2]
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word


def _tokens(text: str) -> list[Token]:
    """Content terms with their capitalisation evidence.

    Capitalisation only counts mid-sentence in running text: in Title Case or ALL CAPS
    headlines it says nothing, so those tokens carry None.
    """
    if not text.isascii():  # fold accents and curly quotes: Raúl -> Raul
        text = unicodedata.normalize("NFKD", text.replace("\u2019", "'").replace("\u2018", "'"))
        text = "".join(c for c in text if not unicodedata.combining(c))
    text = _DOTTED.sub(lambda m: m.group().replace(".", "") + " ", text)
    words = [w for w in _TOKEN.findall(text) if len(w) > 3 and w[0].isalpha()]
    title_case = bool(words) and sum(w[0].isupper() for w in words) > len(words) / 2
    shouting = bool(words) and sum(w.isupper() for w in words) > len(words) / 2
    out: list[Token] = []
    sentence_start = True
    for word in _TOKEN.findall(text):
        if word in _BREAKS:
            sentence_start = True
            continue
        lower = word.lower()
        stem = _stem(lower)
        if lower not in _STOP and stem not in _STOP and len(stem) > 1:
            cap: bool | None = None
            if title_case or shouting:
                cap = None
            elif word.isupper() and word.isalpha() and len(word) > 1:
                cap = True
            elif not sentence_start:
                cap = word[0].isupper()
            surface = word[:-2] if word.lower().endswith("'s") else word
            out.append((stem, surface, cap))
        sentence_start = False
    return out


def _names(docs: list[tuple[list[Token], list[Token]]]) -> dict[str, bool]:
    """Stems with capitalisation evidence: True when mostly capitalised (a name)."""
    seen: Counter[str] = Counter()
    capital: Counter[str] = Counter()
    for title, summary in docs:
        for stem, _, cap in title + summary:
            if cap is not None:
                seen[stem] += 1
                capital[stem] += cap
    return {stem: capital[stem] * 2 >= n for stem, n in seen.items()}


def _vectors(docs: list[tuple[list[Token], list[Token]]], names: dict[str, bool]) -> list[Vector]:
    """Unit TF-IDF vectors (sublinear tf, batch IDF, title and name boosts)."""
    n = len(docs)
    df: Counter[str] = Counter()
    for title, summary in docs:
        df.update({t[0] for t in title + summary})
    common = max(COMMON_MIN, COMMON_SHARE * n)
    vectors: list[Vector] = []
    for title, summary in docs:
        tf: dict[str, float] = defaultdict(float)
        for stem, _, _ in title:
            tf[stem] += TITLE_WEIGHT
        for stem, _, _ in summary:
            tf[stem] += 1.0
        weights = {
            stem: (1.0 + math.log(f))
            * math.log((n + 1 + UNSEEN) / (df[stem] + 0.5))
            * (NAME_WEIGHT if names.get(stem) else 1.0)
            for stem, f in tf.items()
            if df[stem] <= common
        }
        norm = math.sqrt(sum(w * w for w in weights.values())) or 1.0
        vectors.append({stem: w / norm for stem, w in weights.items()})
    return vectors


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


def _time_factor(gap: float) -> float:
    hours = gap / 3600.0
    return 1.0 if hours <= NEAR_HOURS else math.exp(-(hours - NEAR_HOURS) / DECAY_HOURS)


def _similarities(items: list[Entry], vectors: list[Vector]) -> dict[int, float]:
    """Damped cosine, keyed i * n + j (i < j), for pairs sharing a term within the horizon.

    Candidates come from an inverted index whose postings are sorted by time, so a
    posting stops at the first entry beyond the horizon: no n-by-n work.
    """
    n = len(items)
    spans = [_span(e.published) for e in items]
    postings: dict[str, list[tuple[float, int, float]]] = defaultdict(list)
    for index, vector in enumerate(vectors):
        for stem, weight in vector.items():
            postings[stem].append((spans[index][0], index, weight))
    horizon = HORIZON_HOURS * 3600.0
    dots: dict[int, float] = {}
    get = dots.get
    for stem in sorted(postings):
        posting = sorted(postings[stem])
        size = len(posting)
        for a in range(size - 1):
            _, i, wi = posting[a]
            limit = spans[i][1] + horizon
            for b in range(a + 1, size):
                start, j, wj = posting[b]
                if start > limit:
                    break
                key = i * n + j if i < j else j * n + i
                dots[key] = get(key, 0.0) + wi * wj
    sims: dict[int, float] = {}
    for key, dot in dots.items():
        i, j = divmod(key, n)
        (si, ei), (sj, ej) = spans[i], spans[j]
        factor = _time_factor(max(0.0, si - ej, sj - ei))
        sims[key] = dot * factor * (SAME_FEED if items[i].feed == items[j].feed else 1.0)
    return sims


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
    """Sparse agglomeration state: self sums, and cross sums between live clusters."""

    def __init__(self, n: int, sims: dict[int, float]) -> None:
        self.parent = list(range(n))
        self.self_sum = [1.0] * n
        self.scale = [1.0] * n  # 1 / sqrt(self_sum)
        self.version = [0] * n
        self.links: list[dict[int, float]] = [{} for _ in range(n)]
        for key, s in sims.items():
            if s > 0:
                i, j = divmod(key, n)
                self.links[i][j] = s
                self.links[j][i] = s

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def merge(self, a: int, b: int) -> int:
        """Fold the cluster with fewer links into the other; return the survivor."""
        if len(self.links[a]) < len(self.links[b]) or (len(self.links[a]) == len(self.links[b]) and b < a):
            a, b = b, a
        cross = self.links[a].pop(b, 0.0)
        self.links[b].pop(a, None)
        for k, s in self.links[b].items():
            total = self.links[a].get(k, 0.0) + s
            self.links[a][k] = total
            self.links[k].pop(b, None)
            self.links[k][a] = total
        self.links[b] = {}
        self.self_sum[a] += self.self_sum[b] + 2.0 * cross
        self.scale[a] = 1.0 / math.sqrt(self.self_sum[a])
        self.parent[b] = a
        self.version[a] += 1
        self.version[b] += 1
        return a


def _cluster(n: int, sims: dict[int, float], forced: Iterable[tuple[int, int]], threshold: float) -> list[int]:
    """Centroid-linkage agglomeration; returns a label per item.

    The heap holds each cluster's best neighbour, not every pair: after a merge only the
    survivor is rescanned, and a neighbour is re-queued when the survivor beats its best.
    A popped entry whose partner has changed since is rescanned then (its old score was
    an upper bound, so merges still happen best first).
    """
    state = _Clusters(n, sims)
    for i, j in forced:
        a, b = state.find(i), state.find(j)
        if a != b:
            state.merge(a, b)
    links, scale, version, parent = state.links, state.scale, state.version, state.parent
    best = [-1.0] * n
    heap: list[tuple[float, int, int, int, int]] = []

    def rescan(a: int, update: bool = False) -> None:
        """Queue a's best neighbour; with `update`, also offer a to each neighbour."""
        top, partner, sa = -1.0, -1, scale[a]
        for k, cross in links[a].items():
            s = cross * sa * scale[k]
            if s > top:
                top, partner = s, k
            if update and s > best[k]:
                best[k] = s
                if s >= threshold:
                    heapq.heappush(heap, (-s, k, a, version[k], version[a]))
        best[a] = top
        if top >= threshold:
            heapq.heappush(heap, (-top, a, partner, version[a], version[partner]))

    for a in range(n):
        if parent[a] == a:
            rescan(a)
    while heap:
        _, a, b, va, vb = heapq.heappop(heap)
        if parent[a] != a or version[a] != va:
            continue  # a merged since: its survivor was rescanned
        if parent[b] != b or version[b] != vb:
            rescan(a)
        else:
            rescan(state.merge(a, b), update=True)
    return [state.find(i) for i in range(n)]


# --------------------------------------------------------------------------- stories


def _lead_key(entry: Entry) -> tuple[int, int, int, float, str]:
    return (-entry.priority, -len(entry.summary), -len(entry.title), _utc(entry.published).timestamp(), entry.id)


def _also_key(entry: Entry) -> tuple[int, float, str]:
    return (-entry.priority, _utc(entry.published).timestamp(), entry.id)


def _story(
    items: list[Entry],
    docs: list[tuple[list[Token], list[Token]]],
    vectors: list[Vector],
    names: dict[str, bool],
    members: list[int],
) -> Story:
    ordered = sorted(members, key=lambda i: _lead_key(items[i]))
    also = sorted((items[i] for i in ordered[1:]), key=_also_key)
    terms = _shared_terms([docs[i] for i in members], [vectors[i] for i in members], names) if also else ()
    return Story(lead=items[ordered[0]], also=tuple(also), terms=terms)


def _shared_terms(
    docs: list[tuple[list[Token], list[Token]]], vectors: list[Vector], names: dict[str, bool]
) -> tuple[str, ...]:
    """Terms found in at least two of the story's entries, by summed weight."""
    weight: Counter[str] = Counter()
    count: Counter[str] = Counter()
    for vector in vectors:
        count.update(vector.keys())
        weight.update(vector)
    shared = sorted((s for s in weight if count[s] > 1), key=lambda s: (-weight[s], s))[:MAX_TERMS]
    surfaces: dict[str, Counter[str]] = defaultdict(Counter)
    for title, summary in docs:
        for stem, surface, cap in title + summary:
            surfaces[stem][surface.lower() if names.get(stem) is False else surface] += 2 if cap is not None else 1
    return tuple(min(surfaces[s].items(), key=lambda kv: (-kv[1], kv[0]))[0] for s in shared)


def _story_order(story: Story) -> tuple[int, int, float, str]:
    lead = story.lead
    feeds = len({e.feed for e in story.entries})
    return (-feeds, -lead.priority, -_utc(lead.published).timestamp(), lead.id)
