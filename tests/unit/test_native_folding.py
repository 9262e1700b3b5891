"""The compiled folding and analysis (``search.folding``, native/fold/) against its Python
reference (``search.normalize``): the same fields, token for token, for every listing it folds
itself, on the synthetic marketplace, the labelled sets and generated disguises of each kind,
with the folding on and off; and it folds most listings itself (else it would be the reference
with extra steps)."""

from __future__ import annotations

import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from qexplorer.evaluation.disguises import CHINESE, ENGLISH
from qexplorer.marketplace.corpora import load_corpus
from qexplorer.marketplace.datasets import DATASETS, load_dataset
from qexplorer.marketplace.disguises import disguise_text
from qexplorer.search import folding
from qexplorer.search.normalize import analyze, index_fields, normalize


def _pairs(items) -> list[tuple[str, str]]:
    return [(i.title, i.description) for i in items]


def _check(pairs: list[tuple[str, str]], fold: bool = True) -> float:
    """Assert the extension's index fields of each pair it makes are the reference's; the
    share it made itself."""
    native = folding._folder().index_listings(pairs, fold)
    reference = [index_fields(*pair, fold=fold) for pair in pairs]
    mismatches = [(pair, got, want) for pair, got, want in zip(pairs, native, reference,
                                                              strict=True)
                  if got is not None and got != want]
    assert mismatches == [], mismatches[:3]
    assert folding.index_listings(pairs, fold) == reference
    return sum(got is not None for got in native) / len(pairs)


@pytest.mark.parametrize("fold", [True, False])
def test_the_synthetic_marketplace_folds_as_the_reference_and_mostly_natively(fold):
    _, items = load_corpus("synthetic")
    assert _check(_pairs(items), fold) > 0.9


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_each_labelled_set_folds_as_the_reference(name):
    try:
        items = load_dataset(name)
    except FileNotFoundError:
        pytest.skip("../shared/datasets is not beside the project")
    # the sets of plain text (not the emoji-heavy scam comments) are mostly folded natively
    least = {"sms_spam": 0.9, "dream_market": 0.9}.get(name, 0.0)
    assert _check(_pairs(items)) >= least


@pytest.mark.parametrize("kind", [*ENGLISH, *CHINESE])
def test_generated_disguises_fold_as_the_reference(kind):
    _, items = load_corpus("synthetic")
    rng = random.Random(kind)
    chinese = kind in CHINESE
    texts = [i.text for i in items if chinese == any("\u4e00" <= c <= "\u9fff" for c in i.text)]
    disguised = [disguise_text(t, kind, rng) for t in rng.sample(texts, min(600, len(texts)))]
    _check([(t.split("\n")[0], t) for t in disguised])


# characters of every class the folding treats apart: ASCII letters, digits and the symbols
# read as letters, separators and marks, controls, Han, full-width and accented letters,
# look-alikes, invisible characters, variation selectors, emoji and Chinese punctuation
_ALPHABET = ("abcdeilnostxyzABCOS0123456789@$!|.-_*#~+' \t\n\x00\x92"
             "冰糖白料货源，。！\u3000ｃｏＣＯ１é É ñ ß ﬁ ς σ ѕ о с \u200b\u200d\ufeff\u00ad"
             "\ufe0f·•’❄🚬📦ǂ²")


@settings(max_examples=1500, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=40))
@example("A\ufe0f")  # a selector after a Latin letter stays where the text is only lowercased
@example("\u00e9\ufe0f")  # and goes where it is folded
@example("S\ufe0f")  # S is the capital of a look-alike (ſ): that text is folded
@example("w1n\ufe0f c\u200b0caine")
def test_any_text_folds_as_the_reference(text):
    reference = normalize(text)
    found = folding._folder().normalize(text)
    if found is not None:
        assert found == (reference.text, list(reference.variants))
    assert folding.normalize(text) == reference  # what queries are folded with
    assert folding.analyze(text) == analyze(text)  # what query terms are cut into


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=_ALPHABET, max_size=40), st.text(alphabet=_ALPHABET, max_size=40),
       st.booleans())
@example("ΣΟΦΟΣ Σ", "", False)  # a final sigma is lowered by the reference
@example("x" * 39 + " " + "y" * 40, "é" * 20, True)  # the longest token kept, one dropped
def test_any_listing_is_indexed_as_the_reference(title, description, fold):
    found = folding._folder().index_listings([(title, description)], fold)[0]
    reference = index_fields(title, description, fold)
    if found is not None:
        assert found == reference
    assert folding.index_listing(title, description, fold) == reference


def test_a_lone_surrogate_is_folded_by_the_reference():
    pairs = [("\ud800 c0caine", "ok"), ("w33d", "")]
    assert folding.index_listings(pairs) == [index_fields(*p) for p in pairs]
    assert folding.normalize("\udfff w1n") == normalize("\udfff w1n")
    assert folding.analyze("\udfff w1n") == analyze("\udfff w1n")
