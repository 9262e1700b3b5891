"""The whole learning loop as one job: bootstrap, data, SFT, data again, DPO, evaluation.

``build_data`` turns the training split of each corpus into SFT and DPO rows (candidates from
spans, baselines and samples of the current model, scored by search against the labels).
``run_all`` chains the stages and leaves everything in one directory:

    DIR/base/        the bootstrapped model (unless one was given)
    DIR/data/        sft.jsonl, dpo.jsonl and their build statistics
    DIR/sft/ DIR/dpo/  the trained models (each with its qexplorer.json card)
    DIR/eval/        eval.json, eval.md, eval.png

``run_from_topics`` is the same loop on the system's own operation: one snapshot of the topics
(``trainer.feedback``), SFT and then DPO from a given model, each model card recording the time
split so the promotion gate (``trainer.gate``) judges on seeds the model never saw.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

from agents.extractor.base import SeedText
from agents.extractor.device import Device
from config import KafkaSettings
from marketplace.items import LabelledItem
from schemas.topics import Topics
from trainer.bootstrap import BootstrapConfig, bootstrap
from trainer.corpus import data_hash, sample_seeds, split_seeds
from trainer.dataset import BuildConfig, baseline_queries, build_rows
from trainer.evaluate import baseline_extractors, evaluate, extract_all, model_extractor
from trainer.feedback import TopicsSnapshot, build_from_snapshot, read_topics
from trainer.scoring import Searcher
from trainer.train import CARD, TrainConfig, train, write_rows

Progress = Callable[[str], None]


def model_samples(model: str, seeds: Sequence[LabelledItem], k: int, n: int,
                  temperature: float = 1.0, seed: int = 0, extractive: bool = True
                  ) -> dict[str, list[list[str]]]:
    """Seed id -> ``n`` sampled query lists from the model (temperature sampling, seeded;
    free text unless ``extractive``)."""
    if n <= 0:
        return {}
    extractor = model_extractor(model, temperature=temperature, seed=seed, extractive=extractive)
    out: dict[str, list[list[str]]] = {s.id: [] for s in seeds}
    for j in range(n):
        extractor.seed = seed + j
        for seed_id, queries in extract_all(extractor, seeds, k).items():
            if queries:
                out[seed_id].append(queries)
    return out


def build_data(corpora: Mapping[str, Sequence[LabelledItem]], out: Path, config: BuildConfig, *,
               model: str | None = None, samples: int = 0, max_train_seeds: int = 300,
               split_seed: int = 0, progress: Progress = print) -> dict:
    """Write ``sft.jsonl`` and ``dpo.jsonl`` from each corpus's training seeds; returns stats."""
    sft_rows, dpo_rows, stats = [], [], {}
    for name, items in corpora.items():
        searcher = Searcher(items)
        seeds = sample_seeds(split_seeds(items, seed=split_seed).train, max_train_seeds,
                             split_seed)
        extractors = baseline_extractors(searcher)
        sampled = model_samples(model, seeds, config.k, samples, seed=config.seed,
                                extractive=not config.generative) if model else {}
        by_id = {i.id: i for i in items}

        def neighbours(seed: SeedText, baselines: Mapping[str, list[str]],
                       searcher: Searcher = searcher, by_id=by_id) -> list[SeedText]:
            found = searcher.finds([q for qs in baselines.values() for q in qs], seed.id,
                                   config.neighbours)
            return [SeedText(i, by_id[i].title, by_id[i].description) for i in found]

        kin = config.reward == "siblings"
        sft, dpo, built = build_rows(
            name, seeds, searcher.kin_precision if kin else searcher.precision, config,
            lambda s, ex=extractors: baseline_queries(s, config.k, ex), sampled,
            searcher.kin_hits if kin else searcher.hits,
            neighbours if config.generative and config.neighbours else None)
        sft_rows += sft
        dpo_rows += dpo
        stats[name] = {**asdict(built), "data_hash": data_hash(items)}
        progress(f"{name:20s} train seeds {built.seeds}: {built.sft_rows} SFT rows, "
                 f"{built.dpo_rows} DPO pairs ({built.candidates} candidates scored)")
    out.mkdir(parents=True, exist_ok=True)
    hashes = {"sft": write_rows(sft_rows, out / "sft.jsonl"),
              "dpo": write_rows(dpo_rows, out / "dpo.jsonl")}
    summary = {"config": asdict(config), "model": model, "samples_per_seed": samples,
               "split_seed": split_seed, "max_train_seeds": max_train_seeds,
               "files": hashes, "corpora": stats}
    (out / "stats.json").write_text(json.dumps(summary, indent=2))
    return summary


