"""A minimal consumer of detections, as a review queue would run it.

It joins a consumer group, validates each record against the published contract, drops repeats
by the detection key (the pipeline is at-least-once), and prints what a moderator should look
at. Run: ``.venv/bin/python examples/detections_consumer.py`` (KAFKA_BOOTSTRAP and
QEXPLORER_TOPIC_PREFIX are honoured like everywhere else).
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer

from qexplorer.config import KafkaSettings, TopicSettings
from schemas.codec import SchemaError, decode
from schemas.models import Detection
from schemas.topics import DETECTIONS, Topics


async def main() -> None:
    kafka, topics = KafkaSettings(), Topics(TopicSettings().prefix)
    consumer = AIOKafkaConsumer(topics.name(DETECTIONS), **kafka.client_kwargs(),
                                group_id="review-queue", auto_offset_reset="earliest")
    await consumer.start()
    seen: set[str] = set()  # a real queue keeps this in its database (unique key)
    try:
        async for message in consumer:
            try:
                detection = decode(Detection, message.value)
            except SchemaError as exc:
                print(f"skipping a record that breaks the contract: {exc}")
                continue
            if detection.key in seen:
                continue
            seen.add(detection.key)
            print(f"review {detection.listing_id} ({detection.listing_title[:60]!r}): "
                  f"found from {detection.seed_id} by {detection.queries} "
                  f"[{detection.model_version}]")
    finally:
        await consumer.stop()


if __name__ == "__main__":
    asyncio.run(main())
