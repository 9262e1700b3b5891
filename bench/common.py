"""Helpers the benchmarks share: synthetic data, an isolated cluster of topics and worker
processes, read-only views of a worker's index, process memory and machine facts.

A :class:`BenchCluster` is what ``tests/integration/conftest.py``'s ``Cluster`` is for the
tests: a unique topic prefix, consumer group (app id) and state directory per run, so a
benchmark never sees another run's messages; its workers are stopped and its topics (faust's
own included) and state deleted when the ``with`` block ends, whatever happened inside.

The pipeline's figures go through the search protocol (``search.protocol.SearchIndex``, opened
by :func:`open_index` as the worker opens its replica). Watching a worker's index while the
worker writes it is the one thing the protocol has no method for (another process's commits
are seen after a reload): :func:`open_view` is Tantivy's read-only reader, used only to observe.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import tantivy

from qexplorer.config import PROJECT_ROOT, IndexSettings, Settings
from qexplorer.config.versions import library_versions
from qexplorer.harness.processes import spawn_worker, stop_worker
from qexplorer.kafka.admin import create_topics, delete_topics
from qexplorer.marketplace.items import LabelledItem, to_listing_dict
from qexplorer.marketplace.synthetic import generate_marketplace
from qexplorer.search import open_replica
from qexplorer.search.protocol import Change, SearchIndex
from qexplorer.search.tantivy_index import TantivyIndex
from schemas.codec import encode
from schemas.models import ListingUpsert

#: What streams/app.py sets before the worker searches (searches release the GIL; a busy
#: Python thread would otherwise make each wait for the default 5 ms switch interval).
WORKER_SWITCH_INTERVAL_S = 0.0005


# --- data ------------------------------------------------------------------------------------


def synthetic_items(n: int, seed: int = 1) -> list[LabelledItem]:
    """``n`` items of the synthetic marketplace (benign listings and 12 toxic clusters)."""
    return generate_marketplace(n_benign=n, n_clusters=12, seed=seed)[:n]


def as_listings(items: list[LabelledItem]) -> list[ListingUpsert]:
    """The ``listings`` upserts of these items."""
    return [ListingUpsert(**to_listing_dict(i)) for i in items]


def synthetic_listings(n: int, seed: int = 1) -> list[ListingUpsert]:
    """``n`` listings of the synthetic marketplace (what bench/indexing.py indexes)."""
    return as_listings(synthetic_items(n, seed))


def renamed(listings: list[ListingUpsert], n: int, tag: str) -> list[ListingUpsert]:
    """``n`` new listings cycling through ``listings`` with fresh ids (``<id>-<tag><k>``), for
    streams longer than the generated set."""
    return [listings[k % len(listings)].model_copy(
        update={"id": f"{listings[k % len(listings)].id}-{tag}{k}"}) for k in range(n)]


def as_changes(listings: Sequence[ListingUpsert]) -> list[Change]:
    """The listings as the replica hands them to the index: each with the validated message
    it came from (``search.protocol.Change``)."""
    return [Change(listing, encode(listing)) for listing in listings]


def open_index(directory: Path, settings: IndexSettings) -> SearchIndex:
    """Open (creating it) a writable index with its state in ``directory``, the way the worker
    opens its replica (``search.open_replica``: the configured backend, writer heap and
    threads). Raises RuntimeError when the index there was unusable and had to be rebuilt."""
    from qexplorer.config import OpenSearchSettings

    index, rebuilt = open_replica(settings, directory, OpenSearchSettings(), "bench-listings")
    if rebuilt is not None:
        index.close()
        raise RuntimeError(f"the index in {directory} was unusable and rebuilt: {rebuilt}")
    return index


def open_view(path: Path) -> TantivyIndex | None:
    """A read-only view of the Tantivy index another process writes at ``path`` (None while
    it does not exist: opening a missing index would create it). Only for watching a worker:
    call ``reload()`` to see its latest commit."""
    if not (path.exists() and tantivy.Index.exists(str(path))):
        return None
    return TantivyIndex.open(path, writable=False)


# --- processes and machines ------------------------------------------------------------------


def rss_bytes() -> int | None:
    """Resident memory of this process (Linux /proc), or None where it cannot be read."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def dir_bytes(path: Path) -> int:
    """Total size of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def machine() -> dict:
    """Where the benchmark ran: platform, usable cpus, Python and the libraries that matter."""
    return {"platform": platform.platform(), "cpus": len(os.sched_getaffinity(0)),
            "python": platform.python_version(), "versions": library_versions()}


def git_state() -> dict:
    """The commit the code is at and the files that differ from it (others edit this tree
    while benchmarks run: a figure belongs to the code it measured)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=PROJECT_ROOT, capture_output=True,
                              text=True, timeout=10, check=True).stdout
    try:
        return {"commit": git("rev-parse", "HEAD").strip(),
                "dirty_files": [line[3:] for line in git("status", "--porcelain").splitlines()]}
    except (OSError, subprocess.SubprocessError):
        return {}


