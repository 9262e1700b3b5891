"""Training data from the live system: the ``search-feedback`` topic joined with ``toxic-items``.

A batch job: both topics are read from the beginning to their current end. Every executed query
is scored by the share of its top 10 results that moderators have since confirmed toxic; the
seeds' texts come from their own confirmation records. Records that fail their contract are
counted and skipped (the worker already dead-lettered anything it could not read).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from agents.extractor.base import SeedText
from config import KafkaSettings
from schemas.codec import SchemaError, decode
from schemas.models import SearchFeedback, ToxicItem
from schemas.topics import Topics
from trainer.dataset import BuildConfig, feedback_candidates, feedback_rows
from trainer.train import write_rows


@dataclass(frozen=True)
class TopicsSnapshot:
    """What the two topics held when they were read."""

    feedback: list[SearchFeedback]
    toxic: list[ToxicItem]
    invalid: int


def read_topics(kafka: KafkaSettings, topics: Topics) -> TopicsSnapshot:
    """Read ``search-feedback`` and ``toxic-items`` from the start to their current end."""
    from streams.client import read_to_end

    async def both():
        return await asyncio.gather(read_to_end(kafka, topics.feedback),
                                    read_to_end(kafka, topics.toxic_items))

    feedback_raw, toxic_raw = asyncio.run(both())
    feedback, toxic, invalid = [], [], 0
    for messages, contract, out in ((feedback_raw, SearchFeedback, feedback),
                                    (toxic_raw, ToxicItem, toxic)):
        for message in messages:
            try:
                out.append(decode(contract, message.value))
            except SchemaError:
                invalid += 1
    return TopicsSnapshot(feedback, toxic, invalid)


def rows_from_topics(snapshot: TopicsSnapshot, config: BuildConfig
                     ) -> tuple[list[dict], list[dict]]:
    """SFT and DPO rows from a snapshot of the topics."""
    confirmed = {t.id for t in snapshot.toxic}
    seeds = {t.id: SeedText(t.id, t.title, t.description) for t in snapshot.toxic}
    records = [f.model_dump(mode="json") for f in snapshot.feedback]
    return feedback_rows("kafka", seeds, feedback_candidates(records, confirmed), config)


def build_from_topics(kafka: KafkaSettings, topics: Topics, out: Path,
                      config: BuildConfig) -> dict:
    """Read the topics, write ``sft.jsonl`` and ``dpo.jsonl`` into ``out``; returns counts."""
    snapshot = read_topics(kafka, topics)
    sft, dpo = rows_from_topics(snapshot, config)
    hashes = {"sft": write_rows(sft, out / "sft.jsonl"), "dpo": write_rows(dpo, out / "dpo.jsonl")}
    return {"feedback_records": len(snapshot.feedback), "toxic_items": len(snapshot.toxic),
            "invalid": snapshot.invalid, "sft_rows": len(sft), "dpo_rows": len(dpo),
            "files": hashes}
