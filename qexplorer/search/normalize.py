"""Disguise folding: the one normalisation applied to listings when they are indexed and to
queries when they are searched, so a disguised word and the word meet on the same tokens.

A seller hides ``cocaine`` as ``ｃｏｃａｉｎｅ`` (full width), ``сocaine`` (a Cyrillic ``с``),
``c0caine`` (leetspeak), ``co\u200bcaine`` (a zero-width space), ``C O C A I N E`` (spaced out)
or ``cocaaaine`` (stretched). :func:`normalize` gives the text the index holds, and a query
searches, in place of such a text:

- invisible characters removed (``search.text``), Unicode NFKC and case folding;
- confusables folded to their Latin skeleton, from Unicode's confusables data (the
  ``confusable_homoglyphs`` package), and Latin letters stripped of their accents; a word is
  folded only when every letter of it becomes Latin, so real Cyrillic or Greek words stay;
- spaced-out words joined: three or more single letters or digits, each followed by the same
  one- or two-character separator (``C.O.C.A``, ``c 0 c a``);
- digits and symbols used as letters in a word read as letters (``c0ca``, ``c@sh``, ``h@v3``,
  ``$ex``; ``1`` and ``!`` both as ``i`` and as ``l``: ``w1n``, ``pi!!s``); a number, a
  quantity or an address (``800``, ``100mg``, ``4U``, ``joe@mail.com``) stays as written;
- runs of three or more equal letters cut: to one at either end of a word (``nowww``), inside
  to one and to two (``weeeed``: ``wed``, ``weed``);
- a word broken by a mark (``co-caine``, ``co·caine``) read joined (``cocaine``), and a letter
  masked by a symbol (``coc*ine``, ``coc#ine``, ``coc.ine``) read with :data:`MASK` in its
  place (``cocǂine``). Where ordinary text puts such a mark between two words (``-``,
  ``.``, ``_`` between parts of three letters or more: ``well-known``, ``end.Start``,
  ``frosty_plug``) the parts stay and the readings follow them, so an ordinary hyphenated
  word still finds its own words; otherwise (``co-caine``, ``coc*ine``, ``pr·ize``) the
  readings replace the word, as a leetspeak word's do, so the text is no longer than the
  clean one (BM25 weighs length) (:func:`broken_readings`);
- pinyin typed with a tone number after each syllable (``bing1 tang2``, ``bing1tang2``) read
  without them; tone marks are accents, dropped as on any Latin letter.

Folding is the same on both sides, so a disguised word is indexed as the clean word, in its
place, and the listing scores as the clean one would (the same field length, which BM25
weighs). Where a disguise reads two ways, the first reading takes the word's place and the
others go apart (:attr:`Normalized.variants`, their own field in the index). Chinese also gets
its words (jieba's dictionary, through ``rjieba``) and the pinyin of its Han runs without tones
(``pypinyin``'s most common reading of each character), so a homophone code word (``兵糖`` for
``冰糖``) meets the word on its sound.

Pure functions (the tables load lazily, once per process).
"""

from __future__ import annotations

import functools
import json
import re
import string
import unicodedata
from dataclasses import dataclass
from pathlib import Path

import regex

from qexplorer.search.text import HAN, strip_invisible

#: The classes of the index's tokens: a token of one character (a Han character or a symbol
#: such as an emoji), the first character of a longer token (a letter or digit), a character
#: continuing one (with combining marks). Han runs are searched as phrases, so unigrams lose
#: little. ``search.folding`` cuts tokens by these classes, the Tantivy analyzer of the
#: benchmarks' ceilings by the pattern.
TOKEN_CLASSES = (r"[\p{Han}\p{So}]", r"[\p{L}\p{N}--\p{Han}]", r"[\p{L}\p{N}\p{M}--\p{Han}]")
TOKEN_PATTERN = f"{TOKEN_CLASSES[0]}|{TOKEN_CLASSES[1]}{TOKEN_CLASSES[2]}*"
_TOKEN = regex.compile(TOKEN_PATTERN, regex.V1)
#: Tokens of 40 UTF-8 bytes or more are dropped by the analyzers.
MAX_TOKEN_BYTES = 39

_LEET = {"0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g", "@": "a",
         "$": "s", "|": "l"}
