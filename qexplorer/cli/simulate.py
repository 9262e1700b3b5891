"""``qexplorer replay`` and ``qexplorer curves``: thin commands around
``qexplorer.simulation``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from qexplorer.cli.common import (
    CorpusOpt,
    DataOpt,
    ModelOpt,
    blend_spec,
    console,
    corpora,
    latest_model,
    load_settings,
    out_dir,
)


def replay_command(
    out: Annotated[Path | None, typer.Option(help="Directory for replay.json and replay.png.")]
    = None,
    data: DataOpt = None,
    corpus: Annotated[str, typer.Option(help="synthetic or a set of QEXPLORER_DATASETS_DIR.")]
    = "synthetic",
    model: ModelOpt = None,
    initial: Annotated[float, typer.Option(help="Share of harmful items confirmed first.")]
    = 0.1,
    delay: Annotated[float, typer.Option(help="Seconds a moderator takes per review.")] = 2.0,
    arrivals: Annotated[float, typer.Option(
        help="Share of the listings (the last, in arrival order) published during the run "
             "instead of at the start: what finds them is a later seed or a standing query.")]
    = 0.0,
    arrival_rate: Annotated[float, typer.Option(help="Listings a second that arrive.")] = 50.0,
    seed: Annotated[int, typer.Option(help="Chooses the initial seeds.")] = 0,
    only: Annotated[list[str] | None, typer.Option(
        "--extractor", help="Replay only these (first_words, tfidf, yake, model; "
                            "repeatable).")] = None,
) -> None:
    """Simulate deployment: stream a corpus through Kafka, confirm a few toxic items, let a
    moderator confirm true detections (they become seeds), per extractor.

    Compares YAKE, TF-IDF, first words and the trained model (default: the latest, if any).
    """
    from qexplorer.marketplace.datasets import marketplace_sample
    from qexplorer.simulation.replay import run_replay

    settings = load_settings()
    name, items = next(iter(corpora(data, [corpus]).items()))
    items = marketplace_sample(items, harmful_rate=0.12, seed=0)
    extractors = {m: {"backend": "keywords", "model": m}
                  for m in ("first_words", "tfidf", "yake")}
    chosen = model or latest_model()
    if chosen:
        extractors["model"] = {"backend": "transformers", "model": chosen}
    if only:
        unknown = set(only) - set(extractors)
        if unknown:
            raise typer.BadParameter(f"not an extractor here: {', '.join(sorted(unknown))}")
        extractors = {k: v for k, v in extractors.items() if k in only}
    report = run_replay(settings, items, extractors, dataset_name=name,
                        out_dir=out_dir(out, "replay"), initial_fraction=initial,
                        review_delay_s=delay, progress=console.print, arrivals=arrivals,
                        arrival_rate=arrival_rate, seed=seed)
    for label, run in report["extractors"].items():
        console.print(f"{label:12s} {json.dumps(run['summary'])}")


def curves_command(
    out: Annotated[Path | None, typer.Option(help="Directory for curves.json/.md/.png.")]
    = None,
    data: DataOpt = None, corpus: CorpusOpt = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="Also replay this model (default: the latest trained, if any).")]
    = None,
    baselines_only: Annotated[bool, typer.Option(help="Replay the keyword methods only.")]
    = False,
    replays: Annotated[int, typer.Option(min=2, help="Replays a set (other initial seeds).")]
    = 5,
    initial: Annotated[float, typer.Option(help="Share of harmful items confirmed first.")]
    = 0.1,
    retrain_at: Annotated[float, typer.Option(
        help="Also replay the model retrained once from the replay's own records (through "
        "the gate) after this many reviews per harmful item to find; 0: not.")] = 1.0,
    retrain_corpus: Annotated[list[str] | None, typer.Option(
        help="Retrain on these sets only (repeatable; default: every set).")] = None,
    retrain_epochs: Annotated[int | None, typer.Option(
        help="Epochs of the mid-replay SFT and DPO (default: the trainer's configs).")] = None,
    blend: Annotated[list[str] | None, typer.Option(
        help="Also replay the model with these run-time priors blended into its ranking, as "
        "PRIOR=WEIGHT[,PRIOR=WEIGHT] (repeatable; default: probe=64).")] = None,
    per_round: Annotated[int | None, typer.Option(
        min=1, help="Reviews a round at most (the moderators' capacity; default: every "
        "listing due).")] = None,
    order: Annotated[str, typer.Option(
        help="The order moderators take due listings in: arrival (first in, first out) or "
        "priority (the review service's queue order).")] = "arrival",
    k: Annotated[int, typer.Option(
        "--k", min=1, help="Queries a seed, for every method (a worker's "
        "QEXPLORER_QUERIES_PER_SEED).")] = 4,
) -> None:
    """Harmful items found against reviews spent, per extractor, on every set: the replay's
    exploration in process, several replays a set, with intervals
    (``qexplorer.simulation.curves``)."""
    from qexplorer.evaluation.evaluate import BASELINES
    from qexplorer.simulation.curves import ORDERS, run_curves

    blends = [blend_spec(spec) for spec in blend or ["probe=64"]]
    if len({tuple(b) for b in blends}) < len(blends):
        raise typer.BadParameter("--blend: one replay a set of priors (a replay is named by "
                                 "its priors, model+<prior>...)")
    if order not in ORDERS:
        raise typer.BadParameter(f"--order {order!r}: one of {', '.join(ORDERS)}")
    chosen = None if baselines_only else model or latest_model()
    target = out_dir(out, "curves")
    run_curves(corpora(data, corpus), BASELINES, target, model=chosen, replays=replays,
               initial=initial, retrain_at=retrain_at or None, retrain_sets=retrain_corpus,
               retrain_epochs=retrain_epochs, blends=blends, per_round=per_round,
               order=order, k=k, progress=console.print)
    console.print((target / "curves.md").read_text())
    console.print(f"report in {target}")
