"""An isolated run of the real system: its own topics, consumer group and state, its worker
processes, and a teardown that leaves nothing behind.

What the demo, the replay, the benchmarks and the integration tests each need: a run never
sees another run's messages, however many share a broker. An :class:`IsolatedRun` gives every
topic name a prefix of its own (``<prefix><name>-<run>.``), the workers an app id (consumer
group) of their own and a state directory of their own; it creates the topics as the registry
declares them and waits until the broker lists them (a busy broker lists a topic it just
created a moment later). Its workers are real ``qexplorer worker`` processes
(:mod:`qexplorer.harness.processes`) configured through their environment, as in a container.

Leaving the ``with`` block (or :meth:`IsolatedRun.close`) stops the workers, then, unless
``keep``, deletes the run's topics (faust's own included) until the broker lists none of them
(the broker deletes asynchronously, and a topic it had not listed yet escapes a delete) and
removes the state directory it made.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from aiokafka.structs import ConsumerRecord
from pydantic import BaseModel

from qexplorer.config import Settings
from qexplorer.harness.processes import kill_worker, spawn_worker, stop_worker
from qexplorer.kafka import clients
from qexplorer.kafka.admin import create_topics, delete_topics
from qexplorer.kafka.io import publish, read_to_end
from qexplorer.marketplace.items import LabelledItem, to_listing_dict, to_toxic_dict
from schemas.codec import decode
from schemas.models import ListingUpsert, SearchFeedback, ToxicItem
from schemas.topics import LISTINGS, TOXIC_ITEMS, TopicSpec

_T = TypeVar("_T", bound=BaseModel)

#: How long topic creation and deletion may take to show in the broker's listing.
TOPICS_WAIT_S = 60.0


class WorkerDied(RuntimeError):
    """A worker process of the run exited while something was waiting for it."""


def wait_until(predicate: Callable[[], Any], timeout_s: float, interval_s: float = 0.5,
               message: str | Callable[[], str] = "") -> Any:
    """Poll ``predicate()`` until it is truthy and return its value; raise TimeoutError with
    ``message`` (a callable is called at the deadline) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise TimeoutError(f"timed out after {timeout_s:g}s: {text}")
        time.sleep(interval_s)


async def list_topics(settings: Settings) -> list[str]:
    """Every topic the broker lists."""
    admin = clients.admin(settings.kafka)
    await admin.start()
    try:
        return list(await admin.list_topics())
    finally:
        await admin.close()


