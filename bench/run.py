"""Every benchmark in one run, one report: ``DIR/bench.json`` and ``DIR/bench.md``.

``qexplorer bench --out DIR [--size N] [--repeats R] [--only NAME,...] [--model DIR]`` (or
``.venv/bin/python -m bench.run`` with the same options) runs, by default:

- ``indexing`` (bench/indexing.py): listings/s from Kafka into a searchable index through a
  worker, against raw tantivy-py and a raw aiokafka consumer; the index alone;
- ``freshness`` (bench/freshness.py): publish-to-searchable p50/p95/p99 at 200/s and 5,000/s,
  against the worker's commit interval;
- ``exploration`` (bench/exploration.py): seeds/s and seed-to-feedback latency (steady and
  burst) against the extractor alone; the search fan-out's queries/s against raw tantivy-py;
- ``scaling`` (bench/scaling.py): indexing rate, disk, search latency, memory per listing at
  10k, 100k and 1M listings;
- ``standing`` (bench/standing.py): new listings/s matched against 1,000, 10,000 and 100,000
  standing queries by the watcher, against raw tantivy-py with the same filter and against an
  in-memory index of each batch; the indexing rate while the watcher matches.

``opensearch`` (bench/opensearch.py: the OpenSearch backend against raw ``_bulk`` and
``_msearch`` on the local cluster) runs only when named in ``--only``. ``extraction``
(bench/extraction.py: the vLLM server against in-process transformers) too: it builds or
reuses the model server's virtualenv and takes minutes. ``--size`` caps the listings of every
benchmark (indexing 100,000, exploration 20,000, scaling up to 1,000,000, standing 100,000,
opensearch 20,000 by default); the freshness stream's length is set by its rates.

The report is rewritten after each benchmark, so an interrupted run keeps what finished. A
benchmark that fails is recorded with its error and the others still run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench import guard
from bench.common import write_report
from bench.report import comparison, markdown
from qexplorer.config import PROJECT_ROOT, Settings

DEFAULT = ("indexing", "freshness", "exploration", "scaling", "standing")
OPTIONAL = ("extraction", "opensearch")
#: Benchmarks that need no Kafka broker.
NO_BROKER = ("scaling", "standing", "extraction", "opensearch")
INDEXING_SIZE = 100_000  # 50,000 (the standalone default) leaves the Kafka windows ~0.1 s
EXPLORATION_SIZE = 20_000
STANDING_SIZE = 100_000
EXTRACTION_SEEDS = 64
OPENSEARCH_SIZE = 20_000


class BrokerUnavailable(RuntimeError):
    """The benchmarks need a Kafka broker and none answers."""


def parse_only(only: str | None) -> list[str]:
    """Benchmark names from ``--only`` (comma-separated), in the order given; default all but
    the optional ones. Raises ValueError naming an unknown benchmark."""
    if not only:
        return list(DEFAULT)
    names = [n.strip() for n in only.split(",") if n.strip()]
    unknown = [n for n in names if n not in DEFAULT + OPTIONAL]
    if unknown or not names:
        raise ValueError(f"unknown benchmark {', '.join(unknown) or repr(only)}: choose from "
                         f"{', '.join(DEFAULT + OPTIONAL)}")
    return list(dict.fromkeys(names))


def capped(default: int, cap: int | None) -> int:
    """A benchmark's size: its default, or ``cap`` when that is smaller."""
    return default if cap is None else min(default, cap)


def _extraction(settings: Settings, *, repeats: int, model: str | None,
                progress: Callable[[str], None]) -> dict:
    from bench import extraction

    with tempfile.TemporaryDirectory() as tmp:
        chosen = model or extraction.default_model(settings, Path(tmp))
        progress(f"extraction: model {chosen}, {EXTRACTION_SEEDS} seeds")
        result = extraction.measure(chosen, extraction.seeds_for(EXTRACTION_SEEDS), repeats,
                                    8, settings, Path(tmp))
    seeds = result["seeds"]
    rows = []
    for key, figures in result["results"].items():
        mode, backend = key.split("/")
        if backend == "transformers":
            continue
        reference = result["results"][f"{mode}/transformers"]["seconds"]
        rows.append(comparison("extraction", f"{mode}: {backend} server, seeds/s", "/s",
                               [seeds / s for s in figures["seconds"]],
                               ceiling=[seeds / s for s in reference],
                               ceiling_name="transformers, in-process"))
    notes = [f"model {result['model']} ({result['model_version']}), {seeds} seeds, K="
             f"{result['k']}, {result['concurrency']} requests in flight; the reference is the "
             "in-process backend, not a ceiling: the server may beat it"]
    notes += [f"{key}: identical query lists {f['identical_query_lists']:.0%}"
              for key, f in result["results"].items() if "identical_query_lists" in f]
    return {"params": {"seeds": seeds, "repeats": repeats, "model": result["model"]},
            "rows": rows, "notes": notes, "details": result}


