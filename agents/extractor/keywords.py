"""Model-free extractors: YAKE keywords, TF-IDF top terms and the first words of the title.

This module owns :class:`KeywordsExtractor`, the default backend and the baselines of the
evaluation protocol. Every method is deterministic and returns spans of the seed text (for
``contrast``, runs of its words, as extractive models rank them), so the queries keep the
seller's own spelling, but for a spaced-out word, which they read joined (``C O K E`` as
``COKE``, ``search.normalize.join_spaced``); the term statistics count a disguised word as the
index holds it (:func:`term_key`: disguise folding), so they agree with the index's. CPU work
runs in a worker thread.

Methods:

* ``yake`` (default): YAKE keyphrases of up to 3 words, English stopwords. Seeds written
  mostly in Han characters use character bigrams of the Han runs instead (YAKE needs word
  boundaries), ranked by frequency then position, together with the seed's Latin/digit
  tokens (contact ids such as ``vx123`` are the best sibling signal there is).
* ``tfidf``: single terms ranked by term frequency times inverse document frequency, the
  document frequencies and corpus size read from the search index (``TermStats``).
* ``first_words``: one query, the first N (default 5) words of the title.
* ``contrast``: the seed's word spans (as the trainer's candidates) ranked by how much more
  common their terms are among the confirmed toxic items than among all listings: the mean
  over a span's terms of ``log P(term | toxic) - log P(term | listing)`` (document
  frequencies, add-0.5 smoothed), a term no other listing holds counting as useless. It reads
  the index's statistics and the confirmed set (:class:`ToxicTerms`, the worker's ledger) on
  every seed, so it sharpens as moderators confirm more; with nothing confirmed it ranks by
  rarity alone. The seed's own record is left out of the toxic counts.
* ``probe``: the same spans, each searched in the index (the seed excluded) and ranked by the
  share of its top 10 that moderators already confirmed toxic (then by how many, then the
  contrast): past feedback as the search gives it now, which knows how BM25 ranks a span, not
  only how common its terms are. Up to 200 searches a seed (``search_many``: one request a
  batch on a remote engine); it needs a searchable index with the confirmed set
  (:class:`WithToxic`).

``from_settings`` builds it for the registry: ``QEXPLORER_MODEL`` names the method.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Literal, Protocol

from agents.extractor.base import Extraction, Extractor, ExtractorError, SeedText
from agents.queries import clean_queries, distinct_top, is_valid_query, seed_spans
from search.normalize import join_spaced, normalize
from search.text import strip_invisible

if TYPE_CHECKING:
    from config import ExtractorSettings
    from search.protocol import TermStats

log = logging.getLogger(__name__)

Method = Literal["yake", "tfidf", "first_words", "contrast", "probe"]
METHODS: tuple[str, ...] = ("yake", "tfidf", "first_words", "contrast", "probe")
#: Methods that read the index's term statistics.
NEEDS_STATS = ("tfidf", "contrast", "probe")
#: Methods that read the confirmed set too (:class:`WithToxic`).
NEEDS_TOXIC = ("contrast", "probe")
#: Results of a span that ``probe`` reads (its precision@10 against the confirmed set).
PROBE_DEPTH = 10

#: Bumped when a method's output changes for the same input.
ALGORITHM_REVISION = 2

_HAN_CHAR = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]")
_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+")
_WORD = re.compile(r"[^\W_]+(?:[.'’][^\W_]+)*")
#: A word with the symbols sellers put for letters kept inside it (``p|atform``, ``c@sh``), so
#: the statistics see the word, not its pieces (disguise folding reads it: ``term_key``).
_FOLDED_WORD = re.compile(r"[^\W_]+(?:[.'’@$!|][^\W_]+)*")
#: A Latin/digit token inside CJK text: ids, brands, prices. Underscores and hyphens join its
#: parts (``kuaidai_88`` is one contact id).
_NON_HAN_PART = r"[^\W_\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]"
_NON_HAN_TOKEN = re.compile(f"{_NON_HAN_PART}+(?:[_-]{_NON_HAN_PART}+)*")

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


def _is_cjk(text: str, threshold: float = 0.3) -> bool:
    """True when at least ``threshold`` of the letters are Han characters."""
    letters = sum(1 for ch in text if ch.isalpha())
    if not letters:
        return False
    return len(_HAN_CHAR.findall(text)) / letters >= threshold


def _seed_text(seed: SeedText) -> str:
    title = " ".join(strip_invisible(seed.title).split())
    desc = " ".join(strip_invisible(seed.description or "").split())
    if not desc:
        return title
    # a sentence break keeps YAKE's n-grams from running across title and description
    sep = " " if title[-1:] in ".!?。！？" else ". "
    return f"{title}{sep}{desc}" if title else desc


def first_words(seed: SeedText, n: int = 5) -> list[str]:
    """The first ``n`` words of the title (of the description when the title is empty)."""
    source = " ".join(strip_invisible(seed.title).split()) or " ".join(
        strip_invisible(seed.description or "").split()
    )
    words = source.split()[:n]
    return [" ".join(words)] if words else []


def cjk_bigrams(text: str, limit: int) -> list[str]:
    """Up to ``limit`` spans of a mostly-Chinese text, best first.

    Letter+digit tokens (``vx888abc``: contact ids, the strongest sibling signal) come
    first in text order; then Han character bigrams and other Latin/digit tokens, most
    frequent first, ties by first position, skipping bigrams that overlap one already
    taken (so ``每天在家`` gives ``每天``, ``在家`` rather than ``每天``, ``天在``) until
    nothing else is left.
    """
    ids: list[str] = []
    counts: Counter[str] = Counter()
    first: dict[str, int] = {}
    for m in _NON_HAN_TOKEN.finditer(text):
        tok = m.group()
        if len(tok) < 2 or tok.lower() in STOPWORDS:
            continue
        has_digit = any(ch.isdigit() for ch in tok)
        if has_digit and any(ch.isalpha() for ch in tok) and len(tok) >= 3:
            if tok not in ids:
                ids.append(tok)
            continue
        counts[tok] += 1
        first.setdefault(tok, m.start())
    for m in _HAN_RUN.finditer(text):
        run = m.group()
        for i in range(len(run) - 1):
            gram = run[i : i + 2]
            counts[gram] += 1
            first.setdefault(gram, m.start() + i)
    ranked = sorted(counts, key=lambda g: (-counts[g], first[g]))
    taken: list[str] = []
    covered: set[int] = set()
    for gram in ranked:
        span = set(range(first[gram], first[gram] + len(gram)))
        if span & covered:
            continue
        taken.append(gram)
        covered |= span
    rest = [g for g in ranked if g not in taken]
    return (ids + taken + rest)[:limit]


def yake_keywords(text: str, limit: int, *, ngram: int = 3) -> list[str]:
    """Up to ``limit`` YAKE keyphrases (best first) of an English-like ``text``."""
    import yake  # local import: yake pulls in numpy/networkx, keep module import cheap

    if not text.strip():
        return []
    extractor = yake.KeywordExtractor(lan="en", n=ngram, top=limit)
    try:
        return [kw for kw, _score in extractor.extract_keywords(text)]
    except (ValueError, ZeroDivisionError, IndexError):  # degenerate inputs inside YAKE
        return []


def _spans_of(seed: SeedText, found: list[str]) -> list[str]:
    """The phrases of ``found`` that occur (up to case) in the seed's title or description.

    YAKE's tokenizer splits a word where the script changes and rejoins the parts with
    spaces (``AAAᨀAAB`` gives ``AAA ᨀ AAB``, ``テストtest`` gives ``テスト test``), and may keep
    the period :func:`_seed_text` puts between title and description (``AAA.``): neither is
    the seller's spelling, and the first searches for something else.
    """
    parts = [" ".join(strip_invisible(text).split()).casefold()
             for text in (seed.title, seed.description or "")]
    return [phrase for phrase in found if any(phrase.casefold() in part for part in parts)]



def tfidf_terms(
    text: str,
    limit: int,
    *,
    doc_freq: Callable[[str], int] | None = None,
    num_docs: int | None = None,
    fold: bool = True,
) -> list[str]:
    """Up to ``limit`` single terms of ``text`` ranked by tf-idf (tf alone without
    ``doc_freq``), ties by first position; each term in its first spelling in the text, counted
    as :func:`term_key` (``fold``) counts it."""
    counts: Counter[str] = Counter()
    spelling: dict[str, str] = {}
    first: dict[str, int] = {}
    for pos, m in enumerate((_FOLDED_WORD if fold else _WORD).finditer(text)):
        word = m.group()
        key = term_key(word, fold)
        if key in STOPWORDS or (len(key) < 2 and not _HAN_CHAR.match(key)):
            continue
        counts[key] += 1
        spelling.setdefault(key, word)
        first.setdefault(key, pos)
    if doc_freq is not None and num_docs is not None:
        n = max(int(num_docs), 0)

        def score(key: str) -> float:
            df = max(int(doc_freq(key)), 0)
            return counts[key] * (math.log((n + 1) / (df + 1)) + 1.0)
    else:

        def score(key: str) -> float:
            return float(counts[key])

    scores = {key: score(key) for key in counts}
    ranked = sorted(counts, key=lambda key: (-scores[key], first[key]))
    return [spelling[key] for key in ranked[:limit]]


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
    words = (_FOLDED_WORD if fold else _WORD).finditer(text)
    return {key for key in (term_key(m.group(), fold) for m in words)
            if key not in STOPWORDS and (len(key) > 1 or _HAN_CHAR.match(key))}


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
            self.doc_freq.update(terms_of(_seed_text(item), self.fold))

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
    own = terms_of(_seed_text(seed), fold) if stats.is_confirmed(seed.id) else set()
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
    scores = []
    for top in stats.top_ids(spans, depth, seed.id) if spans else []:
        hits = sum(stats.is_confirmed(i) for i in top)
        scores.append(hits / len(top) + hits / 1000 if top else 0.0)
    return scores


def contrast_spans(seed: SeedText, limit: int, stats: WithToxic, *, max_words: int = 3,
                   max_spans: int = 200, fold: bool = True) -> list[str]:
    """The seed's spans ranked by toxic-versus-all contrast (see the module docstring)."""
    score = contrast_scorer(seed, stats, fold)
    scored = []
    for position, span in enumerate(seed_spans(seed.title, seed.description, max_words,
                                               max_spans, 0)):
        value = score(span)
        if value is not None:
            scored.append((-value, position, span))
    return _seller_spans(seed, scored, limit)


