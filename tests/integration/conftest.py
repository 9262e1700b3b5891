"""Integration fixtures: the real local Kafka broker, isolated topics per test, worker processes.

The broker is the project's own (``qexplorer kafka start``), or the cluster named by
KAFKA_BOOTSTRAP. Each test gets its own topic prefix, consumer group and state directory, so
tests never see each other's messages; its workers are stopped and its topics (faust's own
included) deleted afterwards. ``backend_cluster`` runs a test once a search backend: Tantivy,
and OpenSearch on the local two-node cluster (``qexplorer opensearch start``, started by the
session when needed), the test's index deleted afterwards.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.common import free_port  # noqa: F401 (the integration tests' import)
from qexplorer.config import Settings
from qexplorer.harness.processes import spawn_worker, stop_worker
from qexplorer.kafka.admin import create_topics, delete_topics


@pytest.fixture(scope="session")
def broker() -> Iterator[Settings]:
    """A reachable broker for the whole session; the local one is started if needed and
    stopped again only if this session started it."""
    from qexplorer.harness import broker as local

    settings = Settings()
    local_broker = local.LocalBroker.of(settings)
    started_here = False
    if settings.kafka.uses_local_broker and not local.status(local_broker).reachable:
        local.start(local_broker)
        started_here = True
    yield settings
    if started_here:
        local.stop(local_broker)


class Cluster:
    """Topics and workers of one test."""

    def __init__(self, base: Settings, tmp: Path, **env: object) -> None:
        """``env``: more QEXPLORER_* settings of the workers, by lowercase name without the
        prefix (``index_commit_docs=2000``)."""
        run = uuid.uuid4().hex[:8]
        self.settings = base.replace(
            topic={"prefix": f"it-{run}."}, worker={"app_id": f"qx-it-{run}"},
            paths={"state_dir": tmp / "state"}, extractor={"backend": "keywords"},
            metrics={"port": 0})  # any free port: workers of a test coexist
        self.extra_env = {f"QEXPLORER_{k.upper()}": str(v) for k, v in env.items()}
        self.logs = tmp / "logs"
        self.processes = []

    @property
    def backend(self) -> str:
        """The search backend of this cluster's workers."""
        return self.extra_env.get("QEXPLORER_SEARCH_BACKEND", "tantivy")

    def shared_index(self):
        """A client on the OpenSearch index this cluster's workers share (not created here)."""
        from qexplorer.search.opensearch_index import OpenSearchIndex, index_name

        return OpenSearchIndex.connect(self.settings.opensearch,
                                       index_name(self.settings.topics.listings))

    def indexed(self, worker_id: str = "w1") -> int:
        """Listings searchable in a worker's index, read from outside (the shared index on
        OpenSearch); 0 while it does not exist yet."""
        if self.backend == "opensearch":
            from qexplorer.search.opensearch_index import OpenSearchError

            index = self.shared_index()
            try:
                return index.count()
            except OpenSearchError:  # not created yet
                return 0
            finally:
                index.close()
        from qexplorer.search.tantivy_index import TantivyIndex

        try:
            return TantivyIndex.open(self.index_dir(worker_id), writable=False).count()
        except Exception:  # not created yet, or being rebuilt
            return 0

    def worker_settings(self, worker_id: str = "w1") -> Settings:
        """The settings of one of this cluster's workers (its index, its state)."""
        return self.settings.replace(worker={"worker_id": worker_id})

    def index_dir(self, worker_id: str = "w1") -> Path:
        """Where a worker of this cluster keeps its Tantivy replica."""
        return self.worker_settings(worker_id).worker_dir() / "index"

    def cli_env(self) -> dict[str, str]:
        """Environment of a ``qexplorer`` command run against this cluster."""
        return {**os.environ, **self.settings.to_env(), **self.extra_env}

    def env(self, worker_id: str) -> dict[str, str]:
        """Environment of a worker process of this cluster."""
        return {**self.worker_settings(worker_id).to_env(), **self.extra_env}

    def start_worker(self, worker_id: str = "w1", **env: str):
        """Start a real worker process (``env``: more variables for this one)."""
        process = spawn_worker({**self.env(worker_id), **env}, self.logs / f"{worker_id}.log")
        self.processes.append(process)
        return process

    def log(self, worker_id: str = "w1") -> str:
        """The end of what a worker printed (for failure messages)."""
        return self.full_log(worker_id)[-4000:]

    def full_log(self, worker_id: str = "w1") -> str:
        """Everything a worker printed (to wait for a line: a busy worker's tail moves on)."""
        path = self.logs / f"{worker_id}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@pytest.fixture
