"""Training data from search feedback: candidate queries, their scores, SFT rows and DPO pairs.

For each training seed, candidate queries come from the seed itself (word spans of the text the
prompt shows), from the baselines (YAKE, TF-IDF, first words) and from samples of the current
model. Each is scored by what it finds (precision@10 against the labels; executed queries from
the topics against the moderators' labels, ``trainer.feedback``). Generative data also takes
spans of the listings the seed's exploration found and moderators confirmed, and the model's
free text, so targets may hold words the seed does not; scored by the seed's own kind
(``reward="siblings"``), a query that matches every harmful item does not win. The SFT
target is the best ``k`` distinct queries above a threshold; a DPO pair puts one of those
queries against a clearly worse query for the same prompt (the current model's own picks
first, then the baselines', then the worst spans): single queries, the unit the extractor
ranks.

Everything here is pure given a scoring function; rows carry their provenance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agents.extractor.base import SeedText
from agents.extractor.keywords import KeywordsExtractor
from agents.prompt import PROMPT_VERSION, build_prompt, format_completion
from agents.queries import SPAN_LIMIT, SPAN_WORDS, distinct_top, is_valid_query, seed_spans
from qexplorer.marketplace.items import LabelledItem

#: Scores a query for a seed: (query, seed id) -> score in [0, 1].
ScoreFn = Callable[[str, str], float]
#: What a candidate query can be scored by (``BuildConfig.reward``).
REWARDS = ("harmful", "siblings")
#: Spans taken from each confirmed find of a seed (generative data).
NEIGHBOUR_SPANS = 50


@dataclass(frozen=True)
class BuildConfig:
    """Knobs of dataset construction (recorded with the data)."""

    k: int = 4
    threshold: float = 0.5  # an SFT target query must score at least this
    margin: float = 0.25  # chosen list mean minus rejected list mean, at least
    pairs_per_seed: int = 3
    max_spans: int = SPAN_LIMIT
    max_words: int = SPAN_WORDS
    seed: int = 0
    #: what a query is scored by: "harmful" (precision@10 over every harmful item) or
    #: "siblings" (over the seed's own kind, ``Searcher.kin_precision``)
    reward: str = "harmful"
    #: candidates beyond the seed's words: spans of its confirmed finds and the model's free
    #: text (False: the seed's own spans and the model's ranked spans, extractive)
    generative: bool = False
    neighbours: int = 3  # confirmed finds whose spans join the candidates (generative)

    def __post_init__(self) -> None:
        if self.reward not in REWARDS:
            raise ValueError(f"reward={self.reward!r} is not one of {', '.join(REWARDS)}")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold={self.threshold} must be within [0, 1]")
        if not 0 < self.margin <= 1:
            raise ValueError(f"margin={self.margin} must be within (0, 1]")
        if self.k < 1 or self.pairs_per_seed < 0 or self.max_spans < 1:
            raise ValueError(f"k={self.k}, pairs_per_seed={self.pairs_per_seed} and "
                             f"max_spans={self.max_spans} must be positive")


@dataclass(frozen=True)
class Candidate:
    """A query for a seed, where it came from and what it scored."""

    query: str
    source: str
    score: float
    hits: int = 0  # harmful results in the top 10: among equal scores, the broader query wins


@dataclass
class BuildStats:
    """What a build produced (for the model card and the logs)."""

    seeds: int = 0
    sft_rows: int = 0
    dpo_rows: int = 0
    seeds_without_target: int = 0
    candidates: int = 0
    sources: dict[str, int] = field(default_factory=dict)


def baseline_queries(seed: SeedText, k: int, extractors: Mapping[str, KeywordsExtractor]
                     ) -> dict[str, list[str]]:
    """Each baseline's query list for the seed (name -> queries)."""
    return {name: ex.extract_sync([seed], k)[0].queries for name, ex in extractors.items()}


def best_queries(candidates: Iterable[Candidate], k: int, threshold: float) -> list[Candidate]:
    """The best ``k`` candidates scoring at least ``threshold``; a candidate that contains or is
    contained in one already taken is skipped, so the list covers different evidence."""
    ranked = sorted((c for c in candidates if c.score >= threshold),
                    key=lambda c: (-c.score, -c.hits, len(c.query), c.query))
    by_query = {c.query: c for c in ranked}
    return [by_query[q] for q in distinct_top([c.query for c in ranked], k)]