def probe_spans(seed: SeedText, limit: int, stats: WithToxic, *, max_words: int = 3,
                max_spans: int = 200, fold: bool = True) -> list[str]:
    """The seed's spans ranked by the confirmed share of their results (see the module
    docstring); ties, such as spans that find nothing confirmed yet (a campaign nobody has
    reported), go by contrast, then to the shorter span."""
    score = contrast_scorer(seed, stats, fold)
    contrasts = {span: value for span in seed_spans(seed.title, seed.description, max_words,
                                                    max_spans, 0)
                 if (value := score(span)) is not None}
    spans = list(contrasts)
    scored = [(-value, -contrasts[span], len(span), position, span) for position, (span, value)
              in enumerate(zip(spans, probe_scores(seed, spans, stats), strict=True))]
    return _seller_spans(seed, scored, limit)


def _seller_spans(seed: SeedText, scored: list[tuple], limit: int) -> list[str]:
    """The spans of ``scored`` (tuples ending with the span) in sort order, at most
    ``limit`` distinct ones."""
    scored.sort()
    # spans come from the text as the prompt shows it (fence markers defused, punctuation
    # between words dropped): keep those whose every word the seller wrote
    text = " ".join(strip_invisible(_seed_text(seed)).split()).casefold()
    return distinct_top([span for *_, span in scored
                         if all(word.casefold() in text for word in span.split())], limit)


