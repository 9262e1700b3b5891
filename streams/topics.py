"""Topic administration: create QExplorer's topics explicitly, with their partition counts.

Auto-created topics get the broker's defaults and faust then disagrees with them, so every
topic is created here before a worker starts.
"""

from __future__ import annotations

import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.settings import Settings


def topic_specs(settings: Settings) -> dict[str, int]:
    """Topic name -> partition count. The dead-letter topic has one partition (order matters
    more than throughput there), and so has the model-rollouts topic (one total order)."""
    topics = settings.topics
    n = settings.topic_partitions
    return {topics.listings: n, topics.toxic_items: n, topics.detections: n,
            topics.feedback: n, topics.dead_letter: 1, topics.rollouts: 1}


#: Per-topic configuration: the rollouts topic keeps the last record per key.
TOPIC_CONFIGS = {"model-rollouts": {"cleanup.policy": "compact"}}


async def create_topics(settings: Settings) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    specs = topic_specs(settings)
    admin = AIOKafkaAdminClient(**settings.kafka_client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        prefix = settings.topic_prefix
        missing = [NewTopic(name, partitions, settings.topic_replication,
                            topic_configs=TOPIC_CONFIGS.get(name.removeprefix(prefix), {}))
                   for name, partitions in specs.items() if name not in existing]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won
                await admin.create_topics(missing)
        return [t.name for t in missing]
    finally:
        await admin.close()


async def delete_topics(settings: Settings, names: list[str] | None = None) -> None:
    """Delete the given topics (default: all of QExplorer's, with this prefix)."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_kwargs())
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        doomed = [t for t in (names or list(topic_specs(settings))) if t in existing]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()
