"""Helpers the benchmarks share: synthetic data, an isolated cluster of topics and worker
processes, read-only views of a worker's index, process memory and machine facts.

A :class:`BenchCluster` is the isolated run of ``qexplorer.harness.run`` (as the demo, the
replay and the integration tests use it), with views of a worker's index: a benchmark never
sees another run's messages, and its workers, topics and state are gone when the ``with``
block ends, whatever happened inside.

The pipeline's figures go through the search protocol (``search.protocol.SearchIndex``, opened
by :func:`open_index` as the worker opens its replica). Watching a worker's index while the
worker writes it is the one thing the protocol has no method for (another process's commits
are seen after a reload): :func:`open_view` is Tantivy's read-only reader, used only to observe.
"""

from __future__ import annotations

import os
import platform
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson
import tantivy

from qexplorer.config import PROJECT_ROOT, IndexSettings, Settings
from qexplorer.config.versions import library_versions
from qexplorer.harness.run import IsolatedRun
from qexplorer.marketplace.items import LabelledItem, to_listing_dict
from qexplorer.marketplace.synthetic import generate_marketplace
from qexplorer.search import open_replica
from qexplorer.search.protocol import Change, SearchIndex
from qexplorer.search.tantivy_index import TantivyIndex
from schemas.codec import encode
from schemas.models import ListingUpsert

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


def envelope(started: float, command: str | None = None) -> dict:
    """What every benchmark report says of its run: the command (default: this process's own,
    ``python -m bench.<name> ...``), when it started (UTC), how long it has taken, the machine
    with its library versions, and the commit the code is at."""
    if command is None:
        command = shlex.join([Path(sys.executable).name, "-m",
                              f"bench.{Path(sys.argv[0]).stem}", *sys.argv[1:]])
    return {"command": command,
            "started_at": datetime.fromtimestamp(started, UTC).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - started, 1), "machine": machine(),
            "git": git_state()}


def write_report(out: Path, name: str, body: dict, *, started: float,
                 render: Callable[[dict], str] | None = None,
                 command: str | None = None) -> dict:
    """Write ``<name>.json`` (the :func:`envelope` and ``body``) into ``out`` and, with
    ``render``, ``<name>.md`` (what it makes of the whole report); returns the report."""
    report = {**envelope(started, command), **body}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if render is not None:
        (out / f"{name}.md").write_text(render(report))
    return report


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


# --- the cluster of one benchmark run --------------------------------------------------------


class BenchCluster(IsolatedRun):
    """An isolated run of one benchmark (``qexplorer.harness.run``: its topics, consumer group,
    state directory and workers, all removed at the end), with read-only views of a worker's
    Tantivy index to watch it from outside."""

    def __init__(self, base: Settings, name: str, log_dir: Path,
                 **slices: Mapping[str, object]) -> None:
        super().__init__(base, f"bench-{name}", log_dir, **slices)

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
                           f"{self.log(worker_id, 3000)}")
