"""Query hygiene: from raw candidates to queries that are safe to search and to record.

:func:`clean_queries` / :func:`is_valid_query` turn candidate strings (model output, keyword
spans) into at most ``k`` short, distinct, printable queries. The returned text keeps what
makes a disguise findable: odd spellings, casing, emoji, Chinese, full-width forms. It is what
detections and search feedback record; ``search.query.to_search_text`` makes it safe for the
engine. :func:`seed_spans` and :func:`rank_spans` are extractive decoding's candidates and its
last step.

Pure functions only.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Sequence

from agents.prompt import MAX_DESCRIPTION_CHARS, MAX_TITLE_CHARS, clean_item_text
from qexplorer.search.query import to_search_text
from qexplorer.search.text import strip_invisible

#: A cleaned query has at most this many whitespace-separated tokens...
MAX_QUERY_TOKENS = 8
#: ...and at most this many characters.
MAX_QUERY_CHARS = 80
#: Longer candidates are cut to this many characters before any other work.
MAX_CANDIDATE_CHARS = 1000
#: Only this much of ``seed_text`` is searched for the seller's spelling.
MAX_SEED_CHARS = 20_000
#: The word spans of a seed that training data and the evaluation's oracle choose from: up to
#: this many words a span, at most this many spans a seed (a fixed sample beyond).
SPAN_WORDS = 3
SPAN_LIMIT = 200
_QUOTE_PAIRS = {'"': '"', "'": "'", "“": "”", "‘": "’", "「": "」", "『": "』", "`": "`",
                "«": "»"}


def _bound(text: str) -> str:
    tokens = text.split()
    if len(tokens) > MAX_QUERY_TOKENS:
        tokens = tokens[:MAX_QUERY_TOKENS]
    out = " ".join(tokens)
    if len(out) > MAX_QUERY_CHARS:
        cut = out[:MAX_QUERY_CHARS]
        space = cut.rfind(" ")
        out = cut[:space] if space > 0 else cut
    return out.strip()


def _unquote(text: str) -> str:
    while len(text) >= 2 and _QUOTE_PAIRS.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


def clean_query(candidate: object) -> str | None:
    """One candidate cleaned, or None when nothing usable is left.

    Drops control, zero-width and bidi characters; collapses whitespace; removes quotes that
    wrap the whole query; keeps at most :data:`MAX_QUERY_TOKENS` tokens and
    :data:`MAX_QUERY_CHARS` characters. Query syntax is *not* removed here (``v*agra`` stays
    as written); :func:`to_search_text` neutralises it at search time.
    """
    if not isinstance(candidate, str):
        return None
    text = strip_invisible(candidate[:MAX_CANDIDATE_CHARS])
    text = _unquote(_bound(_unquote(" ".join(text.split()))))
    return text if is_valid_query(text) else None


def is_valid_query(q: object) -> bool:
    """True when ``q`` is a clean query: a non-empty single-line string within the length
    bounds, with no control or zero-width characters, and with a non-empty
    :func:`to_search_text` (a letter, digit or symbol such as an emoji; not just
    punctuation or operators)."""
    if not isinstance(q, str) or not q or q != q.strip():
        return False
    if len(q) > MAX_QUERY_CHARS or len(q.split()) > MAX_QUERY_TOKENS:
        return False
    if strip_invisible(q) != q or " ".join(q.split()) != q:
        return False
    return bool(to_search_text(q))


def _ground(query: str, seed: str, seed_lower: str) -> str:
    """The seed's own spelling of ``query`` when the seed contains it up to case."""
    q_lower = query.lower()
    if len(q_lower) != len(query):
        return query
    i = seed_lower.find(q_lower)
    return seed[i : i + len(query)] if i >= 0 else query


