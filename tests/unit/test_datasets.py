"""Readers of the real labelled sets and the generic JSONL format, and the marketplace sample."""

from __future__ import annotations

from collections import Counter

import pytest

from qexplorer.marketplace.datasets import (
    DATASETS,
    _split_title_description,
    dedupe_texts,
    load_dataset,
    marketplace_sample,
    read_jsonl,
)
from qexplorer.marketplace.items import LabelledItem

# rows and harmful rows of each set, as its README in ../shared/datasets states them
EXPECTED = {"sms_spam": (5_574, 747), "youtube_spam": (1_956, 1_005),
            "scamspot_instagram": (3_444, 1_150), "cryptoscamhunter": (2_300, 1_004),
            "dream_market": (1_504, 1_504)}


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_each_reader_gives_the_documented_rows_and_labels(name):
    try:
        items = load_dataset(name)
    except FileNotFoundError:
        pytest.skip("../shared/datasets is not beside the project")
    rows, harmful = EXPECTED[name]
    assert abs(len(items) - rows) <= 2  # a set may hold a blank or truncated row
    assert abs(sum(i.harmful for i in items) - harmful) <= 2
    assert len({i.id for i in items}) == len(items)
    assert all(i.title or i.description for i in items)


def test_max_items_is_a_seeded_sample():
    try:
        a = load_dataset("sms_spam", max_items=100, seed=1)
    except FileNotFoundError:
        pytest.skip("../shared/datasets is not beside the project")
    assert a == load_dataset("sms_spam", max_items=100, seed=1)
    assert len(a) == 100 and a != load_dataset("sms_spam", max_items=100, seed=2)


def test_missing_folder_and_unknown_name(monkeypatch, tmp_path):
    monkeypatch.setenv("QEXPLORER_DATASETS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError):
        load_dataset("sms_spam")
    with pytest.raises(KeyError):
        load_dataset("no_such_set")


def test_cryptoscamhunter_lines_split_into_title_and_description():
    assert _split_title_description('Bot review,"Free ""bot"", here"') == (
        "Bot review", 'Free "bot", here')
    assert _split_title_description('"A, quoted title",the description') == (
        "A, quoted title", "the description")
    assert _split_title_description('"Only a title"') == ("Only a title", "")


def test_generic_jsonl_reader(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text('{"id": "a", "text": "cheap pills", "harmful": true, "cluster": 3}\n\n'
                    '{"id": "b", "title": "sofa", "description": "grey", "harmful": false}\n')
    a, b = read_jsonl(path)
    assert a == LabelledItem(id="a", title="cheap pills", harmful=True, cluster="3")
    assert (b.title, b.description, b.harmful, b.cluster) == ("sofa", "grey", False, None)
    path.write_text('{"id": "a", "text": "x", "harmful": "yes"}\n')
    with pytest.raises(ValueError, match=r"set\.jsonl:1"):
        read_jsonl(path)


def _item(n, harmful, cluster=None, text=None):
    return LabelledItem(id=f"i{n:03d}", title=text or f"text {n}", harmful=harmful,
                        cluster=cluster)


def test_dedupe_keeps_the_first_of_each_normalised_text():
    items = [_item(1, True, text="Win  a PRIZE"), _item(2, True, text="win a prize"),
             _item(3, False, text="sofa")]
    assert [i.id for i in dedupe_texts(items)] == ["i001", "i003"]


def test_marketplace_sample_keeps_benign_and_samples_clusters_with_siblings():
    benign = [_item(n, False) for n in range(880)]
    harmful = [_item(1000 + n, True, cluster=f"c{n % 40}") for n in range(400)]
    sample = marketplace_sample(benign + harmful, harmful_rate=0.12, seed=0)
    kept = [i for i in sample if i.harmful]
    assert [i for i in sample if not i.harmful] == benign
    assert all(n >= 2 for n in Counter(i.cluster for i in kept).values())
    assert 0.08 <= len(kept) / len(sample) <= 0.2
    assert sample == marketplace_sample(benign + harmful, harmful_rate=0.12, seed=0)


def test_an_all_harmful_set_is_mixed_into_synthetic_benign_listings():
    harmful = [_item(n, True, cluster=f"v{n % 5}") for n in range(50)]
    sample = marketplace_sample(harmful, harmful_rate=0.12)
    assert sum(not i.harmful for i in sample) == 200
    assert len({i.id for i in sample}) == len(sample)