class KeywordsExtractor(Extractor):
    """Deterministic, model-free query extraction (see the module docstring)."""

    name = "keywords"

    def __init__(
        self,
        method: Method | str = "yake",
        *,
        stats: TermStats | None = None,
        first_n: int = 5,
        model_version: str | None = None,
        fold: bool = True,
    ) -> None:
        """Pick the ``method``; ``tfidf`` needs the index's term statistics ``stats`` (read
        on every seed, since the index grows), ``contrast`` and ``probe`` those with the
        confirmed set's (:class:`WithToxic`; ``probe`` searches its index). ``model_version``
        overrides the recorded version. ``fold=False`` counts terms as written (no
        :func:`term_key` folding: the disguise benchmark's "before")."""
        if method not in METHODS:
            raise ValueError(f"unknown keywords method {method!r}; choose one of {METHODS}")
        if method in NEEDS_STATS and stats is None:
            raise ValueError(f"keywords method {method} needs the search index's term "
                             "statistics")
        if method in NEEDS_TOXIC and not hasattr(stats, "toxic_doc_freq"):
            raise ValueError(f"keywords method {method} needs the confirmed toxic items' "
                             "statistics too (WithToxic)")
        if first_n < 1:
            raise ValueError(f"first_n must be >= 1, got first_n={first_n}")
        self.method: str = method
        self.stats = stats
        self.first_n = first_n
        self.fold = fold
        self._model_version = model_version or f"keywords-{method}-{ALGORITHM_REVISION}"

    @property
    def model_version(self) -> str:
        """``keywords-<method>-<revision>`` unless overridden."""
        return self._model_version

    def candidates(self, seed: SeedText, k: int) -> list[str]:
        """Raw candidate spans for one seed, best first (more than ``k`` when available)."""
        if self.fold:  # a spaced-out word is one word (C O K E reads COKE)
            seed = SeedText(seed.id, join_spaced(seed.title), join_spaced(seed.description))
        if self.method == "first_words":
            return first_words(seed, self.first_n)
        text = _seed_text(seed)
        if not text:
            return []
        limit = max(2 * k, k + 4)
        if self.method == "tfidf":
            assert self.stats is not None  # checked at construction
            try:
                return tfidf_terms(text, limit, doc_freq=self.stats.doc_freq,
                                   num_docs=self.stats.count(), fold=self.fold)
            except Exception as exc:  # the index behind the statistics failed: retry later
                raise ExtractorError(f"tf-idf document frequencies failed: {exc!r}") from exc
        if self.method == "contrast":
            try:
                return contrast_spans(seed, limit, self.stats,  # type: ignore[arg-type]
                                      fold=self.fold)
            except Exception as exc:
                raise ExtractorError(f"contrast statistics failed: {exc!r}") from exc
        if self.method == "probe":
            try:
                return probe_spans(seed, limit, self.stats,  # type: ignore[arg-type]
                                   fold=self.fold)
            except Exception as exc:  # the index failed: retry later
                raise ExtractorError(f"probe searches failed: {exc!r}") from exc
        found = (cjk_bigrams(text, limit) if _is_cjk(text)
                 else _spans_of(seed, yake_keywords(text, limit)))
        # very short seeds give YAKE nothing to rank: fall back to the title's first words
        return found or first_words(seed, self.first_n)

    def extract_sync(self, seeds: list[SeedText], k: int) -> list[Extraction]:
        """The blocking implementation of :meth:`extract` (call it from a worker thread)."""
        out = []
        for seed in seeds:
            raw = self.candidates(seed, k)
            text = _seed_text(seed)
            queries = clean_queries(raw, k, seed_text=join_spaced(text) if self.fold else text)
            out.append(Extraction(seed_id=seed.id, queries=queries, raw=raw))
        return out

    async def extract(self, seeds: list[SeedText], k: int) -> list[Extraction]:
        """One Extraction per seed, at most ``k`` queries each; runs in a worker thread."""
        if not seeds:
            return []
        return await asyncio.to_thread(self.extract_sync, seeds, k)


def from_settings(settings: ExtractorSettings, stats: TermStats) -> KeywordsExtractor:
    """The registry's builder: ``settings.model`` names the method (default ``yake``)."""
    method = "yake"
    if settings.model in METHODS:
        method = settings.model
    elif settings.model:
        log.warning("extractor=keywords ignores model=%r (not one of %s); using %s",
                    settings.model, ", ".join(METHODS), method)
    return KeywordsExtractor(method, stats=stats if method in NEEDS_STATS else None,
                             model_version=settings.model_version)
