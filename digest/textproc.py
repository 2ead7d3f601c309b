"""Text to terms for grouping: words by Unicode rules, CJK bigrams, per-language stop words and stems.

Why a module of its own: grouping decides *which* events match, this decides *what a
word is*. Both must hold for every language a feed may be in, and the rules here are
the ones most worth testing alone.

- Tokens are Unicode word runs (accents, Cyrillic, Greek, Arabic: "Alcântara" stays one
  token); runs of Han or kana become overlapping character bigrams (no segmenter needed).
  Numbers keep their separators ("19,000", "1.7") so a figure matches as one term.
- The language of a text comes from its stop words (a light detector over ~9 languages);
  unknown languages get no stop words and no stemming and still match on names, numbers
  and repeated words.
- Ordinary words are stemmed (Snowball) so "protests"/"protesters" meet; names are not
  ("Andrews" is not "Andrew"). A word is a name when the batch writes it capitalised in
  mid-sentence running text; Title Case and ALL CAPS headlines give no evidence.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from itertools import chain, repeat
from typing import Any, NamedTuple

import snowballstemmer

# fmt: off
_STOP_WORDS: dict[str, str] = {
    "english": """a about above after again against ago all also am amid an and any are around as at back be
        because been before being below between both but by can could did do does doing down during each
        even ever every few for from further get gets getting got had has have having he her here hers herself
        him himself his how i if in including inside into is it its itself just last latest led like live made make
        makes many may me might more most much must my myself new news no nor not now of off on once one only
        or other our ours out over own photo photos per report reported reports same said say saying says see
        she should since so some still such take takes than that the their theirs them themselves then there
        these they this those though three through time to today too top two under until up update updates upon
        us very via video videos vs want wants was watch way we week weeks well were what whats when where
        whether which while who whom whose why will with without would year years yet you your yours""",
    "french": """a afin ai aie alors au aucun aussi autre aux avait avant avec avoir c ce ceci cela celle celles
        celui ces cet cette chez comme comment dans de des deux donc dont du elle elles en encore est et été
        être eu fait faire il ils je la le les leur leurs lors lui mais me même mes moi mon ne ni nos notre nous
        on ont ou où par pas pendant peu peut plus pour pourquoi qu quand que quel quelle qui sa sans se selon
        ses si son sont sous sur ta te tes toi ton tous tout tous très tu un une vos votre vous y à ça""",
    "german": """aber alle als also am an auch auf aus bei bin bis bist da dann das dass dem den der des die dies
        diese dieser doch dort du durch ein eine einem einen einer eines er es für gegen hat hatte ich ihr im in
        ist ja jetzt kann kein mit muss nach nicht noch nun nur ob oder ohne sein seine sich sie sind so über um
        und uns unter vom von vor war wie wir wird wurde zu zum zur""",
    "spanish": """a al algo ante como con contra cuando de del desde donde durante e el ella ellas ellos en entre
        era es esa ese eso esta este esto estos fue ha han hasta hay la las le les lo los más me mi muy ni no
        nos o para pero por porque que quien se ser si sin sobre son su sus también te tras tu un una uno unos y
        ya""",
    "italian": """a ad agli al alla alle anche che chi ci come con contro da dal dalla dei del della delle dello di
        dopo e è gli ha hanno i il in la le lo ma nel nella nelle non o per più quando quella quello questa questo
        se si sono su sua sue sul sulla suo tra un una uno""",
    "portuguese": """a ao aos as até com como da das de do dos e ela ele eles em entre era essa esse está foi há
        isso já mais mas na nas no nos não o os ou para pela pelo por que se sem ser seu sua são também um uma
        à às é""",
    "dutch": """aan als bij dan dat de die dit door een en er had heeft het hij hoe in is je maar met na naar niet
        nog of om ook op over te tot uit van voor was wat we werd wie wij zich zijn""",
    "russian": """а без был была были было в вам вас во вот все всё вы где да для до его ее её если есть еще ещё
        же за и из или им их к как когда кто ли либо мы на над не нет ни но о об однако он она они оно от по
        под после при с со так также там то того тоже только уже чем что чтобы эта эти это я""",
    "indonesian": """ada adalah akan atau bagi bahwa dalam dan dari dengan di ini itu juga kami karena ke kepada
        mereka oleh pada para saat sebagai sudah tidak untuk yang""",
}
# fmt: on
STOP: dict[str, frozenset[str]] = {lang: frozenset(words.split()) for lang, words in _STOP_WORDS.items()}
_LANGS_OF: dict[str, tuple[str, ...]] = {
    spelled: tuple(lang for lang, stop in STOP.items() if word in stop)
    for word in frozenset().union(*STOP.values())
    for spelled in (word, word.title(), word.upper())  # so that a text's tokens need no lower()
}

_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(
    rf"[{_CJK}]+|\d+(?:[.,:]\d+)*(?:%|st|nd|rd|th)?|[^\W\d_{_CJK}](?:[^\W_{_CJK}]|['’](?=\w))*|[.!?;:\"|\n]"
)
_CJK_RUN = re.compile(rf"[{_CJK}]")
_DOTTED = re.compile(r"\b(?:[A-Za-z]\.){2,}")  # U.N., G.O.P. -> UN, GOP
_CODE = re.compile(r"\b([A-Za-z]{1,6})-(\d{1,3})\b")
_BREAKS = frozenset('.!?;:"|\n')


class Word(NamedTuple):
    """One content word of a text, before the batch decides whether it is a name.

    `cap` is True/False when running text shows its capitalisation mid-sentence, None
    when it cannot (sentence start, Title Case or ALL CAPS text, CJK, numbers). A tuple,
    not a dataclass: a busy day makes hundreds of thousands of them.
    """

    lower: str
    stem: str
    cap: bool | None
    kind: str = "w"  # "w" word, "n" number, "c" CJK bigram


@lru_cache(maxsize=64)
def _stemmer(lang: str) -> Any:
    return snowballstemmer.stemmer(lang)


@lru_cache(maxsize=1 << 17)
def stem(lang: str | None, word: str) -> str:
    """The Snowball stem in `lang`; no language: the word itself."""
    if lang is None or len(word) < 4:
        return word
    return str(_stemmer(lang).stemWord(word))


@lru_cache(maxsize=1 << 17)
def fold(word: str) -> str:
    """Lower case without accents, so "Alcântara" and "Alcantara" are one key."""
    if word.isascii():
        return word
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def detect(words: Iterable[str]) -> str | None:
    """The language whose stop words `words` use most (lower case, Title or CAPS); None below two hits."""
    hits = Counter(chain.from_iterable(map(_LANGS_OF.get, words, repeat(()))))
    if not hits:
        return None
    (lang, top), *rest = [*hits.most_common(2), ("", 0)]
    return lang if top >= 2 and top > rest[0][1] else None


def raw_tokens(text: str) -> list[str]:
    """Word, number, CJK-run and sentence-break tokens of `text`, in order."""
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    if "." in text:  # the guards skip a regex scan of most texts
        text = _DOTTED.sub(lambda m: m.group().replace(".", "") + " ", text)
    if "-" in text:
        text = _CODE.sub(r"\1\2", text)  # COVID-19, G-7, F-35: one term each
    return _TOKEN.findall(text)


def words(text: str, lang: str | None) -> list[Word]:
    """Content words of `text` with their capitalisation evidence (see Word)."""
    return content(raw_tokens(text), lang)


def content(tokens: list[str], lang: str | None) -> list[Word]:
    """Content words of a text's `raw_tokens`, for a caller that already has them."""
    found = list(map(_token, repeat(lang), tokens))
    # Words of four letters or more say whether the text is Title Case or ALL CAPS.
    long = [(initial, capitals) for _, _, _, is_long, initial, capitals in found if is_long]
    title_case = bool(long) and sum(initial for initial, _ in long) > len(long) / 2
    shouting = bool(long) and sum(capitals for _, capitals in long) > len(long) / 2
    evidence = not (title_case or shouting)
    out: list[Word] = []
    append = out.append
    start = True
    for kind, ready, upper, _, initial, _ in found:
        if kind == "b":
            start = True
            continue
        if kind != "w":
            out.extend(ready)
        elif ready:  # ready: the word with cap None, True, False
            if evidence and upper:  # ALL CAPS in running text: a name ("NASA")
                append(ready[1])
            else:
                append(ready[0] if not evidence or start else ready[1] if initial else ready[2])
        start = False
    return out


