"""Query escaping: the only text derived from a query that reaches a search engine's parser.

:func:`to_search_text` lowercases (so ``AND``/``OR``/``NOT``/``IN`` are plain words), replaces
every query-syntax character by a space (no ``field:``, wildcards, ranges, boosts, phrases,
regexes or ``+``/``-`` from the outside), quotes each run of Han characters as a phrase and
bounds the number of terms; single Han characters standing apart (``冰 糖``, ``冰·糖``) are
joined into one phrase. With ``fold`` (the default) the query is first normalised as listings
are indexed (disguise folding: ``search.folding``, compiled, with ``search.normalize`` as its
reference). The grammar is the Lucene-style one
Tantivy's parser shares with Lucene and OpenSearch. No input makes the parser raise.

Pure functions only.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from qexplorer.search.folding import analyze, normalize
from qexplorer.search.normalize import (
    MASK,
    MAX_TOKEN_BYTES,
    han_runs,
    han_words,
    join_spaced_han,
    pinyin,
    segment_pinyin,
)
from qexplorer.search.text import HAN, strip_invisible

#: At most this many terms (words or quoted Han runs) reach the query parser, and at most
#: :data:`MAX_VARIANT_TERMS` other readings of its disguised words beside them.
MAX_SEARCH_TERMS = 16
MAX_VARIANT_TERMS = 8
#: Input to :func:`to_search_text` is cut to this many characters first.
MAX_SEARCH_INPUT_CHARS = 256

#: Every character with a meaning in the query grammar (and a few neighbours).
SYNTAX_CHARS = "+-&|!(){}[]^\"~*?:\\/<>'=`"
_SYNTAX_TABLE = str.maketrans(dict.fromkeys(SYNTAX_CHARS, " "))

# A search term: a run of Han characters, or a run of anything else but whitespace.
_TERMS = re.compile(f"([{HAN}]+)|([^\\s{HAN}]+)")


def _yields_token(term: str) -> bool:
    """True when ``term`` gives at least one token under Tantivy's default and ``en_stem``
    analyzers (a letter/digit run shorter than 40 bytes) *and* under a character n-gram
    analyzer with n <= 2 (two characters or more)."""
    raw = term.strip('"')
    if len(raw) < 2:
        return False
    run = 0
    for ch in raw + " ":
        if ch.isalnum():
            run += len(ch.encode())
        elif run:
            if run <= MAX_TOKEN_BYTES:
                return True
            run = 0
    return False


def to_search_text(q: str, *, fold: bool = True) -> str:
    """Text that is safe to give to the query parser for query ``q``.

    Lowercases (``AND``, ``OR``, ``NOT``, ``IN``, ``TO`` lose their operator meaning),
    replaces every character of :data:`SYNTAX_CHARS` with a space, drops control and
    zero-width characters, joins single Han characters separated by spaces or dots, wraps each
    run of Han characters in double quotes so it is searched as a phrase, and keeps at most
    :data:`MAX_SEARCH_TERMS` terms. With ``fold``, ``q`` is normalised first as listings are
    (``ｃａｓｈ`` searches ``cash``, ``w1n`` searches ``win`` and, as a variant, ``wln``).

    Tantivy's parser also fails ("Only excluding terms given") when a query has several
    clauses and *every* one analyses to nothing: ``"% %"`` on any field, two 1-character
    terms on a bigram field, two words of 40+ bytes under the default analyzer. So unless
    some term yields a token under the default, ``en_stem``, bigram and QExplorer's own
    analyzers alike, only the first term with a letter, digit or symbol is kept (a single
    clause never fails); with none the result is empty: skip the search then.
    """
    if not isinstance(q, str):
        return ""
    q = q[:MAX_SEARCH_INPUT_CHARS]
    variants: tuple[str, ...] = ()
    if fold:
        normal = normalize(q)
        q, variants = (normal.text or q)[:2 * MAX_SEARCH_INPUT_CHARS], normal.variants
    text = join_spaced_han(strip_invisible(q).lower()).translate(_SYNTAX_TABLE)
    # words and Han runs in one pass: a Han run is a phrase, wherever it stands in a word
    terms = [f'"{han}"' if han else other
             for han, other in _TERMS.findall(text)[:MAX_SEARCH_TERMS]]
    # readings of disguised words (letters and digits only: nothing the parser reads)
    terms += [v for v in variants[:MAX_VARIANT_TERMS] if v.isalnum() and v not in terms]
    if any(_yields_token(t) for t in terms):
        return " ".join(terms)
    # A single clause never makes the parser fail, even when it analyses to nothing: keep
    # the first term that an analyzer indexing symbols or single characters can use.
    for term in terms:
        if any(ch.isalnum() or unicodedata.category(ch) == "So" for ch in term):
            return term
    return ""


# A term of :func:`to_search_text`'s text: a quoted phrase or a run of anything but spaces.
_SEARCH_TERMS = re.compile(r'"([^"]*)"|(\S+)')


def analyzed_terms(text: str) -> list[tuple[str, ...]]:
    """The index's tokens (``search.normalize.analyze``) of each term of ``text``
    (:func:`to_search_text`'s): a term of one token is searched as that token, of several as
    their phrase (as Tantivy's parser treats a term its analyzer splits); a term without
    tokens is dropped."""
    terms = []
    for quoted, word in _SEARCH_TERMS.findall(text):
        tokens = analyze(quoted or word)
        if tokens:
            terms.append(tuple(tokens))
    return terms


def analyzed_query(text: str) -> str:
    """:func:`to_search_text`'s ``text`` for the parser of an index holding made tokens (its
    fields split on spaces): each term as its tokens, a phrase where there are several."""
    return " ".join(t[0] if len(t) == 1 else '"' + " ".join(t) + '"'
                    for t in analyzed_terms(text))


# --- what a folded query searches beyond its parsed terms ------------------------------------

#: The fields a listing's text is searched in (the index's ``title`` and ``description``).
TEXT_FIELDS = ("title", "description")
#: Clean words of at least this many letters are also searched with each letter masked.
MASKED_MIN_LETTERS = 5
#: ... and at most this many words of a query are.
MASKED_WORDS = 4


@dataclass(frozen=True, slots=True)
class Clause:
    """One more way a folded query matches a listing, the same for every engine: a term (one
    token) or a phrase (several) on a field, or with ``pattern`` one token in which
    :data:`~qexplorer.search.normalize.MASK` stands for any one character."""

    field: str
    tokens: tuple[str, ...]
    pattern: bool = False


def folded_clauses(text: str) -> list[Clause]:
    """What a folded query (:func:`to_search_text`'s result) searches besides its terms:

    - each run of Han characters: its Chinese words; its sound, as a phrase of pinyin
      syllables in the listings' pinyin, and as sellers type it, spaced (a phrase) or joined
      (a term), in their text;
    - each run of Latin words that is pinyin (``bing tang``, ``bingtang``; two syllables or
      more): that phrase in the listings' pinyin, so it meets the characters it stands for,
      and the other way of typing it (spaced or joined) in their text;
    - each clean word of :data:`MASKED_MIN_LETTERS` letters or more (the first
      :data:`MASKED_WORDS`): its forms with one letter masked, in the text, where a
      listing's masked words are read (``cocaine`` meets ``coc*ine``);
    - each masked reading of the query's own words (``cocǂine``): as a pattern in the text,
      so a disguised seed meets the clean word (``cocaine``) and the same word broken
      elsewhere (``co-caine``, read ``cocaine`` too).
    """
    clauses: list[Clause] = []
    runs = han_runs(text)
    if runs:
        clauses += [Clause("words", (word,)) for word in han_words(text)]
    for sound in [tuple(pinyin(run)) for run in runs] + _typed_pinyin(text):
        clauses.append(Clause("pinyin", sound))
        clauses += [Clause(f, sound) for f in TEXT_FIELDS]  # typed spaced
        clauses += [Clause(f, ("".join(sound),)) for f in TEXT_FIELDS]  # typed joined
    words = [w for w in _LATIN_WORD.findall(text)]
    clean = [w for w in dict.fromkeys(words)
             if len(w) >= MASKED_MIN_LETTERS and MASK not in w][:MASKED_WORDS]
    clauses += [Clause(f, (w[:i] + MASK + w[i + 1:],))
                for w in clean for i in range(len(w)) for f in TEXT_FIELDS]
    clauses += [Clause(f, (w,), pattern=True) for w in dict.fromkeys(words) if MASK in w
                for f in TEXT_FIELDS]
    return clauses


# Latin words (letters only, the mask among them) of a folded query.
_LATIN_WORD = re.compile(f"[^\\W\\d_{HAN}]+")


def _typed_pinyin(text: str) -> list[tuple[str, ...]]:
    """Runs of consecutive words of ``text`` that are all pinyin, two syllables or more in a
    run: their syllables."""
    runs: list[tuple[str, ...]] = []
    current: list[str] = []
    for word in [*text.split(), ""]:
        syllables = segment_pinyin(word) if word.isascii() else None
        if syllables:
            current += syllables
            continue
        if len(current) >= 2:
            runs.append(tuple(current))
        current = []
    return runs


def pattern_regex(token: str) -> str:
    """A :class:`Clause` pattern as the regular expression both engines take: the token
    itself, :data:`~qexplorer.search.normalize.MASK` any one character."""
    return ".".join(re.escape(part) for part in token.split(MASK))
