"""Integration fixtures: the real local Kafka broker, isolated topics per test, worker processes.

The broker is the project's own (``qexplorer kafka start``), or the cluster named by
KAFKA_BOOTSTRAP. Each test gets its own topic prefix, consumer group and state directory, so
tests never see each other's messages.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.settings import Settings
from streams.supervise import spawn_worker, stop_worker
from streams.topics import create_topics, delete_topics


@pytest.fixture(scope="session")
def broker() -> Iterator[Settings]:
    """A reachable broker for the whole session; the local one is started if needed and
    stopped again only if this session started it."""
    from streams.broker import local

    settings = Settings()
    started_here = False
    if settings.uses_local_broker and not local.status(settings).reachable:
        local.start(settings)
        started_here = True
    yield settings
    if started_here:
        local.stop(settings)


class Cluster:
    """Topics and workers of one test."""

    def __init__(self, base: Settings, tmp: Path, **overrides) -> None:
        run = uuid.uuid4().hex[:8]
        self.overrides = {"topic_prefix": f"it-{run}.", "app_id": f"qx-it-{run}",
                          "state_dir": str(tmp / "state"), "extractor": "keywords",
                          "metrics_port": "0",  # any free port: workers of a test coexist
                          **{k: str(v) for k, v in overrides.items()}}
        self.settings = base.model_copy(update={
            "topic_prefix": self.overrides["topic_prefix"], "app_id": self.overrides["app_id"],
            "state_dir": tmp / "state"})
        self.logs = tmp / "logs"
        self.processes = []

    def env(self, worker_id: str) -> dict[str, str]:
        """Environment of a worker process of this cluster."""
        env = {f"QEXPLORER_{k.upper()}": v for k, v in self.overrides.items()}
        env["QEXPLORER_WORKER_ID"] = worker_id
        if self.settings.kafka_bootstrap:
            env["KAFKA_BOOTSTRAP"] = self.settings.kafka_bootstrap
        return env

    def start_worker(self, worker_id: str = "w1", **env: str):
        """Start a real worker process (``env``: more variables for this one)."""
        process = spawn_worker({**self.env(worker_id), **env}, self.logs / f"{worker_id}.log")
        self.processes.append(process)
        return process

    def log(self, worker_id: str = "w1") -> str:
        """What a worker printed (for failure messages)."""
        path = self.logs / f"{worker_id}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


@pytest.fixture
def cluster(broker: Settings, tmp_path: Path, request) -> Iterator[Cluster]:
    """Fresh topics and a state directory; workers are stopped and topics deleted after."""
    marker = request.node.get_closest_marker("worker_settings")
    cluster = Cluster(broker, tmp_path, **(marker.kwargs if marker else {}))
    asyncio.run(create_topics(cluster.settings))
    yield cluster
    for process in cluster.processes:
        stop_worker(process, timeout_s=15)
    asyncio.run(delete_topics(cluster.settings))


def wait_for(predicate, timeout_s: float, interval_s: float = 0.5, message: str = ""):
    """Poll until predicate() is truthy; return its value or fail with message."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s: {message}")
        time.sleep(interval_s)


def read_records(cluster: Cluster, topic: str, contract) -> list:
    """Every record of a topic, decoded."""
    from schemas.codec import decode
    from streams.client import read_to_end

    return [decode(contract, m.value)
            for m in asyncio.run(read_to_end(cluster.settings, topic))]


def explored(cluster: Cluster, seed_ids: set[str]):
    """Search-feedback records by seed once every seed in ``seed_ids`` has some, else None."""
    from collections import defaultdict

    from schemas.models import SearchFeedback

    by_seed = defaultdict(list)
    for record in read_records(cluster, cluster.settings.topics.feedback, SearchFeedback):
        by_seed[record.seed_id].append(record)
    return by_seed if seed_ids <= set(by_seed) else None