_Token = tuple[str, tuple[Word, ...], bool, bool, bool, bool]


@lru_cache(maxsize=1 << 18)
def _token(lang: str | None, token: str) -> _Token:
    """What one token is in `lang`, cached: a day's feeds repeat the same few thousand tokens.

    (kind, words, upper, long, initial capital, all capitals): a sentence break ("b");
    CJK bigrams ("c") or a number ("n") as their Words; a word ("w") as its Word with
    `cap` None, True and False (none for a stop word), for the caller to pick by where it
    stands, and whether it is written in capitals; `long` marks a word of four letters or
    more, whose case says whether a text is Title Case or ALL CAPS.
    """
    if token in _BREAKS:
        return "b", (), False, False, False, False
    first = token[0]
    if _CJK_RUN.match(first):
        grams = [token] if len(token) == 1 else [token[i : i + 2] for i in range(len(token) - 1)]
        return "c", tuple(Word(g, g, None, "c") for g in grams), False, False, False, False
    if first.isdigit():  # one digit says nothing
        number = (Word(token, token.rstrip("%").replace(",", ""), None, "n"),) if len(token) > 1 else ()
        return "n", number, False, False, False, False
    long, initial, capitals = len(token) > 3 and first.isalpha(), first.isupper(), token.isupper()
    lower = token.lower()
    if lower.endswith("'s"):
        lower, token = lower[:-2], token[:-2]
    lower = lower.replace("'", "")
    stop = STOP.get(lang, STOP["english"]) if lang else frozenset()
    if len(lower) < 2 or lower in stop or lower in _ALL_STOP_EN:
        return "w", (), False, long, initial, capitals
    key, stemmed = fold(lower), fold(stem(lang, lower))
    spelled = (Word(key, stemmed, None), Word(key, stemmed, True), Word(key, stemmed, False))
    return "w", spelled, token.isupper() and len(token) > 1, long, initial, capitals


