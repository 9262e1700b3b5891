"""The whole learning loop as one job: bootstrap, data, SFT, data again, DPO, evaluation.

``build_data`` turns the training split of each corpus into SFT and DPO rows (candidates from
spans, baselines and samples of the current model, scored by search against the labels).
``run_all`` chains the stages and leaves everything in one directory:

    DIR/base/        the bootstrapped model (unless one was given)
    DIR/data/        sft.jsonl, dpo.jsonl and their build statistics
    DIR/sft/ DIR/dpo/  the trained models (each with its qexplorer.json card)
    DIR/eval/        eval.json, eval.md, eval.png, combination.json

``run_loco`` runs it once a labelled set left out: trained on the others, judged on it.

``run_from_topics`` is the same loop on the system's own operation: one snapshot of the topics
(``trainer.feedback``), SFT and then DPO from a given model, each model card recording the time
split so the promotion gate (``trainer.gate``) judges on seeds the model never saw.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from agents.extractor.base import SeedText
from agents.extractor.device import Device
from qexplorer.config import KafkaSettings
from qexplorer.evaluation.evaluate import (
    baseline_extractors,
    evaluate,
    extract_all,
    model_extractor,
)
from qexplorer.evaluation.learned import FIT_SEEDS
from qexplorer.evaluation.loco import loco_table
from qexplorer.evaluation.scoring import Searcher
from qexplorer.marketplace.corpora import data_hash, sample_seeds, split_seeds
from qexplorer.marketplace.items import LabelledItem
from schemas.topics import Topics
from trainer.bootstrap import BootstrapConfig, bootstrap
from trainer.dataset import BuildConfig, baseline_queries, build_rows
from trainer.feedback import TopicsSnapshot, build_from_snapshot, read_topics
from trainer.plan import (
    DEFAULT_PACES,
    StagePlan,
    describe,
    load_pace,
    measured_pace,
    plan,
    save_pace,
    steps,
)
from trainer.train import CARD, TrainConfig, model_card, train, write_rows

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
            device: Device = "auto", pace_file: Path | None = None,
            judge: Mapping[str, Sequence[LabelledItem]] | None = None) -> dict:
    """Bootstrap (when no model is given), build data, SFT, build DPO data from the SFT model's
    samples, DPO, and evaluate base, SFT and SFT+DPO against the baselines. ``device``: where
    training runs (``agents.extractor.device``). ``judge``: evaluate on these corpora instead,
    none of which is trained on (the learned combination is fitted on ``corpora``).

    Before it starts it says how long each stage will take (``trainer.plan``, at the paces
    recorded in ``pace_file`` by the last run); at the end it writes what each took to
    ``timing.json`` and records the paces. A stage whose output is already in ``out`` (a model
    card, a data summary) is reused, so an interrupted run resumes; delete ``out`` to start
    over.
    """
    build = build or BuildConfig(pairs_per_seed=2)
    bootstrap_config = bootstrap_config or BootstrapConfig()
    sft_config = sft_config or TrainConfig(stage="sft")
    dpo_config = dpo_config or TrainConfig(stage="dpo", learning_rate=2e-4, epochs=1)
    pace_key = "bootstrapped" if model is None else model_card(model).get("version", model)
    recorded = None if pace_file is None else load_pace(pace_file, pace_key)
    pace = recorded if recorded is not None else DEFAULT_PACES.get(pace_key)
    stages_planned = _plan(corpora, judge or corpora, model is None, bootstrap_config,
                           sft_config, dpo_config, build, max_seeds, max_train_seeds, pace)
    progress("plan, at the paces " + (
        "the last run here measured:" if recorded is not None
        else "measured on the project's 2-core machine:" if pace is not None
        else "of the search stages (none recorded for this model yet):"))
    for line in describe(stages_planned):
        progress(line)
    took: dict[str, float] = {}

    def done(path: Path, what: str) -> bool:
        if path.exists():
            progress(f"    reusing {what} in {path.parent}")
        return path.exists()

    @contextmanager
    def timed(name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        took[name] = time.monotonic() - started

    if model is None:
        progress("1/6 bootstrap: tokenizer and small Llama from scratch")
        model = str(out / "base")
        if not done(out / "base" / CARD, "the base model"):
            pretrain = [i for items in corpora.values() for i in items]
            with timed("bootstrap"):
                bootstrap(pretrain, out / "base", bootstrap_config, k=build.k,
                          corpora={n: data_hash(i) for n, i in corpora.items()},
                          progress=progress, device=device)
    stages = [("sft", model, sft_config, 0), ("dpo", str(out / "sft"), dpo_config, samples)]
    for number, (stage, parent, config, n_samples) in enumerate(stages):
        # SFT data needs no samples: the bootstrapped model knows nothing yet
        progress(f"{2 + 2 * number}/6 {stage.upper()} data: spans, baselines"
                 + (" and the SFT model's samples" if n_samples else "") + ", scored by search")
        data_dir = out / "data" / stage
        if not done(data_dir / "stats.json", f"{stage} data"):
            with timed(f"{stage}_data"):
                build_data(corpora, data_dir, build, model=parent, samples=n_samples,
                           max_train_seeds=max_train_seeds, progress=progress)
        progress(f"{3 + 2 * number}/6 {stage.upper()}")
        if not done(out / stage / CARD, f"the {stage} model"):
            with timed(stage):
                train(data_dir / f"{stage}.jsonl", parent, out / stage, config,
                      progress=progress, device=device)
    progress("6/6 evaluation on the held-out seeds")
    models = {"base": model, "sft": str(out / "sft"), "sft_dpo": str(out / "dpo")}
    with timed("eval"):
        report = evaluate(judge or corpora, models, out / "eval", k=build.k,
                          max_seeds=max_seeds, progress=progress,
                          free_text=("sft", "sft_dpo") if build.generative else (),
                          fit_corpora=corpora if judge else None)
    _record_timing(out, stages_planned, took, pace_file, pace_key, progress)
    return {"models": models, "eval": report}


def _plan(corpora: Mapping[str, Sequence[LabelledItem]],
          judged: Mapping[str, Sequence[LabelledItem]], bootstrapping: bool,
          bootstrap_config: BootstrapConfig, sft_config: TrainConfig, dpo_config: TrainConfig,
          build: BuildConfig, max_seeds: int, max_train_seeds: int,
          pace: Mapping[str, float] | None) -> list[StagePlan]:
    """``trainer.plan.plan`` for these corpora (their splits give the seeds; the ``judged``
    ones' the evaluation seeds) and configs."""
    splits = {name: split_seeds(items) for name, items in {**corpora, **judged}.items()}
    return plan(sum(min(len(splits[name].train), max_train_seeds) for name in corpora),
                sum(min(len(splits[name].eval), max_seeds) for name in judged),
                bootstrap_steps=bootstrap_config.steps if bootstrapping else None,
                sft_epochs=sft_config.epochs, sft_batch=sft_config.batch_size,
                dpo_epochs=dpo_config.epochs, dpo_batch=dpo_config.batch_size,
                pairs_per_seed=build.pairs_per_seed, models=3, pace=pace,
                fit_seeds=sum(min(len(s.train), FIT_SEEDS) for s in splits.values()))


def _record_timing(out: Path, planned: Sequence[StagePlan], took: Mapping[str, float],
                   pace_file: Path | None, pace_key: str, progress: Progress) -> None:
    """Write ``timing.json`` (each stage's planned and measured seconds) and record the paces
    of the stages that ran (the units of the training stages as they turned out)."""
    units = {s.name: s.units for s in planned}
    for stage in ("sft", "dpo"):
        card = out / stage / CARD
        if stage in took and card.exists():
            made = json.loads(card.read_text())
            units[stage] = steps(made["data"]["rows"], made["hyperparameters"]["epochs"],
                                 made["hyperparameters"]["batch_size"])
    timing = {s.name: {"units": units[s.name], "unit": s.unit, "planned_s": s.seconds,
                       "took_s": took.get(s.name)} for s in planned}
    (out / "timing.json").write_text(json.dumps(timing, indent=1))
    progress("took: " + ", ".join(f"{name} {seconds / 60:.1f} min"
                                  for name, seconds in took.items())
             + f"; {sum(took.values()) / 60:.1f} min in all")
    if pace_file is not None and took:
        save_pace(pace_file, pace_key, measured_pace(took, units))


def run_loco(corpora: Mapping[str, Sequence[LabelledItem]], out: Path, *,
             held_out: Sequence[str] | None = None, progress: Progress = print,
             **run: Any) -> dict[str, dict]:
    """Leave one corpus out: for each of ``held_out`` (default: every corpus), the whole loop
    (:func:`run_all`, with ``run``'s options) trained on the other corpora and judged on it
    alone, in ``out/<name>/``. Writes ``out/loco.json`` (held-out corpus -> its report row)
    and ``out/loco.md`` (``qexplorer.evaluation.loco``, over all queries and at one query);
    returns the rows."""
    unknown = set(held_out or ()) - set(corpora)
    if unknown:
        raise ValueError(f"held out but not given: {', '.join(sorted(unknown))}")
    rows: dict[str, dict] = {}
    for name in held_out or list(corpora):
        others = {other: items for other, items in corpora.items() if other != name}
        if not others:
            raise ValueError(f"leaving {name} out leaves nothing to train on")
        progress(f"=== {name} held out: trained on {', '.join(others)}")
        result = run_all(others, out / name, judge={name: corpora[name]},
                         progress=progress, **run)
        rows[name] = result["eval"][name]
        out.mkdir(parents=True, exist_ok=True)
        (out / "loco.json").write_text(json.dumps(rows, indent=1))
        (out / "loco.md").write_text("\n".join(
            loco_table(rows, metric) for metric in ("precision_at_10", "first_precision_at_10")))
    return rows


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
