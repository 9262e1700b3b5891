"""The Tantivy replica: upserts, deletes, offsets committed with the data, safe search."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
import tantivy
from hypothesis import given, settings
from hypothesis import strategies as st

from qexplorer.search.tantivy_index import (
    _META_FORMAT,
    ANALYZER,
    INDEX_FORMAT,
    IndexFormatError,
    TantivyIndex,
    analyzer,
    open_or_rebuild,
)
from schemas.codec import decode, encode
from schemas.models import ListingEvent, ListingUpsert


def _listing(id: str, title: str, description: str = "") -> ListingUpsert:
    return ListingUpsert(id=id, title=title, description=description)


@pytest.fixture
def index(tmp_path: Path) -> TantivyIndex:
    ix = TantivyIndex.open(tmp_path / "index")
    ix.upsert(_listing("a", "Fresh ❄️ snow from C O L O M B I A", "message me on tg"))
    ix.upsert(_listing("b", "冰糖 出售 飞行员", "加微信"))
    ix.upsert(_listing("c", "vintage oak chair", "solid wood, pick up only"))
    ix.commit({"listings": {0: 3}})
    yield ix
    ix.close()


def test_changes_are_visible_only_after_commit(tmp_path: Path) -> None:
    ix = TantivyIndex.open(tmp_path / "i")
    ix.upsert(_listing("x", "lamp"))
    assert ix.count() == 0 and ix.pending == 1
    ix.commit(None)
    assert ix.count() == 1 and ix.pending == 0


def test_upsert_replaces_and_delete_removes(index: TantivyIndex) -> None:
    index.upsert(_listing("c", "modern steel chair"))
    index.delete("a")
    index.commit({"listings": {0: 5}})
    assert index.ids() == {"b", "c"}
    assert index.get("c").title == "modern steel chair"
    assert index.search("oak", 10) == []


def test_a_hit_and_a_stored_listing_carry_the_title_and_description(
        index: TantivyIndex) -> None:
    [hit] = index.search("chair", 5)
    assert (hit.listing_id, hit.title, hit.description) == (
        "c", "vintage oak chair", "solid wood, pick up only")
    [hit] = index.search("加微信", 5)  # found by its description, which it reports
    assert (hit.title, hit.description) == ("冰糖 出售 飞行员", "加微信")
    assert index.get("a").description == "message me on tg"
    assert [h.description for h in index.search_many(["snow"], 5)[0]] == ["message me on tg"]


def test_a_listing_without_a_description_reports_an_empty_one(tmp_path: Path) -> None:
    ix = TantivyIndex.open(tmp_path / "i")
    ix.upsert(_listing("x", "brass lamp"))
    ix.commit(None)
    assert ix.get("x").description == "" and ix.search("lamp", 5)[0].description == ""
    ix.upsert(_listing("x", "brass lamp", "now with a shade"))  # a replaced description
    ix.commit(None)
    assert ix.get("x").description == "now with a shade"
    assert [h.description for h in ix.search("lamp", 5)] == ["now with a shade"]
    ix.close()


def test_the_longest_valid_description_is_stored_whole(tmp_path: Path) -> None:
    ix = TantivyIndex.open(tmp_path / "i")
    text = ("word " * 4_000)[:20_000]
    listing = _listing("x", "lamp", text)
    ix.upsert(listing, encode(listing))
    ix.commit(None)
    assert ix.get("x").description == text and ix.search("lamp", 1)[0].description == text
    ix.close()


@pytest.mark.parametrize("raw", [
    # what the codec leaves to its defaults, and fields the index does not hold
    b'{"schema_version":1,"op":"upsert","id":"m1","title":"red bike","price":12.5,'
    b'"created_at":"2026-01-01T00:00:00Z"}',
    # escapes, whitespace around the object, a key given twice (the last one wins, as it
    # does in validation)
    b'  {"schema_version":1,"op":"upsert","id":"\\u006d1","title":"old","title":"red bike",'
    b'"description":"\\ud83c\\udf43 line\\nfour","language":"en"}\n',
])
def test_a_listing_is_indexed_from_its_message_as_it_was_validated(tmp_path: Path,
                                                                    raw: bytes) -> None:
    ix = TantivyIndex.open(tmp_path / "i")
    listing = decode(ListingEvent, raw)
    ix.upsert(listing, raw)
    ix.commit(None)
    assert ix.get("m1").title == listing.title
    assert ix.get("m1").description == listing.description
    for text in filter(None, [listing.title, listing.description]):
        assert [h.listing_id for h in ix.search(text, 5)] == ["m1"]
    assert ix.search("old", 5) == []
    ix.close()


@pytest.mark.parametrize("listing_id", ["__meta__:offsets", "offsets", "format"])
def test_no_listing_id_can_touch_the_index_metadata(tmp_path: Path, listing_id: str) -> None:
    path = tmp_path / "i"
    ix = TantivyIndex.open(path)
    ix.upsert(_listing(listing_id, "red bike"))
    ix.commit({"listings": {0: 1}})
    ix.upsert(_listing(listing_id, "blue bike"))
    ix.commit({"listings": {0: 2}})
    ix.close()
    again = TantivyIndex.open(path)
    assert again.committed_offsets() == {"listings": {0: 2}}
    assert again.ids() == {listing_id} and again.get(listing_id).title == "blue bike"
    again.close()


def test_offsets_are_committed_with_the_data_and_survive_reopen(tmp_path: Path) -> None:
    path = tmp_path / "index"
    ix = TantivyIndex.open(path)
    ix.upsert(_listing("a", "x"))
    ix.commit({"listings": {0: 10, 3: 7}})
    ix.upsert(_listing("b", "y"))  # never committed: lost with the writer
    ix.close()
    again = TantivyIndex.open(path)
    assert again.committed_offsets() == {"listings": {0: 10, 3: 7}}
    assert again.ids() == {"a"}
    again.close()


def test_an_index_of_another_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "index"
    ix = TantivyIndex.open(path)
    ix._put_meta(_META_FORMAT, INDEX_FORMAT + 1)
    ix.commit(None)
    ix.close()
    with pytest.raises(IndexFormatError):
        TantivyIndex.open(path)


def _format_2_schema() -> tantivy.Schema:
    """The schema of INDEX_FORMAT 2 (before descriptions were stored)."""
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("id", stored=True, tokenizer_name="raw")
    builder.add_text_field("kind", stored=False, tokenizer_name="raw")
    builder.add_text_field("title", stored=True, tokenizer_name=ANALYZER)
    builder.add_text_field("description", stored=False, tokenizer_name=ANALYZER)
    builder.add_text_field("category", stored=False, tokenizer_name="raw")
    builder.add_text_field("seller", stored=False, tokenizer_name="raw")
    builder.add_text_field("language", stored=False, tokenizer_name="raw")
    builder.add_text_field("meta_key", stored=False, tokenizer_name="raw", index_option="basic")
    builder.add_text_field("meta", stored=True, tokenizer_name="raw", index_option="basic")
    return builder.build()


def test_a_format_2_index_without_descriptions_is_rebuilt_from_the_topic(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "index"
    with monkeypatch.context() as old:  # a worker of the previous version wrote it
        old.setattr("qexplorer.search.tantivy_index.INDEX_FORMAT", 2)
        old.setattr("qexplorer.search.tantivy_index._schema", _format_2_schema)
        ix = TantivyIndex.open(path)
        ix.upsert(_listing("a", "red bike", "fast wheels"))
        ix.commit({"listings": {0: 1}})
        ix.close()
    assert INDEX_FORMAT > 2
    rebuilt, reason = open_or_rebuild(path)
    assert reason is not None
    # empty, without offsets: the replica reads the topic from the beginning again
    assert rebuilt.count() == 0 and rebuilt.committed_offsets() == {}
    rebuilt.upsert(_listing("a", "red bike", "fast wheels"))
    rebuilt.commit({"listings": {0: 1}})
    assert rebuilt.get("a").description == "fast wheels"
    rebuilt.close()
    assert len(list(tmp_path.glob("index.broken-*"))) == 1  # the old replica, kept aside


def test_a_query_searched_again_is_not_parsed_again(index: TantivyIndex,
                                                     tmp_path: Path) -> None:
    first = index.parsed("Fresh snow 冰糖")
    assert first is not None and index.parsed("Fresh snow 冰糖") is first
    assert index.parsed("% %") is None and index.parsed("% %") is None  # nothing to search
    index.close()
    anew = TantivyIndex.open(tmp_path / "index", writable=False, parsed_queries=0)
    assert anew.parsed("Fresh snow 冰糖") is not anew.parsed("Fresh snow 冰糖")
    kept = TantivyIndex.open(tmp_path / "index", writable=False)
    for query in ("Fresh snow 冰糖", "snow", "C O L O M B I A", "冰糖", "% %"):
        for _ in range(2):  # parsed, then kept
            assert kept.search(query, 3) == anew.search(query, 3)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("snow", "a"),
        ("SNOW", "a"),
        ("❄️", "a"),
        ("C O L O M B I A", "a"),
        ("冰糖", "b"),
        ("飞行员", "b"),
        ("Oak Chair", "c"),
        ("title:chair", "c"),
        ("chair OR", "c"),
    ],
)
def test_search_finds_disguises_emoji_and_chinese(index: TantivyIndex, query: str,
                                                  expected: str) -> None:
    hits = index.search(query, 3)
    assert hits and hits[0].listing_id == expected
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


@pytest.mark.parametrize("query", ['"unbalanced', "*", "AND", "((((", "a" * 500, "\x00\x01",
                                   "field:", "a AND OR NOT b", "[1 TO 2]", "~2^3", " "])
def test_hostile_query_text_never_raises(index: TantivyIndex, query: str) -> None:
    assert isinstance(index.search(query, 5), list)


def test_search_excludes_ids_and_keeps_ranks_dense(index: TantivyIndex) -> None:
    index.upsert(_listing("d", "snow boots"))
    index.commit(None)
    hits = index.search("snow", 5, exclude=("a",))
    assert [h.listing_id for h in hits] == ["d"] and hits[0].rank == 1


def test_upsert_after_reopening_replaces_the_listing_of_an_earlier_run(tmp_path):
    index = TantivyIndex.open(tmp_path, threads=2)
    index.upsert(ListingUpsert(id="a", title="old red bicycle"))
    index.upsert(ListingUpsert(id="b", title="blue kettle"))
    index.commit({"listings": {0: 2}})
    index.close()
    reopened = TantivyIndex.open(tmp_path, threads=2)  # learns which ids exist
    reopened.upsert(ListingUpsert(id="a", title="new green bicycle"))
    reopened.upsert(ListingUpsert(id="c", title="green lamp"))
    reopened.commit({"listings": {0: 4}})
    assert reopened.count() == 3
    assert [h.listing_id for h in reopened.search("bicycle", 10)] == ["a"]
    assert reopened.search("old red", 10) == []
    assert {h.listing_id for h in reopened.search("green", 10)} == {"a", "c"}


def _damage(path, how: str) -> None:
    import os

    files = [f for f in path.iterdir() if f.is_file()]
    if how == "meta-garbage":
        (path / "meta.json").write_text("{not json")
    elif how == "segment-missing":
        for f in files:
            if f.suffix == ".idx":
                f.unlink()
    elif how == "segment-garbage":
        for f in files:
            if f.suffix == ".store":
                f.write_bytes(os.urandom(max(64, f.stat().st_size)))
    elif how == "all-garbage":
        for f in files:
            f.write_bytes(os.urandom(200))


@pytest.mark.parametrize("how", ["meta-garbage", "segment-missing", "segment-garbage",
                                 "all-garbage", "other-format"])
def test_a_damaged_index_is_moved_aside_and_rebuilt_empty(tmp_path, how, monkeypatch):
    path = tmp_path / "index"
    index = TantivyIndex.open(path)
    for n in range(20):
        index.upsert(ListingUpsert(id=f"l{n}", title=f"lamp {n}"))
    index.commit({"listings": {0: 20}})
    index.close()
    if how == "other-format":
        monkeypatch.setattr("qexplorer.search.tantivy_index.INDEX_FORMAT", INDEX_FORMAT + 1)
    else:
        _damage(path, how)
    rebuilt, reason = open_or_rebuild(path)
    assert reason is not None and rebuilt.count() == 0
    assert rebuilt.committed_offsets() == {}  # the replica starts the topic from the beginning
    [aside] = [p for p in tmp_path.iterdir() if p.name.startswith("index.broken-")]
    assert any(aside.iterdir())  # kept for a post-mortem


def test_a_sound_index_is_opened_as_it_is(tmp_path):
    index = TantivyIndex.open(tmp_path / "index")
    index.upsert(ListingUpsert(id="a", title="lamp"))
    index.commit({"listings": {0: 1}})
    index.close()
    reopened, reason = open_or_rebuild(tmp_path / "index")
    assert reason is None and reopened.count() == 1


# --- the analyzer ------------------------------------------------------------------------------

# CJK ideographs and radicals (all of Unicode's Han script in these blocks), and a sample of
# what listings hold around them: Latin with accents and combining marks, digits, Devanagari,
# emoji and other symbols, punctuation and spaces.
_HAN_BLOCKS = [(0x2E80, 0x2FD5), (0x3400, 0x4DBF), (0x4E00, 0x9FFF)]
_ALPHABET = st.one_of(
    st.sampled_from("abcXYZ019 ,.-_@#\t\n'\"()!?/"),
    st.characters(min_codepoint=0xC0, max_codepoint=0x17F),    # Latin-1, Latin Extended-A
    st.characters(min_codepoint=0x300, max_codepoint=0x36F),   # combining marks
    st.characters(min_codepoint=0x900, max_codepoint=0x97F),   # Devanagari
    st.characters(min_codepoint=0x2600, max_codepoint=0x27BF),  # symbols, dingbats
    st.characters(min_codepoint=0x1F300, max_codepoint=0x1F64F),  # emoji
    st.sampled_from("，。！「」：；"),                           # CJK punctuation
    *[st.characters(min_codepoint=a, max_codepoint=b) for a, b in _HAN_BLOCKS],
)


def _is_han(ch: str) -> bool:
    return any(a <= ord(ch) <= b for a, b in _HAN_BLOCKS) and unicodedata.category(ch) != "Cn"


def _reference_tokens(text: str) -> list[str]:
    """The analyzer's definition, spelled out: one token per Han character or symbol (So), one
    per run of other letters and digits that may continue with combining marks; tokens of 40
    UTF-8 bytes or more dropped; lowercased."""
    tokens: list[str] = []
    word = ""
    for ch in text:
        category = unicodedata.category(ch)
        if _is_han(ch) or category == "So":
            tokens += [word, ch] if word else [ch]
            word = ""
        elif category[0] in "LN" or (category[0] == "M" and word):
            word += ch
        elif word:
            tokens.append(word)
            word = ""
    tokens += [word] if word else []
    return [t.lower() for t in tokens if len(t.encode()) < 40]


@settings(max_examples=300, deadline=None)
@given(st.text(_ALPHABET, max_size=60))
def test_the_analyzer_tokenises_as_its_definition_says(text: str) -> None:
    assert analyzer().analyze(text) == _reference_tokens(text)
