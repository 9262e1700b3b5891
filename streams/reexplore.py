"""The re-explorer stage: after a rollout, the recent seeds are explored again by the new model.

A seed is explored once per model version. When a worker switches to a new model (a rollout,
``streams.rollouts``), the seeds confirmed in the last ``QEXPLORER_EXPLORE_REEXPLORE_WINDOW_S``
are read again from ``toxic-items`` (only the partitions this worker explores, so workers share
the work as they share new seeds) and handed to the same explorer, whose ledger skips what the
new version has already explored: a restart or a second rollout never repeats work.

New seeds keep priority: re-exploration takes small batches (``reexplore_batch``), at most
``reexplore_rate`` seeds a second, and each batch waits its turn on the lock the agent for new
seeds also takes, so a new seed waits for at most one small re-exploration batch.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from agents.explorer import Explorer, RawMessage
from qexplorer.config import ExplorationSettings
from qexplorer.kafka.io import read_to_end
from streams.stage import Parts

log = logging.getLogger(__name__)

#: Reads this worker's toxic-items messages written since an instant (epoch ms).
ReadSince = Callable[[set[int], int], Awaitable[Sequence[RawMessage]]]


class Reexplorer:
    """Runs one re-exploration at a time, for the model version in service."""

    name = "re-explorer"
    essential = False

    @classmethod
    def of(cls, parts: Parts) -> Reexplorer:
        """The re-explorer of a worker's parts: it reads back this worker's own toxic-items
        partitions, once the replica has caught up (its ledger knows what the new version
        explored already)."""
        settings = parts.settings

        async def read_since(partitions: set[int], since_ms: int) -> list[RawMessage]:
            found = await read_to_end(settings.kafka, settings.topics.toxic_items,
                                      since_ms=since_ms, only=partitions)
            # no timestamp: a re-explored seed does not count in the seed-to-detection latency
            return [RawMessage(m.topic, m.partition, m.offset, m.key, m.value) for m in found]

        return cls(settings.exploration, parts.explorer, parts.exploring, read_since,
                   parts.assigned,
                   ready=lambda: parts.replica.wait_caught_up(settings.exploration.wait_index_s))

    def __init__(self, settings: ExplorationSettings, explorer: Explorer, lock: asyncio.Lock,
                 read_since: ReadSince, assigned: Callable[[], set[int]], *,
                 ready: Callable[[], Awaitable[object]] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.time) -> None:
        """``ready``: awaited before a run (the replica caught up, so its ledger knows what
        the version has explored already)."""
        self.settings = settings
        self._ready = ready
        self.explorer = explorer
        self.lock = lock
        self._read_since = read_since
        self._assigned = assigned
        self._sleep = sleep
        self._clock = clock
        self._wanted = asyncio.Event()
        self.runs = 0

    def request(self) -> None:
        """Ask for a re-exploration under the version now in service (a run for an older
        version stops at its next batch; this one then skips what that one did)."""
        if self.settings.reexplore_window_s > 0:
            self._wanted.set()

    async def run(self) -> None:
        """Run the requested re-explorations, one at a time, for as long as the worker runs."""
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            await self.reexplore(self.explorer.extractor.model_version)

    async def reexplore(self, version: str) -> int:
        """Re-explore under ``version``; returns the seeds explored."""
        settings = self.settings
        if self._ready is not None:
            await self._ready()
        partitions = self._assigned()
        while not partitions:  # before the first assignment, this worker explores nothing
            await self._sleep(1.0)
            partitions = self._assigned()
        since_ms = int((self._clock() - settings.reexplore_window_s) * 1000)
        pending = list(await self._read_since(partitions, since_ms))
        log.info("re-exploring up to %d seeds of the last %.0f s under %s", len(pending),
                 settings.reexplore_window_s, version)
        explored = 0
        for start in range(0, len(pending), settings.reexplore_batch):
            batch = pending[start:start + settings.reexplore_batch]
            await self._sleep(len(batch) / settings.reexplore_rate)
            async with self.lock:
                if self.explorer.extractor.model_version != version or self._wanted.is_set():
                    log.info("re-exploration for %s stopped: %s is in service", version,
                             self.explorer.extractor.model_version)
                    return explored
                before = self.explorer.stats.seeds_explored
                await self.explorer.handle(batch)
                done = self.explorer.stats.seeds_explored - before
            explored += done
            self.explorer.stats.seeds_reexplored += done
        self.runs += 1
        log.info("re-exploration under %s done: %d seeds explored again", version, explored)
        return explored
