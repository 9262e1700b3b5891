"""How long ``train all`` will take: the plan's work and time, and the paces it records."""

from __future__ import annotations

import json
import re

import pytest

from trainer.plan import (
    DEFAULT_PACE,
    DEFAULT_PACES,
    PRETRAINED_PACE,
    ROWS_PER_SEED,
    describe,
    load_pace,
    measured_pace,
    plan,
    save_pace,
    steps,
)

CONFIGS = {"sft_epochs": 4, "sft_batch": 16, "dpo_epochs": 1, "dpo_batch": 16,
           "pairs_per_seed": 2, "models": 3}


def test_steps_count_whole_batches_and_whole_epochs():
    assert steps(299, 4, 16) == 19 * 4
    assert steps(584, 1, 16) == 37
    assert steps(0, 4, 16) == 0 and steps(1, 0.5, 16) == 1


def test_the_plan_is_the_work_times_the_pace():
    stages = plan(300, 300, bootstrap_steps=300, pace=DEFAULT_PACE, **CONFIGS)
    by_name = {s.name: s for s in stages}
    assert list(by_name) == ["bootstrap", "sft_data", "sft", "dpo_data", "dpo", "eval"]
    assert by_name["bootstrap"].units == 300
    assert by_name["sft"].units == steps(ROWS_PER_SEED * 300, 4, 16)
    assert by_name["dpo"].units == steps(600, 1, 16)
    assert by_name["eval"].units == 900
    for stage in stages:
        assert stage.seconds == pytest.approx(stage.units * DEFAULT_PACE[stage.name])
    # the measured run behind DEFAULT_PACE took 18 minutes; the plan says about as much
    assert 15 * 60 < sum(s.seconds for s in stages) < 21 * 60
    lines = describe(stages)
    assert lines[0].split()[:3] == ["bootstrap", "300", "steps"]
    assert re.fullmatch(r" +total +about 1[6-9] min", lines[-1])


def test_the_pretrained_model_plans_at_its_own_measured_pace_within_the_hour():
    from trainer.pretrained import version

    assert DEFAULT_PACES[version()] is PRETRAINED_PACE
    # the 10k-text set: 300 training and 300 evaluation seeds, the pretrained configs
    stages = plan(300, 300, bootstrap_steps=None, pace=PRETRAINED_PACE, sft_epochs=2,
                  sft_batch=8, dpo_epochs=1, dpo_batch=8, pairs_per_seed=2, models=3)
    assert [s.name for s in stages] == ["sft_data", "sft", "dpo_data", "dpo", "eval"]
    assert all(s.seconds is not None for s in stages)
    assert sum(s.seconds for s in stages) < 60 * 60


def test_a_given_model_without_a_recorded_pace_is_unknown_where_the_model_works():
    stages = plan(100, 50, bootstrap_steps=None, pace=None, **CONFIGS)
    assert stages[0].name == "sft_data"
    unknown = {s.name for s in stages if s.seconds is None}
    assert unknown == {"sft", "dpo_data", "dpo", "eval"}  # sft_data is search only
    assert describe(stages)[-1].endswith("and the stages marked unknown")


def test_paces_are_measured_per_unit_and_recorded_per_model(tmp_path):
    path = tmp_path / "pace.json"
    assert load_pace(path, "bootstrapped") is None
    pace = measured_pace({"sft": 120.0, "eval": 90.0, "dpo": 5.0}, {"sft": 60, "eval": 300})
    assert pace == {"sft": 2.0, "eval": 0.3}  # dpo without units is not a pace
    save_pace(path, "bootstrapped", pace)
    save_pace(path, "bootstrapped", {"eval": 0.5})
    save_pace(path, "Qwen/Qwen2.5-0.5B-Instruct", {"sft": 30.0})
    assert load_pace(path, "bootstrapped") == {"sft": 2.0, "eval": 0.5}
    assert json.loads(path.read_text())["Qwen/Qwen2.5-0.5B-Instruct"] == {"sft": 30.0}
    path.write_text("not json")
    assert load_pace(path, "bootstrapped") is None
