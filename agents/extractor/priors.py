"""Term statistics and the run-time priors: what the system knows about a seed's words at run
time, beside any model.

Term statistics count a word as the index holds it (:func:`term_key`: lowercased and disguise
folded, so ``R0LEX`` and ``ｒｏｌｅｘ`` count as ``rolex``): the index's document frequencies
(``TermStats``) and the confirmed toxic items' (:class:`ToxicTerms`: the worker's ledger, or
:class:`TermCounts` over a fixed set in the evaluation), read together through
:class:`WithToxic`.

The run-time priors score a seed's spans from them (:data:`PRIORS`):

* ``contrast``: the mean over a span's terms of ``log P(term | toxic) - log P(term | listing)``
  (document frequencies, add-0.5 smoothed; a term no other listing holds counts as useless);
* ``probe``: the share of confirmed toxic items among the span's own top 10 results (the seed
  excluded), which knows how BM25 ranks the span, not only how common its terms are.

The keyword methods of the same names rank by them (``agents.extractor.keywords``); a model's
span ranking can add them (``agents.extractor.decoding.blend``); the evaluation reads them
directly. Pure functions, but ``probe`` searches the index.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from agents.extractor.base import SeedText
from agents.queries import is_valid_query
from qexplorer.search.normalize import normalize
from qexplorer.search.text import strip_invisible

if TYPE_CHECKING:
    from qexplorer.search.protocol import TermStats

#: Results of a span that ``probe`` reads (its precision@10 against the confirmed set).
PROBE_DEPTH = 10

#: A Han character (single ones count as terms).
HAN_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
#: A word as written (letters and digits, with inner apostrophes and dots).
WORD = re.compile(r"[^\W_]+(?:[.'’][^\W_]+)*")
#: A word with the symbols sellers put for letters kept inside it (``p|atform``, ``c@sh``), so
#: the statistics see the word, not its pieces (disguise folding reads it: :func:`term_key`).
FOLDED_WORD = re.compile(r"[^\W_]+(?:[.'’@$!|][^\W_]+)*")

STOPWORDS = frozenset({
    "a", "about", "above", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as",
    "at", "be", "because", "been", "before", "being", "below", "between", "both", "but", "by",
    "can", "could", "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from",
    "further", "get", "got", "had", "has", "have", "having", "he", "her", "here", "hers", "him",
    "his", "how", "i", "if", "in", "into", "is", "it", "its", "just", "me", "more", "most", "my",
    "no", "nor", "not", "now", "of", "off", "on", "once", "only", "or", "other", "our", "out",
    "over", "own", "same", "she", "should", "so", "some", "such", "than", "that", "the", "their",
    "them", "then", "there", "these", "they", "this", "those", "through", "to", "too", "under",
    "until", "up", "very", "was", "we", "were", "what", "when", "where", "which", "while", "who",
    "whom", "why", "will", "with", "would", "you", "your", "yours",
})



def seed_text(seed: SeedText) -> str:
    """A seed's title and description as one text, as the statistics and YAKE read it."""
    title = " ".join(strip_invisible(seed.title).split())
    desc = " ".join(strip_invisible(seed.description or "").split())
    if not desc:
        return title
    # a sentence break keeps YAKE's n-grams from running across title and description
    sep = " " if title[-1:] in ".!?。！？" else ". "
    return f"{title}{sep}{desc}" if title else desc


def term_key(word: str, fold: bool = True) -> str:
    """A word as the term statistics count it: lowercased and, with ``fold``, as the index
    holds it (``search.normalize``: ``R0LEX`` and ``ｒｏｌｅｘ`` count as ``rolex``)."""
    return _folded_key(word) if fold else word.lower()


@functools.lru_cache(maxsize=65536)
def _folded_key(word: str) -> str:
    normal = normalize(word).text
    return normal.split()[0] if normal and normal.strip() else word.lower()


def terms_of(text: str, fold: bool = True) -> set[str]:
    """The distinct terms of a text as the term statistics count them (:func:`term_key`):
    words of two or more characters (single Han characters too), English stopwords left
    out."""
    words = (FOLDED_WORD if fold else WORD).finditer(text)
    return {key for key in (term_key(m.group(), fold) for m in words)
            if key not in STOPWORDS and (len(key) > 1 or HAN_CHAR.match(key))}


class ToxicTerms(Protocol):
    """Document frequencies of terms among the confirmed toxic items."""

    def toxic_doc_freq(self, term: str) -> int:
        """Confirmed toxic items holding ``term``."""
        ...

    def toxic_count(self) -> int:
        """Confirmed toxic items counted."""
        ...

    def is_confirmed(self, item_id: str) -> bool:
        """True when ``item_id`` is one of them (its own terms are in the counts)."""
        ...


class TermCounts:
    """:class:`ToxicTerms` over a fixed set of texts (the evaluation's known toxic items)."""

    def __init__(self, items: Iterable[SeedText] = (), *, fold: bool = True) -> None:
        """``items``: the toxic items; an id given twice counts once. ``fold=False`` counts
        their terms as written (no disguise folding: the disguise benchmark's "before")."""
        self.doc_freq: Counter[str] = Counter()
        self.ids: set[str] = set()
        self.fold = fold
        for item in items:
            self.add(item)

    def add(self, item: SeedText) -> None:
        """Count one item's terms (once per id), as :func:`contrast_spans` reads a seed."""
        if item.id not in self.ids:
            self.ids.add(item.id)
            self.doc_freq.update(terms_of(seed_text(item), self.fold))

    def toxic_doc_freq(self, term: str) -> int:
        """Items holding ``term``."""
        return self.doc_freq[term]

    def toxic_count(self) -> int:
        """Items counted."""
        return len(self.ids)

    def is_confirmed(self, item_id: str) -> bool:
        """True when the item was counted."""
        return item_id in self.ids


