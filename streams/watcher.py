"""The watcher stage: new listings matched against the standing queries.

The workers share ``listings`` as one consumer group (``<app id>.watch``), so each new listing
is matched by one worker: :class:`WatcherStage` fetches batches, hands them to
``agents.watcher.Watcher`` (which waits until they are searchable, matches and emits the
detections) and commits the group's position only after the batch's detections are on the
broker, so a crash repeats a match (same detection keys) and never loses one. Every second it
also lets the watcher catch a newly arrived standing query up on what it handled before.

Why a plain consumer and not a faust agent: faust's per-event work took a core's share at
5,000 new listings a second and the agent fell behind the replica (``bench/freshness.py``); the
watcher needs only each message's position.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from aiokafka.errors import KafkaError

from agents.explorer import RawMessage
from agents.watcher import Watcher
from qexplorer.kafka import clients

if TYPE_CHECKING:
    from streams.stage import Parts

log = logging.getLogger(__name__)

#: How often a standing query that arrived between batches is caught up.
CATCH_UP_S = 1.0


def watch_group(app_id: str) -> str:
    """The consumer group the workers of app ``app_id`` share ``listings`` in."""
    return f"{app_id}.watch"


class WatcherStage:
    """Consumes new listings in the watchers' group and matches them."""

    name = "watcher"
    essential = True

    def __init__(self, parts: Parts) -> None:
        """The watcher of a worker's parts (standing queries on: ``parts.book`` is set)."""
        if parts.book is None:
            raise ValueError("the watcher needs the standing book (QEXPLORER_STANDING_ENABLED)")
        self.parts = parts
        settings = parts.settings
        exploration = settings.exploration
        self.group = watch_group(settings.worker.app_id)
        self.watcher = Watcher(settings.standing, settings.topics, parts.replica, parts.book,
                               parts.send, wait_index_s=exploration.wait_index_s,
                               search_threads=exploration.search_threads,
                               observe=parts.observe)

    async def run(self) -> None:
        """Match batches, and catch new queries up every second, until cancelled."""
        catching_up = asyncio.ensure_future(self._catch_up())
        try:
            await self._consume()
        finally:
            catching_up.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await catching_up

    async def _consume(self) -> None:
        settings = self.parts.settings
        standing = settings.standing
        consumer = clients.member(settings.kafka, self.group, [settings.topics.listings],
                                  session_timeout_s=settings.worker.session_timeout_s,
                                  max_records=standing.batch,
                                  wait_ms=int(standing.batch_within_s * 1000))
        await consumer.start()
        try:
            while True:
                fetched = await consumer.getmany(timeout_ms=1000, max_records=standing.batch)
                messages = [RawMessage(m.topic, m.partition, m.offset, m.key, None,
                                       m.timestamp / 1000 if m.timestamp else None)
                            for records in fetched.values() for m in records]
                if not messages:
                    continue
                await self.watcher.handle(messages)
                try:
                    await consumer.commit({tp: records[-1].offset + 1
                                           for tp, records in fetched.items() if records})
                except KafkaError as exc:  # a rebalance or the broker away: whoever reads
                    # these partitions next matches the batch again (same detection keys)
                    log.warning("committing the watcher's position failed: %s", exc)
        finally:
            await consumer.stop()

    async def _catch_up(self) -> None:
        while True:
            await asyncio.sleep(CATCH_UP_S)
            try:
                await self.watcher.catch_up()
            except Exception:  # the next tick tries again; nothing is acknowledged by it
                log.exception("catching the standing queries up failed")
