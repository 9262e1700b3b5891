"""How long ``train all`` will take, said before it starts, and what each stage then took.

A stage's time is its work times a pace: bootstrap, SFT and DPO steps, training seeds whose
candidates are scored by search (and, for DPO, sampled from the SFT model), evaluation seeds
run through every method. The work is known before the run from the corpora's splits and the
configs; only the SFT rows and DPO pairs are estimated (:data:`ROWS_PER_SEED`,
``pairs_per_seed``). The paces are those measured by the last run on this machine
(``pace.json`` in the models directory, written at the end of every run) or, on a first run,
:data:`DEFAULT_PACE` (measured on the project's 2-core machine). A model given with
``--model`` has no recorded pace until a run with it has finished: its training stages are
then "unknown" until the stage clock (``trainer.train.stage_clock``) has measured its first
steps.

Pure functions but :func:`load_pace` and :func:`save_pace`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainer.pretrained import version as pretrained_version

#: Seconds a unit of each stage's work: measured by ``train all --data`` on 10,018 short texts
#: (2 cores, no GPU, 2026-12-02; the bootstrapped 4.2M-parameter model).
DEFAULT_PACE: dict[str, float] = {
    "bootstrap": 1.31,  # a step, with tokenising the texts
    "sft_data": 0.09,  # a training seed
    "sft": 1.63,  # a step
    "dpo_data": 0.52,  # a training seed (with the SFT model's samples)
    "dpo": 1.70,  # a step
    "eval": 0.34,  # an evaluation seed and model (the probe, the three blend grids, the oracle)
}
#: Seconds a unit of each stage's work for the pinned pretrained model
#: (``trainer.pretrained``, its configs ``sft-pretrained.yaml`` and ``dpo-pretrained.yaml``):
#: measured by ``train all --pretrained --data`` on the same 10,018 texts from a fresh clone
#: (2026-12-07, 50 minutes; the SFT steps shared the cores with other work: about 5 s a step
#: on a quiet machine). A DPO step includes its share of the reference's log-probabilities.
PRETRAINED_PACE: dict[str, float] = {
    "sft_data": 0.032,  # a training seed
    "sft": 10.65,  # a step of 8 rows
    "dpo_data": 1.14,  # a training seed (the SFT model's span scores, sampled twice)
    "dpo": 12.4,  # a step of 8 pairs
    "eval": 1.03,  # an evaluation seed and model
}
#: The paces a first run plans with, by the model's pace key (``trainer.loop``).
DEFAULT_PACES: dict[str, dict[str, float]] = {"bootstrapped": DEFAULT_PACE,
                                              pretrained_version(): PRETRAINED_PACE}
#: SFT rows a training seed gives (one target, sometimes none; measured 1.0 and 1.1).
ROWS_PER_SEED = 1.05
#: Stages whose pace belongs to the model trained (the others are mostly search).
MODEL_STAGES = ("bootstrap", "sft", "dpo", "dpo_data", "eval")


@dataclass(frozen=True)
class StagePlan:
    """One stage: its work in units, and the seconds it should take (None: unknown)."""

    name: str
    units: float
    unit: str
    seconds: float | None


def steps(rows: float, epochs: float, batch_size: int) -> int:
    """Optimiser steps of a stage over ``rows`` rows."""
    return max(1, math.ceil(rows / batch_size) * math.ceil(epochs)) if rows else 0


def plan(train_seeds: int, eval_seeds: int, *, bootstrap_steps: int | None,
         sft_epochs: float, sft_batch: int, dpo_epochs: float, dpo_batch: int,
         pairs_per_seed: int, models: int, pace: Mapping[str, float] | None,
         fit_seeds: int = 0) -> list[StagePlan]:
    """The stages of ``train all`` with their work and time at ``pace`` (None: the model's
    pace is unknown; the search stages still use :data:`DEFAULT_PACE`). ``bootstrap_steps``
    None: no bootstrap (a model was given). ``fit_seeds``: training seeds the evaluation
    runs the last model on to fit the learned combination (one seed-model each)."""
    known = dict(DEFAULT_PACE) if pace is None else {**DEFAULT_PACE, **pace}

    def stage(name: str, units: float, unit: str) -> StagePlan:
        unknown = pace is None and name in MODEL_STAGES
        return StagePlan(name, units, unit, None if unknown else units * known[name])

    out = [] if bootstrap_steps is None else [stage("bootstrap", bootstrap_steps, "steps")]
    out += [stage("sft_data", train_seeds, "seeds"),
            stage("sft", steps(ROWS_PER_SEED * train_seeds, sft_epochs, sft_batch), "steps"),
            stage("dpo_data", train_seeds, "seeds"),
            stage("dpo", steps(pairs_per_seed * train_seeds, dpo_epochs, dpo_batch), "steps"),
            stage("eval", eval_seeds * models + fit_seeds, "seed-models")]
    return out


def describe(stages: Sequence[StagePlan]) -> list[str]:
    """Lines of the plan: each stage's work and time, then the total."""
    lines = [f"    {s.name:9s} {s.units:7.0f} {s.unit:11s} "
             + ("unknown" if s.seconds is None else f"about {s.seconds / 60:5.1f} min")
             for s in stages]
    known = [s.seconds for s in stages if s.seconds is not None]
    total = f"about {sum(known) / 60:.0f} min"
    if len(known) < len(stages):
        total += " and the stages marked unknown"
    return [*lines, f"    total     {total}"]


def measured_pace(took: Mapping[str, float], units: Mapping[str, float]) -> dict[str, float]:
    """Seconds a unit of each stage that ran (``took``: seconds; ``units``: its work)."""
    return {name: seconds / units[name] for name, seconds in took.items() if units.get(name)}


def load_pace(path: Path, model_key: str) -> dict[str, float] | None:
    """The paces recorded for ``model_key`` (the bootstrapped model's, or a given model's id),
    or None when none were."""
    try:
        return json.loads(path.read_text()).get(model_key)
    except (OSError, ValueError):
        return None


def save_pace(path: Path, model_key: str, pace: Mapping[str, float]) -> None:
    """Record ``pace`` for ``model_key`` (merged over what was there)."""
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        recorded = {}
    recorded[model_key] = {**recorded.get(model_key, {}), **pace}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(recorded, indent=1, sort_keys=True))
