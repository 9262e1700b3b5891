"""The loop running on itself, on the real broker with a real worker and a tiny real model:
stream, explore, moderators' decisions, training from the topics, the promotion gate, new seeds
explored under the promoted version and the earlier ones explored again by it; a candidate
made worse on purpose is refused."""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from qexplorer.harness.processes import command
from qexplorer.kafka.io import publish
from qexplorer.marketplace.items import LabelledItem, to_listing_dict, to_toxic_dict
from schemas.models import Detection, ListingUpsert, ModelRollout, ModerationDecision, ToxicItem
from schemas.topics import LISTINGS, MODERATION_DECISIONS, TOXIC_ITEMS
from tests.integration.conftest import explored, read_records, wait_for
from trainer.bootstrap import BootstrapConfig, bootstrap
from trainer.dataset import BuildConfig
from trainer.loop import run_from_topics
from trainer.promote import promote, registry, serving_extractor
from trainer.train import CARD, TrainConfig, model_card

pytestmark = pytest.mark.integration

WORDS = ["fresh", "winter", "gear", "deal", "jacket", "boots", "warm", "wool", "coat", "scarf",
         "gloves", "hat", "sale", "new", "used", "size"]
CLUSTERS = 36


def disguised_marketplace(seed: int = 7) -> list[LabelledItem]:
    """Campaigns that share only a made-up code word, hidden among ordinary words that
    hundreds of innocent listings use: only the code word finds a campaign."""
    rng = random.Random(seed)
    items = []
    for c in range(CLUSTERS):
        code = "".join(rng.choice("bcdfghjkmnpqrstvwxz") for _ in range(3)) + f"{c % 10}x"
        for n in range(5):
            w = rng.sample(WORDS, 5)
            items.append(LabelledItem(f"t{c}-{n}", f"{w[0]} {w[1]} {code} {w[2]}",
                                      f"{w[3]} {w[4]} ask for {code}", harmful=True,
                                      cluster=f"c{c}"))
    for n in range(500):
        w = rng.sample(WORDS, 6)
        items.append(LabelledItem(f"b{n}", " ".join(w[:4]), f"{w[4]} {w[5]} ask for details"))
    return items


def damaged_copy(model: str, out: Path) -> Path:
    """The model with its weights scrambled by noise, under a version of its own."""
    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(model, out)
    damaged = AutoModelForCausalLM.from_pretrained(model)
    torch.manual_seed(0)
    with torch.no_grad():
        for weights in damaged.parameters():
            weights.add_(torch.randn_like(weights))
    damaged.save_pretrained(out)
    card = model_card(str(out))
    (out / CARD).write_text(json.dumps({**card, "version": f"{card['version']}-damaged"}))
    return out


def _cli(cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args),
                          env=cluster.cli_env(), capture_output=True, text=True, timeout=300)


