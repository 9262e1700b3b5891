"""Training data from the live topics: feedback of a real worker joined with the moderators'
later decisions (confirmed toxic items and rejects)."""

from __future__ import annotations

import asyncio

import pytest

from agents.prompt import parse_completion
from qexplorer.kafka.io import publish
from qexplorer.marketplace.items import to_listing_dict
from qexplorer.marketplace.synthetic import generate_marketplace, split_seeds
from schemas.models import ListingUpsert, ModerationDecision, SearchFeedback, ToxicItem
from schemas.topics import LISTINGS, MODERATION_DECISIONS, TOXIC_ITEMS
from tests.integration.conftest import wait_for
from trainer.dataset import BuildConfig
from trainer.feedback import build_from_topics, read_topics
from trainer.train import read_rows

pytestmark = pytest.mark.integration


def _toxic(item, by="test"):
    return ToxicItem(id=item.id, title=item.title, description=item.description,
                     cluster=item.cluster, confirmed_by=by)


def test_feedback_scored_by_later_confirmations_becomes_sft_and_dpo_rows(cluster, tmp_path):
    items = generate_marketplace(n_benign=300, n_clusters=4, seed=21)
    by_id = {i.id: i for i in items}
    seeds = split_seeds(items, 0.3, seed=2)
    settings, topics = cluster.settings, cluster.settings.topics
    asyncio.run(publish(settings.kafka, topics, LISTINGS,
                        [ListingUpsert(**to_listing_dict(i)) for i in items]))
    asyncio.run(publish(settings.kafka, topics, TOXIC_ITEMS, [_toxic(s) for s in seeds]))
    cluster.start_worker()
    seed_ids = {s.id for s in seeds}
    wait_for(lambda: {f.seed_id for f in read_topics(settings.kafka, topics).feedback}
             >= seed_ids, 120, 1.0, lambda: f"seeds not explored:\n{cluster.log()}")

    # a moderator confirms every truly toxic listing the searches returned (it becomes a toxic
    # item) and rejects every innocent one
    found = {h.listing_id for f in read_topics(settings.kafka, topics).feedback for h in f.results}
    confirmed = [by_id[i] for i in sorted(found - seed_ids) if by_id[i].harmful]
    rejected = sorted(i for i in found if not by_id[i].harmful)
    assert confirmed and rejected, "the searches found no toxic or no innocent listing"
    asyncio.run(publish(settings.kafka, topics, TOXIC_ITEMS,
                        [_toxic(i, "moderator") for i in confirmed]))
    asyncio.run(publish(settings.kafka, topics, MODERATION_DECISIONS, [
        ModerationDecision(decision_id=f"reject-{i}", listing_id=i, decision="reject",
                           text_hash="h", reviewer="moderator") for i in rejected]))

    config = BuildConfig(k=4, threshold=0.5, margin=0.25)
    summary = build_from_topics(settings.kafka, topics, tmp_path, config, holdout=0.0)
    assert summary["invalid"] == 0 and summary["sft_rows"] > 0
    assert summary["decisions"] == len(rejected) and summary["negative_labels"] == len(rejected)
    truth = {i.id for i in items if i.harmful}
    feedback: list[SearchFeedback] = read_topics(settings.kafka, topics).feedback
    for row in read_rows(tmp_path / "sft.jsonl"):
        # every target query really found mostly toxic listings, by the ground truth
        for query, score in zip(row["queries"], row["scores"], strict=True):
            record = next(f for f in feedback if f.seed_id == row["seed_id"] and f.query == query)
            top = [h.listing_id for h in record.results if h.listing_id != row["seed_id"]][:10]
            assert score >= 0.5 and sum(i in truth for i in top) / len(top) >= 0.5
        assert parse_completion(row["completion"]) == row["queries"]
        assert row["seed_id"] in seed_ids or row["seed_id"] in {c.id for c in confirmed}
    for pair in read_rows(tmp_path / "dpo.jsonl"):
        assert pair["chosen_score"] - pair["rejected_score"] >= 0.25