def seed_rows(corpus: str, seed: SeedText, score: ScoreFn, config: BuildConfig,
              baselines: Mapping[str, list[str]], samples: Sequence[list[str]] = (),
              hits: Callable[[str, str], int] | None = None,
              neighbours: Sequence[SeedText] = (),
              ) -> tuple[dict | None, list[dict], list[Candidate]]:
    """The SFT row (or None), the DPO rows and the scored candidates of one seed; ``hits``
    (harmful results of a query) breaks ties between equal scores. ``neighbours``: listings
    the seed's exploration found and moderators confirmed; their spans are candidates too, so
    a target may hold words the seed does not (generative data)."""
    cache: dict[str, float] = {}

    def scored(query: str) -> float:
        if query not in cache:
            cache[query] = score(query, seed.id)
        return cache[query]

    pool: dict[str, Candidate] = {}
    sources: list[tuple[str, Iterable[str]]] = [
        ("span", seed_spans(seed.title, seed.description, config.max_words, config.max_spans,
                            config.seed)),
        *((name, qs) for name, qs in baselines.items()),
        *((f"sample{j}", qs) for j, qs in enumerate(samples)),
        *(("neighbour", seed_spans(n.title, n.description, config.max_words, NEIGHBOUR_SPANS,
                                   config.seed)) for n in neighbours),
    ]
    for source, queries in sources:
        for query in queries:
            if is_valid_query(query) and query not in pool:
                pool[query] = Candidate(query, source, scored(query),
                                        hits(query, seed.id) if hits else 0)
    candidates = list(pool.values())
    best = best_queries(candidates, config.k, config.threshold)
    if not best:
        return None, [], candidates
    prompt = build_prompt(seed.title, seed.description, config.k)
    chosen = [c.query for c in best]
    sft = {"prompt": prompt, "completion": format_completion(chosen), "seed_id": seed.id,
           "corpus": corpus, "queries": chosen, "scores": [c.score for c in best],
           "sources": [c.source for c in best], "prompt_version": PROMPT_VERSION}
    # DPO pairs are single queries, the unit the extractor ranks: a target query against a
    # clearly worse one, hardest first (the current model's own picks, then the baselines'),
    # then the worst spans.
    worst = sorted(candidates, key=lambda c: (c.score, c.query))[: config.k]
    negatives = [*((f"sample{j}", q) for j, qs in enumerate(samples) for q in qs),
                 *((name, q) for name, qs in baselines.items() for q in qs),
                 *(("worst_spans", c.query) for c in worst)]
    dpo, used = [], set()
    for source, query in negatives:
        if len(dpo) == config.pairs_per_seed:
            break
        good = best[len(dpo) % len(best)]
        if query in used or not is_valid_query(query) or \
                good.score - scored(query) < config.margin:
            continue
        used.add(query)
        dpo.append({"prompt": prompt, "chosen": format_completion([good.query]),
                    "rejected": format_completion([query]), "seed_id": seed.id,
                    "corpus": corpus, "chosen_score": good.score,
                    "rejected_score": scored(query), "rejected_source": source,
                    "prompt_version": PROMPT_VERSION})
    return sft, dpo, candidates


def build_rows(corpus: str, seeds: Sequence[LabelledItem], score: ScoreFn, config: BuildConfig,
               baselines: Callable[[SeedText], Mapping[str, list[str]]],
               samples: Mapping[str, Sequence[list[str]]] | None = None,
               hits: Callable[[str, str], int] | None = None,
               neighbours: Callable[[SeedText, Mapping[str, list[str]]], Sequence[SeedText]]
               | None = None,
               ) -> tuple[list[dict], list[dict], BuildStats]:
    """SFT rows, DPO rows and statistics for a corpus's training seeds; ``neighbours`` gives a
    seed's confirmed finds from its baselines' queries (generative data)."""
    sft_rows, dpo_rows, stats = [], [], BuildStats()
    for item in seeds:
        seed = SeedText(item.id, item.title, item.description)
        queries = baselines(seed)
        sft, dpo, candidates = seed_rows(corpus, seed, score, config, queries,
                                         (samples or {}).get(item.id, ()), hits,
                                         neighbours(seed, queries) if neighbours else ())
        stats.seeds += 1
        stats.candidates += len(candidates)
        if sft is None:
            stats.seeds_without_target += 1
            continue
        sft_rows.append(sft)
        dpo_rows += dpo
        for source in sft["sources"]:
            stats.sources[source] = stats.sources.get(source, 0) + 1
    stats.sft_rows, stats.dpo_rows = len(sft_rows), len(dpo_rows)
    return sft_rows, dpo_rows, stats


def feedback_rows(corpus: str, seeds: Mapping[str, SeedText],
                  candidates: Mapping[str, list[Candidate]], config: BuildConfig
                  ) -> tuple[list[dict], list[dict]]:
    """SFT rows (best executed queries) and DPO pairs (a best query against a clearly worse
    executed query of the same seed) from feedback candidates."""
    sft_rows, dpo_rows = [], []
    for seed_id, cands in sorted(candidates.items()):
        seed = seeds.get(seed_id)
        best = best_queries(cands, config.k, config.threshold)
        if seed is None or not best:
            continue
        prompt = build_prompt(seed.title, seed.description, config.k)
        chosen = [c.query for c in best]
        completion = format_completion(chosen)
        sft_rows.append({"prompt": prompt, "completion": completion, "seed_id": seed_id,
                         "corpus": corpus, "queries": chosen, "scores": [c.score for c in best],
                         "sources": [c.source for c in best], "prompt_version": PROMPT_VERSION})
        worse = sorted(cands, key=lambda c: (c.score, c.query))
        for j, bad in enumerate(worse[: config.pairs_per_seed]):
            good = best[j % len(best)]
            if good.score - bad.score < config.margin:
                break
            dpo_rows.append({"prompt": prompt, "chosen": format_completion([good.query]),
                             "rejected": format_completion([bad.query]), "seed_id": seed_id,
                             "corpus": corpus, "chosen_score": good.score,
                             "rejected_score": bad.score, "rejected_source": bad.source,
                             "prompt_version": PROMPT_VERSION})
    return sft_rows, dpo_rows
