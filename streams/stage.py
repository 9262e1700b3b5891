"""What every stage of a worker is, and how the worker runs one.

A worker is a handful of stages, each in a module of its own and each built the same way: a
class constructed from the worker's shared :class:`Parts` (and, for the explorer, the faust
stream that feeds it), with ``name``, ``essential`` and ``async run()``, which works until it
is cancelled. :func:`supervise` runs any of them: a stage that fails is logged, and an
essential one (the worker cannot serve without it) stops the worker; a stage whose failure
only degrades the worker (the rollout follower: the model in service keeps serving) stops
alone.

=========================  ======================================  =========
stage                      reads                                   essential
=========================  ======================================  =========
``replica``                listings (and the ledger topics)        yes
``explorer``               toxic-items (faust agent, group)        yes
``watcher``                listings (consumer group ``.watch``)    yes
``rollouts``               model-rollouts                          no
``reexplorer``             toxic-items since a moment (on request)  no
=========================  ======================================  =========
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from agents.explorer import Observe, Send

if TYPE_CHECKING:
    from agents.explorer import Explorer
    from agents.standing import StandingBook
    from qexplorer.config import Settings
    from qexplorer.search.protocol import SearchIndex
    from schemas.models import DeadLetter
    from streams.replica import Replica

log = logging.getLogger(__name__)

#: Publishes a dead-letter record (and waits until the broker has it).
DeadLetterSink = Callable[["DeadLetter"], Awaitable[None]]


class Stage(Protocol):
    """One part of a running worker."""

    #: What the worker's log calls it.
    name: str
    #: True: the worker cannot serve without it, and stops when it fails.
    essential: bool

    async def run(self) -> None:
        """Work until cancelled."""
        ...


@dataclass(frozen=True)
class Parts:
    """What a worker's stages share, built once at start (``streams.app.Worker``)."""

    settings: Settings
    index: SearchIndex
    replica: Replica
    explorer: Explorer
    #: the standing queries and the decisions on their finds (None: standing queries off)
    book: StandingBook | None
    #: sends (topic, key, value) through the worker's producer, resolved once acknowledged
    send: Send
    dead_letters: DeadLetterSink
    #: new seeds and re-explorations take turns on it
    exploring: asyncio.Lock
    observe: Observe
    #: the toxic-items partitions this worker's explorer owns now
    assigned: Callable[[], set[int]]


async def supervise(stage: Stage, crash: Callable[[BaseException], Awaitable[None]]) -> None:
    """Run ``stage`` until it is cancelled. A failure is logged; an essential stage's also
    stops the worker (``crash``) and is raised again."""
    try:
        await stage.run()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if not stage.essential:
            log.exception("the %s stopped; the worker goes on without it", stage.name)
            return
        log.exception("the %s stopped: the worker cannot serve without it", stage.name)
        await crash(RuntimeError(f"{stage.name} failed: {exc}"))
        raise