_ALL_STOP_EN = STOP["english"]  # English stop words go everywhere: feeds mix English into any language


_WORDFREQ = {"english": "en", "french": "fr", "german": "de", "spanish": "es", "italian": "it",
             "portuguese": "pt", "dutch": "nl", "russian": "ru", "indonesian": "id"}  # fmt: skip


@lru_cache(maxsize=16)
def _zipf_table(lang: str) -> dict[str, float]:
    """wordfreq's "small" list of `lang` as Zipf values, read from the file wordfreq ships.

    Importing wordfreq costs 0.25 s (ftfy, langcodes, regex) for what is here one lookup
    table, so its data file is read directly: a gzipped msgpack list (cBpack: a header,
    then bucket i holding the words at -i centibels, i.e. Zipf 9 - i / 100).
    """
    import gzip
    import importlib.util
    from pathlib import Path

    import msgpack  # type: ignore[import-untyped]  # no type information published

    spec = importlib.util.find_spec("wordfreq")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise LookupError("the wordfreq package is not installed")
    path = Path(spec.submodule_search_locations[0]) / "data" / f"small_{_WORDFREQ.get(lang, 'en')}.msgpack.gz"
    with gzip.open(path, "rb") as f:
        header, *buckets = msgpack.load(f, raw=False)
    if header != {"format": "cB", "version": 1}:
        raise ValueError(f"{path}: not a cBpack version 1 file")
    return {word: 9.0 - index / 100 for index, bucket in enumerate(buckets) for word in bucket}


def zipf(lang: str | None, word: str) -> float:
    """How common `word` is in general use of `lang` (Zipf scale: 7 "the", 3 rare, 0 unknown).

    One day's batch cannot tell a rare *event* word from a word that is merely rare *today*
    ("giant", "midnight"); general frequency can.
    """
    return _zipf_table(lang or "english").get(word, 0.0)
