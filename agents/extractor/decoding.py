"""What the two model backends share: the prompt's token budget, extractive decoding's
candidate spans and their ranking, and free text turned into queries.

Extractive decoding: the model scores each word span of the seed (:func:`spans_of`) by the
log-probability of ``span + "\\n"`` as the first line of its completion; :func:`blend` may add
what the system knows at run time, a weight a prior: each span's toxic-versus-all contrast
(the index's and the confirmed items' term statistics), its probe (the confirmed share of its
results), or both; or the spans are ranked by a learned combination of all that
(``agents.extractor.combination``). :func:`ranked` keeps the ``k`` best distinct spans. The
in-process backend scores with a shared KV cache, the OpenAI-compatible one with the server's
prompt log-probabilities; the spans, the budget and the ranking are the same, so both give the
same queries for the same model.

Pure functions only (the probe prior searches the worker's index).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from agents.extractor.base import Extraction, SeedText
from agents.extractor.combination import Combination
from agents.extractor.priors import PRIORS, WithToxic
from agents.prompt import parse_completion
from agents.queries import candidate_spans, clean_queries, rank_spans

#: Tokens kept free after the prompt for the longest ``span + "\n"`` a model scores.
SPAN_ROOM = 16


def prompt_budget(context: int | None, max_new_tokens: int, room: int = 0) -> int | None:
    """How many prompt tokens fit a model of ``context`` positions that must still write
    ``max_new_tokens`` (and ``room`` more); None when the context is unknown or that small
    (then the prompt is not cut). A cut prompt keeps its end: the listing and the cue."""
    if context is None or context <= max_new_tokens + room:
        return None
    return context - max_new_tokens - room


def keep_end(ids: list[int], budget: int | None) -> list[int]:
    """The last ``budget`` token ids (all of them without a budget)."""
    return ids[-budget:] if budget is not None and len(ids) > budget else ids


def spans_of(seed: SeedText, max_spans: int) -> list[str]:
    """The spans a model ranks for ``seed`` (at most ``max_spans``, a fixed sample)."""
    return candidate_spans(seed.title, seed.description, limit=max_spans)


def span_rows(conts: Sequence[Sequence[int]]) -> tuple[list[list[int]], list[int]]:
    """The rows a model runs to score every continuation of ``conts`` (the tokens of each
    ``span + "\\n"``) after a shared prompt, and each continuation's row.

    A continuation is its body (all tokens but the last) and its end token; its score needs
    the model's distributions after each prefix of the body. A row that starts with that
    body has them all, so one row serves every span whose body is a prefix of it ("fresh",
    "fresh snow", "fresh snow here"): only the bodies no other body extends are run (a trie
    of the spans' tokens, about a third of the tokens for spans of one to three words). A
    continuation of one token needs no row (its score is the prompt's last distribution):
    its row is -1."""
    bodies = sorted({tuple(c[:-1]) for c in conts if len(c) > 1})
    rows = [list(b) for i, b in enumerate(bodies)
            if i + 1 == len(bodies) or bodies[i + 1][:len(b)] != b]
    row_of: dict[tuple[int, ...], int] = {}
    for number, row in enumerate(rows):
        for end in range(1, len(row) + 1):
            row_of.setdefault(tuple(row[:end]), number)
    return rows, [row_of[tuple(c[:-1])] if len(c) > 1 else -1 for c in conts]


def blend(seed: SeedText, spans: Sequence[str], scores: Sequence[float],
          stats: WithToxic | None, weights: Mapping[str, float],
          combination: Combination | None = None) -> Sequence[float]:
    """The model's span scores plus, for each prior of ``weights`` (:data:`PRIORS`: the
    contrast, the probe), its weight times each span's value of that prior under ``stats``;
    with a learned ``combination`` instead, its scores of the spans' features
    (``agents.extractor.combination``); the scores as they are without statistics."""
    if stats is None:
        return scores
    if combination is not None:
        return combination.rank_scores(seed, spans, scores, stats)
    return blend_values(scores, {prior: PRIORS[prior](seed, spans, stats)
                                 for prior, weight in weights.items() if weight}, weights)


def blend_values(scores: Sequence[float], values: Mapping[str, Sequence[float]],
                 weights: Mapping[str, float]) -> list[float]:
    """The span scores plus each prior's weight times its span values (``values``, computed
    once; the evaluation ranks every weight of its grid from them)."""
    out = list(scores)
    for prior, weight in weights.items():
        if weight:
            out = [score + weight * value
                   for score, value in zip(out, values[prior], strict=True)]
    return out


def blend_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """The priors blended in and their weights, in :data:`PRIORS` order (0 weights dropped);
    an unknown prior or a negative weight is a configuration error."""
    for prior, weight in weights.items():
        if prior not in PRIORS:
            raise ValueError(f"unknown prior {prior!r}: the priors are {', '.join(PRIORS)}")
        if weight < 0:
            raise ValueError(f"the weight of {prior} must be >= 0, got {weight}")
    return {prior: weights[prior] for prior in PRIORS if weights.get(prior)}


def blend_label(name: str, weights: Mapping[str, float]) -> str:
    """How reports name a method with priors blended in: ``<name>+<prior>`` a prior, in
    :data:`PRIORS` order (``sft_dpo+contrast+probe``)."""
    return name + "".join(f"+{prior}" for prior in blend_weights(weights))


def blend_stats(stats: object, weights: Mapping[str, float],
                combination: Combination | None = None) -> WithToxic | None:
    """The statistics a backend blends with: the worker's (index and confirmed items) when a
    prior has a weight or a learned combination is set (both: a configuration error); a
    weight without them is a configuration error too."""
    if combination is not None and blend_weights(weights):
        raise ValueError("a blend and a learned combination: give one (the combination "
                         "weighs the priors itself)")
    if combination is None and not blend_weights(weights):
        return None
    if not isinstance(stats, WithToxic):
        raise ValueError("a blended prior needs the index's and the confirmed items' term "
                         f"statistics, got {type(stats).__name__}")
    return stats


def blend_version(version: str, stats: WithToxic | None, weights: Mapping[str, float],
                  combination: Combination | None = None) -> str:
    """A model version as recorded when its ranking blends in priors (other queries, so
    another version): ``<version>+<prior><weight>`` a prior, in :data:`PRIORS` order, or
    ``<version>+<combination version>``."""
    if stats is None:
        return version
    if combination is not None:
        return f"{version}+{combination.version}"
    return version + "".join(f"+{prior}{weight:g}"
                             for prior, weight in blend_weights(weights).items())


def ranked(seed: SeedText, spans: Sequence[str], scores: Sequence[float], k: int, *,
           temperature: float, sample_seed: int | None) -> Extraction:
    """The extraction of the ``k`` best distinct spans by score (sampled when
    ``temperature`` > 0, reproducibly per seed id)."""
    queries, raw = rank_spans(spans, scores, k, temperature=temperature,
                              sample_key=f"{sample_seed}:{seed.id}")
    return Extraction(seed_id=seed.id, queries=queries, raw=raw)


def from_completions(seed: SeedText, texts: Sequence[str], k: int) -> Extraction:
    """The extraction of free-text completions: parsed, cleaned, in the seed's spelling."""
    candidates = [q for text in texts for q in parse_completion(text)]
    queries = clean_queries(candidates, k, seed_text=f"{seed.title} {seed.description or ''}")
    return Extraction(seed_id=seed.id, queries=queries, raw=list(texts))
