"""The disguise folding and analysis of listings as indexing runs them: in compiled code, the
``qexplorer_fold`` extension (native/fold/, Rust, built at setup), with
:mod:`qexplorer.search.normalize` as its reference.

The extension folds what it can fold exactly: any text of ASCII and the characters of its table
(Han, emoji, punctuation, full-width forms, accented Latin, invisible characters), its
disguises where no non-ASCII letter stands in the text, the Chinese words and pinyin. It hands
back the rest (look-alikes from other scripts, combining marks, joiners, a disguise beside
non-ASCII letters), which the reference folds here. Either way a listing's fields are what
:func:`~qexplorer.search.normalize.index_fields` gives, the very tokens the index holds (its
text fields split on spaces: Tantivy's own regex tokenizer cost more than the folding); a
property test holds both to the same tokens. The tables come from the reference at first use
(about a second, once per process), so a character is read the same way on both sides.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence

import regex

from qexplorer.search.normalize import (
    _SCRIPT_LETTER,
    MAX_TOKEN_BYTES,
    TOKEN_CLASSES,
    UNCHANGED,
    Normalized,
    _char_pinyin,
    _foldable_chars,
    _plain,
    has_han,
    index_fields,
    pinyin_syllables,
    skeleton,
)
from qexplorer.search.normalize import analyze as reference_analyze
from qexplorer.search.normalize import normalize as reference_normalize

# Whitespace a text's invisible characters become (search.text.strip_invisible).
_SPACED_CONTROLS = "\x85\u2028\u2029"
_ZWJ = "\u200d"
_LATIN = regex.compile(r"\p{Latin}")
# A word character, letter, digit or mark to the reference's two regex engines.
_WORDLIKE = regex.compile(r"[\w\p{L}\p{N}\p{M}]")
_WORDLIKE_RE = re.compile(r"\w")
# The characters considered for the table: the Basic Multilingual Plane and the emoji blocks.
_CANDIDATES = (range(0x80, 0xD800), range(0xE000, 0x10000), range(0x1F000, 0x1FB00))


def index_listings(pairs: Sequence[tuple[str, str]], fold: bool = True) -> list[dict[str, str]]:
    """:func:`~qexplorer.search.normalize.index_fields` of each ``(title, description)``, in
    one call to the extension (without the GIL) and the reference for what it hands back."""
    try:
        found = _folder().index_listings(list(pairs), fold)
    except UnicodeEncodeError:  # a lone surrogate, which no Rust string holds
        found = [None] * len(pairs)
    return [fields if fields is not None else index_fields(title, description, fold)
            for fields, (title, description) in zip(found, pairs, strict=True)]


def index_listing(title: str, description: str, fold: bool = True) -> dict[str, str]:
    """:func:`index_listings` of one listing."""
    return index_listings([(title, description)], fold)[0]


def analyze(text: str) -> list[str]:
    """:func:`qexplorer.search.normalize.analyze` of ``text`` (a query term's), by the
    extension or, for what it hands back, the reference."""
    try:
        found = _folder().analyze(text)
    except UnicodeEncodeError:
        found = None
    return reference_analyze(text) if found is None else found.split()


def normalize(text: str) -> Normalized:
    """:func:`qexplorer.search.normalize.normalize` of ``text`` (a query's), by the extension
    or, for what it hands back, the reference."""
    try:
        found = _folder().normalize(text)
    except UnicodeEncodeError:  # a lone surrogate, which no Rust string holds
        found = None
    if found is None:
        return reference_normalize(text)
    normal, variants = found
    return Normalized(normal, tuple(variants)) if normal is not None or variants else UNCHANGED


@functools.cache
def _folder():
    try:
        import qexplorer_fold
    except ImportError as error:
        raise ImportError("the disguise folding's extension (native/fold) is not installed: "
                          "run scripts/setup.sh, or pip install ./native/fold") from error

    chars = char_table()
    foldable_ascii = {chr(c) for c in range(0x80)
                      if _foldable_chars().search(chr(c)) is not None}
    return qexplorer_fold.Folder(chars, pinyin_table(), set(pinyin_syllables()),
                                 symbols(chars), foldable_ascii, token_classes(),
                                 MAX_TOKEN_BYTES)


def token_classes() -> list[list[tuple[int, int]]]:
    """The code point ranges of each class of the index's token pattern
    (:data:`~qexplorer.search.normalize.TOKEN_CLASSES`: a token of one character, the first
    character of a longer one, a character continuing one), as the reference's regex engine
    reads them."""
    every = "".join(map(chr, (*range(0xD800), *range(0xE000, 0x110000))))
    return [[(ord(every[m.start()]), ord(every[m.end() - 1]))
             for m in regex.finditer(f"{cls}+", every, regex.V1)]
            for cls in TOKEN_CLASSES]


def char_table() -> dict[str, tuple[str, str, bool, bool]]:
    """Each non-ASCII character the extension folds, with its skeleton and lowercase as the
    reference gives them, whether it is a Latin letter (variation selectors, which the
    extension folds itself, are dropped after one) and whether the reference only lowercases a
    text of such characters (``_plain``: there it keeps the selectors). The characters are
    those whose skeleton is the same in any text: not a combining mark, a joiner, an
    unassigned character, nor a letter of a script with its own words; unchanged by canonical
    decomposition or a Latin letter with marks. Invisible characters fold to nothing, as the
    reference removes them first."""
    table = {}
    for block in _CANDIDATES:
        for code in block:
            ch = chr(code)
            if _context_free(ch):
                latin = _LATIN.match(unicodedata.normalize("NFD", ch)) is not None
                table[ch] = (skeleton(ch), ch.lower(), latin, _plain(ch))
    return table


def symbols(chars: dict[str, tuple[str, str, bool, bool]]) -> set[str]:
    """The non-ASCII characters every pattern of the reference reads as a symbol (not a letter,
    digit, mark or word character; not Han): those of ``chars``' skeletons that fold to
    themselves, and the invisible ones skeletons drop (a text as written keeps them). A text of
    ASCII and these is read by the extension's patterns as by the reference's."""
    shown = {c for skeleton_, *_ in chars.values() for c in skeleton_ if not c.isascii()}
    dropped = {c for c, (skeleton_, *_) in chars.items() if not skeleton_}
    return {c for c in shown | dropped
            if (c in dropped or skeleton(c) == c) and not c.isalnum() and not has_han(c)
            and _WORDLIKE_RE.match(c) is None and _WORDLIKE.match(c) is None}


def _context_free(ch: str) -> bool:
    if ch == _ZWJ:
        return False  # it stays between two symbols, goes elsewhere: context
    category = unicodedata.category(ch)
    if ch in _SPACED_CONTROLS or category in ("Cc", "Cf"):
        return True  # a space, or removed
    if category[0] == "M" or category in ("Cs", "Co", "Cn"):
        return False
    if _SCRIPT_LETTER.search(ch) is not None:
        return False
    decomposed = unicodedata.normalize("NFD", ch)
    return decomposed == ch or (
        _LATIN.match(decomposed[0]) is not None
        and all(unicodedata.category(c) == "Mn" for c in decomposed[1:]))


def pinyin_table() -> dict[str, str]:
    """The toneless pinyin of every character pypinyin has a reading for, as the reference
    reads it."""
    from pypinyin.pinyin_dict import pinyin_dict

    return {chr(code): _char_pinyin(chr(code)) for code in pinyin_dict}