#: ``1`` and ``!`` read as ``i`` (``w1n``) as often as ``l`` (``pi11s``): both readings.
_LEET_AMBIGUOUS = {"1": "il", "!": "il"}
# After a word with an @: a domain (joe@mail.com is an address, not a word with an @ for an a).
_DOMAIN = re.compile(r"\.[^\W\d_]")
# A word that may hold digits or symbols standing for letters: a run of letters, digits and
# the symbols sellers put for letters (``w33d``, ``c@sh``, ``pi!!s``, ``$ex``, ``v1agr@``).
# ``@``, ``!`` and ``|`` leading it and ``!``, ``|`` ending it are punctuation (``@w0rd``,
# ``c0caine!``); ``_`` separates words, as in the index.
_LEET_WORD = regex.compile(r"(?:[^\W_]|[@$!|])+")
_LEADING_MARKS, _TRAILING_MARKS = "@!|", "!|"
# Where a run not read as a whole is cut into the words the index's tokens are (at symbols and
# at each Han character) to read each.
_TOKEN_CUTS = regex.compile(r"([@$!|]+|\p{Han})")
#: Longer than this, a run is not read as one word (no token is that long; it keeps the
#: reading linear).
_MAX_WORD_CHARS = 44
_LEET_RUN = regex.compile(r"[0-9@$!|]")
_LONG_NUMBER = regex.compile(r"[0-9]{3}")
_REPEAT = regex.compile(r"([^\W\d_])\1{2,}")
# Three or more single letters/digits (not Han), each followed by one or two separators (at
# most 41: a longer token is dropped anyway, and the bound keeps the search linear).
_SPACED = regex.compile(
    rf"(?<![\w@$])(?:[^\W_{HAN}][ .\-_*·•~+]{{1,2}}){{2,40}}[^\W_{HAN}](?![\w@$])"
)
_SEPARATOR_RUN = regex.compile(r"([ .\-_*·•~+]{1,2})")
# Text needs more than lowercasing only when a letter run is broken by digits or symbols, a
# letter is stretched, or single characters stand spaced out (checked on lowercased text, in
# that order: the first pattern starts with a rare character, so it scans fast).
_SUSPECT = (
    re.compile(r"[013-57-9@$!|](?:(?<=[a-z].)|(?=[013-57-9]?[a-z]))"),
    re.compile(r"([a-z])\1\1"),
    re.compile(r"[ .\-_*·•~+][a-z0-9][ .\-_*·•~+]{1,2}[a-z0-9][ .\-_*·•~+]"),  # on " " + text
)
_HAN_RUN = re.compile(f"[{HAN}]{{2,}}")
# A word (as the index's tokens end it: at a Han character too), or any other character:
# what skeleton folds word by word.
_FOLDABLE_PIECE = regex.compile(r"[\p{L}\p{M}\p{N}--\p{Han}]+|.", regex.DOTALL | regex.V1)
_HAN_ANY = re.compile(f"[{HAN}]")
_SPACED_HAN = re.compile(f"(?<![{HAN}])[{HAN}](?:[ .·•*~+\\-]{{1,2}}[{HAN}](?![{HAN}]))+")
_HAN_SPACERS = re.compile(r"[ .·•*~+\-]")
#: Separates the pinyin of two Han runs, so a phrase cannot match across them.
PINYIN_GAP = "_"
#: Stands for the one letter a seller masked (``coc*ine`` is also read ``cocǂine``): a letter
#: to the analyzers, so the reading is one token, and in no word of any language.
MASK = "ǂ"
# A word broken by marks: letter runs (not Han) of two or more, each joined to the next by
# one mark sellers break words with or put for a letter; the whole word only.
_MARKS = "-._*#·•~+'’"
#: Marks read as a break inside a word (joined without them) and as one masked letter.
_JOIN_MARKS, _MASK_MARKS = "-._·•~+'’", "*#_."
#: Marks ordinary text puts between two words too: the parts stay, the readings follow them.
_KEEP_MARKS = "-._"
_BROKEN = regex.compile(
    rf"(?<![\p{{L}}\p{{N}}])[\p{{L}}--\p{{Han}}]{{2,}}"
    rf"(?:[{regex.escape(_MARKS)}][\p{{L}}--\p{{Han}}]{{1,}})+(?![\p{{L}}\p{{N}}])", regex.V1)
_BROKEN_HINT = re.compile(rf"[^\W\d_][{re.escape(_MARKS)}][^\W\d_]")
_MARK_SPLIT = re.compile(f"[{re.escape(_MARKS)}]")


