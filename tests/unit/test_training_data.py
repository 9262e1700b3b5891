"""Dataset construction: candidate scores, SFT targets, DPO pairs and margins, split leakage."""

from __future__ import annotations

import pytest

from agents.extractor.base import SeedText
from agents.prompt import build_prompt, format_completion, parse_completion
from agents.queries import seed_spans
from qexplorer.marketplace.corpora import load_corpus, mix_corpora, siblings, split_seeds
from qexplorer.marketplace.items import LabelledItem
from qexplorer.marketplace.synthetic import generate_marketplace
from trainer.dataset import (
    BuildConfig,
    Candidate,
    best_queries,
    build_rows,
    seed_rows,
)

SEED = SeedText("s1", "c0ke ❄️ premium", "Pure c0ke, fast delivery. tg @frosty_plug")
SCORES = {"c0ke": 0.9, "@frosty_plug": 1.0, "tg @frosty_plug": 0.95, "fast delivery": 0.1,
          "premium": 0.2}


def _score(query: str, seed_id: str) -> float:
    assert seed_id == "s1"
    return SCORES.get(query, 0.0)


def test_spans_are_distinct_valid_and_come_from_the_prompt_text():
    found = seed_spans(SEED.title, SEED.description, max_words=2, limit=100)
    assert "c0ke" in found and "@frosty_plug" in found and "fast delivery" in found
    assert "c0ke," not in found and "delivery." not in found
    assert len(found) == len(set(found))
    text = (SEED.title + " " + SEED.description).casefold()
    assert all(w.casefold() in text for q in found for w in q.split())
    assert len(seed_spans(SEED.title, SEED.description, max_words=3, limit=5)) == 5
    assert seed_spans(SEED.title, SEED.description, limit=5, rng_seed=1) == seed_spans(
        SEED.title, SEED.description, limit=5, rng_seed=1)


def test_best_queries_ranks_by_score_and_skips_overlaps_and_weak_ones():
    cands = [Candidate(q, "span", s) for q, s in SCORES.items()]
    best = best_queries(cands, k=4, threshold=0.5)
    # "tg @frosty_plug" contains the better "@frosty_plug": skipped; below 0.5: dropped
    assert [c.query for c in best] == ["@frosty_plug", "c0ke"]
    assert best_queries(cands, k=1, threshold=0.5)[0].query == "@frosty_plug"
    assert best_queries(cands, k=4, threshold=1.01) == []


def test_seed_rows_sft_target_and_dpo_pairs_with_a_clear_margin():
    config = BuildConfig(k=2, threshold=0.5, margin=0.3, max_words=2)
    baselines = {"yake": ["fast delivery", "premium"], "first_words": ["c0ke", "premium"]}
    sft, dpo, cands = seed_rows("test", SEED, _score, config, baselines,
                                samples=[["@frosty_plug", "c0ke"], ["premium"]])
    assert sft["prompt"] == build_prompt(SEED.title, SEED.description, 2)
    assert parse_completion(sft["completion"]) == ["@frosty_plug", "c0ke"]
    assert sft["scores"] == [1.0, 0.9] and sft["seed_id"] == "s1"
    # single-query pairs, hardest negatives first: the model's own pick, then baselines;
    # "@frosty_plug" and "c0ke" are within the margin of the targets and never rejected
    assert [p["rejected_source"] for p in dpo] == ["sample1", "yake", "worst_spans"]
    assert [(parse_completion(p["chosen"]), parse_completion(p["rejected"])) for p in dpo[:2]] \
        == [(["@frosty_plug"], ["premium"]), (["c0ke"], ["fast delivery"])]
    for pair in dpo:
        assert pair["prompt"] == sft["prompt"]
        assert pair["chosen_score"] - pair["rejected_score"] >= 0.3
    assert {c.query for c in cands} >= {"fast delivery", "premium", "@frosty_plug"}
    assert {c.source for c in cands} == {"span"}  # baselines here are spans of the seed too


