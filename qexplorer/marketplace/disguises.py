"""Disguises sellers put on words, to test that search sees through them.

Each kind rewrites one word the way sellers do to slip past keyword filters: full-width
letters, look-alike letters from other scripts (Cyrillic, Greek), accents, leetspeak (digits
and symbols for letters, anywhere in the word), zero-width characters inside the word, spaced
out letters, stretched letters, a punctuation mark inside the word (``co-caine``), a letter
masked by a symbol (``coc*ine``); and for Chinese, a homophone (another character with the
same toneless pinyin), spaced-out characters, zero-width characters between them, and the
word typed as pinyin, syllables spaced (``bing tang``, ``bīng táng``, ``bing1 tang2``) or
joined (``bingtang``, ``bing1tang2``).
:func:`disguise_text` disguises a seeded share of a text's words with one kind, or with a kind
drawn per word (``mixed``).

The look-alike table is written here from what sellers use, not taken from the confusables data
the search folds with, so the benchmark does not test the table against itself.

Pure functions; every random choice comes from the ``random.Random`` passed in.
"""

from __future__ import annotations

import functools
import random
import re

#: English disguise kinds, each on its own (and what ``mixed`` draws from).
KINDS = ("fullwidth", "homoglyph", "accents", "leet", "zero_width", "spaced", "repeat")
#: English kinds that break a word: a mark inside it, a letter masked by a symbol.
BREAK_KINDS = ("punct", "mask")
#: Chinese disguise kinds (and what ``zh_mixed`` draws from).
ZH_KINDS = ("zh_homophone", "zh_spaced", "zh_zero_width")
#: The Chinese word typed as its pinyin: syllables spaced, or joined.
PINYIN_KINDS = ("zh_pinyin", "zh_pinyin_joined")
#: Every word disguised with a kind drawn for it.
MIXED = "mixed"
ZH_MIXED = "zh_mixed"

_HOMOGLYPHS = {
    "a": "аɑα", "c": "сϲ", "e": "е", "i": "іι", "j": "ј", "o": "оοσ", "p": "рρ", "s": "ѕ",
    "x": "хχ", "y": "уγ", "h": "һ", "k": "κ", "n": "ո", "v": "ν", "w": "ԝ", "d": "ԁ",
    "A": "АΑ", "B": "ВΒ", "C": "С", "E": "ЕΕ", "H": "НΗ", "I": "ІΙ", "K": "КΚ", "M": "МΜ",
    "O": "ОΟ", "P": "РΡ", "T": "ТΤ", "X": "ХΧ", "Y": "Ү",
}
_ACCENTS = {"a": "áàâäã", "e": "éèêë", "i": "íìîï", "o": "óòôöõ", "u": "úùûü", "c": "ç",
            "n": "ñ", "y": "ýÿ"}
_LEET = {"a": "4@", "e": "3", "i": "1!", "o": "0", "s": "5$", "t": "7", "b": "8", "l": "1|",
         "g": "9"}
_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\u00ad\ufeff"
_BREAKERS = ("-", ".", "_", "·", "'")
_MASKS = ("*", "#", "_", ".")
_SPACERS = (" ", ".", "-", "*", "_", ". ", "·")
# a whole word: not part of a handle, hashtag, address or number (sellers keep those readable)
_ENGLISH_WORD = re.compile(r"(?<![\w@#./:-])[A-Za-z]{3,}(?![\w@/-])")
_HAN_WORD = re.compile(r"[\u4e00-\u9fff]{2,}")


def _positions(word: str, table: dict[str, str]) -> list[int]:
    return [i for i, ch in enumerate(word) if ch in table or ch.lower() in table]


def _substitute(word: str, table: dict[str, str], rng: random.Random, most: int) -> str:
    """``word`` with one to ``most`` of its letters found in ``table`` replaced."""
    places = _positions(word, table)
    if not places:
        return word
    chars = list(word)
    for i in rng.sample(places, rng.randint(1, min(most, len(places)))):
        options = table.get(chars[i]) or table[chars[i].lower()]
        chars[i] = rng.choice(options)
    return "".join(chars)


def _insert_between(word: str, fillers: str | tuple[str, ...], rng: random.Random,
                    most: int) -> str:
    gaps = rng.sample(range(1, len(word)), min(most, len(word) - 1))
    chars = list(word)
    for gap in sorted(gaps, reverse=True):
        chars.insert(gap, rng.choice(fillers))
    return "".join(chars)