class IsolatedRun:
    """Topics, consumer group, state directory and worker processes of one run.

    ``slices`` are settings by slice on top of ``base`` and the run's own
    (``index={"commit_interval_s": 0.5}``, ``extractor={"backend": "keywords"}``); every
    worker gets them as ``QEXPLORER_*`` environment variables (``Settings.to_env``), and
    ``worker_env`` on top. ``state_dir``: where the workers keep their state (default: a
    directory of the run's own under the cache, removed at the end unless ``keep``).
    """

    def __init__(self, base: Settings, name: str, log_dir: Path, *,
                 state_dir: Path | None = None, worker_env: Mapping[str, str] | None = None,
                 keep: bool = False, **slices: Mapping[str, object]) -> None:
        self.name = name
        self.run_id = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.keep = keep
        self.log_dir = log_dir
        tag = f"{name}-{self.run_id}"
        paths = base.paths
        self._owns_state = state_dir is None
        self.state_dir = state_dir or (paths.state_dir or paths.cache_dir / "workers") / tag
        values: dict[str, dict[str, object]] = {
            "topic": {"prefix": f"{base.topic.prefix}{tag}."},
            "worker": {"app_id": f"qx-{tag}"},
            "paths": {"state_dir": self.state_dir},
            "metrics": {"port": 0},  # any free port: workers of runs on one machine coexist
        }
        for part, changed in slices.items():
            values[part] = {**values.get(part, {}), **changed}
        self.settings = base.replace(**values)  # a bad slice fails here, before any topic
        self.worker_env = dict(worker_env or {})
        #: the run's processes by name: its workers (by worker id) and any it adopted
        self.processes: dict[str, subprocess.Popen] = {}
        self._closed = False

    # --- the run's lifetime --------------------------------------------------------------------

    def __enter__(self) -> IsolatedRun:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def open(self) -> None:
        """Create the run's topics and wait until the broker lists them."""
        settings = self.settings
        try:
            asyncio.run(create_topics(settings.kafka, settings.topics))
            wanted = set(settings.topics.all())
            wait_until(lambda: wanted <= set(asyncio.run(list_topics(settings))),
                       TOPICS_WAIT_S, 0.5, lambda: f"topics not listed: "
                       f"{sorted(wanted - set(asyncio.run(list_topics(settings))))}")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the workers; unless ``keep``, delete the run's topics until none is left and
        remove the state directory the run made. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            for name in list(self.processes):
                self.stop_worker(name)
        finally:
            if not self.keep:
                try:
                    wait_until(self._deleted, TOPICS_WAIT_S, 1.0,
                               lambda: f"topics left behind: {self.topics_left()}")
                finally:
                    if self._owns_state:
                        shutil.rmtree(self.state_dir, ignore_errors=True)

    def topics_left(self) -> list[str]:
        """The topics on the broker that belong to this run (its prefix or its app id)."""
        settings = self.settings
        return [t for t in asyncio.run(list_topics(settings))
                if t.startswith(settings.topic.prefix) or t.startswith(settings.worker.app_id)]

    def _deleted(self) -> bool:
        left = self.topics_left()
        if left:
            settings = self.settings
            asyncio.run(delete_topics(settings.kafka, settings.topics,
                                      app_id=settings.worker.app_id, names=left))
        return not left

    # --- workers -------------------------------------------------------------------------------

    def worker_settings(self, worker_id: str = "w1") -> Settings:
        """The settings a worker of this run sees (the run's, with its worker id)."""
        return self.settings.replace(worker={"worker_id": worker_id})

    def env(self, worker_id: str = "w1") -> dict[str, str]:
        """The variables a worker of this run is started with."""
        return {**self.worker_settings(worker_id).to_env(), **self.worker_env}

    def cli_env(self) -> dict[str, str]:
        """The environment of a ``qexplorer`` command run against this run."""
        return {**os.environ, **self.settings.to_env(), **self.worker_env}

    def index_dir(self, worker_id: str = "w1") -> Path:
        """Where a worker of this run keeps its Tantivy replica."""
        return self.worker_settings(worker_id).worker_dir() / "index"

    def log_path(self, worker_id: str = "w1") -> Path:
        """Where a worker of this run writes its log."""
        return self.log_dir / f"{self.name}-{self.run_id}-{worker_id}.log"

    def log(self, worker_id: str = "w1", chars: int | None = 4000) -> str:
        """The end of what a worker printed (all of it with ``chars=None``; '' before it
        printed anything)."""
        path = self.log_path(worker_id)
        text = path.read_text(errors="replace") if path.exists() else ""
        return text if chars is None else text[-chars:]

    def start_worker(self, worker_id: str = "w1", **env: str) -> subprocess.Popen:
        """Start a real worker process (``qexplorer worker``); ``env``: more variables for
        this one."""
        return self.adopt(worker_id, spawn_worker({**self.env(worker_id), **env},
                                                  self.log_path(worker_id)))

    def adopt(self, name: str, process: subprocess.Popen) -> subprocess.Popen:
        """Stop ``process`` with the run's workers (a process of the run started elsewhere,
        such as a review service); one already under ``name`` is stopped first."""
        if name in self.processes:
            self.stop_worker(name)
        self.processes[name] = process
        return process

    def stop_worker(self, name: str, timeout_s: float = 20.0) -> int:
        """Stop a process of the run gracefully (SIGTERM, SIGKILL after ``timeout_s``); its
        exit code."""
        return stop_worker(self.processes.pop(name), timeout_s=timeout_s)

    def kill_worker(self, name: str) -> None:
        """SIGKILL a process of the run: no chance to commit or flush anything."""
        kill_worker(self.processes.pop(name))

    def check_alive(self, worker_id: str = "w1") -> None:
        """Raise :class:`WorkerDied` (with its log's end) if the worker exited."""
        process = self.processes.get(worker_id)
        if process is not None and process.poll() is not None:
            raise WorkerDied(f"worker {worker_id} exited with {process.returncode}:\n"
                             f"{self.log(worker_id, 3000)}")

    # --- the run's topics ----------------------------------------------------------------------

    def publish(self, spec: TopicSpec, records: Iterable[BaseModel]) -> int:
        """Send records to one of the run's topics (keyed as the registry says) and wait
        until the broker has them."""
        settings = self.settings
        return asyncio.run(publish(settings.kafka, settings.topics, spec, records))

    def publish_listings(self, items: Sequence[LabelledItem]) -> int:
        """Put labelled items on the market (``listings``)."""
        return self.publish(LISTINGS, [ListingUpsert(**to_listing_dict(i)) for i in items])

    def confirm(self, items: Sequence[LabelledItem], confirmed_by: str) -> int:
        """Confirm items as toxic (``toxic-items``): each becomes a seed."""
        return self.publish(TOXIC_ITEMS,
                            [ToxicItem(**to_toxic_dict(i, confirmed_by)) for i in items])

    def read(self, topic: str) -> list[ConsumerRecord]:
        """Every message of one of the run's topics (by full name), to its end now."""
        return asyncio.run(read_to_end(self.settings.kafka, topic))

    def records(self, topic: str, contract: type[_T]) -> list[_T]:
        """Every record of one of the run's topics, decoded as ``contract``."""
        return [decode(contract, m.value) for m in self.read(topic)]

    def explored(self, seed_ids: set[str]) -> set[str]:
        """Those of ``seed_ids`` explored so far (their search feedback is on the topic)."""
        return {r.seed_id for r in self.records(self.settings.topics.feedback, SearchFeedback)
                } & seed_ids
