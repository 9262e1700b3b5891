"""The disguise benchmark's parts: the disguises sellers use (``marketplace.disguises``), the
kept share and its interval, and one small run of the protocol on the synthetic marketplace
(``qexplorer.evaluation.disguises``)."""

from __future__ import annotations

import random

import pytest

from qexplorer.evaluation.disguises import disguise_items, evaluate_corpus, kept_share
from qexplorer.marketplace.disguises import KINDS, MIXED, ZH_KINDS, disguise_text, disguise_word
from qexplorer.marketplace.synthetic import generate_marketplace


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_changes_a_word_and_keeps_its_letters_recognisable(kind: str) -> None:
    rng = random.Random(3)
    for word in ("cocaine", "winner", "replica", "bitcoin"):
        disguised = disguise_word(word, kind, rng)
        assert disguised != word
        if kind in ("spaced", "zero_width", "repeat"):  # the letters stay, as written
            assert set(ch for ch in disguised.lower() if ch.isalpha()) == set(word)


@pytest.mark.parametrize("kind", ZH_KINDS)
def test_chinese_kinds_disguise_han_words(kind: str) -> None:
    text = "出 老冰糖 云南 批发"
    assert disguise_text(text, kind, random.Random(1), share=1.0) != text


def test_only_whole_words_of_a_share_are_disguised_and_handles_stay() -> None:
    text = "thanks @earn_profit_with_tyler0 for the great trading signals"
    out = disguise_text(text, "fullwidth", random.Random(0), share=1.0)
    assert "@earn_profit_with_tyler0" in out and "ｔｈａｎｋｓ" in out
    assert disguise_text(text, MIXED, random.Random(0), share=0.0) != text  # at least one word


def test_disguised_items_are_the_targets_only_and_the_same_every_run() -> None:
    items = generate_marketplace(n_benign=50, seed=1)
    targets = {i.id for i in items if i.harmful}
    first = disguise_items(items, targets, "leet", 0, 0.5)
    assert disguise_items(items, targets, "leet", 0, 0.5) == first
    for before, after in zip(items, first, strict=True):
        assert (before != after) <= (before.id in targets)
    assert any(b != a for b, a in zip(items, first, strict=True))


def test_kept_share_pools_seeds_and_bounds_its_interval() -> None:
    whole = kept_share([2, 3, 5], [2, 3, 5])
    assert whole["kept"] == whole["low"] == whole["high"] == 1.0
    half = kept_share([1, 0, 2, 1], [2, 2, 2, 2])
    assert half["kept"] == 0.5 and half["low"] <= 0.5 <= half["high"] < 1.0
    assert kept_share([1], [0])["kept"] is None


def test_folding_keeps_what_the_disguise_hides_on_the_synthetic_marketplace() -> None:
    items = generate_marketplace(n_benign=400, seed=7)
    result = evaluate_corpus("synthetic", items, ["fullwidth", "zero_width"], max_seeds=20,
                             language="en", progress=lambda _: None)
    for kind in ("fullwidth", "zero_width"):
        row = result["kinds"][kind]
        assert row["on"]["forward"]["kept"] >= 0.95
        assert row["off"]["forward"]["kept"] < row["on"]["forward"]["kept"]
