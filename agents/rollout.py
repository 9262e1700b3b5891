"""Model rollout: switch the running workers to another extractor model, losing no seed.

A rollout is a :class:`schemas.models.ModelRollout` record on the compacted model-rollouts
topic. Every worker reads that topic whole (no consumer group): at start it catches up and
applies only the last record (so a restarted worker serves the model in service, not the
one its environment named), then applies each new record as it arrives.

Applying means: derive the settings of the new extractor (:func:`rollout_settings`, which
refuses a server URL the worker is not configured to trust: its API key would go there),
build it, probe it with one real extraction (retried with backoff), and only then swap it
into the explorer. Seeds in flight finish with the old model and are recorded under its
version; the next batch uses the new one. A rollout that fails its probe is refused, goes to
the dead-letter topic with the reason, and the old model keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from agents.explorer import Explorer, RawMessage
from agents.extractor.base import Extractor, ExtractorError, SeedText
from agents.extractor.factory import build_extractor
from schemas.codec import SchemaError, dead_letter, decode
from schemas.models import DeadLetter, ModelRollout
from streams.client import topic_partitions
from streams.settings import Settings

log = logging.getLogger(__name__)

#: The seed a new model must handle before it goes live.
PROBE = SeedText("rollout-probe", "rollout probe listing", "checking the new model answers")


class RolloutRefused(ValueError):
    """A rollout that cannot be applied (untrusted URL, missing model, failed probe)."""


def rollout_settings(settings: Settings, rollout: ModelRollout) -> Settings:
    """The worker's settings with the rollout's extractor, model, URL and version."""
    base_url = (rollout.base_url or settings.openai_base_url).rstrip("/")
    if rollout.extractor == "openai" and base_url not in settings.allowed_model_urls:
        raise RolloutRefused(
            f"model server {base_url!r} is not one this worker may use: add it to "
            "QEXPLORER_ROLLOUT_BASE_URLS")
    if rollout.extractor == "transformers" and not rollout.model:
        raise RolloutRefused("a transformers rollout needs a model (directory or hub id)")
    return settings.model_copy(update={
        "extractor": rollout.extractor, "model": rollout.model, "openai_base_url": base_url,
        "model_version": rollout.model_version})


async def probe(extractor: Extractor, attempts: int = 5, backoff_s: float = 1.0) -> None:
    """One real extraction with the new extractor; raises RolloutRefused if it never works."""
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(ExtractorError), stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff_s), sleep=lambda s: asyncio.sleep(s),
        before_sleep=lambda state: log.warning(
            "rollout probe failed (%s); retrying in %.1fs",
            state.outcome.exception() if state.outcome else "?", state.upcoming_sleep))
    try:
        await retrying(extractor.extract, [PROBE], 1)
    except RetryError as exc:
        raise RolloutRefused(f"the new model failed its probe {attempts} times: "
                             f"{exc.last_attempt.exception()}") from exc


class RolloutFollower:
    """Follows the model-rollouts topic and switches the explorer's extractor."""

    def __init__(self, settings: Settings, explorer: Explorer,
                 dead_letters: Callable[[DeadLetter], Awaitable[None]],
                 build: Callable[[Settings], Extractor] = build_extractor) -> None:
        self.settings = settings
        self.explorer = explorer
        self._dead_letters = dead_letters
        self._build = build
        self.applied: list[ModelRollout] = []
        self.refused = 0

    async def run(self) -> None:
        """Catch up (apply the last record only), then apply records as they come."""
        consumer = AIOKafkaConsumer(**self.settings.kafka_client_kwargs(), group_id=None,
                                    enable_auto_commit=False, auto_offset_reset="earliest")
        await consumer.start()
        try:
            partitions = await topic_partitions(consumer, self.settings.topics.rollouts)
            if not partitions:
                log.warning("no %s topic: model rollouts are off for this worker",
                            self.settings.topics.rollouts)
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
            new = self._build(rollout_settings(self.settings, rollout))
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
        return True

    async def _refuse(self, message: RawMessage, exc: BaseException, stage: str) -> None:
        self.refused += 1
        log.error("model rollout refused: %s", exc)
        await self._dead_letters(dead_letter(
            stage=stage, error=exc, topic=message.topic, value=message.value, key=message.key,
            partition=message.partition, offset=message.offset))
