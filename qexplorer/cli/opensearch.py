"""``qexplorer opensearch start|stop|status``: the local OpenSearch cluster (two nodes from
Maven Central jars, ``qexplorer.harness.opensearch``) for ``QEXPLORER_SEARCH_BACKEND=opensearch``
on a development machine, its tests and benchmarks."""

from __future__ import annotations

import typer

from qexplorer.cli.common import console, load_settings

opensearch_app = typer.Typer(help="The local OpenSearch cluster (two nodes, no Docker).",
                             no_args_is_help=True)


@opensearch_app.command("start")
def opensearch_start() -> None:
    """Fetch the jars (first time only) and start every node; waits until they form a cluster."""
    from qexplorer.harness import opensearch

    status = opensearch.start(opensearch.LocalOpenSearch.of(load_settings()),
                              progress=console.print)
    console.print(status.summary())


@opensearch_app.command("stop")
def opensearch_stop() -> None:
    """Stop the local nodes."""
    from qexplorer.harness import opensearch

    console.print("stopped" if opensearch.stop(opensearch.LocalOpenSearch.of(load_settings()))
                  else "not running")


@opensearch_app.command("status")
def opensearch_status() -> None:
    """Show the nodes and the cluster's health (exit 1 unless every node answers)."""
    from qexplorer.harness import opensearch

    status = opensearch.status(opensearch.LocalOpenSearch.of(load_settings()))
    console.print(status.summary())
    raise typer.Exit(0 if status.ready else 1)
