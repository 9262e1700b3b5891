"""``qexplorer train ...``: thin commands around ``trainer`` (bootstrap, data, SFT, DPO, the
whole loop)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

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
    from trainer.train import TrainConfig, load_config

    started = time.monotonic()
    target = out_dir(out, "run")
    settings = load_settings()
    if pretrained:
        if model is not None:
            console.print("[red]--pretrained and --model: give one[/red]")
            raise typer.Exit(2)
        from trainer.pretrained import ensure
        model = str(ensure(models_dir()))
    sft = load_config(TrainConfig, sft_config, "sft-pretrained.yaml" if pretrained else "sft.yaml")
    dpo = load_config(TrainConfig, dpo_config, "dpo-pretrained.yaml" if pretrained else "dpo.yaml")
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