@functools.cache
def _confusables() -> tuple[dict[str, str], dict[str, str]]:
    """Every non-ASCII letter Unicode's confusables data holds for a Latin letter, mapped to
    that letter lowercased: one table from the lowercase letters, one from the capitals
    (Cyrillic ``І`` looks like both ``I`` and ``l``; its case decides)."""
    import confusable_homoglyphs

    data = json.loads((Path(confusable_homoglyphs.__file__).parent / "confusables.json")
                      .read_text(encoding="utf-8"))
    tables: tuple[dict[str, str], dict[str, str]] = ({}, {})
    for table, letters in zip(tables, (string.ascii_lowercase, string.ascii_uppercase),
                              strict=True):
        for letter in letters:
            for entry in data.get(letter, ()):
                char = entry["c"].strip("\u200e")
                # letters only: a symbol that looks like one (× for x) stays a symbol
                if len(char) == 1 and not char.isascii() and char.isalpha():
                    table.setdefault(char, letter.lower())
    return tables


@functools.lru_cache(maxsize=65536)
def _fold_char(ch: str) -> str:
    """One character folded: a compatibility form of an ASCII character (full width,
    mathematical letters) to it; a confusable to its Latin letter (before any other NFKC
    mapping, which would turn some into other look-alikes: ``ϲ`` into ``σ``); other
    compatibility forms to their NFKC form, folded; anything else case-folded, folded again
    (``ς`` to ``σ`` to ``o``), so folding twice changes nothing."""
    compatible = unicodedata.normalize("NFKC", ch)
    if compatible.isascii():
        return compatible.lower()
    lower, upper = _confusables()
    # a capital is looked up as its small letter first: the data holds Cyrillic І among the
    # look-alikes of l, its small і among those of i
    latin = (lower.get(ch.lower()) or upper.get(ch)) if ch.isupper() else lower.get(ch)
    if latin is not None:
        return latin
    folded = compatible.casefold()
    if folded == ch:
        return ch
    return "".join(c if c == ch else _fold_char(c) for c in folded)


def skeleton(text: str) -> str:
    """``text`` with its invisible characters removed and the accents of its Latin letters
    dropped, composed (NFC), then folded character by character: confusables to Latin,
    compatibility forms (full width, mathematical letters, ligatures) to their NFKC form,
    everything case-folded. Only a word holding a Latin letter is folded to Latin: a word all in
    another script (``МОСКВА``, ``σας``) is only NFKC-normalised and case-folded."""
    if text.isascii():
        return text.translate(_ASCII_CONTROLS).lower()
    decomposed = unicodedata.normalize("NFD", strip_invisible(text))
    composed = unicodedata.normalize("NFC", _LATIN_MARKS.sub("", decomposed))
    if _SCRIPT_LETTER.search(composed) is None:  # Latin, Han and symbols only
        return composed.translate(_FOLD_TABLE)  # character by character, in C
    return _FOLDABLE_PIECE.sub(_fold_piece, composed)  # word by word


class _FoldTable(dict):
    """``str.translate``'s table for :func:`_fold_char`, filled as characters are met."""

    def __missing__(self, code: int) -> str:
        self[code] = folded = _fold_char(chr(code))
        return folded


_FOLD_TABLE = _FoldTable()
# ASCII controls: whitespace ones become spaces, the others go (as search.text does).
_ASCII_CONTROLS = {**dict.fromkeys(range(0x20), None), 0x7F: None,
                   **dict.fromkeys(map(ord, "\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"), " ")}
# Combining marks on a Latin letter (after NFD): accents, dropped.
_LATIN_MARKS = regex.compile(r"(?<=[\p{Latin}])\p{Mn}+")
# A letter of a script with its own words (Cyrillic, Greek, ...): neither Latin nor Han nor
# common to all scripts (mathematical letters are).
_SCRIPT_LETTER = regex.compile(r"[\p{L}--[\p{Latin}\p{Han}\p{Common}]]", regex.V1)


def _fold_piece(match: regex.Match) -> str:
    piece = match.group()
    folded = "".join(_fold_char(ch) for ch in piece)
    if _SCRIPT_LETTER.search(piece) is None or (
            _LATIN_LETTER.search(piece) is not None and _SCRIPT_LETTER.search(folded) is None):
        return folded  # no other script, or a Latin word disguised with look-alikes
    return "".join(c.casefold() if c.isalpha() else _fold_char(c)
                   for c in unicodedata.normalize("NFKC", piece))


