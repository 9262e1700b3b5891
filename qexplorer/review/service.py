"""The review service process: the queue kept in step with the topics, the web app served.

At start :class:`ReviewService` reads ``toxic-items``, ``detections`` and
``moderation-decisions`` from the beginning to their end and rebuilds the queue (so a service
killed at any moment loses nothing: every decision is on the topic before the reviewer is told
it was made, and a decision read back twice is applied once). Then it serves the pages and
keeps following the three topics; decisions made here are published with ``acks=all`` and
idempotence, keyed by listing id.

Confirms become toxic items once their undo window has passed (``QEXPLORER_REVIEW_UNDO_S``):
a loop publishes :meth:`ReviewQueue.due_seeds`. A service killed inside the window publishes
them after its restart, from the decisions on the topic. One service instance per deployment:
leases live in its memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from qexplorer.config import Settings
from qexplorer.kafka import clients
from qexplorer.kafka.io import read_to_end, topic_partitions
from qexplorer.review.metrics import ReviewMetrics
from qexplorer.review.queue import ReviewQueue
from qexplorer.review.web import create_app
from schemas.codec import SchemaError, dead_letter, decode, encode
from schemas.models import DeadLetter, ModerationDecision
from schemas.topics import DEAD_LETTER, DETECTIONS, MODERATION_DECISIONS, TOXIC_ITEMS, TopicSpec

log = logging.getLogger(__name__)

#: The order a rebuild applies the topics in: seeds first (categories, known toxic listings),
#: then what was found, then what was decided.
READS: tuple[TopicSpec, ...] = (TOXIC_ITEMS, DETECTIONS, MODERATION_DECISIONS)
SEED_INTERVAL_S = 0.5
#: The dead-letter stage of a detection or decision that fails its contract. (A bad toxic item
#: is the workers' to dead-letter: they read that topic too.)
STAGE = "review-decode"


class ReviewService:
    """The queue, its topics and the web app of one review service."""

    def __init__(self, settings: Settings, clock=time.time) -> None:
        """The service for ``settings`` (kafka, topic and review slices)."""
        self.kafka = settings.kafka
        self.topics = settings.topics
        self.review = settings.review
        self.clock = clock
        self.queue = ReviewQueue(lease_s=self.review.lease_s, undo_s=self.review.undo_s)
        self.metrics = ReviewMetrics(self.queue, clock)
        self.app = create_app(self.queue, self, self.review, self.metrics, clock)
        self.dead_letters = 0  # records that failed their contract
        self._dead: list[DeadLetter] = []  # to publish
        self._dead_keys: set[str] = set()  # already on the dead-letter topic
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._specs = {self.topics.name(spec): spec for spec in READS}

    async def record(self, decision: ModerationDecision) -> None:
        """Publish a decision and wait until the broker has it (the :class:`Desk` of the app)."""
        await self._send(MODERATION_DECISIONS, decision)

    async def start(self) -> None:
        """Connect and rebuild the queue from the topics."""
        self._producer = clients.producer(self.kafka, idempotent=True)
        await self._producer.start()
        self._consumer = clients.reader(self.kafka)
        await self._consumer.start()
        for message in await read_to_end(self.kafka, self.topics.dead_letter):
            if message.key is not None:
                self._dead_keys.add(message.key.decode(errors="replace"))
        partitions = []
        for name in self._specs:
            found = await topic_partitions(self._consumer, name, wait_s=10)
            if not found:
                raise RuntimeError(f"topic {name} does not exist: create the topics first "
                                   "(qexplorer topics create)")
            partitions += found
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        started = time.monotonic()
        count = await self._rebuild(partitions)
        await self._flush_dead_letters()
        log.info("review queue rebuilt from %d records in %.1f s: %d items, %d waiting, "
                 "%d decisions, %d seeds", count, time.monotonic() - started,
                 len(self.queue.items), self.queue.depth(), len(self.queue.decisions),
                 len(self.queue.seeds))

    async def stop(self) -> None:
        """Disconnect."""
        for client in (self._consumer, self._producer):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.stop()

    async def run(self, ready=None) -> None:
        """Serve until cancelled: the web app, the topic follower and the seed publisher.
        ``ready(url)`` is called once the pages answer."""
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        config = uvicorn.Config(self.app, host=self.review.host, port=self.review.port,
                                log_level="warning", lifespan="off", access_log=False)
        server = uvicorn.Server(config)
        tasks = [asyncio.create_task(server.serve(), name="review-web"),
                 asyncio.create_task(self._follow(), name="review-follow"),
                 asyncio.create_task(self._publish_seeds(), name="review-seeds")]
        try:
            while not server.started:
                if tasks[0].done():
                    await tasks[0]  # raises why it did not start (port in use, ...)
                    raise RuntimeError("the web server stopped before it started")
                await asyncio.sleep(0.05)
            port = server.servers[0].sockets[0].getsockname()[1]
            if ready is not None:
                ready(f"http://{self.review.host}:{port}")
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
        finally:
            server.should_exit = True
            for task in tasks[1:]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.stop()

    # --- topics ------------------------------------------------------------------------

    async def _rebuild(self, partitions: list[TopicPartition]) -> int:
        ends = await self._consumer.end_offsets(partitions)
        buffered: dict[str, list] = {name: [] for name in self._specs}
        count = 0
        while any([await self._consumer.position(tp) < end for tp, end in ends.items()]):
            for tp, messages in (await self._consumer.getmany(timeout_ms=500)).items():
                buffered[tp.topic] += messages
                count += len(messages)
        for spec in READS:
            for message in buffered[self.topics.name(spec)]:
                self._apply(message)
        return count

    async def _follow(self) -> None:
        while True:
            for messages in (await self._consumer.getmany(timeout_ms=500)).values():
                for message in messages:
                    self._apply(message)
            await self._flush_dead_letters()

    def _apply(self, message) -> None:
        spec = self._specs[message.topic]
        try:
            record = decode(spec.contract, message.value)
        except SchemaError as exc:
            self.dead_letters += 1
            log.warning("a record of %s at %d:%d fails its contract: %s", message.topic,
                        message.partition, message.offset, exc)
            if spec is not TOXIC_ITEMS:
                self._dead.append(dead_letter(
                    stage=STAGE, error=exc, topic=message.topic, value=message.value,
                    key=message.key, partition=message.partition, offset=message.offset))
            return
        if spec is DETECTIONS:
            self.queue.apply_detection(record)
        elif spec is TOXIC_ITEMS:
            self.queue.apply_toxic_item(record)
        else:
            self.queue.apply_decision(record)

    async def _publish_seeds(self) -> None:
        while True:
            due = self.queue.due_seeds(self.clock())
            for toxic in due:
                try:
                    await self._send(TOXIC_ITEMS, toxic)
                    log.info("confirmed listing %s published as a toxic item", toxic.id)
                except Exception:
                    log.exception("publishing toxic item %s failed; retrying", toxic.id)
                    self.queue.unsend([toxic.id])
            await asyncio.sleep(SEED_INTERVAL_S)

    async def _flush_dead_letters(self) -> None:
        while self._dead:
            record = self._dead.pop(0)
            key = DEAD_LETTER.key(record)
            if key not in self._dead_keys:  # a restart reads the same bad record again
                await self._send(DEAD_LETTER, record)
                self._dead_keys.add(key)

    async def _send(self, spec: TopicSpec, record) -> None:
        await self._producer.send_and_wait(self.topics.name(spec), key=spec.key(record).encode(),
                                           value=encode(record))
