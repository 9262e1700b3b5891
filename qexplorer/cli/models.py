"""``qexplorer promote`` and ``qexplorer models``: thin commands around ``trainer.promote``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qexplorer.cli.common import DataOpt, console, corpora, load_settings


def promote_command(
    model: Annotated[Path, typer.Argument(exists=True, file_okay=False,
                                          help="The candidate model directory.")],
    data: DataOpt = None,
    corpus: Annotated[list[str] | None, typer.Option(
        "--corpus", help="Also judge on this labelled set (repeatable; default: none).")]
    = None,
    max_seeds: Annotated[int, typer.Option(help="Seeds per labelled set.")] = 300,
    min_seeds: Annotated[int, typer.Option(help="Least paired seeds to decide on.")] = 20,
    extractor: Annotated[str, typer.Option(
        help="How workers run it once promoted: transformers (in process) or openai (a "
             "vLLM server already serving it, see --served-model).")] = "transformers",
    served_model: Annotated[str | None, typer.Option(
        help="openai: the name the server serves the candidate under.")] = None,
    base_url: Annotated[str | None, typer.Option(
        help="openai: the server's API root (default QEXPLORER_OPENAI_BASE_URL).")] = None,
) -> None:
    """Judge a candidate against the model in service on the held-back reviewed seeds (and any
    labelled set given); record the judgement on model-registry and, only when the candidate
    is better beyond the noise, roll it out to every worker."""
    from trainer.promote import promote

    settings = load_settings()
    sets = corpora(data, corpus) if data or corpus else {}
    try:
        found = promote(settings, str(model.resolve()), sets, k=4, max_seeds=max_seeds,
                        min_seeds=min_seeds, extractor=extractor, served_model=served_model,
                        base_url=base_url, progress=console.print)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    color = "green" if found.decision == "promoted" else "red"
    console.print(f"[{color}]{found.decision}[/{color}] {found.candidate_version}: "
                  f"{found.reason}")
    console.print(f"recorded on {settings.topics.registry}"
                  + (f"; rollout published to {settings.topics.rollouts}"
                     if found.decision == "promoted" else "; the workers keep "
                     f"{found.incumbent_version}"))
    if found.decision != "promoted":
        raise typer.Exit(1)


def models_command() -> None:
    """Every candidate the gate judged (oldest first), and the model in service."""
    from trainer.promote import registry, serving_extractor

    settings = load_settings()
    for e in registry(settings):
        console.print(
            f"{e.decided_at:%Y-%m-%d %H:%M}  {e.decision:8s}  {e.candidate_version:28s} vs "
            f"{e.incumbent_version:24s} {e.difference:+.3f} [{e.ci95[0]:+.3f}, "
            f"{e.ci95[1]:+.3f}] over {e.seeds} seeds ("
            + ", ".join(f"{s.name} {s.difference:+.3f}/{s.seeds}" for s in e.sets)
            + f")  {e.candidate_model}", highlight=False, soft_wrap=True)
    serving = serving_extractor(settings)
    console.print(f"in service: {serving.backend} {serving.model or ''} "
                  f"{serving.model_version or ''}".rstrip(), highlight=False)
