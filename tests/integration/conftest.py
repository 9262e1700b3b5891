"""Integration fixtures: the real local Kafka broker, isolated topics per test, worker processes.

The broker is the project's own (``qexplorer kafka start``), or the cluster named by
KAFKA_BOOTSTRAP. Each test gets an isolated run (``qexplorer.harness.run``): its own topic
prefix, consumer group and state directory, so tests never see each other's messages; its
workers are stopped and its topics (faust's own included) deleted afterwards.
``backend_cluster`` runs a test once a search backend: Tantivy, and OpenSearch on the local
two-node cluster (``qexplorer opensearch start``, started by the session when needed), the
test's index deleted afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.common import free_port  # noqa: F401 (the integration tests' import)
from qexplorer.config import Settings
from qexplorer.harness.run import IsolatedRun, wait_until


@pytest.fixture(scope="session")
def broker() -> Iterator[Settings]:
    """A reachable broker for the whole session; the local one is started if needed and
    stopped again only if this session started it."""
    from qexplorer.harness import broker as local

    settings = Settings()
    started_here = local.ensure_started(settings, progress=None)
    yield settings
    if started_here:
        local.stop(local.LocalBroker.of(settings))


class Cluster(IsolatedRun):
    """The isolated run of one test (``qexplorer.harness.run``), its workers on the keywords
    extractor, with what the tests read from outside."""

    def __init__(self, base: Settings, tmp: Path, **env: object) -> None:
        """``env``: more QEXPLORER_* settings of the workers, by lowercase name without the
        prefix (``index_commit_docs=2000``)."""
        super().__init__(base, "it", tmp / "logs", state_dir=tmp / "state",
                         worker_env={f"QEXPLORER_{k.upper()}": str(v) for k, v in env.items()},
                         extractor={"backend": "keywords"})

    @property
    def backend(self) -> str:
        """The search backend of this cluster's workers."""
        return self.worker_env.get("QEXPLORER_SEARCH_BACKEND", "tantivy")

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

    def full_log(self, worker_id: str = "w1") -> str:
        """Everything a worker printed (to wait for a line: a busy worker's tail moves on)."""
        return self.log(worker_id, chars=None)


@pytest.fixture
def cluster(broker: Settings, tmp_path: Path, request) -> Iterator[Cluster]:
    """Fresh topics and a state directory; workers are stopped and topics deleted after."""
    marker = request.node.get_closest_marker("worker_settings")
    with Cluster(broker, tmp_path, **(marker.kwargs if marker else {})) as cluster:
        yield cluster


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
    cluster.worker_env["QEXPLORER_SEARCH_BACKEND"] = "opensearch"
    try:
        yield cluster
    finally:
        try:
            for name in list(cluster.processes):  # no worker may write once the index is gone
                cluster.stop_worker(name, timeout_s=15)
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
    try:
        return wait_until(predicate, timeout_s, interval_s, message)
    except TimeoutError as exc:
        pytest.fail(str(exc))


def read_records(cluster: Cluster, topic: str, contract) -> list:
    """Every record of a topic, decoded."""
    return cluster.records(topic, contract)


def explored(cluster: Cluster, seed_ids: set[str]):
    """Search-feedback records by seed once every seed in ``seed_ids`` has some, else None."""
    from collections import defaultdict

    from schemas.models import SearchFeedback

    by_seed = defaultdict(list)
    for record in read_records(cluster, cluster.settings.topics.feedback, SearchFeedback):
        by_seed[record.seed_id].append(record)
    return by_seed if seed_ids <= set(by_seed) else None
