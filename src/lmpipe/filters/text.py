"""Fast text primitives shared by every filter: word splitting, lines, paragraphs, punctuation sets.

The published heuristics (Gopher, C4, FineWeb) are defined over *words*; the public reference
implementation splits words with spaCy's rule-based English tokenizer, which dominates its run time.
``split_words`` follows the same affix rules for English (whitespace chunks, then leading/trailing
punctuation, clitics such as ``n't``/``'s``, infix hyphens/commas/slashes between letters, URLs kept whole)
with plain ``str`` and ``re`` operations and a per-chunk cache, because natural text repeats its chunks.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# ------------------------------------------------------------------------------------ character sets
# Quotes, brackets and other marks that split off the start/end of a whitespace chunk.
_QUOTES = "'\"”“`‘´’‚„»«「」『』（）〔〕【】《》〈〉⟦⟧"
_PUNCT = ",:;!?¿¡()[]{}<>_#*&。？！，、；：～·।،۔؛٪"
_CURRENCY = "$£€¥฿₽₹₩₪₫₴₱"
_AFFIX = set(_QUOTES + _PUNCT + _CURRENCY + "§%=—–…")
_SUFFIX = set(_QUOTES + _PUNCT + "—–…")
_UNITS = (
    "km|km²|km³|m|m²|m³|dm|dm²|dm³|cm|cm²|cm³|mm|mm²|mm³|ha|µm|nm|yd|in|ft|kg|g|mg|µg|t|lb|oz|m/s|km/h|"
    "kmh|mph|hPa|Pa|mbar|mb|MB|kb|KB|gb|GB|tb|TB|T|G|M|K|%|км|км²|км³|м|м²|м³|дм|дм²|дм³|см|см²|см³|мм|"
    "мм²|мм³|нм|кг|г|мг|м/с|км/ч|кПа|Па|мбар|Кб|КБ|кб|Мб|МБ|мб|Гб|ГБ|гб|Тб|ТБ|тб"
)
_UNIT_SUFFIX = re.compile(rf"(?<=[0-9])(?:{_UNITS}|[{re.escape(_CURRENCY)}])$")

#: Characters that make a word a "symbol" (it has no other character): ASCII punctuation, control
#: characters, and the common Unicode quotes, dashes and ellipsis.
PUNCTUATION = frozenset(
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~«»´–—‘’“”„…‼‽⁇⁈⁉"
    + "".join(map(chr, [*range(0, 9), *range(11, 32), *range(127, 160)]))
)
#: Sentence-final marks (Latin plus the common non-Latin full stops and question/exclamation marks).
TERMINAL_PUNCTUATION = frozenset(".!?。？！．｡؟۔।॥።፧᙮‼‽⁇⁈⁉")
_SYMBOL_TRANS = str.maketrans(dict.fromkeys(PUNCTUATION, ""))

# --------------------------------------------------------------------------------------- exceptions
_ABBREVIATIONS = {
    "Mr.", "Mrs.", "Ms.", "Dr.", "St.", "Jr.", "Sr.", "Inc.", "Ltd.", "Co.", "Corp.", "vs.", "v.", "e.g.",
    "i.e.", "a.m.", "p.m.", "Mt.", "Jan.", "Feb.", "Mar.", "Apr.", "Jun.", "Jul.", "Aug.", "Sep.", "Sept.",
    "Oct.", "Nov.", "Dec.", "Gov.", "Gen.", "Rep.", "Sen.", "Rev.", "Bros.", "Ph.D.", "Messrs.", "Adm.",
    "Capt.", "Col.", "Lt.", "Mass.", "Calif.", "Ala.", "Ark.", "Ariz.", "Colo.", "Conn.", "Fla.", "Ga.",
    "Ill.", "Ind.", "Kan.", "Ky.", "La.", "Md.", "Mich.", "Minn.", "Miss.", "Mo.", "Neb.", "Nev.", "Okla.",
    "Ore.", "Pa.", "Tenn.", "Va.", "Wash.", "Wis.", "o.O", "O.O", "o.o", "and/or", "'em", "'nuff", "'cause",
    "'ll", "'re", "'ve", "'d", "'m", "'s", "'S", "’s", "’S", "o'clock", "ma'am", "e.g", "i.e", "c'mon", "ol'",
    ":)", ":(", ":-)", ":-(", ";)", ";-)", ":D", ":P", ":p", "<3", "):", "(:", ":/", ":'(", "=)", "^_^", "-_-",
}
_ABBREVIATIONS |= {f"{c}." for c in "abcdefghijklmnopqrstuvwxyz"}
# Clitics split off only after the stems English contracts them with (so "banish'd" stays whole).
_PRONOUNS = ["i", "you", "he", "she", "it", "we", "they", "who", "what", "that", "there", "where", "how",
             "when", "why"]
# stems before "n't" as English spells them ("can't" is "ca" + "n't")
_NOT_STEMS = ("do", "does", "did", "is", "are", "was", "were", "has", "have", "had", "could", "would", "should",
              "might", "must", "need", "ca", "wo", "sha", "ai", "dare", "may", "ought")
# Apostrophe-less forms that English text uses for contractions; real words ("ill", "well", "its", "shed")
# are absent on purpose.
_BARE = {
    "i": "d ve m", "you": "d ll re ve", "he": "d s", "she": "s", "it": "d ll", "we": "d ve",
    "they": "d ll re ve", "who": "d ll ve s", "what": "d ll re ve s", "that": "d ll s",
    **{w: "d ll re ve s" for w in ("there", "where", "how", "when", "why")},
}


def _contractions() -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}

    def add(stem: str, clitic: str) -> None:
        for s, c in ((stem, clitic), (stem.capitalize(), clitic), (stem.upper(), clitic.upper())):
            out[s + c] = (s, c)

    for p in _PRONOUNS:
        for c in ("'d", "'ll", "'re", "'ve", "’d", "’ll", "’re", "’ve"):
            add(p, c)
    for c in ("'m", "’m"):
        add("i", c)
    for stem, clitics in _BARE.items():
        for c in clitics.split():
            add(stem, c)
    for stem in _NOT_STEMS:
        for c in ("n't", "n’t", "nt"):
            for s, cc in ((stem, c), (stem.capitalize(), c), (stem.upper(), c.upper())):
                out[s + cc] = (s, cc)
    for w, parts in {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"),
                     "y'all": ("y'", "all")}.items():
        out[w] = parts
        out[w.capitalize()] = (parts[0].capitalize(), parts[1])
    return out


_CONTRACTIONS = _contractions()
# Emoticons and doubled quotes stay one token even when they were split off as affixes.
_MERGE = {"):", "(:", ":)", ":(", ":*", "<3", "</3", "''", ":]", "[:", "8)", "(8", ":')", ":'(", "=(", "=)",
          ":/", ":p", ":P", ":D", ";)", ";(", ":-)", ":-(", ":-]", "=]", "[=", ":o", ":O", "^_^", "-_-",
          ":((", ":))", ":-D", ":-P", ":-/", "=D", ":x"}
_URL = re.compile(
    r"^(?:(?:https?|ftp)://\S+|www\.\S+\.\S+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+|"
    r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.(?:com|org|net|edu|gov|io|uk|de|fr|info|biz)(?:/\S*)?)$"
)
_INFIX = re.compile(
    r"…|\.\.+"  # ellipses
    r"|(?<=[0-9])[+\-*^](?=[0-9-])"  # 1-2, 3*4
    r"|(?<=[a-z'\"”“])\.(?=[A-Z'\"”“])"  # end.The
    r"|(?<=[^\W\d_]),(?=[^\W\d_])"  # a,b
    r"|(?<=[^\W_])(?:---|--|——|-|–|—|~)(?=[^\W\d_])"  # well-known
    r"|[\u2190-\u21ff\u2300-\u23ff\u2500-\u27bf\u2b00-\u2bff\U0001f300-\U0001faff]"  # symbols (icons)
    r"|(?<=[^\W_])[:<>=/](?=[^\W\d_])"  # a/b, a:b
)


def _is_special(s: str) -> bool:
    return (s in _ABBREVIATIONS or s in _CONTRACTIONS
            or (len(s) == 2 and s[1] == "." and s[0].isupper() and s[0].isalpha()))


def _icon(c: str) -> bool:
    return c != "°" and unicodedata.category(c) == "So"


def _prefix_len(s: str) -> int:
    if s.startswith(".."):
        return len(s) - len(s.lstrip("."))
    c = s[0]
    if c in _AFFIX or (c > "\x7f" and _icon(c)):
        return 1
    if c == "+" and not s[1:2].isdigit():
        return 1
    return 0


def _suffix_len(s: str) -> int:
    if s.endswith(".."):
        return len(s) - len(s.rstrip("."))
    c = s[-1]
    if len(s) > 2 and s[-2] in "'’" and c in "sS":
        return 2
    if c in _SUFFIX or (c > "\x7f" and _icon(c)):
        return 1
    if c == "." and len(s) > 1:
        p = s[-2]
        if p.islower() or p.isdigit() or p in PUNCTUATION or p == "²":
            return 1
        if len(s) > 2 and p.isupper() and s[-3].isupper():
            return 1
        return 0
    if c == "+" and len(s) > 1 and s[-2].isdigit():
        return 1
    m = _UNIT_SUFFIX.search(s)
    return len(m.group()) if m and m.start() > 0 else 0


def _infixes(s: str, out: list[str]) -> None:
    start = 0
    for m in _INFIX.finditer(s):
        if m.start() == 0:
            continue
        if m.start() > start:
            out.append(s[start : m.start()])
        out.append(m.group())
        start = m.end()
    if start < len(s):
        out.append(s[start:])


def _attach(s: str, out: list[str]) -> None:
    if not s:
        return
    parts = _CONTRACTIONS.get(s)
    if parts is not None:
        out.extend(parts)
    elif _is_special(s) or _URL.match(s):
        out.append(s)
    else:
        _infixes(s, out)


@lru_cache(maxsize=1 << 16)
def _split_chunk(s: str) -> tuple[str, ...]:
    """Tokens of one whitespace-free chunk: strip affixes until stable, then split infixes."""
    prefixes: list[str] = []
    suffixes: list[str] = []
    while s and not _is_special(s) and not _URL.match(s):
        before = len(s)
        p = _prefix_len(s)
        if p and p < len(s) and _is_special(s[p:]):
            prefixes.append(s[:p])
            s = s[p:]
            break
        rest = s[p:]
        q = _suffix_len(rest) if rest else 0
        if q and q < len(s) and _is_special(s[:-q]):
            suffixes.append(s[-q:])
            s = s[:-q]
            break
        if p and q and p + q <= len(s):
            prefixes.append(s[:p])
            suffixes.append(s[-q:])
            s = s[p:-q]
        elif p:
            prefixes.append(s[:p])
            s = s[p:]
        elif q:
            suffixes.append(s[-q:])
            s = s[:-q]
        if len(s) == before:
            break
    out = prefixes
    _attach(s, out)
    out.extend(reversed(suffixes))
    if len(out) > 1:  # re-join emoticons that affix stripping took apart
        i = 0
        while i < len(out) - 1:
            if out[i] + out[i + 1] in _MERGE:
                out[i : i + 2] = [out[i] + out[i + 1]]
            else:
                i += 1
    return tuple(out)


def split_words(text: str) -> list[str]:
    """English word tokens (punctuation marks are tokens too), whitespace never a token."""
    out: list[str] = []
    extend, append = out.extend, out.append
    for chunk in text.split():
        if chunk.isalpha() and chunk not in _CONTRACTIONS:
            append(chunk)
        else:
            extend(_split_chunk(chunk))
    return out


def is_symbol(word: str) -> bool:
    """True when every character of ``word`` is punctuation (such words are not counted as words)."""
    return not word.translate(_SYMBOL_TRANS)


def non_symbol_words(words: list[str]) -> list[str]:
    return [w for w in words if w.isalpha() or w.translate(_SYMBOL_TRANS)]


def normalize_words(text: str) -> list[str]:
    """Lower-cased alphanumeric words, accents folded: the form used for n-gram overlap (decontamination)."""
    if text.isascii():  # NFKD and the combining-mark filter leave ASCII as is: skip the per-character pass
        return _ALNUM.findall(text.lower())
    text = unicodedata.normalize("NFKD", text.lower())
    return _ALNUM.findall("".join(c for c in text if not unicodedata.combining(c)))


_ALNUM = re.compile(r"[^\W_]+")


PARAGRAPH_SPLIT = re.compile(r"\n{2,}")
LINE_SPLIT = re.compile(r"\n+")
