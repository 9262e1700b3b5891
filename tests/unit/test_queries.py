"""Query hygiene: cleaning keeps disguises, search text can never break Tantivy's parser."""

from __future__ import annotations

import pytest
import tantivy

from agents.queries import MAX_QUERY_CHARS, MAX_QUERY_TOKENS, clean_queries, is_valid_query
from qexplorer.search.query import MAX_SEARCH_TERMS, SYNTAX_CHARS, to_search_text
from qexplorer.search.tantivy_index import analyzer

# Analyzers a listing index may use: Tantivy's built-ins, a CJK bigram analyzer and
# QExplorer's own (Han characters, letter/digit runs and symbols as tokens).
ANALYZERS = ["default", "en_stem", "raw", "whitespace", "bigram", "qx"]
FIELDS = ["title", "description"]

NASTY = [
    "", " ", "\x00", "*", "*:*", "title:*", "foo:bar", "AND", "OR", "NOT", "IN", "TO",
    "a AND", "AND OR NOT", "x IN [a b]", "[a TO b]", "{a TO *]", "title:>5", "\"", '"""',
    "'", "'unclosed", "(", ")", "((a)", "+", "-", "+-", "-a", "+a -b", "a^2", "a^", "a~",
    "\"a b\"~3", "a*", "?", "/re.*gex/", "\\", "a\\", "a && b || !c", "<>", "=", "`x`",
    "% %", ". .", "$ $", "# #", "a b", "🔥 🎁", "©", "你", "你 好", "\"你\" \"好\"",
    "a" * 60 + " " + "b" * 60, "你" * 20 + " " + "好" * 20, "\U00020000" * 12,
    "\u3000a\u3000b", "a\u200bb", "\ud800", "\ufffd", "İ AND ǅ", "²½Ⅻ", "\u0300\u0903",
    "x " * 500, "title:R0LEX* AND cheap~2", "加微信abc123 OR 每天", "NOT NOT NOT",
]


def _index(tokenizer: str) -> tantivy.Index:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("title", stored=True, tokenizer_name=tokenizer)
    builder.add_text_field("description", stored=True, tokenizer_name=tokenizer)
    index = tantivy.Index(builder.build())
    index.register_tokenizer(
        "bigram",
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.ngram(2, 2))
        .filter(tantivy.Filter.lowercase()).build(),
    )
    index.register_tokenizer("qx", analyzer())
    writer = index.writer(15_000_000, 1)
    for title, desc in [
        ("Brand new R0LEX Submariner", "vx lux888 fast ship"),
        ("每天在家轻松赚钱", "加微信 abc123 日结工资"),
        ("Free iPhone 🎁🔥", "dm @freegift_22 AND claim"),
    ]:
        writer.add_document(tantivy.Document(title=title, description=desc))
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    return index


@pytest.fixture(scope="module")
def indexes() -> dict[str, tantivy.Index]:
    return {name: _index(name) for name in ANALYZERS}


# --- clean_queries ---------------------------------------------------------------------------


def test_control_and_zero_width_characters_are_removed():
    assert clean_queries(["R0lex\x00 w\u200b@tch\x1b", "a\tb\nc"], 5) == ["R0lex w@tch", "a b c"]


def test_whitespace_collapses_and_empties_and_punctuation_are_dropped():
    candidates = ["  lots   of\u3000space  ", "", "   ", "!!!", "...", "*:*", "-", "\u200b"]
    assert clean_queries(candidates, 10) == ["lots of space"]


def test_wrapping_quotes_are_removed():
    assert clean_queries(['"cheap rolex"', "“加微信”", "'x y'"], 5) == [
        "cheap rolex", "加微信", "x y",
    ]


def test_huge_inputs_are_bounded():
    out = clean_queries(["word " * 100_000, "x" * 1_000_000], 5)
    assert out[0] == " ".join(["word"] * MAX_QUERY_TOKENS)
    for q in out:
        assert len(q) <= MAX_QUERY_CHARS and len(q.split()) <= MAX_QUERY_TOKENS


def test_duplicates_are_dropped_case_insensitively_keeping_the_first():
    out = clean_queries(["R0lex Watch", "r0lex watch", "R0LEX  WATCH", "R0lex/watch", "other"], 5)
    assert out == ["R0lex Watch", "other"]
    # a hyphenated form also searches the word joined (rolexwatch): another query
    assert clean_queries(["R0lex Watch", "R0lex-watch"], 5) == ["R0lex Watch", "R0lex-watch"]


def test_at_most_k_queries():
    assert clean_queries([f"q{i}" for i in range(20)], 3) == ["q0", "q1", "q2"]
    assert clean_queries(["a b"], 0) == []


def test_query_syntax_is_kept_in_the_query_but_neutralised_for_search():
    out = clean_queries(["title:R0LEX* AND cheap", "v*agra", "NOT IN"], 5)
    assert out == ["title:R0LEX* AND cheap", "v*agra", "NOT IN"]
    # the leetspeak R0LEX is searched as the index holds it (disguise folding)
    assert to_search_text(out[0]) == "title rolex and cheap"
    assert to_search_text(out[0], fold=False) == "title r0lex and cheap"
    assert to_search_text(out[1]) == "v agra"
    assert to_search_text(out[2]) == "not in"