def run_all(corpora: Mapping[str, Sequence[LabelledItem]], out: Path, *,
            model: str | None = None, bootstrap_config: BootstrapConfig | None = None,
            sft_config: TrainConfig | None = None, dpo_config: TrainConfig | None = None,
            build: BuildConfig | None = None, samples: int = 2, max_seeds: int = 300,
            max_train_seeds: int = 300, progress: Progress = print,
            device: Device = "auto") -> dict:
    """Bootstrap (when no model is given), build data, SFT, build DPO data from the SFT model's
    samples, DPO, and evaluate base, SFT and SFT+DPO against the baselines. ``device``: where
    training runs (``agents.extractor.device``).

    A stage whose output is already in ``out`` (a model card, a data summary) is reused, so an
    interrupted run resumes; delete ``out`` to start over.
    """
    build = build or BuildConfig(pairs_per_seed=2)

    def done(path: Path, what: str) -> bool:
        if path.exists():
            progress(f"    reusing {what} in {path.parent}")
        return path.exists()

    if model is None:
        progress("1/6 bootstrap: tokenizer and small Llama from scratch")
        model = str(out / "base")
        if not done(out / "base" / CARD, "the base model"):
            pretrain = [i for items in corpora.values() for i in items]
            bootstrap(pretrain, out / "base", bootstrap_config or BootstrapConfig(), k=build.k,
                      corpora={n: data_hash(i) for n, i in corpora.items()}, progress=progress,
                      device=device)
    stages = [("sft", model, sft_config or TrainConfig(stage="sft"), 0),
              ("dpo", str(out / "sft"),
               dpo_config or TrainConfig(stage="dpo", learning_rate=2e-4, epochs=1), samples)]
    for number, (stage, parent, config, n_samples) in enumerate(stages):
        # SFT data needs no samples: the bootstrapped model knows nothing yet
        progress(f"{2 + 2 * number}/6 {stage.upper()} data: spans, baselines"
                 + (" and the SFT model's samples" if n_samples else "") + ", scored by search")
        data_dir = out / "data" / stage
        if not done(data_dir / "stats.json", f"{stage} data"):
            build_data(corpora, data_dir, build, model=parent, samples=n_samples,
                       max_train_seeds=max_train_seeds, progress=progress)
        progress(f"{3 + 2 * number}/6 {stage.upper()}")
        if not done(out / stage / CARD, f"the {stage} model"):
            train(data_dir / f"{stage}.jsonl", parent, out / stage, config, progress=progress,
                  device=device)
    progress("6/6 evaluation on the held-out seeds")
    models = {"base": model, "sft": str(out / "sft"), "sft_dpo": str(out / "dpo")}
    report = evaluate(corpora, models, out / "eval", k=build.k, max_seeds=max_seeds,
                      progress=progress,
                      free_text=("sft", "sft_dpo") if build.generative else ())
    return {"models": models, "eval": report}


def run_from_topics(kafka: KafkaSettings, topics: Topics, out: Path, *, model: str,
                    sft_config: TrainConfig | None = None, dpo_config: TrainConfig | None = None,
                    build: BuildConfig | None = None, holdout: float = 0.2,
                    progress: Progress = print, device: Device = "auto") -> dict:
    """Data from the topics, SFT from ``model``, DPO from the SFT model (skipped when there is
    no pair); returns the data summary and the models. ``out`` gets ``data/``, ``sft/`` and
    ``dpo/``."""
    return run_from_snapshot(read_topics(kafka, topics), out, model=model, sft_config=sft_config,
                             dpo_config=dpo_config, build=build, holdout=holdout,
                             progress=progress, device=device)


def run_from_snapshot(snapshot: TopicsSnapshot, out: Path, *, model: str,
                      sft_config: TrainConfig | None = None,
                      dpo_config: TrainConfig | None = None, build: BuildConfig | None = None,
                      holdout: float = 0.2, progress: Progress = print,
                      device: Device = "auto") -> dict:
    """:func:`run_from_topics` on a snapshot already read (or made by a replay)."""
    build = build or BuildConfig(pairs_per_seed=2)
    progress("1/3 data: search-feedback labelled by toxic-items and moderation-decisions, "
             f"newest {holdout:.0%} of the reviewed seeds held back for the gate")
    data = build_from_snapshot(snapshot, out / "data", build, holdout)
    progress(f"    {data['sft_rows']} SFT rows, {data['dpo_rows']} DPO pairs from "
             f"{data['split']['train_seeds']} seeds; {len(data['split']['holdout_seeds'])} held "
             f"back; labels: {data['positive_labels']} toxic, {data['negative_labels']} rejected")
    if not data["sft_rows"]:
        raise ValueError("no executed query has reviewed results that score above the "
                         f"threshold ({build.threshold}) yet: nothing to learn from")
    card = {"data_source": "topics", "split": data["split"]}
    progress("2/3 SFT")
    models = {"sft": str(train(out / "data" / "sft.jsonl", model, out / "sft",
                               sft_config or TrainConfig(stage="sft"), card, progress,
                               device=device))}
    if data["dpo_rows"]:
        progress("3/3 DPO")
        models["dpo"] = str(train(
            out / "data" / "dpo.jsonl", models["sft"], out / "dpo",
            dpo_config or TrainConfig(stage="dpo", learning_rate=2e-4, epochs=1), card,
            progress, device=device))
    else:
        progress("3/3 DPO skipped: no pair of a better and a clearly worse executed query")
    return {"data": data, "models": models, "final": models.get("dpo", models["sft"])}