_LATIN_LETTER = regex.compile(r"[\p{Latin}\p{Common}--\P{L}]", regex.V1)


def join_spaced(text: str) -> str:
    """``text`` with each spaced-out word joined, as written otherwise (``C O K E`` gives
    ``COKE``): what the keyword extractors read, so a spaced-out word is one word to them."""
    return _join_spaced(text) if _SUSPECT[2].search(" " + text.lower()) else text


def _join_spaced(text: str) -> str:
    """``text`` with each spaced-out word joined. A change of separator ends a word
    (``H. A. V. E W_O_N``: ``have won``); the same separator throughout is one word."""
    return _SPACED.sub(lambda m: " ".join(_spaced_words(m.group())), text)


def _spaced_words(run: str) -> list[str]:
    parts = _SEPARATOR_RUN.split(run)  # unit, separator, unit, separator, ..., unit
    units, gaps = parts[::2], parts[1::2]
    words, current, separator = [], units[0], None
    for i, gap in enumerate(gaps):
        following = gaps[i + 1] if i + 1 < len(gaps) else gap
        # a word's first gap is its separator, unless the next gap differs (then this one
        # stands between a one-letter word and the next word); another gap ends the word
        if separator is None and gap == following:
            separator = gap
        if gap == separator:
            current += units[i + 1]
        else:
            words.append(current)
            current, separator = units[i + 1], None
    words.append(current)
    return words


def _unleet(word: str) -> list[str]:
    """``word`` (a :data:`_LEET_WORD`) with its digits and symbols read as letters (``1`` and
    ``!`` both ways), or [] when it holds none, a run of three digits or more (``box334``,
    ``100mg``), a digit without a reading (``h2o``, ``2nd``), or fewer than two letters
    (``4u``, ``b4``). A model or a quantity that reads as letters (``ps4``, ``10mg``) is read
    so too: the folding is the same on both sides, so it still finds itself. (Each rule holds
    for every token of the word too, so folding the folded tokens again adds nothing.)"""
    if not _LEET_RUN.search(word) or _LONG_NUMBER.search(word):
        return []
    if sum(ch.isalpha() for ch in word) < 2:
        return []
    ambiguous = sum(ch in _LEET_AMBIGUOUS for ch in word)
    # every combination of the ambiguous characters' readings when there are at most two
    # (c1a!m: claim), else all of them one way or the other
    readings = [""] * (2 ** ambiguous if ambiguous <= 2 else 2)
    seen = 0
    for ch in word:
        if ch in _LEET:
            readings = [r + _LEET[ch] for r in readings]
        elif ch in _LEET_AMBIGUOUS:
            if ambiguous <= 2:
                readings = [r + _LEET_AMBIGUOUS[ch][(k >> seen) & 1]
                            for k, r in enumerate(readings)]
            else:
                readings = [r + _LEET_AMBIGUOUS[ch][k] for k, r in enumerate(readings)]
            seen += 1
        elif ch.isdigit():
            return []
        else:
            readings = [r + ch for r in readings]
    return list(dict.fromkeys(readings))


def _unrepeat(word: str) -> list[str]:
    """``word`` with its runs of 3+ equal letters cut, or []: at either end of the word to one
    (``nowww``), inside to one, then to two (``weeeed``: ``wed``, ``weed``). A word of one
    letter (``AAA``, ``www``, ``xxx``) is a word of its own."""
    if not _REPEAT.search(word) or len(set(word)) < 2:
        return []
    first, last = word[0], word[-1]
    if word.startswith(first * 3) and first.isalpha():
        word = first + word.lstrip(first)
    if word.endswith(last * 3) and last.isalpha():
        word = word.rstrip(last) + last
    return list(dict.fromkeys([_REPEAT.sub(r"\1", word), _REPEAT.sub(r"\1\1", word)]))


def _readings(word: str) -> list[str]:
    """The forms a word of a skeleton is indexed and searched under, the first in its place
    in the text: a leetspeak word's readings (not the word as written: it folds the same way on
    both sides), stretched letters cut. [] when the word is not disguised."""
    # a reading that stretches a letter (pi11s read as piiis) is the less likely one
    # reading leetspeak may join look-alikes to Latin letters (ν!agr@: νiagra): fold them
    readings = [r if r.isascii() else skeleton(r) for r in _unleet(word)]
    readings.sort(key=lambda r: _REPEAT.search(r) is not None)
    if not readings and not _REPEAT.search(word):
        return []
    forms: list[str] = []
    for reading in readings or [word]:
        forms.extend(_unrepeat(reading) or [reading])
    return list(dict.fromkeys(forms))