def clean_queries(candidates: Iterable[object], k: int, seed_text: str | None = None) -> list[str]:
    """At most ``k`` clean, distinct queries from ``candidates``, in their original order.

    Each candidate goes through :func:`clean_query`; invalid ones are dropped. Two queries
    are duplicates when they search the same thing (same :func:`to_search_text`, compared
    case-insensitively); the first one wins. When ``seed_text`` is given, a query that occurs
    in the seed up to letter case is returned in the seed's own casing (the model wrote
    ``v1agra``, the seller wrote ``V1AGRA``), so records keep the disguise as the seller
    wrote it. Returned queries are never lowercased or Unicode-normalised.
    """
    if k <= 0:
        return []
    seed = seed_lower = None
    if seed_text:
        seed = " ".join(strip_invisible(seed_text[:MAX_SEED_CHARS]).split())
        seed_lower = seed.lower()
        if len(seed_lower) != len(seed):  # case mapping changes length: no safe alignment
            seed = seed_lower = None
    out: list[str] = []
    seen: set[str] = set()
    for candidate in candidates:
        query = clean_query(candidate)
        if query is None:
            continue
        if seed is not None and seed_lower is not None:
            query = _ground(query, seed, seed_lower)
        key = to_search_text(query).casefold()
        if key in seen:
            continue
        seen.add(key)
        out.append(query)
        if len(out) >= k:
            break
    return out


_OUTER_PUNCTUATION = ",.;:!?()[]{}\"'“”‘’…"


def seed_spans(title: str, description: str | None, max_words: int = 3, limit: int = 60,
               rng_seed: int = 0) -> list[str]:
    """Distinct valid word spans (1..max_words words) of the seed as the prompt shows it, at
    most ``limit`` (a fixed random sample when there are more), in text order.

    Sentence punctuation around a word is dropped; inside it (``c.0.k.e``, ``@frosty_plug``)
    it stays. These are the candidate queries of extractive decoding and of training data.
    """
    text = f"{clean_item_text(title, MAX_TITLE_CHARS)} " \
           f"{clean_item_text(description, MAX_DESCRIPTION_CHARS)}"
    words = [w for w in (w.strip(_OUTER_PUNCTUATION) for w in text.split()) if w]
    found: dict[str, str] = {}
    for n in range(1, max_words + 1):
        for start in range(len(words) - n + 1):
            query = clean_query(" ".join(words[start:start + n]))
            if query and is_valid_query(query) and not _only_stopwords(query):
                found.setdefault(to_search_text(query).casefold(), query)
    out = list(found.values())
    if len(out) > limit:
        keep = set(random.Random(rng_seed).sample(range(len(out)), limit))
        out = [q for i, q in enumerate(out) if i in keep]
    return out


def candidate_spans(title: str, description: str | None, limit: int = 200) -> list[str]:
    """The spans a model ranks in extractive decoding: :func:`seed_spans` of two or more
    characters (a single character finds everything)."""
    return [s for s in seed_spans(title, description, limit=limit) if len(s) >= 2]


def distinct_top(ranked: Iterable[str], k: int) -> list[str]:
    """The first ``k`` queries of a best-first list, skipping one that contains or is contained
    in a query already taken (case-insensitive), so the list covers different evidence."""
    taken: list[str] = []
    for query in ranked:
        if len(taken) == k:
            break
        low = query.casefold()
        if any(low in t.casefold() or t.casefold() in low for t in taken):
            continue
        taken.append(query)
    return taken


def rank_spans(spans: Sequence[str], scores: Sequence[float], k: int, *,
               temperature: float = 0.0, sample_key: str = "") -> tuple[list[str], list[str]]:
    """Extractive decoding's last step, shared by every model backend: the ``k`` best distinct
    spans by model score (log-probability), and the ``2k`` best as ``"score\tspan"`` lines
    for the record. With ``temperature`` > 0 spans are sampled without replacement (Gumbel
    top-k on ``score / temperature``), reproducibly for a given ``sample_key``."""
    if len(spans) != len(scores):
        raise ValueError(f"{len(spans)} spans but {len(scores)} scores")
    if temperature > 0:
        rng = random.Random(sample_key)
        scores = [s / temperature - math.log(-math.log(rng.random() or 1e-12)) for s in scores]
    ranked = sorted(zip(scores, spans, strict=True), key=lambda pair: -pair[0])
    return (distinct_top([s for _, s in ranked], k),
            [f"{score:.2f}\t{span}" for score, span in ranked[: 2 * k]])


_STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "can", "do", "for", "from", "have",
    "he", "her", "his", "i", "if", "in", "is", "it", "its", "me", "my", "no", "not", "of", "on",
    "or", "our", "so", "that", "the", "their", "them", "then", "there", "they", "this", "to", "u",
    "ur", "was", "we", "what", "when", "will", "with", "you", "your"
})


def _only_stopwords(query: str) -> bool:
    return all(w.casefold() in _STOPWORDS for w in query.split())