@functools.cache
def _homophones() -> dict[str, list[str]]:
    """The 3,755 common Chinese characters (GB2312 level 1) by their toneless pinyin."""
    by_sound: dict[str, list[str]] = {}
    for code in range(0x4E00, 0xA000):
        ch = chr(code)
        try:
            level_one = 0xB0 <= ch.encode("gb2312")[0] <= 0xD7
        except UnicodeEncodeError:
            continue
        if not level_one:
            continue
        by_sound.setdefault(_sound(ch), []).append(ch)
    return by_sound


@functools.lru_cache(maxsize=8192)
def _sound(ch: str) -> str:
    """The toneless pinyin of a character (pypinyin's reading of it on its own)."""
    from pypinyin import Style, lazy_pinyin

    return lazy_pinyin(ch, style=Style.NORMAL)[0]


def disguise_word(word: str, kind: str, rng: random.Random) -> str:
    """``word`` disguised with ``kind`` (one of :data:`KINDS`, :data:`BREAK_KINDS`,
    :data:`ZH_KINDS` or :data:`PINYIN_KINDS`)."""
    if kind == "fullwidth":
        return "".join(chr(ord(ch) + 0xFEE0) if "!" <= ch <= "~" else ch for ch in word)
    if kind == "homoglyph":
        return _substitute(word, _HOMOGLYPHS, rng, most=3)
    if kind == "accents":
        return _substitute(word, _ACCENTS, rng, most=2)
    if kind == "leet":
        return _substitute(word, _LEET, rng, most=2)
    if kind in ("zero_width", "zh_zero_width"):
        return _insert_between(word, _ZERO_WIDTH, rng, most=2)
    if kind == "spaced":
        spacer = rng.choice(_SPACERS)
        spaced = spacer.join(word.upper() if rng.random() < 0.5 else word)
        # letters spaced by one space stand apart from the next words by more, as written
        return f" {spaced} " if spacer == " " else spaced
    if kind == "repeat":
        i = rng.randrange(len(word))
        return word[:i] + word[i] * rng.randint(3, 6) + word[i + 1:]
    if kind in BREAK_KINDS:
        places = range(2, len(word) - 1) if kind == "punct" else range(2, len(word) - 2)
        if not places:
            return word
        i = rng.choice(places)
        if kind == "punct":
            return word[:i] + rng.choice(_BREAKERS) + word[i:]
        return word[:i] + rng.choice(_MASKS) + word[i + 1:]
    if kind in PINYIN_KINDS:
        from pypinyin import Style, lazy_pinyin

        joined = kind == "zh_pinyin_joined"
        style = rng.choice((Style.NORMAL, Style.TONE3) if joined
                           else (Style.NORMAL, Style.TONE, Style.TONE3))
        syllables = lazy_pinyin(word, style=style, neutral_tone_with_five=True)
        return "".join(syllables) if joined else f" {' '.join(syllables)} "
    if kind == "zh_spaced":
        return rng.choice((" ", "·", ".", "*")).join(word)
    if kind == "zh_homophone":
        places = [i for i, ch in enumerate(word) if len(_homophones().get(_sound(ch), ())) > 1]
        if not places:
            return word
        i = rng.choice(places)
        others = [c for c in _homophones()[_sound(word[i])] if c != word[i]]
        return word[:i] + rng.choice(others) + word[i + 1:]
    raise ValueError(f"unknown disguise kind {kind!r}")


def disguise_text(text: str, kind: str, rng: random.Random, share: float = 0.5) -> str:
    """``text`` with a ``share`` of its words disguised: whole English words of three letters
    or more (not inside a handle, hashtag, address or number) for :data:`KINDS` and
    :data:`MIXED`, runs of two or more Han characters for
    :data:`ZH_KINDS` and :data:`ZH_MIXED`. At least one word is disguised when there is one."""
    chinese = kind == ZH_MIXED or kind in ZH_KINDS or kind in PINYIN_KINDS
    pattern = _HAN_WORD if chinese else _ENGLISH_WORD
    matches = list(pattern.finditer(text))
    if not matches:
        return text
    chosen = {m.start() for m in matches if rng.random() < share}
    if not chosen:
        chosen = {rng.choice(matches).start()}
    pool = ZH_KINDS if chinese else KINDS

    def replace(m: re.Match) -> str:
        if m.start() not in chosen:
            return m.group()
        return disguise_word(m.group(), rng.choice(pool) if kind in (MIXED, ZH_MIXED) else kind,
                             rng)

    return pattern.sub(replace, text)
