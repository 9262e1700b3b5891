"""Re-exploration after a rollout, without a broker: the window, this worker's partitions, small
paced batches that let new seeds go first, and stopping when another model takes over."""

from __future__ import annotations

import asyncio
import itertools
from types import SimpleNamespace

from agents.explorer import ExplorerStats, RawMessage
from qexplorer.config import ExplorationSettings
from streams.reexplore import Reexplorer

NOW = 1_800_000_000.0


class FakeExplorer:
    """Records the batches it is handed; explores the even offsets (the odd ones are already
    explored under this version, as the ledger would say)."""

    def __init__(self, events: list, version: str = "v2") -> None:
        self.extractor = SimpleNamespace(model_version=version)
        self.stats = ExplorerStats()
        self.events = events

    async def handle(self, batch) -> None:
        self.events.append(("re", [m.offset for m in batch]))
        await asyncio.sleep(0)
        self.stats.seeds_explored += sum(m.offset % 2 == 0 for m in batch)


def _messages(n: int) -> list[RawMessage]:
    return [RawMessage("t.toxic-items", 0, offset, b"k", b"{}") for offset in range(n)]


def _reexplorer(events, explorer, messages, *, window=3600.0, rate=4.0, batch=3,
                assigned=({0, 2},)):
    reads, sleeps = [], []
    assignments = list(assigned)

    async def read_since(partitions, since_ms):
        reads.append((partitions, since_ms))
        return messages

    async def sleep(seconds):
        sleeps.append(seconds)
        await asyncio.sleep(0)

    settings = ExplorationSettings(reexplore_window_s=window, reexplore_rate=rate,
                                   reexplore_batch=batch)
    return Reexplorer(settings, explorer, asyncio.Lock(), read_since,
                      lambda: assignments.pop(0) if len(assignments) > 1 else assignments[0],
                      sleep=sleep, clock=lambda: NOW), reads, sleeps


def test_the_window_of_this_workers_partitions_is_explored_again_in_paced_batches():
    events: list = []
    explorer = FakeExplorer(events)
    reexplorer, reads, sleeps = _reexplorer(events, explorer, _messages(8),
                                            assigned=(set(), {0, 2}))
    explored = asyncio.run(reexplorer.reexplore("v2"))
    assert reads == [({0, 2}, int((NOW - 3600) * 1000))]  # waited for its assignment
    assert [offsets for _, offsets in events] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert sleeps[-3:] == [3 / 4.0, 3 / 4.0, 2 / 4.0]  # at most `rate` seeds a second
    assert explored == 4 and explorer.stats.seeds_reexplored == 4  # the rest were done


def test_new_seeds_wait_for_at_most_one_reexploration_batch():
    events: list = []
    explorer = FakeExplorer(events)
    reexplorer, _, _ = _reexplorer(events, explorer, _messages(30), batch=2)

    async def new_seeds():
        for n in range(5):
            async with reexplorer.lock:
                events.append(("new", n))
                await asyncio.sleep(0)
            await asyncio.sleep(0)

    async def both():
        await asyncio.gather(reexplorer.reexplore("v2"), new_seeds())

    asyncio.run(both())
    kinds = [kind for kind, _ in events]
    last_new = max(i for i, kind in enumerate(kinds) if kind == "new")
    assert "re" in kinds[:last_new]  # they did share the worker
    assert all(not (a == b == "re") for a, b in itertools.pairwise(kinds[: last_new + 1]))


def test_a_run_stops_when_another_model_takes_over_or_a_new_run_is_asked_for():
    events: list = []
    explorer = FakeExplorer(events)
    reexplorer, _, _ = _reexplorer(events, explorer, _messages(9))

    async def switch_after_first_batch():
        task = asyncio.ensure_future(reexplorer.reexplore("v2"))
        while not events:
            await asyncio.sleep(0)
        explorer.extractor.model_version = "v3"
        return await task

    assert asyncio.run(switch_after_first_batch()) == 2 and len(events) == 1

    events.clear()
    explorer.extractor.model_version = "v3"

    async def asked_again():
        task = asyncio.ensure_future(reexplorer.reexplore("v3"))
        while not events:
            await asyncio.sleep(0)
        reexplorer.request()  # serve() would start the new run next
        return await task

    asyncio.run(asked_again())
    assert len(events) == 1


def test_no_window_no_reexploration():
    events: list = []
    reexplorer, _, _ = _reexplorer(events, FakeExplorer(events), _messages(3), window=0)
    reexplorer.request()
    assert not reexplorer._wanted.is_set()