class WithToxic:
    """Index statistics and confirmed-set statistics as one object (what ``contrast`` and
    ``probe`` read; it is a ``TermStats`` for every other method)."""

    def __init__(self, stats: TermStats, toxic: ToxicTerms,
                 search: Callable[[list[str], int, str], list[list[str]]] | None = None
                 ) -> None:
        """``search`` (queries, limit, seed id) -> each query's top ids without the seed
        replaces searching ``stats`` (``probe``; the evaluation's cached searcher)."""
        self.stats = stats
        self.toxic = toxic
        self._search = search

    def doc_freq(self, term: str) -> int:
        """Listings holding ``term``."""
        return self.stats.doc_freq(term)

    def count(self) -> int:
        """Listings searchable now."""
        return self.stats.count()

    def toxic_doc_freq(self, term: str) -> int:
        """Confirmed toxic items holding ``term``."""
        return self.toxic.toxic_doc_freq(term)

    def toxic_count(self) -> int:
        """Confirmed toxic items counted."""
        return self.toxic.toxic_count()

    def is_confirmed(self, item_id: str) -> bool:
        """True when the item is confirmed."""
        return self.toxic.is_confirmed(item_id)

    def top_ids(self, queries: list[str], limit: int, exclude: str) -> list[list[str]]:
        """Ids of each query's top ``limit`` listings, ``exclude`` left out (what ``probe``
        reads); the index must be searchable (``search.protocol.SearchIndex``)."""
        if self._search is not None:
            return self._search(queries, limit, exclude)
        search_many = getattr(self.stats, "search_many", None)
        if search_many is None:
            raise TypeError(f"probe needs a searchable index, got {type(self.stats).__name__}")
        return [[hit.listing_id for hit in hits]
                for hits in search_many(queries, limit, (exclude,))]


#: A word of nothing but wildcards or field syntax (``*``, ``?``, ``*:*``, ``title:*``).
_QUERY_SYNTAX = re.compile(r"(?:^|\s)(?:\w*:)?[*?:]+(?=\s|$)")
#: The weight of a term no listing but the seed holds: its query finds nothing.
_UNFOUND = -20.0


def contrast_scorer(seed: SeedText, stats: WithToxic, fold: bool = True
                    ) -> Callable[[str], float | None]:
    """The seed's span -> contrast function (see the module docstring): the mean over the
    span's terms (:func:`terms_of`, ``fold``) of their toxic-versus-all log-ratio, None for a
    span that is no query (no term, a bare wildcard). Term weights are cached for the seed."""
    own = terms_of(seed_text(seed), fold) if stats.is_confirmed(seed.id) else set()
    n_toxic = max(stats.toxic_count() - (1 if own else 0), 0)
    n_all = max(stats.count(), 1)
    weights: dict[str, float] = {}

    def weight(term: str) -> float:
        if term not in weights:
            df_all = stats.doc_freq(term)
            if df_all <= 1:
                weights[term] = _UNFOUND
            else:
                df_toxic = max(stats.toxic_doc_freq(term) - (term in own), 0)
                weights[term] = (math.log((df_toxic + 0.5) / (n_toxic + 1))
                                 - math.log((df_all + 0.5) / (n_all + 1)))
        return weights[term]

    def score(span: str) -> float | None:
        terms = terms_of(span, fold)
        # a bare wildcard is never the seller's word (the other methods split it off too)
        if not terms or not is_valid_query(span) or _QUERY_SYNTAX.search(span):
            return None
        return sum(map(weight, terms)) / len(terms)
    return score


def contrast_scores(seed: SeedText, spans: Iterable[str], stats: WithToxic) -> list[float]:
    """Each span's contrast (:func:`contrast_scorer`; a span that is no query gets the weight
    of a term nobody else holds): the run-time prior a model's span ranking can add."""
    score = contrast_scorer(seed, stats)
    return [_UNFOUND if (value := score(span)) is None else value for span in spans]


def probe_scores(seed: SeedText, spans: Iterable[str], stats: WithToxic,
                 depth: int = PROBE_DEPTH) -> list[float]:
    """Each span's share of confirmed toxic items among its top ``depth`` results (the seed
    excluded; 0 when it finds nothing), plus a thousandth a confirmed hit so that ten of ten
    rank above three of three: the run-time prior ``probe`` ranks by and a model's span
    ranking can add."""
    spans = list(spans)
    return [probe_value(top, stats) for top in stats.top_ids(spans, depth, seed.id)] \
        if spans else []


def probe_value(top: Sequence[str], stats: WithToxic) -> float:
    """The probe of a span whose top results are ``top`` (ids, the seed excluded): the
    confirmed share plus a thousandth a confirmed hit (0 when it finds nothing)."""
    hits = sum(stats.is_confirmed(i) for i in top)
    return hits / len(top) + hits / 1000 if top else 0.0


#: The run-time priors a model's span ranking can add, by name.
PRIORS = {"contrast": contrast_scores, "probe": probe_scores}
