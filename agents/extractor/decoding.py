"""What the two model backends share: the prompt's token budget, extractive decoding's
candidate spans and their ranking, and free text turned into queries.

Extractive decoding: the model scores each word span of the seed (:func:`spans_of`) by the
log-probability of ``span + "\\n"`` as the first line of its completion; :func:`blend` may add
what the system knows at run time, times a weight: each span's toxic-versus-all contrast (the
index's and the confirmed items' term statistics) or its probe (the confirmed share of its
results); :func:`ranked` keeps the ``k`` best distinct spans. The in-process backend scores
with a shared KV cache, the OpenAI-compatible one with the server's prompt log-probabilities;
the spans, the budget and the ranking are the same, so both give the same queries for the same
model.

Pure functions only (the probe prior searches the worker's index).
"""

from __future__ import annotations

from collections.abc import Sequence

from agents.extractor.base import Extraction, SeedText
from agents.extractor.keywords import WithToxic, contrast_scores, probe_scores
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


#: The run-time priors a model's span ranking can add (``agents.extractor.keywords``).
PRIORS = {"contrast": contrast_scores, "probe": probe_scores}


def blend(seed: SeedText, spans: Sequence[str], scores: Sequence[float],
          contrast: WithToxic | None, weight: float, prior: str = "contrast"
          ) -> Sequence[float]:
    """The model's span scores plus ``weight`` times each span's ``prior`` (:data:`PRIORS`:
    its contrast, or its probe) under the statistics ``contrast``; the scores as they are
    without them."""
    if contrast is None or not weight:
        return scores
    return [score + weight * value for score, value
            in zip(scores, PRIORS[prior](seed, spans, contrast), strict=True)]


def contrast_stats(stats: object, weight: float) -> WithToxic | None:
    """The statistics a backend blends in: the worker's (index and confirmed items) when a
    weight is set; a weight without them is a configuration error."""
    if not weight:
        return None
    if not isinstance(stats, WithToxic):
        raise ValueError("contrast_weight needs the index's and the confirmed items' term "
                         f"statistics, got {type(stats).__name__}")
    return stats


def with_contrast(version: str, contrast: WithToxic | None, weight: float,
                  prior: str = "contrast") -> str:
    """A model version as recorded when its ranking blends in a prior (other queries, so
    another version): ``<version>+<prior><weight>``."""
    return f"{version}+{prior}{weight:g}" if contrast is not None and weight else version


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