@dataclass(frozen=True, slots=True)
class Normalized:
    """A text as the index holds it and a query searches it."""

    #: the text in place of the original (None: the original as the analyzer sees it)
    text: str | None
    #: other readings of its disguised words (``weed`` beside ``wed`` for ``weeeed``), kept
    #: apart so they do not lengthen the text (BM25 would score the listing lower)
    variants: tuple[str, ...] = ()


UNCHANGED = Normalized(None)


def normalize(text: str) -> Normalized:
    """What the index holds, and a query searches, in place of ``text``: its :func:`skeleton`
    with spaced-out words joined and each disguised word replaced by its first reading, the
    other readings apart, a broken or masked word followed by its readings (see the module
    docstring). :data:`UNCHANGED` for most text: a clean text costs a few scans in C."""
    found = _normalize(text)
    base = found.text if found.text is not None else (text or "").lower()
    if not _BROKEN_HINT.search(base):
        return found
    read = _BROKEN.sub(_with_readings, base)
    return found if read == base else Normalized(read, found.variants)


def broken_readings(word: str) -> list[str]:
    """The readings of a word broken by marks (a :data:`_BROKEN` match), or []: joined
    without its marks when every part has two letters or more (``co-caine``: ``cocaine``),
    and with :data:`MASK` for a masking mark between two runs of letters that make at least
    four (``coc*ine``: ``cocǂine``; ``.`` and ``_`` are read both ways)."""
    parts = _MARK_SPLIT.split(word)
    marks = _MARK_SPLIT.findall(word)
    out = []
    if all(len(p) >= 2 for p in parts) and all(m in _JOIN_MARKS for m in marks):
        out.append("".join(parts))
    if (len(parts) == 2 and marks[0] in _MASK_MARKS and min(map(len, parts)) >= 2
            and len(parts[0]) + len(parts[1]) >= 4):
        out.append(MASK.join(parts))
    return [r for r in out if len(r.encode()) <= MAX_TOKEN_BYTES]


def _with_readings(match: regex.Match) -> str:
    word = match.group()
    readings = broken_readings(word)
    if not readings:
        return word
    if all(mark in _KEEP_MARKS for mark in _MARK_SPLIT.findall(word)) and all(
            len(part) >= 3 for part in _MARK_SPLIT.split(word)):
        return " ".join([word, *readings])
    return " ".join(readings)


def _normalize(text: str) -> Normalized:
    """:func:`normalize` but for broken words."""
    if not text:
        return UNCHANGED
    lowered = text.lower()
    folded = lowered if _plain(text) else skeleton(text)
    if not _suspect(folded):
        # a change the analyzer cannot see (full-width punctuation) is no change
        same = folded == lowered or _TOKEN.findall(folded) == _TOKEN.findall(lowered)
        return UNCHANGED if same else Normalized(folded)
    variants: dict[str, None] = {}
    stretched = _SUSPECT[1].search(folded) is not None

    def read(run: str, whole: bool = True) -> str:
        if run.isalpha() and not stretched:
            return run  # a plain word (most words): nothing to read
        core = run.lstrip(_LEADING_MARKS)
        head, core = run[:len(run) - len(core)], core.rstrip(_TRAILING_MARKS)
        tail = run[len(head) + len(core):]
        toneless = _toneless(core)
        if toneless is not None:  # pinyin with tone numbers: its syllables
            return head + toneless + tail
        readings = _readings(core) if whole and 0 < len(core) <= _MAX_WORD_CHARS else []
        if readings:
            variants.update(dict.fromkeys(readings[1:]))
            return head + readings[0] + tail
        # not read as a whole (cocaine100mg@c0caine): each of the words the index's tokens
        # cut it into is
        parts = _TOKEN_CUTS.split(core)
        if len(parts) == 1:
            return run
        return head + "".join(part if i % 2 else read(part) for i, part in enumerate(parts)) + tail

    def first_reading(match: regex.Match) -> str:
        run = match.group()
        # an address (joe@mail.com): its @ is no a, each of its words is read alone
        address = "@" in run.rstrip("@") and _DOMAIN.match(joined, match.end())
        return read(run, whole=not address)

    joined = _join_spaced(folded)
    if joined != folded and not joined.isascii():
        joined = skeleton(joined)  # a spaced-out word's letters are one word only now
    normal = _LEET_WORD.sub(first_reading, joined)
    if normal == lowered or _TOKEN.findall(normal) == _TOKEN.findall(lowered):
        return Normalized(None, tuple(variants)) if variants else UNCHANGED
    return Normalized(normal, tuple(variants))


