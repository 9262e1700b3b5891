"""Model-free extractors: YAKE keywords, TF-IDF top terms and the first words of the title.

This module owns :class:`KeywordsExtractor`, the default backend and the baselines of the
evaluation protocol. Every method is deterministic and returns spans of the seed text (for
``contrast``, runs of its words, as extractive models rank them), so the queries keep the
seller's own spelling, but for a spaced-out word, which they read joined (``C O K E`` as
``COKE``, ``qexplorer.search.normalize.join_spaced``); the term statistics and the priors
``contrast`` and ``probe`` rank by are ``agents.extractor.priors``. CPU work runs in a worker
thread.

Methods:

* ``yake`` (default): YAKE keyphrases of up to 3 words, English stopwords. Seeds written
  mostly in Han characters use character bigrams of the Han runs instead (YAKE needs word
  boundaries), ranked by frequency then position, together with the seed's Latin/digit
  tokens (contact ids such as ``vx123`` are the best sibling signal there is).
* ``tfidf``: single terms ranked by term frequency times inverse document frequency, the
  document frequencies and corpus size read from the search index (``TermStats``).
* ``first_words``: one query, the first N (default 5) words of the title.
* ``contrast``: the seed's word spans (as the trainer's candidates) ranked by the prior of that
  name: how much more common their terms are among the confirmed toxic items than among all
  listings. It reads the confirmed set (the worker's ledger) on every seed, so it sharpens as
  moderators confirm more; with nothing confirmed it ranks by rarity alone. The seed's own
  record is left out of the toxic counts.
* ``probe``: the same spans ranked by the prior of that name, the share of a span's top 10
  that moderators already confirmed toxic (then by how many, then the contrast). Up to 200
  searches a seed (``search_many``: one request a batch on a remote engine); it needs a
  searchable index with the confirmed set (``WithToxic``).

``from_settings`` builds it for the registry: ``QEXPLORER_MODEL`` names the method.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

from agents.extractor.base import Extraction, Extractor, ExtractorError, SeedText
from agents.extractor.priors import (
    FOLDED_WORD,
    HAN_CHAR,
    STOPWORDS,
    WORD,
    WithToxic,
    contrast_scorer,
    probe_scores,
    seed_text,
    term_key,
)
from agents.queries import clean_queries, distinct_top, seed_spans
from qexplorer.search.normalize import join_spaced
from qexplorer.search.text import strip_invisible

if TYPE_CHECKING:
    from qexplorer.config import ExtractorSettings
    from qexplorer.search.protocol import TermStats

log = logging.getLogger(__name__)

Method = Literal["yake", "tfidf", "first_words", "contrast", "probe"]
METHODS: tuple[str, ...] = ("yake", "tfidf", "first_words", "contrast", "probe")
#: Methods that read the index's term statistics.
NEEDS_STATS = ("tfidf", "contrast", "probe")
#: Methods that read the confirmed set too (:class:`WithToxic`).
NEEDS_TOXIC = ("contrast", "probe")
#: Bumped when a method's output changes for the same input.
ALGORITHM_REVISION = 2

_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+")
#: A Latin/digit token inside CJK text: ids, brands, prices. Underscores and hyphens join its
#: parts (``kuaidai_88`` is one contact id).
_NON_HAN_PART = r"[^\W_\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]"
_NON_HAN_TOKEN = re.compile(f"{_NON_HAN_PART}+(?:[_-]{_NON_HAN_PART}+)*")

def _is_cjk(text: str, threshold: float = 0.3) -> bool:
    """True when at least ``threshold`` of the letters are Han characters."""
    letters = sum(1 for ch in text if ch.isalpha())
    if not letters:
        return False
    return len(HAN_CHAR.findall(text)) / letters >= threshold


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
    the period :func:`seed_text` puts between title and description (``AAA.``): neither is
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
    for pos, m in enumerate((FOLDED_WORD if fold else WORD).finditer(text)):
        word = m.group()
        key = term_key(word, fold)
        if key in STOPWORDS or (len(key) < 2 and not HAN_CHAR.match(key)):
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
    text = " ".join(strip_invisible(seed_text(seed)).split()).casefold()
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
        text = seed_text(seed)
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
            text = seed_text(seed)
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