def _one(name: str, settings: Settings, *, size: int | None, repeats: int, log_dir: Path,
         model: str | None, progress: Callable[[str], None]) -> dict:
    if name == "indexing":
        from bench import indexing

        return indexing.run(settings, size=capped(INDEXING_SIZE, size), repeats=repeats,
                            log_dir=log_dir, progress=progress)
    if name == "freshness":
        from bench import freshness

        return freshness.run(settings, repeats=repeats, log_dir=log_dir, progress=progress)
    if name == "exploration":
        from bench import exploration

        return exploration.run(settings, size=capped(EXPLORATION_SIZE, size), repeats=repeats,
                               log_dir=log_dir, model=model, progress=progress)
    if name == "scaling":
        from bench import scaling

        return scaling.run(settings, size=size, repeats=repeats, progress=progress)
    if name == "standing":
        from bench import standing

        return standing.run(settings, size=capped(STANDING_SIZE, size), repeats=repeats,
                            progress=progress)
    if name == "extraction":
        return _extraction(settings, repeats=repeats, model=model, progress=progress)
    if name == "opensearch":
        from bench import opensearch

        return opensearch.run(settings, size=capped(OPENSEARCH_SIZE, size), repeats=repeats,
                              progress=progress)
    raise ValueError(f"unknown benchmark {name!r}")


def check_broker(settings: Settings) -> None:
    """Raise BrokerUnavailable unless the configured broker answers."""
    from qexplorer.harness import broker

    kafka = settings.kafka
    if kafka.uses_local_broker and not broker.status(broker.LocalBroker.of(settings)).reachable:
        raise BrokerUnavailable("no Kafka broker answers at "
                                f"{kafka.servers}: start it (qexplorer kafka start) or "
                                "set KAFKA_BOOTSTRAP")


def run_benchmarks(out: Path, *, size: int | None = None, repeats: int = 3,
                   only: list[str] | None = None, model: str | None = None,
                   command: str = "", settings: Settings | None = None,
                   against: Path | None = None,
                   progress: Callable[[str], None] = print) -> dict:
    """Run the chosen benchmarks (default: all but extraction) one after the other and write
    the report after each; return it. Worker logs go to ``out/logs``. With ``against`` (a
    kept report), the report ends with its ratios compared to that one's (``bench.guard``)."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    if size is not None and size < 1:
        raise ValueError(f"size must be positive, got {size}")
    settings = settings or Settings()
    kept = guard.load(against) if against is not None else None
    names = only or list(DEFAULT)
    if any(n not in NO_BROKER for n in names):
        check_broker(settings)
    started = time.time()
    body: dict = {"params": {"size": size, "repeats": repeats, "only": names, "model": model},
                  "benchmarks": {}}
    report = write_report(out, "bench", body, started=started, render=markdown,
                          command=command or shlex.join(sys.argv))
    for name in names:
        progress(f"== {name}")
        begun = time.perf_counter()
        try:
            section = _one(name, settings, size=size, repeats=repeats, log_dir=out / "logs",
                           model=model, progress=progress)
        except Exception as exc:
            progress(traceback.format_exc())
            section = {"error": f"{type(exc).__name__}: {exc}"[:2000], "rows": []}
        section["duration_s"] = time.perf_counter() - begun
        body["benchmarks"][name] = section
        report = write_report(out, "bench", body, started=started, render=markdown,
                              command=report["command"])
        progress(f"== {name} took {section['duration_s']:.0f}s")
    if kept is not None:
        assert against is not None
        source = (against.relative_to(PROJECT_ROOT) if against.is_relative_to(PROJECT_ROOT)
                  else against)
        body["against"] = guard.against(kept, str(source), body)
        report = write_report(out, "bench", body, started=started, render=markdown,
                              command=report["command"])
    return report


def failed(report: dict) -> list[str]:
    """Names of the benchmarks of a report that failed."""
    return [name for name, section in report["benchmarks"].items() if section.get("error")]


def main() -> None:
    """``python -m bench.run``: the same as ``qexplorer bench``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--against", type=Path, default=PROJECT_ROOT / guard.KEPT)
    args = parser.parse_args()
    report = run_benchmarks(
        args.out, size=args.size, repeats=args.repeats, only=parse_only(args.only),
        model=args.model, against=args.against,
        command=shlex.join([Path(sys.executable).name, "-m", "bench.run", *sys.argv[1:]]))
    print((args.out / "bench.md").read_text())
    sys.exit(1 if failed(report) else 0)


if __name__ == "__main__":
    main()