def test_chinese_emoji_and_odd_spellings_are_kept_intact():
    queries = ["加微信 vx888", "💊💊 fast", "ｖｉａｇｒａ", "V1AGRA", "👨\u200d👩\u200d👧 family"]
    assert clean_queries(queries, 10) == queries


def test_non_strings_are_ignored():
    assert clean_queries([None, 42, b"bytes", ["x"], "ok"], 5) == ["ok"]


def test_seed_text_restores_the_sellers_casing():
    out = clean_queries(["v1agra 100mg", "elsewhere"], 5, seed_text="Best V1AGRA 100MG here")
    assert out == ["V1AGRA 100MG", "elsewhere"]


@pytest.mark.parametrize(
    ("query", "valid"),
    [
        ("cheap rolex", True), ("加微信", True), ("🔥", True), ("a", True),
        ("", False), (" padded ", False), ("a  b", False), ("a\nb", False), ("!!!", False),
        ("x\u200by", False), ("*", False), ("w " * 9, False), ("x" * 81, False), (None, False),
    ],
)
def test_is_valid_query(query, valid):
    assert is_valid_query(query) is valid


# --- to_search_text --------------------------------------------------------------------------


def test_search_text_lowercases_operators_and_strips_syntax():
    text = to_search_text('+Title:(R0LEX OR "Rolex") AND -cheap~2^3 NOT x* IN [a TO b] /re/')
    assert not set(text) & set(SYNTAX_CHARS.replace('"', ""))
    assert '"' not in text
    assert text == "title rolex or rolex and cheap 2 3 not x in a to b re"  # r0lex folded


def test_search_text_quotes_han_runs():
    assert to_search_text("加微信abc123 每天") == '"加微信" abc123 "每天"'


def test_search_text_bounds_the_number_of_terms():
    assert len(to_search_text("wo " * 500).split()) == MAX_SEARCH_TERMS


def test_search_text_is_empty_when_nothing_is_searchable():
    assert to_search_text("% . $") == ""
    assert to_search_text("") == ""
    assert to_search_text(None) == ""  # type: ignore[arg-type]


def test_search_text_keeps_a_single_clause_when_no_term_is_safe_everywhere():
    # "% %"-like queries make Tantivy fail with "Only excluding terms given"
    assert to_search_text("🔥 🎁") == "🔥"


def test_spaced_out_han_characters_are_one_phrase():
    # a seller's 冰 糖 is the word 冰糖; searching only its first character would find sugar
    assert to_search_text("冰 糖") == '"冰糖"'
    assert to_search_text("你 好 abc 冰 糖") == '"你好" abc "冰糖"'
    assert to_search_text("冰糖 兵 糖") == '"冰糖" "兵糖"'
    assert to_search_text("冰糖 兵") == '"冰糖" "兵"'


@pytest.mark.parametrize("analyzer", ANALYZERS)
def test_nasty_inputs_parse_under_every_analyzer(indexes, analyzer):
    index = indexes[analyzer]
    for raw in NASTY:
        index.parse_query(to_search_text(raw), FIELDS)  # must not raise
        for q in clean_queries([raw], 1):
            index.parse_query(to_search_text(q), FIELDS)


def test_search_text_finds_the_listing(indexes):
    index = indexes["qx"]
    searcher = index.searcher()

    def top_title(q: str) -> str:
        # this index analyses the text as written: searched without the disguise folding
        hits = searcher.search(index.parse_query(to_search_text(q, fold=False), FIELDS),
                               1).hits
        return searcher.doc(hits[0][1]).get_first("title") if hits else ""

    assert top_title("R0LEX*") == "Brand new R0LEX Submariner"
    assert top_title("加微信") == "每天在家轻松赚钱"
    assert top_title("🎁") == "Free iPhone 🎁🔥"
    assert top_title("AND claim") == "Free iPhone 🎁🔥"


hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_PIECES = st.sampled_from([
    *(SYNTAX_CHARS + "$#%.,@_ aZ09你好\t\n\u3000\u200d\u200b²Ⅻ½\u0300©🔥"),
    "AND", "OR", "NOT", "IN", "TO", "title:", "*:*", "İ", "a" * 20, "你" * 7, "\U00020000",
])
QUERY_TEXT = st.one_of(
    st.text(max_size=60),
    st.lists(_PIECES, max_size=30).map("".join),
    st.lists(st.one_of(_PIECES, st.characters(codec=None)), max_size=20).map("".join),
)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(raw=QUERY_TEXT)
def test_property_no_input_breaks_the_parser(indexes, raw):
    text = to_search_text(raw)
    assert not set(text) & set(SYNTAX_CHARS.replace('"', ""))
    for index in indexes.values():
        index.parse_query(text, FIELDS)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(candidates=st.lists(QUERY_TEXT, max_size=6), k=st.integers(0, 5))
def test_property_clean_queries_are_valid_bounded_distinct_and_stable(candidates, k):
    out = clean_queries(candidates, k)
    assert len(out) <= k
    assert all(is_valid_query(q) for q in out)
    keys = [to_search_text(q).casefold() for q in out]
    assert len(set(keys)) == len(keys)
    assert clean_queries(out, k) == out
