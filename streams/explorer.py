"""The explorer stage: confirmed toxic items from faust's agent, in batches, explored.

The faust agent on ``toxic-items`` (the workers share its partitions as one consumer group)
hands its stream to :class:`ExplorerStage`, which takes batches of events and gives their raw
messages to ``agents.explorer.Explorer`` (which holds the logic and never raises). A batch is
acknowledged only after its handler returned, so a shutdown mid-batch leaves its seeds to be
explored again, not lost.

Why concurrency 1 with batches: faust-streaming bug #606 can commit an offset past a message
still in flight when agent concurrency > 1; the batch gives parallelism inside the handler
instead. Why ``noack_take``: ``take_events`` acknowledges a batch whose handler was cancelled
by a shutdown, and its seeds would never be explored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.explorer import RawMessage

if TYPE_CHECKING:
    import faust

    from streams.stage import Parts


class ExplorerStage:
    """Feeds faust's stream of toxic-item events to the explorer, a batch at a time."""

    name = "explorer"
    essential = True

    def __init__(self, parts: Parts, stream: faust.StreamT) -> None:
        self.parts = parts
        self.stream = stream

    async def run(self) -> None:
        """Explore batches until the stream ends (the worker stops)."""
        parts, stream = self.parts, self.stream
        batch = parts.settings.exploration
        async for events in stream.noack_take(batch.batch, within=batch.batch_within_s):
            messages = [RawMessage(e.message.topic, e.message.partition, e.message.offset,
                                   e.message.key, e.message.value, e.message.timestamp)
                        for e in events]
            async with parts.exploring:
                await parts.explorer.handle(messages)
            for event in events:
                await stream.ack(event)