def cluster(broker: Settings, tmp_path: Path, request) -> Iterator[Cluster]:
    """Fresh topics and a state directory; workers are stopped and topics deleted after."""
    marker = request.node.get_closest_marker("worker_settings")
    cluster = Cluster(broker, tmp_path, **(marker.kwargs if marker else {}))
    settings = cluster.settings
    asyncio.run(create_topics(settings.kafka, settings.topics))
    # a busy broker lists a topic just created a moment later
    wait_for(lambda: set(settings.topics.all()) <= set(run_topics(settings)), 60, 0.5,
             lambda: f"topics not listed: {set(settings.topics.all()) - set(run_topics(settings))}")
    yield cluster
    for process in cluster.processes:
        stop_worker(process, timeout_s=15)

    def deleted() -> bool:
        # the broker deletes asynchronously, and a topic it had not listed yet escapes a
        # delete: asked again until the run leaves nothing behind, faust's topics included
        left = run_topics(settings)
        if left:
            asyncio.run(delete_topics(settings.kafka, settings.topics,
                                      app_id=settings.worker.app_id, names=left))
        return not left

    wait_for(deleted, 60, 1.0, lambda: f"topics left behind: {run_topics(settings)}")


@pytest.fixture(scope="session")
def opensearch(broker: Settings):
    """The local OpenSearch cluster for the session: started if needed, stopped again only if
    this session started it."""
    from qexplorer.harness import opensearch as local_opensearch

    nodes = local_opensearch.LocalOpenSearch.of(broker)
    started_here = not local_opensearch.status(nodes).ready
    if started_here:
        try:
            local_opensearch.start(nodes, progress=None)
        except BaseException:
            local_opensearch.stop(nodes)  # the nodes it did spawn
            raise
    yield nodes
    if started_here:
        local_opensearch.stop(nodes)


def on_opensearch(cluster: Cluster, request) -> Iterator[Cluster]:
    """``cluster``'s workers on the local OpenSearch cluster; their index deleted after."""
    request.getfixturevalue("opensearch")
    cluster.extra_env["QEXPLORER_SEARCH_BACKEND"] = "opensearch"
    try:
        yield cluster
    finally:
        try:
            for process in cluster.processes:  # no worker may write once the index is gone
                stop_worker(process, timeout_s=15)
        finally:
            index = cluster.shared_index()
            index.drop()
            index.close()


@pytest.fixture(params=["tantivy", "opensearch"])
def backend_cluster(request, cluster: Cluster) -> Iterator[Cluster]:
    """``cluster`` with its workers on each search backend in turn."""
    if request.param == "tantivy":
        yield cluster
    else:
        yield from on_opensearch(cluster, request)


def list_topics(settings: Settings) -> list[str]:
    """Every topic on the broker."""
    from aiokafka.admin import AIOKafkaAdminClient

    async def names() -> list[str]:
        admin = AIOKafkaAdminClient(**settings.kafka.client_kwargs())
        await admin.start()
        try:
            return list(await admin.list_topics())
        finally:
            await admin.close()

    return asyncio.run(names())


def run_topics(settings: Settings) -> list[str]:
    """The topics on the broker that belong to this run (its prefix or its app id)."""
    return [t for t in list_topics(settings)
            if t.startswith(settings.topic.prefix) or t.startswith(settings.worker.app_id)]


@pytest.fixture(scope="session")
def vllm_runtime() -> tuple[Path, str]:
    """(interpreter of the vLLM server's virtualenv, device): the first run builds the
    virtualenv (about two minutes), later runs reuse it."""
    from qexplorer.serving.environment import detect_device, ensure_env

    settings = Settings()
    device = detect_device(settings.serving)
    return ensure_env(settings.serving, settings.paths.envs_dir, device), device


def wait_for(predicate, timeout_s: float, interval_s: float = 0.5,
             message: str | Callable[[], str] = ""):
    """Poll until predicate() is truthy; return its value or fail with message (a callable
    message is called at the failure, so a worker's log in it is the log at the deadline)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s: "
                        f"{message() if callable(message) else message}")
        time.sleep(interval_s)


def read_records(cluster: Cluster, topic: str, contract) -> list:
    """Every record of a topic, decoded."""
    from qexplorer.kafka.io import read_to_end
    from schemas.codec import decode

    return [decode(contract, m.value)
            for m in asyncio.run(read_to_end(cluster.settings.kafka, topic))]


def explored(cluster: Cluster, seed_ids: set[str]):
    """Search-feedback records by seed once every seed in ``seed_ids`` has some, else None."""
    from collections import defaultdict

    from schemas.models import SearchFeedback

    by_seed = defaultdict(list)
    for record in read_records(cluster, cluster.settings.topics.feedback, SearchFeedback):
        by_seed[record.seed_id].append(record)
    return by_seed if seed_ids <= set(by_seed) else None