def free_port() -> int:
    """A TCP port nothing listens on right now (for a worker's /metrics)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prometheus_samples(text: str) -> dict[str, float]:
    """The samples of a Prometheus text exposition: ``name{labels}`` -> value."""
    samples = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            samples[name.strip()] = float(value)
        except ValueError:
            continue
    return samples


def scrape(host: str, port: int, timeout_s: float = 5.0) -> dict[str, float]:
    """A worker's ``/metrics`` as samples ({} if it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout_s) as r:
            return prometheus_samples(r.read().decode())
    except OSError:
        return {}


def log_tail(path: Path, chars: int = 3000) -> str:
    """The end of a log file ('' if there is none)."""
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


# --- the cluster of one benchmark run --------------------------------------------------------


class WorkerDied(RuntimeError):
    """A worker process exited while the benchmark was waiting for it."""


class BenchCluster:
    """Topics, consumer group and state directory of one benchmark run, and its workers.

    ``slices`` are worker settings by slice (``index={"commit_interval_s": 0.5}``,
    ``extractor={"backend": "keywords"}``), on top of the run's own; every worker gets them
    as ``QEXPLORER_*`` environment variables (``Settings.to_env``).
    """

    def __init__(self, base: Settings, name: str, log_dir: Path,
                 **slices: Mapping[str, object]) -> None:
        run = uuid.uuid4().hex[:8]
        self.name = name
        self.state = Path(tempfile.mkdtemp(prefix=f"qx-bench-{name}-"))
        self.log_dir = log_dir
        values: dict[str, dict[str, object]] = {
            "topic": {"prefix": f"bench-{name}-{run}."},
            "worker": {"app_id": f"qx-bench-{name}-{run}"},
            "paths": {"state_dir": self.state},
            "metrics": {"port": 0},  # any free port: never clash with a live worker
        }
        for part, changed in slices.items():
            values[part] = {**values.get(part, {}), **changed}
        try:
            self.settings = base.replace(**values)
        except Exception:
            shutil.rmtree(self.state, ignore_errors=True)
            raise
        self.workers: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> BenchCluster:
        try:
            asyncio.run(create_topics(self.settings.kafka, self.settings.topics))
        except BaseException:
            shutil.rmtree(self.state, ignore_errors=True)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            for process in self.workers.values():
                stop_worker(process, timeout_s=20)
            asyncio.run(delete_topics(self.settings.kafka, self.settings.topics,
                                      app_id=self.settings.worker.app_id))
        finally:
            shutil.rmtree(self.state, ignore_errors=True)

    def worker_settings(self, worker_id: str) -> Settings:
        """The settings a worker of this run sees (the run's, with its worker id)."""
        return self.settings.replace(worker={"worker_id": worker_id})

    def index_dir(self, worker_id: str) -> Path:
        """Where a worker of this run keeps its Tantivy replica."""
        return self.worker_settings(worker_id).worker_dir() / "index"

    def log_path(self, worker_id: str) -> Path:
        """Where a worker of this run writes its log."""
        return self.log_dir / f"{self.name}-{worker_id}.log"

    def start_worker(self, worker_id: str) -> subprocess.Popen:
        """Start a real worker process (``qexplorer worker``) for this run."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = self.worker_settings(worker_id).to_env()
        self.workers[worker_id] = spawn_worker(env, self.log_path(worker_id))
        return self.workers[worker_id]

    def stop_worker(self, worker_id: str) -> None:
        """Stop one worker gracefully."""
        process = self.workers.pop(worker_id)
        stop_worker(process, timeout_s=20)

    def check_alive(self, worker_id: str) -> None:
        """Raise WorkerDied (with its log's end) if the worker exited."""
        process = self.workers.get(worker_id)
        if process is not None and process.poll() is not None:
            raise WorkerDied(f"worker {worker_id} exited with {process.returncode}:\n"
                             f"{log_tail(self.log_path(worker_id))}")

    def reader(self, worker_id: str, timeout_s: float = 120) -> TantivyIndex:
        """A read-only view of the worker's index (:func:`open_view`), once the worker has
        created it."""
        backend = self.settings.index.backend
        if backend != "tantivy":
            raise RuntimeError(f"the benchmarks watch a worker's index through Tantivy's "
                               f"reader; QEXPLORER_SEARCH_BACKEND={backend} has none")
        path = self.index_dir(worker_id)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive(worker_id)
            try:
                view = open_view(path)
            except Exception:  # caught mid-creation: try again
                view = None
            if view is not None:
                return view
            time.sleep(0.02)
        raise TimeoutError(f"worker {worker_id} created no index at {path} in {timeout_s}s")

    def wait_count(self, worker_id: str, reader: TantivyIndex, done: Callable[[int], bool],
                   timeout_s: float = 600, interval_s: float = 0.02) -> tuple[int, float]:
        """Poll the worker's committed listing count until ``done(count)``; return the count
        and ``time.perf_counter()`` when it was seen."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            reader.reload()
            count = reader.count()
            if done(count):
                return count, time.perf_counter()
            self.check_alive(worker_id)
            time.sleep(interval_s)
        raise TimeoutError(f"worker {worker_id} did not index the listings in {timeout_s}s:\n"
                           f"{log_tail(self.log_path(worker_id))}")
