"""Promotion, the job: judge a candidate against the model in service, record it, roll it out.

:func:`promote` reads what the gate needs from the topics (the model in service from
``model-rollouts``, the labels and held-back seeds, the live listings), judges the candidate
with ``trainer.gate`` on the held-back seeds and on any labelled corpus given, publishes the
judgement to ``model-registry`` and, only when the candidate was promoted, a rollout to
``model-rollouts``. A refused candidate never reaches the workers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from qexplorer.config import ExtractorSettings, Settings
from qexplorer.marketplace.items import LabelledItem
from schemas.codec import SchemaError, decode
from schemas.models import ModelEvaluation, ModelRollout
from schemas.topics import MODEL_REGISTRY, MODEL_ROLLOUTS
from trainer.feedback import read_listings, read_topics
from trainer.gate import MIN_SEEDS, EvalSet, corpus_set, judge, topic_set
from trainer.train import model_card


def _records(settings: Settings, topic: str, contract) -> list:
    from qexplorer.kafka.io import read_to_end

    found = []
    for message in asyncio.run(read_to_end(settings.kafka, topic)):
        try:
            found.append(decode(contract, message.value))
        except SchemaError:
            continue
    return found


def serving_extractor(settings: Settings) -> ExtractorSettings:
    """The extractor the workers run: their settings with the last rollout they would accept
    applied (a rollout they refuse leaves the one before in service)."""
    from agents.rollout import RolloutRefused, rollout_settings

    current = settings.extractor
    for rollout in _records(settings, settings.topics.rollouts, ModelRollout):
        try:
            current = rollout_settings(current, rollout)
        except RolloutRefused:
            continue
    return current


def registry(settings: Settings) -> list[ModelEvaluation]:
    """Every judgement on ``model-registry``, oldest first."""
    return _records(settings, settings.topics.registry, ModelEvaluation)


def evaluation_sets(settings: Settings, candidate: str,
                    corpora: Mapping[str, Sequence[LabelledItem]], max_seeds: int
                    ) -> list[EvalSet]:
    """The held-back reviewed seeds (when there are any) and each labelled corpus's."""
    cutoff = (model_card(candidate).get("split") or {}).get("cutoff")
    sets = []
    held = topic_set(read_listings(settings.kafka, settings.topics),
                     read_topics(settings.kafka, settings.topics), cutoff)
    if held.seeds:
        sets.append(held)
    sets += [corpus_set(name, items, max_seeds) for name, items in corpora.items()]
    return sets


def promote(settings: Settings, candidate: str,
            corpora: Mapping[str, Sequence[LabelledItem]] | None = None, *, k: int = 4,
            max_seeds: int = 300, min_seeds: int = MIN_SEEDS, extractor: str = "transformers",
            served_model: str | None = None, base_url: str | None = None,
            decided_by: str = "cli", progress: Callable[[str], None] = print
            ) -> ModelEvaluation:
    """Judge ``candidate`` (a model directory), record the judgement, and roll it out when it
    is promoted. ``extractor``/``served_model``/``base_url`` say how workers are to run it
    (``openai``: the name a vLLM server at ``base_url`` serves it under)."""
    from agents.extractor.registry import build_extractor
    from agents.rollout import rollout_settings
    from qexplorer.kafka.io import publish

    if not (Path(candidate) / "config.json").is_file():
        raise ValueError(f"{candidate} is not a model directory")
    serving = serving_extractor(settings)
    # the candidate runs as the workers would run it after the rollout, in process
    as_rolled_out = rollout_settings(serving, ModelRollout(extractor="transformers",
                                                           model=candidate))
    sets = evaluation_sets(settings, candidate, corpora or {}, max_seeds)
    if not sets:
        raise ValueError("nothing to judge on: no reviewed seed after the candidate's training "
                         "cut-off, and no labelled corpus given (--data/--corpus)")
    progress(f"candidate {candidate} against {serving.backend} "
             f"{serving.model or ''} on {', '.join(s.name for s in sets)}")
    loaded = build_extractor(as_rolled_out, sets[0].stats)
    evaluation = judge(lambda _: loaded, lambda s: build_extractor(serving, s.stats), sets,
                       k=k, candidate_model=candidate, incumbent_extractor=serving.backend,
                       incumbent_model=serving.model, min_seeds=min_seeds,
                       decided_by=decided_by, progress=progress)
    records: list[tuple] = [(MODEL_REGISTRY, evaluation)]
    if evaluation.decision == "promoted":
        records.append((MODEL_ROLLOUTS, ModelRollout(
            extractor=extractor, model=served_model or candidate, base_url=base_url,
            model_version=evaluation.candidate_version, issued_by="gate",
            reason=f"gate {evaluation.evaluation_id[:8]}: {evaluation.reason}"[:200])))

    async def send() -> None:
        for spec, record in records:  # the judgement is on record before any rollout
            await publish(settings.kafka, settings.topics, spec, [record])

    asyncio.run(send())
    return evaluation