def _suspect(lowered: str) -> bool:
    leet, stretched, spaced = _SUSPECT
    return bool(leet.search(lowered) or stretched.search(lowered)
                or spaced.search(" " + lowered))


def _plain(text: str) -> bool:
    """True when :func:`skeleton` would only lowercase ``text``: printable ASCII, or visible,
    NFKC-stable text without a character folding changes otherwise (most Chinese text is not
    NFKC-stable: full-width punctuation)."""
    if text.isascii():
        return text.isprintable()
    return (text.isprintable() and unicodedata.is_normalized("NFKC", text)
            and _foldable_chars().search(text) is None)


@functools.cache
def _foldable_chars() -> re.Pattern:
    """Any character :func:`skeleton` may turn into another than its lowercase: a confusable of
    a Latin letter or its capital, a letter whose case folding is not its lowercase (``ß``,
    ``ς``), a Latin letter with a diacritic (Latin-1 Supplement to Latin Extended-B, Extended
    Additional) or a combining mark."""
    lower, upper = _confusables()
    chars = {*lower, *upper, *(c.upper() for c in lower)}
    chars.update(chr(code) for code in range(0x80, 0x10000)
                 if chr(code).casefold() != chr(code).lower())
    escaped = re.escape("".join(sorted(chars)))
    return re.compile(f"[{escaped}\u00c0-\u024f\u1e00-\u1eff\u0300-\u036f]")


def analyze(text: str) -> list[str]:
    """The index's tokens of ``text``, as the Tantivy analyzer makes them: :data:`TOKEN_PATTERN`
    matches, those over :data:`MAX_TOKEN_BYTES` dropped, lowercased. Engines without that
    analyzer (OpenSearch) index and search these tokens, so both agree token for token."""
    return [t.lower() for t in _TOKEN.findall(text) if len(t.encode()) <= MAX_TOKEN_BYTES]


def fold_tokens(text: str) -> list[str]:
    """The tokens :func:`normalize` gives ``text`` (its text and variants) that the analyzer of
    ``text`` as written does not, in order, without duplicates: what the normalisation adds
    (empty for most text)."""
    normal = normalize(text)
    if normal is UNCHANGED:
        return []
    raw = set(_TOKEN.findall(text.lower()))
    found = _TOKEN.findall(" ".join([normal.text or "", *normal.variants]))
    return [t for t in dict.fromkeys(found) if t not in raw and len(t.encode()) <= MAX_TOKEN_BYTES]


def folded_fields(title: str, description: str) -> dict[str, str]:
    """What disguise folding changes in a listing's document: the normalised title and
    description where they differ from the text as written (the index then holds those, and
    the text as written in ``original``), the other readings of its disguised words
    (``variants``), its Chinese words (``words``) and their sound (``pinyin``). Empty for most
    listings. The reference of ``search.folding`` (compiled), which indexing runs."""
    fields: dict[str, str] = {}
    variants: list[str] = []
    for name, text in (("title", title), ("description", description)):
        normal = normalize(text)
        if normal.text is not None:
            fields[name] = normal.text
        variants.extend(normal.variants)
    if variants:
        fields["variants"] = " ".join(dict.fromkeys(variants))
    normal = f"{fields.get('title', title)}\n{fields.get('description', description)}"
    if not has_han(normal):
        return fields
    text = join_spaced_han(normal)
    words, sounds = han_words(text), pinyin_text(text)
    if words:
        fields["words"] = " ".join(words)
    if sounds:
        fields["pinyin"] = sounds
    return fields


def index_fields(title: str, description: str, fold: bool = True) -> dict[str, str]:
    """The text fields the index holds of a listing, as tokens (:func:`analyze`'s, joined by
    spaces): its title and description (normalised by :func:`folded_fields` with ``fold``),
    their other readings (``variants``, when there are some), and its Chinese words and pinyin
    (``words``, ``pinyin``: tokens already). Engines index these tokens as they are, split on
    spaces, and search :func:`analyze`'s tokens of each query term, so every engine holds the
    same tokens. The reference of ``search.folding`` (compiled), which indexing runs."""
    fields = folded_fields(title, description) if fold else {}
    fields["title"] = " ".join(analyze(fields.get("title", title)))
    fields["description"] = " ".join(analyze(fields.get("description", description)))
    variants = " ".join(analyze(fields.pop("variants", "")))
    if variants:
        fields["variants"] = variants
    return fields


