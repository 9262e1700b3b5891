"""The synthetic marketplace: deterministic, unique, labelled, disguised, bilingual."""

from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest

from qexplorer.marketplace.items import to_listing_dict
from qexplorer.marketplace.synthetic import (
    CLUSTERS,
    disguise,
    generate_marketplace,
    split_seeds,
    write_jsonl,
)
from schemas.models import ListingUpsert


def test_same_arguments_give_the_same_marketplace_and_another_seed_a_different_one():
    assert generate_marketplace(n_benign=300, seed=1) == generate_marketplace(n_benign=300, seed=1)
    assert generate_marketplace(n_benign=300, seed=1) != generate_marketplace(n_benign=300, seed=2)


def test_ids_and_texts_are_unique_and_every_item_is_a_valid_listing():
    items = generate_marketplace(n_benign=3_000, seed=3)
    assert len({i.id for i in items}) == len(items)
    assert len({(i.title, i.description) for i in items}) == len(items)
    for item in items:
        ListingUpsert(**to_listing_dict(item))


def test_clusters_are_labelled_sized_and_in_both_languages():
    items = generate_marketplace(n_benign=500, n_clusters=12, per_cluster=(8, 20), seed=4)
    sizes = Counter(i.cluster for i in items if i.harmful)
    assert set(sizes) == {c.name for c in CLUSTERS}
    assert all(8 <= n <= 20 for n in sizes.values())
    assert all(i.cluster is None for i in items if not i.harmful)
    languages = Counter((i.language, i.harmful) for i in items)
    assert languages[("zh", True)] and languages[("en", True)]
    assert languages[("zh", False)] and languages[("en", False)]


def test_small_cluster_counts_still_cover_both_languages():
    items = generate_marketplace(n_benign=10, n_clusters=2, seed=0)
    assert {i.language for i in items if i.harmful} == {"en", "zh"}
    with pytest.raises(ValueError):
        generate_marketplace(n_clusters=len(CLUSTERS) + 1)


def test_siblings_share_a_handle_and_toxic_text_is_disguised():
    items = generate_marketplace(n_benign=0, seed=5)
    for spec in CLUSTERS:
        members = [i for i in items if i.cluster == spec.name]
        # every sibling carries one of its network's contact handles
        assert all(any(h in i.description for h in spec.handles) for i in members)
    toxic_text = " ".join(i.text for i in items)
    assert any(ch in toxic_text for ch in "❄💊🍃")
    assert "s n o w" in toxic_text or "sn0w" in toxic_text or "$n0w" in toxic_text


def test_disguise_keeps_the_letters_recoverable():
    rng = random.Random(0)
    forms = {disguise("snow", rng, ("❄️",)) for _ in range(200)}
    assert {"snow", "s n o w", "$n0w", "SNOW"} <= forms
    assert any("❄️" in f for f in forms)
    assert any("·" in f or " " in f for f in {disguise("象牙", rng, ("🐘",)) for _ in range(50)})


def test_benign_pool_holds_innocent_look_alikes_of_the_code_words():
    benign = " ".join(i.text for i in generate_marketplace(n_benign=4_000, seed=6)
                      if not i.harmful)
    for word in ("snow", "powder", "candy", "冰糖", "叶子", "watch"):
        assert word in benign


def test_split_seeds_takes_a_share_of_each_cluster_and_leaves_siblings():
    items = generate_marketplace(n_benign=100, seed=8)
    seeds = split_seeds(items, 0.3, seed=1)
    assert seeds == split_seeds(items, 0.3, seed=1)
    assert all(s.harmful for s in seeds)
    per_cluster = Counter(s.cluster for s in seeds)
    sizes = Counter(i.cluster for i in items if i.harmful)
    for name, size in sizes.items():
        assert 1 <= per_cluster[name] < size
    everything = split_seeds(items, 1.0)
    assert all(per_cluster_all < sizes[c] for c, per_cluster_all in
               Counter(s.cluster for s in everything).items())
    with pytest.raises(ValueError):
        split_seeds(items, 0)


def test_write_jsonl_with_and_without_labels(tmp_path):
    items = generate_marketplace(n_benign=20, n_clusters=1, seed=9)
    write_jsonl(items, tmp_path / "labelled.jsonl")
    write_jsonl(items, tmp_path / "listings.jsonl", labels=False)
    labelled = [orjson.loads(x) for x in (tmp_path / "labelled.jsonl").read_bytes().splitlines()]
    bare = [orjson.loads(x) for x in (tmp_path / "listings.jsonl").read_bytes().splitlines()]
    assert [r["harmful"] for r in labelled] == [i.harmful for i in items]
    assert all("harmful" not in r and "cluster" not in r for r in bare)
    assert [ListingUpsert(**r).id for r in bare] == [i.id for i in items]
