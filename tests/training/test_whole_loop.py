"""``train all`` end to end with a tiny model: it says how long each stage will take before it
starts, runs them all, and records what each took."""

from __future__ import annotations

import json

import pytest

from qexplorer.evaluation.learned import FIT_SEEDS
from qexplorer.marketplace.corpora import split_seeds
from qexplorer.marketplace.synthetic import generate_marketplace
from trainer.bootstrap import BootstrapConfig
from trainer.loop import run_all, run_loco
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
    # three models on 6 evaluation seeds, and the last on the seeds the combination is fitted on
    fitted = min(len(split_seeds(items).train), FIT_SEEDS)
    assert timing["bootstrap"]["units"] == 6 and timing["eval"]["units"] == 3 * 6 + fitted
    recorded = load_pace(pace_file, "bootstrapped")
    assert set(recorded) == set(DEFAULT_PACE)
    assert recorded["bootstrap"] == timing["bootstrap"]["took_s"] / 6
    assert any(line.startswith("took: bootstrap") for line in heard)

    # the evaluation has the run-time priors on their own and blended into the model
    row = result["eval"]["tiny"]
    assert {"contrast", "probe", "sft_dpo+contrast", "sft_dpo+probe", "oracle"} <= set(row)
    # and the learned combination, fitted on the set's own training side (no other set here)
    assert "sft_dpo+learned_own" in row and "sft_dpo+learned" not in row
    learned = json.loads((tmp_path / "run" / "eval" / "eval_meta.json").read_text())["learned"]
    assert set(learned) == {"learned_own", "deploy"} and set(learned["learned_own"]) == {"tiny"}
    assert (tmp_path / "run" / "eval" / "combination.json").is_file()


def test_leaving_a_set_out_trains_on_the_others_and_judges_on_it_alone(tmp_path):
    seen = generate_marketplace(n_benign=150, n_clusters=4, seed=3)
    unseen = generate_marketplace(n_benign=150, n_clusters=4, seed=8)
    rows = run_loco(
        {"seen": seen, "unseen": unseen}, tmp_path / "loco", held_out=["unseen"],
        bootstrap_config=BootstrapConfig(vocab_size=512, hidden_size=64, heads=2, layers=2,
                                         intermediate_size=128, steps=4, batch_size=8,
                                         max_length=160),
        sft_config=TrainConfig(stage="sft", epochs=1, batch_size=8),
        dpo_config=TrainConfig(stage="dpo", epochs=1, batch_size=8, learning_rate=2e-4),
        samples=1, max_seeds=6, max_train_seeds=8, progress=lambda _: None, device="cpu")
    run = tmp_path / "loco" / "unseen"
    # trained on the other set only, judged on the held-out one only
    for stage in ("sft", "dpo"):
        stats = json.loads((run / "data" / stage / "stats.json").read_text())
        assert set(stats["corpora"]) == {"seen"}
    assert set(json.loads((run / "eval" / "eval.json").read_text())) == {"unseen"}
    assert set(rows) == {"unseen"} and {"base", "sft_dpo", "probe", "oracle"} <= set(rows["unseen"])
    # the combination judged on it was fitted on the training set; the own one on its own side
    learned = json.loads((run / "eval" / "eval_meta.json").read_text())["learned"]
    assert set(learned["learned"]["unseen"]["record"]["corpora"]) == {"seen"}
    assert set(learned["learned_own"]["unseen"]["record"]["corpora"]) == {"unseen"}
    table = (tmp_path / "loco" / "loco.md").read_text()
    assert "| unseen (6) |" in table and "first query alone" in table
    assert json.loads((tmp_path / "loco" / "loco.json").read_text()) == json.loads(
        json.dumps(rows))
    with pytest.raises(ValueError, match="not given: elsewhere"):
        run_loco({"seen": seen}, tmp_path / "x", held_out=["elsewhere"])
