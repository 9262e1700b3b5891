"""Query escaping: the only text derived from a query that reaches a search engine's parser.

:func:`to_search_text` lowercases (so ``AND``/``OR``/``NOT``/``IN`` are plain words), replaces
every query-syntax character by a space (no ``field:``, wildcards, ranges, boosts, phrases,
regexes or ``+``/``-`` from the outside), quotes each run of Han characters as a phrase and
bounds the number of terms; single Han characters standing apart (``冰 糖``, ``冰·糖``) are
joined into one phrase. With ``fold`` (the default) the query is first normalised as listings
are indexed (``search.normalize``: disguise folding). The grammar is the Lucene-style one
Tantivy's parser shares with Lucene and OpenSearch. No input makes the parser raise.

Pure functions only.
"""

from __future__ import annotations

import re
import unicodedata

from qexplorer.search.normalize import MAX_TOKEN_BYTES, join_spaced_han, normalize
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
