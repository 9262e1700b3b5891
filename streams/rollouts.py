"""The rollout-follower stage: follow the model-rollouts topic and switch the explorer's model.

A rollout is a :class:`schemas.models.ModelRollout` record on the compacted model-rollouts
topic. Every worker reads that topic whole (no consumer group): at start it catches up and
applies only the last record (so a restarted worker serves the model in service, not the
one its environment named), then applies each new record as it arrives.

Applying means: derive the new extractor's settings (``agents.rollout.rollout_settings``,
which refuses an untrusted server URL or an unknown backend), build it, probe it with one real
extraction (retried with backoff), and only then swap it into the explorer. Seeds in flight
finish with the old model and are recorded under its version; the next batch uses the new one.
A refused rollout goes to the dead-letter topic with the reason, and the old model keeps
serving. Not essential (``streams.stage``): if the follower fails, the model in service keeps
serving and rollouts wait for a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from agents.explorer import Explorer, RawMessage
from agents.extractor.base import Extractor, ExtractorError
from agents.extractor.priors import WithToxic
from agents.extractor.registry import build_extractor
from agents.rollout import RolloutRefused, probe, rollout_settings
from qexplorer.config import ExtractorSettings, KafkaSettings
from qexplorer.kafka import clients
from qexplorer.kafka.io import topic_partitions
from qexplorer.search.protocol import TermStats
from schemas.codec import SchemaError, dead_letter, decode
from schemas.models import DeadLetter, ModelRollout
from schemas.topics import Topics
from streams.stage import Parts

log = logging.getLogger(__name__)

#: Builds an extractor from its settings and the index's term statistics.
Build = Callable[[ExtractorSettings, TermStats], Extractor]


class RolloutFollower:
    """Follows the model-rollouts topic and switches the explorer's extractor."""

    name = "rollout follower"
    essential = False

    @classmethod
    def of(cls, parts: Parts, on_switch: Callable[[], None]) -> RolloutFollower:
        """The follower of a worker's parts; ``on_switch`` after each switch."""
        settings = parts.settings
        return cls(settings.kafka, settings.topics, settings.extractor, parts.explorer,
                   parts.dead_letters, on_switch=on_switch)

    def __init__(self, kafka: KafkaSettings, topics: Topics, settings: ExtractorSettings,
                 explorer: Explorer, dead_letters: Callable[[DeadLetter], Awaitable[None]],
                 build: Build = build_extractor,
                 on_switch: Callable[[], None] = lambda: None) -> None:
        """``on_switch`` is called after each switch (the worker re-explores recent seeds)."""
        self.kafka = kafka
        self.topics = topics
        self.settings = settings
        self.explorer = explorer
        self._dead_letters = dead_letters
        self._build = build
        self._on_switch = on_switch
        self.applied: list[ModelRollout] = []
        self.refused = 0

    async def run(self) -> None:
        """Catch up (apply the last record only), then apply records as they come."""
        consumer = clients.reader(self.kafka)
        await consumer.start()
        try:
            partitions = await topic_partitions(consumer, self.topics.rollouts)
            if not partitions:
                log.warning("no %s topic: model rollouts are off for this worker",
                            self.topics.rollouts)
                return
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions)
            caught_up = False
            pending: tuple[RawMessage, ModelRollout] | None = None
            while True:
                batches = await consumer.getmany(timeout_ms=500)
                records = []
                for messages in batches.values():
                    for m in messages:
                        raw = RawMessage(m.topic, m.partition, m.offset, m.key, m.value)
                        try:
                            records.append((raw, decode(ModelRollout, m.value)))
                        except SchemaError as exc:
                            await self._refuse(raw, exc, "decode-rollout")
                if caught_up:
                    for record in records:
                        await self.apply(*record)
                    continue
                pending = records[-1] if records else pending
                caught_up = all([await consumer.position(tp) >= end for tp, end in ends.items()])
                if caught_up and pending is not None:
                    await self.apply(*pending)
        finally:
            await consumer.stop()

    async def apply(self, message: RawMessage, rollout: ModelRollout) -> bool:
        """Probe and switch to the rollout's model; False (and a dead letter) if refused."""
        new: Extractor | None = None
        try:
            replica = self.explorer.replica
            new = self._build(rollout_settings(self.settings, rollout),
                              WithToxic(replica.index, replica.ledger.terms))
            await probe(new)
        except (RolloutRefused, ValueError, ExtractorError) as exc:
            if new is not None:
                await new.aclose()
            await self._refuse(message, exc, "rollout")
            return False
        old = self.explorer.extractor
        await self.explorer.switch_extractor(new)
        self.applied.append(rollout)
        log.info("rollout: %s %s -> %s %s", old.name, old.model_version, new.name,
                 new.model_version)
        self._on_switch()
        return True

    async def _refuse(self, message: RawMessage, exc: BaseException, stage: str) -> None:
        self.refused += 1
        log.error("model rollout refused: %s", exc)
        await self._dead_letters(dead_letter(
            stage=stage, error=exc, topic=message.topic, value=message.value, key=message.key,
            partition=message.partition, offset=message.offset))