def has_han(text: str) -> bool:
    """True when ``text`` holds a Han character."""
    return _HAN_ANY.search(text) is not None


def join_spaced_han(text: str) -> str:
    """``text`` with single Han characters that stand apart, by spaces or dots (``白·料``,
    ``冰 糖``), joined into one run: a spaced-out word is a word (for its words and sound)."""
    if not has_han(text):
        return text
    return _SPACED_HAN.sub(lambda m: _HAN_SPACERS.sub("", m.group()), text)


def han_words(text: str) -> list[str]:
    """The Chinese words (two characters or more, from jieba's dictionary, through ``rjieba``)
    of every run of Han characters in ``text``, in order, without duplicates."""
    runs = han_runs(text)
    if not runs:
        return []
    import rjieba

    words: dict[str, None] = {}
    for run in runs:
        for word in rjieba.cut(run, hmm=False):
            if len(word) > 1:
                words[word] = None
    return list(words)


@functools.lru_cache(maxsize=65536)
def _char_pinyin(ch: str) -> str:
    from pypinyin.pinyin_dict import pinyin_dict

    readings = pinyin_dict.get(ord(ch))
    if not readings:
        return ch
    first = unicodedata.normalize("NFD", readings.split(",")[0])
    return "".join(c for c in first if unicodedata.category(c) != "Mn").replace("ü", "v")


@functools.cache
def pinyin_syllables() -> frozenset[str]:
    """Every toneless pinyin syllable of the 3,755 common characters (GB2312 level 1), ``ü``
    written ``v``, as :func:`pinyin` reads them."""
    found = set()
    for code in range(0x4E00, 0xA000):
        ch = chr(code)
        try:
            encoded = ch.encode("gb2312")
        except UnicodeEncodeError:
            continue
        if 0xB0 <= encoded[0] <= 0xD7:
            found.add(_char_pinyin(ch))
    return frozenset(s for s in found if s.isascii() and s.isalpha())


@functools.cache
def _toned_word() -> re.Pattern:
    syllables = "|".join(sorted(pinyin_syllables(), key=len, reverse=True))
    return re.compile(f"(?:(?:{syllables})[1-5])+")


def _toneless(word: str) -> str | None:
    """A word of pinyin syllables each with its tone number (``bing1``, ``bing1tang2``)
    without the numbers, or None (``ciali5`` is leetspeak: a number after every syllable or
    it is no typed pinyin)."""
    if not word.isascii() or not word[-1:].isdigit() or not word[:1].isalpha():
        return None
    if _toned_word().fullmatch(word) is None:
        return None
    return "".join(ch for ch in word if not ch.isdigit())


def segment_pinyin(word: str, least: int = 1) -> list[str] | None:
    """``word`` (lowercase Latin letters) as pinyin syllables, the fewest that cover it, or
    None when it is no pinyin or has fewer than ``least`` syllables (``bingtang``:
    ``bing``, ``tang``)."""
    if not word or not word.isascii() or not word.isalpha() or len(word) > 40:
        return None
    known = pinyin_syllables()
    best: list[list[str] | None] = [[]] + [None] * len(word)
    for end in range(1, len(word) + 1):
        for start in range(max(0, end - 6), end):
            head = best[start]
            if head is not None and word[start:end] in known and (
                    best[end] is None or len(head) + 1 < len(best[end])):
                best[end] = [*head, word[start:end]]
    found = best[len(word)]
    return found if found is not None and len(found) >= least else None


def pinyin(run: str) -> list[str]:
    """The toneless pinyin of each character of a Han run (its most common reading)."""
    return [_char_pinyin(ch) for ch in run]


def pinyin_text(text: str) -> str:
    """The pinyin of every run of two or more Han characters of ``text``, one token a
    character, runs separated by :data:`PINYIN_GAP`."""
    return f" {PINYIN_GAP} ".join(" ".join(pinyin(run)) for run in han_runs(text))


def han_runs(text: str) -> list[str]:
    """The runs of two or more Han characters in ``text``."""
    return _HAN_RUN.findall(text) if has_han(text) else []
