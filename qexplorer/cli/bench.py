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

#: ``--quick``: the hot paths whose ratios the guard watches (indexing and the fan-out), on
#: at most this many listings.
QUICK = "indexing,exploration"
QUICK_SIZE = 30_000


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
    quick: Annotated[bool, typer.Option(
        "--quick", help=f"The hot paths only ({QUICK}, at most {QUICK_SIZE:,} listings, "
        "about two minutes): run it before stopping.")] = False,
    against: Annotated[Path | None, typer.Option(
        help="The kept report whose ratios this run's are compared with (default: "
        "docs/results/bench/bench.json, or quick/bench.json there with --quick).")] = None,
    strict: Annotated[bool, typer.Option(
        "--strict", help="Exit 3 when a ratio slid by more than the noise.")] = False,
) -> None:
    """Run the benchmarks (Kafka broker needed: qexplorer kafka start) and write the report,
    its ratios compared with the last report kept in the repository. The default set takes
    about 8-13 minutes on 2 cores."""
    _source_tree_on_path()
    from bench import guard
    from bench.run import BrokerUnavailable, failed, parse_only, run_benchmarks
    from qexplorer.config import PROJECT_ROOT

    if quick and only:
        console.print("[red]--quick runs its own set: leave --only out[/red]")
        raise typer.Exit(2)
    try:
        names = parse_only(QUICK if quick else only)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    started = time.perf_counter()

    def progress(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {line}", flush=True)

    try:
        report = run_benchmarks(
            out, size=QUICK_SIZE if quick and size is None else size, repeats=repeats,
            only=names, model=model, command=shlex.join(sys.argv), progress=progress,
            against=against or PROJECT_ROOT / (guard.KEPT_QUICK if quick else guard.KEPT))
    except BrokerUnavailable as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    print((out / "bench.md").read_text())
    console.print(f"report: {out / 'bench.json'}, {out / 'bench.md'} "
                  f"({report['duration_s']:.0f} s)")
    if failed(report):
        console.print(f"[red]failed: {', '.join(failed(report))}[/red]")
        raise typer.Exit(1)
    if report.get("against") is None:
        console.print("no kept report to compare with")
    elif slid := guard.slid(report["against"]):
        console.print(f"[red]slid beyond the noise: "
                      f"{'; '.join(s['metric'] + ' vs ' + s['ceiling'] for s in slid)}[/red]")
        if strict:
            raise typer.Exit(3)