def test_a_seed_without_any_good_query_gives_no_rows():
    sft, dpo, cands = seed_rows("test", SEED, lambda q, s: 0.1, BuildConfig(), {})
    assert sft is None and dpo == [] and cands


def test_build_rows_counts_and_uses_only_the_given_seeds():
    items = [LabelledItem("s1", SEED.title, SEED.description, harmful=True),
             LabelledItem("s2", "sofa", "grey sofa", harmful=True)]
    scores = {"s1": 0.9, "s2": 0.0}
    sft, _, stats = build_rows("test", items, lambda q, s: scores[s], BuildConfig(k=2),
                                 lambda seed: {})
    assert [r["seed_id"] for r in sft] == ["s1"]
    assert stats.seeds == 2 and stats.seeds_without_target == 1 and stats.sft_rows == 1


def test_split_by_cluster_never_puts_a_cluster_on_both_sides():
    items = generate_marketplace(n_benign=200, seed=3)
    split = split_seeds(items, eval_fraction=0.4, seed=1)
    train_clusters = {i.cluster for i in split.train}
    eval_clusters = {i.cluster for i in split.eval}
    assert train_clusters and eval_clusters and not train_clusters & eval_clusters
    assert len(split.train) + len(split.eval) == sum(i.harmful for i in items)
    assert split == split_seeds(items, eval_fraction=0.4, seed=1)


def test_without_clusters_the_split_is_a_fixed_random_one_and_all_harmful_are_siblings():
    items = [LabelledItem(f"i{n}", f"text {n}", harmful=n % 2 == 0) for n in range(40)]
    split = split_seeds(items, eval_fraction=0.25, seed=0)
    assert len(split.eval) == 5 and not {i.id for i in split.eval} & {i.id for i in split.train}
    sibs = siblings(items)
    assert sibs["i0"] == frozenset(f"i{n}" for n in range(2, 40, 2))
    assert "i1" not in sibs


def test_format_round_trips_the_targets():
    queries = ["@frosty_plug", "c 0 k e", "冰糖"]
    assert parse_completion(format_completion(queries)) == queries


def test_equal_scores_prefer_the_query_that_finds_more():
    narrow = Candidate("500", "span", 1.0, hits=2)
    broad = Candidate("claim prize", "span", 1.0, hits=9)
    assert [c.query for c in best_queries([narrow, broad], 2, 0.5)] == ["claim prize", "500"]


def test_generative_rows_take_spans_of_confirmed_finds_scored_by_the_seeds_kind():
    # "snowman" is not in the seed: only a confirmed find's spans can offer it
    kin = {"snowman": 1.0, "claim": 0.0, "c0ke": 0.6}
    config = BuildConfig(k=2, threshold=0.5, margin=0.3, max_words=1, generative=True,
                         reward="siblings")
    find = SeedText("n1", "snowman delivered", "claim now")
    sft, _, _ = seed_rows("test", SEED, lambda q, s: kin.get(q, 0.0), config, {},
                          neighbours=[find])
    assert sft["queries"] == ["snowman", "c0ke"]
    assert sft["sources"] == ["neighbour", "span"]
    assert "snowman" not in (SEED.title + SEED.description)
    # without the finds the target stays within the seed
    sft, _, _ = seed_rows("test", SEED, lambda q, s: kin.get(q, 0.0), config, {})
    assert sft["queries"] == ["c0ke"]


def test_an_unknown_reward_is_refused():
    with pytest.raises(ValueError, match="reward"):
        BuildConfig(reward="clicks")


def test_mixed_corpora_keep_every_item_with_ids_and_clusters_named_by_their_set():
    _, items = load_corpus("synthetic")
    mixed = mix_corpora(["synthetic"], seed=3)
    assert len(mixed) == len(items) and mixed != sorted(mixed, key=lambda i: i.id)
    assert {i.id for i in mixed} == {f"synthetic:{i.id}" for i in items}
    assert {i.cluster for i in mixed if i.cluster} == {
        f"synthetic:{i.cluster}" for i in items if i.cluster}
    assert mix_corpora(["synthetic"], seed=3) == mixed  # the same file from the same seed
