"""``train all`` end to end with a tiny model: it says how long each stage will take before it
starts, runs them all, and records what each took."""

from __future__ import annotations

import json

from qexplorer.marketplace.synthetic import generate_marketplace
from trainer.bootstrap import BootstrapConfig
from trainer.loop import run_all
from trainer.plan import DEFAULT_PACE, load_pace
from trainer.train import TrainConfig


def test_the_whole_loop_plans_runs_and_records_its_stages(tmp_path):
    items = generate_marketplace(n_benign=150, n_clusters=4, seed=3)
    heard: list[str] = []
    pace_file = tmp_path / "pace.json"
    result = run_all(
        {"tiny": items}, tmp_path / "run",
        bootstrap_config=BootstrapConfig(vocab_size=512, hidden_size=64, heads=2, layers=2,
                                         intermediate_size=128, steps=6, batch_size=8,
                                         max_length=160),
        sft_config=TrainConfig(stage="sft", epochs=1, batch_size=8),
        dpo_config=TrainConfig(stage="dpo", epochs=1, batch_size=8, learning_rate=2e-4),
        samples=1, max_seeds=6, max_train_seeds=8, progress=heard.append, device="cpu",
        pace_file=pace_file)

    first_stage = heard.index("1/6 bootstrap: tokenizer and small Llama from scratch")
    plan = heard[:first_stage]
    assert plan[0].startswith("plan") and plan[-1].strip().startswith("total")
    assert [line.split()[0] for line in plan[1:-1]] == list(DEFAULT_PACE)
    assert all("min" in line for line in plan[1:])

    timing = json.loads((tmp_path / "run" / "timing.json").read_text())
    assert list(timing) == list(DEFAULT_PACE)
    for stage in timing.values():
        assert stage["took_s"] > 0 and stage["planned_s"] > 0 and stage["units"] > 0
    assert timing["bootstrap"]["units"] == 6 and timing["eval"]["units"] == 3 * 6
    recorded = load_pace(pace_file, "bootstrapped")
    assert set(recorded) == set(DEFAULT_PACE)
    assert recorded["bootstrap"] == timing["bootstrap"]["took_s"] / 6
    assert any(line.startswith("took: bootstrap") for line in heard)

    # the evaluation has the run-time priors on their own and blended into the model
    row = result["eval"]["tiny"]
    assert {"contrast", "probe", "sft_dpo+contrast", "sft_dpo+probe", "oracle"} <= set(row)
