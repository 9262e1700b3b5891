"""``qexplorer train ...``, ``eval``, ``replay``, ``curves`` and ``disguises``: thin commands
around ``trainer``.

Corpora are chosen with ``--data FILE.jsonl`` (the generic labelled format) or ``--corpus NAME``
(``synthetic`` or a set of the labelled datasets directory; default: every one available). The
latest trained model is remembered in ``<cache>/models/LATEST`` and is the default ``--model``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from qexplorer.cli.common import console, load_settings

train_app = typer.Typer(help="The learning loop: bootstrap a model, build data, SFT, DPO.",
                        no_args_is_help=True)

DataOpt = Annotated[Path | None, typer.Option(
    "--data", exists=True, dir_okay=False,
    help="Labelled JSONL: id, text (or title+description), harmful, optional cluster.")]
CorpusOpt = Annotated[list[str] | None, typer.Option(
    "--corpus", help="synthetic or a set of QEXPLORER_DATASETS_DIR (repeatable; default: all).")]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="Hugging Face model id or directory (default: the latest trained).")]
FromTopicsOpt = Annotated[bool, typer.Option(
    "--from-topics", help="Learn from the live topics: search-feedback labelled by "
    "toxic-items and moderation-decisions (unreviewed results are unknown, not misses).")]
HoldoutOpt = Annotated[float, typer.Option(
    help="--from-topics: share of the newest reviewed seeds held back for the gate.")]
GenerativeOpt = Annotated[bool, typer.Option(
    "--generative", help="Generative data: candidates beyond the seed's words (spans of its "
    "confirmed finds, the model's free text), scored by the seed's siblings.")]


def _cache() -> Path:
    return load_settings().paths.models_dir


def _corpora(data: Path | None, names: list[str] | None) -> dict:
    from qexplorer.marketplace.corpora import corpus_names, load_corpus

    if data is not None:
        return dict([load_corpus(data)])
    corpora = {}
    for name in names or corpus_names():
        try:
            key, items = load_corpus(name)
        except FileNotFoundError:
            if names:
                raise
            console.print(f"[yellow]skipping {name}: not in the datasets directory "
                          "(QEXPLORER_DATASETS_DIR)[/yellow]")
            continue
        corpora[key] = items
    return corpora


def _remember(model: Path) -> None:
    _cache().mkdir(parents=True, exist_ok=True)
    (_cache() / "LATEST").write_text(str(model.resolve()))


def latest_model() -> str | None:
    """The directory of the model trained last on this machine, if any."""
    pointer = _cache() / "LATEST"
    return pointer.read_text().strip() if pointer.is_file() else None


def _model(model: str | None) -> str:
    found = model or latest_model()
    if not found:
        console.print("[red]no model: pass --model or train one (qexplorer train all)[/red]")
        raise typer.Exit(2)
    return found


def _out(out: Path | None, kind: str) -> Path:
    return out or _cache() / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def _blend_spec(spec: str) -> dict[str, float]:
    """``PRIOR=WEIGHT[,PRIOR=WEIGHT]`` as prior -> weight, or a usage error."""
    from agents.extractor.decoding import blend_weights

    weights = {}
    for part in spec.split(","):
        prior, _, weight = part.strip().partition("=")
        try:
            weights[prior] = float(weight)
        except ValueError:
            raise typer.BadParameter(f"--blend {spec!r}: expected PRIOR=WEIGHT") from None
    try:
        return blend_weights(weights)
    except ValueError as e:
        raise typer.BadParameter(f"--blend {spec!r}: {e}") from None


@train_app.command("bootstrap")
def train_bootstrap(
    out: Annotated[Path | None, typer.Option(help="Model directory to write.")] = None,
    data: DataOpt = None, corpus: CorpusOpt = None,
    config: Annotated[Path | None, typer.Option(help="YAML (trainer/configs/bootstrap.yaml)")]
    = None,
    steps: Annotated[int | None, typer.Option(help="Pre-training steps.")] = None,
) -> None:
    """Train a byte-level BPE tokenizer and a small Llama from scratch on listing text."""
    from qexplorer.marketplace.corpora import data_hash
    from trainer.bootstrap import BootstrapConfig, bootstrap
    from trainer.train import load_config

    corpora = _corpora(data, corpus)
    cfg = load_config(BootstrapConfig, config, "bootstrap.yaml", steps=steps)
    items = [i for group in corpora.values() for i in group]
    path = bootstrap(items, _out(out, "base"), cfg,
                     corpora={n: data_hash(i) for n, i in corpora.items()},
                     device=load_settings().extractor.device)
    _remember(path)
    console.print(f"base model: {path}")


@train_app.command("data")
def train_data(
    out: Annotated[Path, typer.Option(help="Directory for sft.jsonl, dpo.jsonl, stats.json.")],
    data: DataOpt = None, corpus: CorpusOpt = None, model: ModelOpt = None,
    samples: Annotated[int, typer.Option(help="Model samples per seed (0: none).")] = 2,
    k: Annotated[int, typer.Option(help="Queries per seed.")] = 4,
    threshold: Annotated[float, typer.Option(help="Least P@10 of an SFT query.")] = 0.5,
    margin: Annotated[float, typer.Option(help="Least score margin of a DPO pair.")] = 0.25,
    from_topics: FromTopicsOpt = False, holdout: HoldoutOpt = 0.2,
    generative: GenerativeOpt = False,
    max_train_seeds: Annotated[int, typer.Option(help="Training seeds per corpus.")] = 300,
) -> None:
    """Build SFT and DPO data: from a labelled corpus's training split (scored by search
    against the labels) or from the live topics (scored by the moderators' labels)."""
    from trainer.dataset import BuildConfig
    from trainer.loop import build_data

    if from_topics:
        from trainer.feedback import build_from_topics

        settings = load_settings()
        found = build_from_topics(settings.kafka, settings.topics, out,
                                  BuildConfig(k=k, threshold=threshold, margin=margin), holdout)
        console.print(json.dumps({k: v for k, v in found.items() if k != "config"}))
        return
    chosen = model or latest_model()
    summary = build_data(_corpora(data, corpus), out,
                         BuildConfig(k=k, threshold=threshold, margin=margin,
                                     **_generative(generative)),
                         model=chosen, samples=samples if chosen else 0,
                         max_train_seeds=max_train_seeds, progress=console.print)
    console.print(f"wrote {out}/sft.jsonl and dpo.jsonl: {json.dumps(summary['files'])}")


def _generative(on: bool) -> dict:
    """BuildConfig fields of generative data (none for extractive)."""
    return {"generative": True, "reward": "siblings"} if on else {}


def _stage(stage: str, rows: Path, model: str | None, out: Path | None, config: Path | None,
           epochs: float | None, lora: bool | None) -> None:
    from trainer.train import TrainConfig, load_config, train

    cfg = load_config(TrainConfig, config, f"{stage}.yaml", epochs=epochs, lora=lora)
    path = train(rows, _model(model), _out(out, stage), cfg, progress=console.print,
                 device=load_settings().extractor.device)
    _remember(path)
    console.print(f"{stage} model: {path}")


RowsArg = Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL rows.")]
OutOpt = Annotated[Path | None, typer.Option(help="Model directory to write.")]
ConfigOpt = Annotated[Path | None, typer.Option(help="YAML config (trainer/configs/).")]
EpochsOpt = Annotated[float | None, typer.Option(help="Override the config's epochs.")]
LoraOpt = Annotated[bool | None, typer.Option("--lora/--no-lora", help="Train a LoRA adapter.")]


@train_app.command("sft")
def train_sft(rows: RowsArg, model: ModelOpt = None, out: OutOpt = None,
              config: ConfigOpt = None, epochs: EpochsOpt = None, lora: LoraOpt = None) -> None:
    """Supervised fine-tuning (TRL SFTTrainer) on prompt/completion rows."""
    _stage("sft", rows, model, out, config, epochs, lora)


@train_app.command("dpo")
def train_dpo(rows: RowsArg, model: ModelOpt = None, out: OutOpt = None,
              config: ConfigOpt = None, epochs: EpochsOpt = None, lora: LoraOpt = None) -> None:
    """Preference alignment (TRL DPOTrainer) on prompt/chosen/rejected rows."""
    _stage("dpo", rows, model, out, config, epochs, lora)


@train_app.command("all")
def train_all(
    out: Annotated[Path | None, typer.Option(help="Directory for models, data and report.")]
    = None,
    data: DataOpt = None, corpus: CorpusOpt = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="Start from this model instead of bootstrapping one.")] = None,
    samples: Annotated[int, typer.Option(help="Model samples per seed for the data.")] = 2,
    max_seeds: Annotated[int, typer.Option(help="Evaluation seeds per corpus.")] = 300,
    from_topics: FromTopicsOpt = False, holdout: HoldoutOpt = 0.2,
    sft_config: Annotated[Path | None, typer.Option(
        help="SFT YAML (default trainer/configs/sft.yaml, for the tiny model; "
        "sft-instruct.yaml for a pretrained instruct model).")] = None,
    dpo_config: Annotated[Path | None, typer.Option(
        help="DPO YAML (default trainer/configs/dpo.yaml; dpo-instruct.yaml).")] = None,
    generative: GenerativeOpt = False,
) -> None:
    """The whole loop: bootstrap, data, SFT, DPO, evaluation on the held-back split; or, with
    --from-topics, SFT and DPO from the live topics, to be judged by `qexplorer promote`.
    Training runs where QEXPLORER_DEVICE says (a GPU when there is one)."""
    from trainer.bootstrap import BootstrapConfig
    from trainer.dataset import BuildConfig
    from trainer.loop import run_all, run_from_topics
    from trainer.train import TrainConfig, load_config

    started = time.monotonic()
    target = _out(out, "run")
    settings = load_settings()
    sft = load_config(TrainConfig, sft_config, "sft.yaml")
    dpo = load_config(TrainConfig, dpo_config, "dpo.yaml")
    if from_topics:
        try:
            result = run_from_topics(
                settings.kafka, settings.topics, target, model=_model(model),
                sft_config=sft, dpo_config=dpo, holdout=holdout,
                device=settings.extractor.device,
                progress=lambda m: console.print(f"[{time.monotonic() - started:6.0f}s] {m}"))
        except ValueError as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
        console.print(f"candidate {result['final']} ({time.monotonic() - started:.0f}s); "
                      f"judge and roll it out with: qexplorer promote {result['final']}")
        return
    result = run_all(
        _corpora(data, corpus), target, model=model,
        bootstrap_config=load_config(BootstrapConfig, None, "bootstrap.yaml"),
        sft_config=sft, dpo_config=dpo, samples=samples, max_seeds=max_seeds,
        build=BuildConfig(pairs_per_seed=2, **_generative(generative)),
        device=settings.extractor.device, pace_file=_cache() / "pace.json",
        progress=lambda m: console.print(f"[{time.monotonic() - started:6.0f}s] {m}"))
    _remember(Path(result["models"]["sft_dpo"]))
    console.print((target / "eval" / "eval.md").read_text())
    console.print(f"models, data and report in {target} ({time.monotonic() - started:.0f}s)")


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
    models = {} if baselines_only else _lineage(_model(model))
    target = _out(out, "eval")
    evaluate(_corpora(data, corpus), models, target, k=k, max_seeds=max_seeds,
             progress=console.print, backend=settings.index.backend,
             cluster=settings.opensearch, blend=blend,
             free_text=list(models)[-1:] if free_text else ())
    console.print((target / "eval.md").read_text())
    console.print(f"report in {target}")


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
    name, items = next(iter(_corpora(data, [corpus]).items()))
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
                        out_dir=_out(out, "replay"), initial_fraction=initial,
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

    blends = [_blend_spec(spec) for spec in blend or ["probe=64"]]
    if len({tuple(b) for b in blends}) < len(blends):
        raise typer.BadParameter("--blend: one replay a set of priors (a replay is named by "
                                 "its priors, model+<prior>...)")
    if order not in ORDERS:
        raise typer.BadParameter(f"--order {order!r}: one of {', '.join(ORDERS)}")
    chosen = None if baselines_only else model or latest_model()
    target = _out(out, "curves")
    run_curves(_corpora(data, corpus), BASELINES, target, model=chosen, replays=replays,
               initial=initial, retrain_at=retrain_at or None, retrain_sets=retrain_corpus,
               retrain_epochs=retrain_epochs, blends=blends, per_round=per_round,
               order=order, k=k, progress=console.print)
    console.print((target / "curves.md").read_text())
    console.print(f"report in {target}")


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

    target = _out(out, "disguises")
    run(_corpora(data, corpus), target, share=share, word_share=word_share,
        max_seeds=max_seeds, seed=seed, kinds=kind, progress=console.print)
    console.print((target / "disguises.md").read_text())
    console.print(f"report in {target}")