def test_the_loop_trains_on_its_own_topics_and_promotes_only_through_the_gate(cluster,
                                                                               tmp_path):
    settings, topics = cluster.settings, cluster.settings.topics
    items = disguised_marketplace()
    truth = {i.id: i.harmful for i in items}
    asyncio.run(publish(settings.kafka, topics, LISTINGS,
                        [ListingUpsert(**to_listing_dict(i)) for i in items]))
    # the first seeds: one confirmed item of each of 24 campaigns, confirmed one after another
    seeds = [next(i for i in items if i.cluster == f"c{c}") for c in range(24)]
    asyncio.run(publish(settings.kafka, topics, TOXIC_ITEMS,
                        [ToxicItem(**to_toxic_dict(s, "moderator")) for s in seeds]))
    cluster.start_worker()  # keywords (YAKE) in service
    wait_for(lambda: explored(cluster, {s.id for s in seeds}), 180, 1.0,
             lambda: f"seeds not explored:\n{cluster.log()}")

    # the moderators decide every detected listing (the simulated moderator: ground truth)
    detected = {d.listing_id: d for d in read_records(cluster, topics.detections, Detection)}
    assert detected, "the seeds found nothing to review"
    asyncio.run(publish(settings.kafka, topics, MODERATION_DECISIONS, [
        ModerationDecision(decision_id=f"dec-{n:06d}", listing_id=listing,
                           decision="confirm" if truth[listing] else "reject",
                           text_hash="h", reviewer="sim", detection_keys=[d.key],
                           seed_ids=[d.seed_id], model_versions=[d.model_version])
        for n, (listing, d) in enumerate(sorted(detected.items()))]))
    assert {truth[x] for x in detected} == {True, False}  # YAKE's queries find innocent ones

    base = bootstrap(items, tmp_path / "base", BootstrapConfig(
        vocab_size=512, hidden_size=64, heads=2, layers=2, intermediate_size=128, steps=10,
        batch_size=8, max_length=160), k=4)
    labelled = {"disguised": items}

    # train from the topics: SFT then DPO from the base model, the newest seeds held back.
    # YAKE's queries here are common words whose top 10 hold 30-60% toxic items, the order of
    # equal BM25 scores varying with how the partitions were indexed: at the default target
    # threshold (0.5) a run sometimes had no target at all, so this one asks for 0.3.
    run = run_from_topics(settings.kafka, topics, tmp_path / "run", model=str(base),
                          sft_config=TrainConfig(stage="sft", epochs=5, batch_size=8,
                                                 learning_rate=5e-3),
                          dpo_config=TrainConfig(stage="dpo", epochs=1, batch_size=8,
                                                 learning_rate=2e-4),
                          build=BuildConfig(pairs_per_seed=2, threshold=0.3), progress=print)
    data = run["data"]
    held = set(data["split"]["holdout_seeds"])
    assert data["sft_rows"] > 0 and data["invalid"] == 0 and len(held) == 5
    assert data["negative_labels"] > 0 and data["positive_labels"] > len(seeds)
    rows = [json.loads(line) for line in (tmp_path / "run/data/sft.jsonl").open()]
    assert not {r["seed_id"] for r in rows} & held
    card = model_card(run["final"])
    assert card["split"] == data["split"] and card["data_source"] == "topics"

    promoted = promote(settings, run["final"], labelled, progress=print)
    assert promoted.decision == "promoted", promoted.reason
    assert promoted.incumbent_extractor == "keywords"
    assert [s.name for s in promoted.sets] == ["topics", "disguised"]
    assert promoted.sets[0].seeds + promoted.sets[0].skipped == len(held)
    assert promoted.ci95[0] > 0 and promoted.candidate_version == card["version"]
    assert serving_extractor(settings).model == run["final"]

    # a candidate made worse on purpose (the promoted weights, scrambled) is refused
    worse = damaged_copy(run["final"], tmp_path / "worse")
    refused = promote(settings, str(worse), labelled, progress=print)
    assert refused.decision == "refused", refused.reason
    # not better beyond the noise, or worse on a set (on this disguised marketplace, where
    # folded search lets almost any query of a seed find its siblings, the scrambled model may
    # tie the incumbent)
    assert refused.incumbent_version == card["version"]
    assert refused.ci95[0] <= 0 or any(s.ci95[1] < 0 for s in refused.sets)
    assert [e.decision for e in registry(settings)] == ["promoted", "refused"]
    assert [r.model for r in read_records(cluster, topics.rollouts, ModelRollout)] == \
        [run["final"]]  # the refused one never reached the workers
    assert serving_extractor(settings).model == run["final"]
    rollout = _cli(cluster, "rollout", "--extractor", "transformers", "--model", str(worse))
    assert rollout.returncode == 2 and "the gate refused" in rollout.stdout, rollout.stdout

    # the workers switch, and new seeds are explored under the promoted version
    wait_for(lambda: f"-> transformers {card['version']}" in cluster.full_log(), 180, 1.0,
             lambda: f"the worker did not switch:\n{cluster.log()}")
    new_seeds = [next(i for i in items if i.cluster == f"c{c}") for c in range(24, CLUSTERS)]
    asyncio.run(publish(settings.kafka, topics, TOXIC_ITEMS,
                        [ToxicItem(**to_toxic_dict(s, "moderator")) for s in new_seeds]))
    found = wait_for(lambda: explored(cluster, {s.id for s in new_seeds}), 180, 1.0,
                     lambda: f"new seeds not explored:\n{cluster.log()}")
    versions = {f.model_version for s in new_seeds for f in found[s.id]}
    assert versions == {card["version"]}, cluster.log()

    # and the seeds confirmed before it are explored again by it (re-exploration)
    def reexplored() -> bool:
        by_seed = explored(cluster, {s.id for s in seeds})
        return bool(by_seed) and all(
            card["version"] in {f.model_version for f in by_seed[s.id]} for s in seeds)

    wait_for(reexplored, 180, 1.0,
             lambda: f"the first seeds were not explored again:\n{cluster.log()}")
    wait_for(lambda: f"re-exploration under {card['version']} done" in cluster.full_log(), 120,
             1.0, lambda: f"the re-exploration did not finish:\n{cluster.log()}")

    listed = _cli(cluster, "models")
    assert listed.returncode == 0, listed.stderr
    assert card["version"] in listed.stdout and "refused" in listed.stdout
    assert "in service: transformers" in listed.stdout
