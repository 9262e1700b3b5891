"""The loop running on itself inside a replay: a tiny model retrained from the replay's own
records (real TRL SFT and DPO), judged by the real promotion gate, mid-replay."""

from __future__ import annotations

import asyncio

import pytest

from agents.extractor.priors import TermCounts, WithToxic, probe_scores
from agents.queries import seed_spans
from qexplorer.evaluation.evaluate import model_extractor
from qexplorer.evaluation.scoring import Searcher
from qexplorer.marketplace.synthetic import generate_marketplace
from qexplorer.simulation.curves import (
    _text,
    extractors,
    initial_seeds,
    replay_market,
    retrainer,
    simulate,
)
from trainer.bootstrap import BootstrapConfig, bootstrap
from trainer.train import TrainConfig, model_card


@pytest.fixture(scope="module")
def items():
    return generate_marketplace(n_benign=300, n_clusters=6, seed=5)


@pytest.fixture(scope="module")
def base(items, tmp_path_factory):
    return bootstrap(items, tmp_path_factory.mktemp("base"), BootstrapConfig(
        vocab_size=512, hidden_size=64, heads=2, layers=2, intermediate_size=128, steps=10,
        batch_size=8, max_length=160), k=4)


def test_a_replay_retrains_its_model_from_its_own_records_through_the_gate(items, base,
                                                                           tmp_path) -> None:
    market, known = replay_market(items, harmful_rate=0.2)
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


def test_the_blended_model_ranks_by_the_replays_own_probe(items, base) -> None:
    market, _ = replay_market(items, harmful_rate=0.2)
    searcher = Searcher(market)
    harmful = [i for i in market if i.harmful]
    # half of the market's harmful items confirmed (as a replay goes on): the probe of the
    # other half's spans finds some of them
    confirmed = TermCounts(_text(i) for i in harmful[::2])
    factory = extractors([], str(base), [{"probe": 1e6}])["model+probe"]
    blended = factory(searcher, confirmed)
    assert blended.model_version.endswith("+probe1e+06")
    stats = WithToxic(searcher.index, confirmed, search=searcher.top_ids)
    seeds = [_text(i) for i in harmful[1::2]][:8]
    extractions = asyncio.run(blended.extract(seeds, 2))
    varied = 0
    for seed, extraction in zip(seeds, extractions, strict=True):
        spans = list(seed_spans(seed.title, seed.description, 3, 200, 0))
        scores = dict(zip(spans, probe_scores(seed, spans, stats), strict=True))
        varied += len(set(scores.values())) > 1
        # at this weight the probe decides; the model only orders spans the probe ties
        assert scores[extraction.queries[0]] == max(scores.values())
    assert varied >= 3  # the probe told spans apart on these seeds
