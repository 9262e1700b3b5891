"""``qexplorer eval`` and ``qexplorer disguises``: thin commands around
``qexplorer.evaluation``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from qexplorer.cli.common import (
    CorpusOpt,
    DataOpt,
    ModelOpt,
    console,
    corpora,
    load_settings,
    out_dir,
    require_model,
)


def eval_command(
    out: Annotated[Path | None, typer.Option(help="Directory for eval.json/.md/.png.")] = None,
    data: DataOpt = None, corpus: CorpusOpt = None, model: ModelOpt = None,
    max_seeds: Annotated[int, typer.Option(help="Evaluation seeds per corpus.")] = 300,
    k: Annotated[int, typer.Option(help="Queries per seed.")] = 4,
    baselines_only: Annotated[bool, typer.Option(help="Skip the model methods.")] = False,
    free_text: Annotated[bool, typer.Option(
        help="Also evaluate the model writing free text (generative: queries need not be "
        "in the seed), as <label>+free.")] = False,
    blend: Annotated[bool, typer.Option(
        help="Also rank with the run-time priors blended in (contrast, probe, both; the "
        "weight grids).")] = True,
) -> None:
    """Evaluate the baselines and a model, with the models it was trained from.

    The protocol of ``qexplorer.evaluation.evaluate.PROTOCOL``; writes eval.json, eval.md,
    eval.png. The corpora are searched with ``QEXPLORER_SEARCH_BACKEND`` (an OpenSearch scratch
    index each).
    """
    from qexplorer.evaluation.evaluate import evaluate

    settings = load_settings()
    models = {} if baselines_only else _lineage(require_model(model))
    target = out_dir(out, "eval")
    evaluate(corpora(data, corpus), models, target, k=k, max_seeds=max_seeds,
             progress=console.print, backend=settings.index.backend,
             cluster=settings.opensearch, blend=blend,
             free_text=list(models)[-1:] if free_text else ())
    console.print((target / "eval.md").read_text())
    console.print(f"report in {target}")


def _lineage(model: str) -> dict[str, str]:
    """Label -> model for a model and the models it was trained from (its cards' chain)."""
    from trainer.train import model_card

    chain, current = [], model
    while current and len(chain) < 5:
        card = model_card(current)
        chain.append((card.get("stage"), current))
        current = card.get("base_model")
    labels = {"bootstrap": "base", "sft": "sft", "dpo": "sft_dpo", None: "model"}
    return {labels.get(stage, str(stage)): path for stage, path in reversed(chain)}


def disguises_command(
    out: Annotated[Path | None, typer.Option(help="Directory for disguises.json/.md.")] = None,
    data: DataOpt = None, corpus: CorpusOpt = None,
    max_seeds: Annotated[int, typer.Option(help="Evaluation seeds per corpus.")] = 100,
    share: Annotated[float, typer.Option(help="Share of the other harmful items disguised.")]
    = 0.3,
    word_share: Annotated[float, typer.Option(help="Share of an item's words disguised.")]
    = 0.5,
    seed: Annotated[int, typer.Option(help="Chooses the seeds, the targets and disguises.")]
    = 0,
    kind: Annotated[list[str] | None, typer.Option(
        help="Only these disguise kinds (repeatable; default: every one).")] = None,
) -> None:
    """The disguise benchmark: siblings found through each kind of disguise, with the
    disguise folding off and on (``qexplorer.evaluation.disguises``)."""
    from qexplorer.evaluation.disguises import run

    target = out_dir(out, "disguises")
    run(corpora(data, corpus), target, share=share, word_share=word_share,
        max_seeds=max_seeds, seed=seed, kinds=kind, progress=console.print)
    console.print((target / "disguises.md").read_text())
    console.print(f"report in {target}")
