"""The loop running on itself inside a replay: a tiny model retrained from the replay's own
records (real TRL SFT and DPO), judged by the real promotion gate, mid-replay."""

from __future__ import annotations

from agents.extractor.keywords import TermCounts
from marketplace.synthetic import generate_marketplace
from trainer.bootstrap import BootstrapConfig, bootstrap
from trainer.curves import _text, initial_seeds, replay_market, retrainer, simulate
from trainer.evaluate import model_extractor
from trainer.scoring import Searcher
from trainer.train import TrainConfig, model_card


def test_a_replay_retrains_its_model_from_its_own_records_through_the_gate(tmp_path) -> None:
    items = generate_marketplace(n_benign=300, n_clusters=6, seed=5)
    market, known = replay_market(items, harmful_rate=0.2)
    base = bootstrap(items, tmp_path / "base", BootstrapConfig(
        vocab_size=512, hidden_size=64, heads=2, layers=2, intermediate_size=128, steps=10,
        batch_size=8, max_length=160), k=4)
    seeds = initial_seeds(market, 0.3, replay=0)
    judged = []
    hook = retrainer(str(base), market, tmp_path / "retrain", k=4, progress=judged.append,
                     sft_config=TrainConfig(stage="sft", epochs=3, batch_size=8,
                                            learning_rate=5e-3),
                     dpo_config=TrainConfig(stage="dpo", epochs=1, batch_size=8,
                                            learning_rate=2e-4))
    incumbent = model_extractor(str(base))
    replay = simulate(Searcher(market), incumbent, market, seeds,
                      confirmed=TermCounts(_text(i) for i in [*known, *seeds]), k=4,
                      retrain=hook, retrain_at=10)

    record = replay.retrained
    assert record is not None and record["at_reviews"] >= 10
    assert record["sft_rows"] > 0 and record["decision"] in {"promoted", "refused"}
    assert judged and judged[0].startswith("topics")  # the gate judged on the held-back seeds
    card = model_card(str(tmp_path / "retrain" / ("dpo" if record["dpo_rows"] else "sft")))
    assert card["data_source"] == "topics" and card["split"]["holdout_seeds"]
    versions = {f.model_version for f in replay.snapshot.feedback}
    if record["decision"] == "promoted":
        assert record["candidate_version"] in versions  # it explored the rest of the replay
    else:
        assert versions == {incumbent.model_version}
