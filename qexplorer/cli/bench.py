"""``qexplorer bench``: every benchmark in one run, against raw ceilings measured in the same run.

Writes ``DIR/bench.json`` (every figure, every repeat, the machine, the command) and
``DIR/bench.md`` (one table: the pipeline's figure, its ceiling, their ratio, the spread over
repeats). The benchmarks themselves live in ``bench/`` (see ``bench/run.py``).
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from qexplorer.cli.common import console


def _source_tree_on_path() -> None:
    """``bench/`` is not an installed package (like ``tests/``): it runs from the source
    checkout, whose root goes on ``sys.path`` (the workers it starts run from there too)."""
    from qexplorer.config import PROJECT_ROOT

    if not (PROJECT_ROOT / "bench" / "run.py").is_file():
        console.print(f"[red]qexplorer bench needs the source checkout: no bench/ in "
                      f"{PROJECT_ROOT}[/red]")
        raise typer.Exit(2)
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))


def bench_command(
    out: Annotated[Path, typer.Option(
        "--out", help="Directory for bench.json, bench.md and the workers' logs.")],
    size: Annotated[int | None, typer.Option(
        min=1, help="Cap on the listings of every benchmark (defaults: indexing 100,000, "
        "exploration 20,000, scaling 10k/100k/1M, standing 100,000).")] = None,
    repeats: Annotated[int, typer.Option(min=1, help="Repeats of every measurement.")] = 3,
    only: Annotated[str | None, typer.Option(
        help="Comma-separated benchmarks: indexing, freshness, exploration, scaling, "
        "standing; "
        "extraction (vLLM vs transformers, minutes) runs only when named.")] = None,
    model: Annotated[str | None, typer.Option(
        help="Model directory: exploration also runs the transformers extractor on it; "
        "extraction serves it (default: the model trained last).")] = None,
) -> None:
    """Run the benchmarks (Kafka broker needed: qexplorer kafka start) and write the report.
    The default set takes about 8-13 minutes on 2 cores."""
    _source_tree_on_path()
    from bench.run import BrokerUnavailable, failed, parse_only, run_benchmarks

    try:
        names = parse_only(only)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    started = time.perf_counter()

    def progress(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {line}", flush=True)

    try:
        report = run_benchmarks(out, size=size, repeats=repeats, only=names, model=model,
                                command=shlex.join(sys.argv), progress=progress)
    except BrokerUnavailable as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    print((out / "bench.md").read_text())
    console.print(f"report: {out / 'bench.json'}, {out / 'bench.md'} "
                  f"({report['duration_s']:.0f} s)")
    if failed(report):
        console.print(f"[red]failed: {', '.join(failed(report))}[/red]")
        raise typer.Exit(1)
