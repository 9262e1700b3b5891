"""``qexplorer train ...``: thin commands around ``trainer`` (bootstrap, data, SFT, DPO, the
whole loop)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from qexplorer.cli.common import (
    CorpusOpt,
    DataOpt,
    ModelOpt,
    console,
    corpora,
    latest_model,
    load_settings,
    models_dir,
    out_dir,
    remember_model,
    require_model,
)

train_app = typer.Typer(help="The learning loop: bootstrap a model, build data, SFT, DPO.",
                        no_args_is_help=True)

FromTopicsOpt = Annotated[bool, typer.Option(
    "--from-topics", help="Learn from the live topics: search-feedback labelled by "
    "toxic-items and moderation-decisions (unreviewed results are unknown, not misses).")]
HoldoutOpt = Annotated[float, typer.Option(
    help="--from-topics: share of the newest reviewed seeds held back for the gate.")]
GenerativeOpt = Annotated[bool, typer.Option(
    "--generative", help="Generative data: candidates beyond the seed's words (spans of its "
    "confirmed finds, the model's free text), scored by the seed's siblings.")]


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

    chosen = corpora(data, corpus)
    cfg = load_config(BootstrapConfig, config, "bootstrap.yaml", steps=steps)
    items = [i for group in chosen.values() for i in group]
    path = bootstrap(items, out_dir(out, "base"), cfg,
                     corpora={n: data_hash(i) for n, i in chosen.items()},
                     device=load_settings().extractor.device)
    remember_model(path)
    console.print(f"base model: {path}")


@train_app.command("combine")
def train_combine(
    model: ModelOpt = None, data: DataOpt = None, corpus: CorpusOpt = None,
    out: Annotated[Path | None, typer.Option(
        help="File to write (default: combination.json in the model's directory).")] = None,
    max_seeds: Annotated[int, typer.Option(help="Training seeds per corpus.")] = 100,
    k: Annotated[int, typer.Option(help="Queries per seed it is chosen for.")] = 4,
) -> None:
    """Fit the learned combination of the model's span ranking, the run-time priors and the
    spans' length, position and rarity on labelled corpora's training seeds; a worker ranks
    by it with QEXPLORER_COMBINATION."""
    from qexplorer.evaluation.combine import fit_combination
    from qexplorer.evaluation.evaluate import model_extractor

    path = require_model(model)
    if out is None and not Path(path).is_dir():
        console.print(f"[red]{path} is no model directory to write beside: give --out[/red]")
        raise typer.Exit(2)
    combination = fit_combination(corpora(data, corpus), model_extractor(path), k=k,
                                  max_seeds=max_seeds)
    written = combination.save(out or Path(path))
    held = combination.record["held_back_precision_at_10"]
    console.print("precision@10 on held-back training seeds: "
                  + ", ".join(f"{name} {value:.3f}" for name, value in held.items()))
    console.print(f"chosen: {combination.version}; written to {written}\n"
                  f"rank by it: QEXPLORER_COMBINATION={written}")


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
    summary = build_data(corpora(data, corpus), out,
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
    path = train(rows, require_model(model), out_dir(out, stage), cfg, progress=console.print,
                 device=load_settings().extractor.device)
    remember_model(path)
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
    pretrained: Annotated[bool, typer.Option(
        "--pretrained", help="Start from the pinned pretrained model (installed by setup; "
        "qexplorer pretrained), with its CPU configs (sft-pretrained.yaml, "
        "dpo-pretrained.yaml) unless others are given.")] = False,
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
    from trainer.train import load_config

    started = time.monotonic()
    target = out_dir(out, "run")
    settings = load_settings()
    model, sft, dpo = _starting_point(model, pretrained, sft_config, dpo_config)
    if from_topics:
        try:
            result = run_from_topics(
                settings.kafka, settings.topics, target, model=require_model(model),
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
        corpora(data, corpus), target, model=model,
        bootstrap_config=load_config(BootstrapConfig, None, "bootstrap.yaml"),
        sft_config=sft, dpo_config=dpo, samples=samples, max_seeds=max_seeds,
        build=BuildConfig(pairs_per_seed=2, **_generative(generative)),
        device=settings.extractor.device, pace_file=models_dir() / "pace.json",
        progress=lambda m: console.print(f"[{time.monotonic() - started:6.0f}s] {m}"))
    remember_model(Path(result["models"]["sft_dpo"]))
    console.print((target / "eval" / "eval.md").read_text())
    console.print(f"models, data and report in {target} ({time.monotonic() - started:.0f}s)")
    combination = target / "eval" / "combination.json"
    if combination.is_file():
        console.print(f"rank with the learned combination: QEXPLORER_MODEL="
                      f"{result['models']['sft_dpo']} QEXPLORER_COMBINATION={combination}")


@train_app.command("loco")
def train_loco(
    out: Annotated[Path | None, typer.Option(help="Directory for every run and the table.")]
    = None,
    corpus: CorpusOpt = None,
    held_out: Annotated[list[str] | None, typer.Option(
        "--held-out", help="Leave out only these (repeatable; default: each corpus).")] = None,
    model: Annotated[str | None, typer.Option(
        "--model", help="Start from this model instead of bootstrapping one.")] = None,
    pretrained: Annotated[bool, typer.Option(
        "--pretrained", help="Start from the pinned pretrained model, with its CPU configs.")]
    = False,
    samples: Annotated[int, typer.Option(help="Model samples per seed for the data.")] = 2,
    max_seeds: Annotated[int, typer.Option(help="Evaluation seeds of the held-out set.")] = 200,
    max_train_seeds: Annotated[int, typer.Option(
        help="Training seeds per training set (bounds the time of each run).")] = 300,
    sft_config: Annotated[Path | None, typer.Option(help="SFT YAML.")] = None,
    dpo_config: Annotated[Path | None, typer.Option(help="DPO YAML.")] = None,
) -> None:
    """Leave one corpus out: for each labelled set (default: the real sets), the whole loop
    trained on the others and judged on it alone; then the table of every held-out set."""
    from qexplorer.marketplace.corpora import DATASETS
    from trainer.bootstrap import BootstrapConfig
    from trainer.dataset import BuildConfig
    from trainer.loop import run_loco
    from trainer.train import load_config

    started = time.monotonic()
    target = out_dir(out, "loco")
    model, sft, dpo = _starting_point(model, pretrained, sft_config, dpo_config)
    try:
        chosen = corpora(None, corpus or list(DATASETS))
        run_loco(chosen, target, held_out=held_out, model=model,
                 bootstrap_config=load_config(BootstrapConfig, None, "bootstrap.yaml"),
                 sft_config=sft, dpo_config=dpo, samples=samples, max_seeds=max_seeds,
                 max_train_seeds=max_train_seeds, build=BuildConfig(pairs_per_seed=2),
                 device=load_settings().extractor.device,
                 pace_file=models_dir() / "pace.json",
                 progress=lambda m: console.print(f"[{time.monotonic() - started:6.0f}s] {m}"))
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    console.print((target / "loco.md").read_text())
    console.print(f"runs and table in {target} ({time.monotonic() - started:.0f}s)")


def _starting_point(model: str | None, pretrained: bool, sft_config: Path | None,
                    dpo_config: Path | None) -> tuple[str | None, Any, Any]:
    """The model training starts from (None: bootstrap one; the pinned pretrained model with
    ``pretrained``) and the SFT and DPO configs (the pretrained model's CPU configs unless
    given)."""
    from trainer.train import TrainConfig, load_config

    if pretrained:
        if model is not None:
            console.print("[red]--pretrained and --model: give one[/red]")
            raise typer.Exit(2)
        from trainer.pretrained import ensure
        model = str(ensure(models_dir()))
    sft = load_config(TrainConfig, sft_config, "sft-pretrained.yaml" if pretrained else "sft.yaml")
    dpo = load_config(TrainConfig, dpo_config, "dpo-pretrained.yaml" if pretrained else "dpo.yaml")
    return model, sft, dpo
