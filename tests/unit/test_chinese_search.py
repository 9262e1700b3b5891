"""Chinese and mixed-language listings in the real in-memory index.

The index tokenises every Han character on its own, and ``search.query.to_search_text`` wraps
each run of Han characters in a query as a phrase, so a Chinese word matches only listings where
its characters stand together (however the seller spaced or dotted them), never listings that
merely share one character. These tests build an index of the synthetic marketplace and search
what the Chinese toxic networks of ``marketplace.synthetic`` use to hide: code words, homophone
contact prefixes (薇 for 微信, 扣 for QQ, 电报 for Telegram, ➕V), contact ids written next to
Chinese, emoji, and the queries the extractors derive from a Chinese seed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from agents.extractor.base import SeedText
from agents.extractor.keywords import KeywordsExtractor
from agents.queries import candidate_spans
from qexplorer.marketplace.items import LabelledItem, to_listing_dict
from qexplorer.marketplace.synthetic import _EMOJI, CLUSTERS, ClusterSpec, generate_marketplace
from qexplorer.search.tantivy_index import TantivyIndex, analyzer
from schemas.models import ListingUpsert

ZH_CLUSTERS: tuple[ClusterSpec, ...] = tuple(c for c in CLUSTERS if c.language == "zh")
SPEC = {c.name: c for c in CLUSTERS}
HAN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff]")
#: A search deep enough to return every listing that matches at all.
EVERYTHING = 5_000
#: Results an explorer looks at per query.
TOP = 10

_ANALYZER = analyzer()  # the index's own analyzer: what a listing's tokens are


# --- helpers -------------------------------------------------------------------------------------


def _tokens(text: str) -> list[str]:
    """Tokens of ``text`` as the index stores them."""
    return _ANALYZER.analyze(text)


def _in_fields(fields: tuple[list[str], ...], phrase: str) -> bool:
    """True when one of the tokenised fields holds ``phrase``'s tokens side by side (what a
    phrase query matches; title and description are separate fields)."""
    wanted = _tokens(phrase)
    return any(tokens[i:i + len(wanted)] == wanted
               for tokens in fields for i in range(len(tokens) - len(wanted) + 1))


def _holds(item: LabelledItem, phrase: str) -> bool:
    """True when the item's title or description holds ``phrase`` as a phrase query sees it."""
    return _in_fields((_tokens(item.title), _tokens(item.description)), phrase)


def _holding(tokenised: dict[str, tuple[list[str], ...]], phrase: str) -> set[str]:
    """Ids of the listings holding ``phrase``."""
    return {i for i, fields in tokenised.items() if _in_fields(fields, phrase)}


def _han_code_words() -> Iterator[tuple[str, str]]:
    """(cluster, code word) for every all-Han code word of the Chinese networks."""
    for spec in ZH_CLUSTERS:
        for word in spec.code_words:
            if all(HAN.match(ch) for ch in word):
                yield spec.name, word


def _contact_ids(spec: ClusterSpec) -> list[str]:
    """The network's contact ids: letter/digit tokens of its handles of 5+ characters with a
    digit (``bingtang520``, ``28371190``), in handle order."""
    ids: list[str] = []
    for handle in spec.handles:
        for token in _tokens(handle):
            if len(token) >= 5 and any(ch.isdigit() for ch in token) and token not in ids:
                ids.append(token)
    return ids


def _homophones(spec: ClusterSpec) -> list[str]:
    """The Chinese contact prefixes of the network's handles (薇 = 微信, 扣 = QQ, 电报 = TG)."""
    out: list[str] = []
    for handle in spec.handles:
        for run in re.findall(r"[\u4e00-\u9fff]+", handle):
            if run not in out:
                out.append(run)
    return out


def _ids(hits) -> list[str]:
    """Listing ids of search hits, in rank order."""
    return [h.listing_id for h in hits]


# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def market() -> dict[str, LabelledItem]:
    """The synthetic marketplace (both languages, all twelve networks), by listing id."""
    items = generate_marketplace(n_benign=2_000, n_clusters=len(CLUSTERS), seed=7)
    return {item.id: item for item in items}


@pytest.fixture(scope="module")
def tokenised(market: dict[str, LabelledItem]) -> dict[str, tuple[list[str], ...]]:
    """Every listing's title and description tokens, by listing id."""
    return {i: (_tokens(item.title), _tokens(item.description)) for i, item in market.items()}


@pytest.fixture(scope="module")
def index(market: dict[str, LabelledItem]) -> Iterator[TantivyIndex]:
    """An in-memory index of every listing of the marketplace."""
    ix = TantivyIndex.open(None)
    for item in market.values():
        ix.upsert(ListingUpsert(**to_listing_dict(item)))
    ix.commit(None)
    assert ix.count() == len(market)
    yield ix
    ix.close()


@pytest.fixture(scope="module")
def chinese_seeds(market: dict[str, LabelledItem]) -> list[LabelledItem]:
    """Every toxic listing of a Chinese network, each a seed with siblings to find."""
    seeds = [i for i in market.values() if i.harmful and i.language == "zh"]
    assert {s.cluster for s in seeds} == {c.name for c in ZH_CLUSTERS}
    return sorted(seeds, key=lambda i: i.id)


# --- code words as phrases -----------------------------------------------------------------------


@pytest.mark.parametrize(("cluster", "word"), list(_han_code_words()))
def test_a_chinese_code_word_finds_exactly_the_listings_holding_it(
        index: TantivyIndex, market: dict[str, LabelledItem], tokenised: dict,
        cluster: str, word: str) -> None:
    found = set(_ids(index.search(word, EVERYTHING)))
    holding = _holding(tokenised, word)
    assert holding <= found
    # beyond the listings holding it, a word finds (by its Chinese words and its sound) only its
    # own network's listings that break it up (包💰下款)
    assert all(market[i].cluster == cluster for i in found - holding), word
    siblings = {i for i in found if market[i].cluster == cluster}
    assert siblings, f"{word}: no listing of {cluster} found"
    outsiders = found - siblings
    # only an innocent look-alike (老冰糖 rock sugar, 绿萝 叶子 leaves) shares the word
    assert all(not market[i].harmful for i in outsiders), word
    if not outsiders:
        top = _ids(index.search(word, TOP))
        assert all(market[i].cluster == cluster for i in top)


def test_a_chinese_query_skips_listings_sharing_only_a_character(
        index: TantivyIndex, market: dict[str, LabelledItem], tokenised: dict) -> None:
    near_misses = 0
    for cluster, word in _han_code_words():
        found = set(_ids(index.search(word, EVERYTHING)))
        sharing = set().union(*(_holding(tokenised, ch) for ch in word)) - _holding(
            tokenised, word)
        # the only ones found: the network's own listings breaking the word up (包💰下款)
        assert all(market[i].cluster == cluster for i in found & sharing), word
        near_misses += len(sharing)
        # each character on its own does match those listings: the phrase is what excludes them
        for ch in set(word):
            assert sharing & _holding(tokenised, ch) <= set(_ids(index.search(ch, EVERYTHING)))
    assert near_misses > 100  # the marketplace does share characters across words


@pytest.mark.parametrize(("word", "unrelated"), [("白料", "无视黑白户"), ("老料", "老冰糖"),
                                                 ("飞行", "飞机模型 摆件"), ("口子", "叶子")])
def test_one_shared_character_is_not_a_match(word: str, unrelated: str) -> None:
    ix = TantivyIndex.open(None)
    try:
        ix.upsert(ListingUpsert(id="unrelated", title=unrelated, language="zh"))
        ix.upsert(ListingUpsert(id="toxic", title=f"上好 {word} 私聊", language="zh"))
        ix.commit(None)
        assert set(word) & set(unrelated)
        assert _ids(ix.search(word, TOP)) == ["toxic"]
    finally:
        ix.close()


def test_spaced_dotted_and_bracketed_disguises_are_found_by_the_plain_word(
        index: TantivyIndex, market: dict[str, LabelledItem]) -> None:
    disguised = 0
    for cluster, word in _han_code_words():
        forms = (" ".join(word), "·".join(word), f"【{word}】")
        found = set(_ids(index.search(word, EVERYTHING)))
        for listing_id, item in market.items():
            text = f"{item.title} {item.description}"
            hidden = any(form in text for form in forms[:2]) and word not in text
            if hidden or forms[2] in text:
                assert listing_id in found, (word, text)
                assert item.cluster == cluster
                disguised += hidden
    assert disguised >= 5


# --- contact ids, homophones and emoji -----------------------------------------------------------


def _id_cases() -> Iterator[tuple[str, str, str]]:
    """(cluster, contact id, query) with the id alone and after each Chinese homophone prefix,
    written without a space as sellers do (薇bingtang520)."""
    for spec in ZH_CLUSTERS:
        for contact in _contact_ids(spec):
            yield spec.name, contact, contact
            for prefix in _homophones(spec):
                yield spec.name, contact, f"{prefix}{contact}"


@pytest.mark.parametrize(("cluster", "contact", "query"), list(_id_cases()))
def test_a_contact_id_mixed_with_chinese_ranks_its_network_first(
        index: TantivyIndex, market: dict[str, LabelledItem], tokenised: dict, cluster: str,
        contact: str, query: str) -> None:
    holding = _holding(tokenised, contact)
    assert len(holding) >= 2
    assert all(market[i].cluster == cluster for i in holding)
    top = _ids(index.search(query, len(holding)))
    assert set(top) == holding, query


def test_every_chinese_network_has_a_contact_id_and_a_homophone() -> None:
    for spec in ZH_CLUSTERS:
        assert _contact_ids(spec), spec.name
        assert _homophones(spec), spec.name


@pytest.mark.parametrize("spec", [c for c in ZH_CLUSTERS if "➕V" in " ".join(c.handles)],
                         ids=lambda c: c.name)
def test_plus_v_handles_lead_with_their_network(index: TantivyIndex,
                                                market: dict[str, LabelledItem],
                                                spec: ClusterSpec) -> None:
    handle = next(h for h in spec.handles if h.startswith("➕V"))  # 加V: add me on WeChat
    top = _ids(index.search(handle, 3))
    assert len(top) == 3 and all(market[i].cluster == spec.name for i in top), handle


@pytest.mark.parametrize("spec", ZH_CLUSTERS, ids=lambda c: c.name)
def test_a_networks_own_emoji_finds_only_that_network(index: TantivyIndex,
                                                      market: dict[str, LabelledItem],
                                                      tokenised: dict,
                                                      spec: ClusterSpec) -> None:
    for emoji in _EMOJI[spec.name]:
        users = {name for name, icons in _EMOJI.items() if emoji in icons}
        found = set(_ids(index.search(emoji, EVERYTHING)))
        holding = _holding(tokenised, emoji)
        assert found == holding and found, emoji
        assert {market[i].cluster for i in found} <= users, emoji


@pytest.mark.parametrize(("word", "cluster"), [("冰糖", "ice"), ("叶子", "ice")])
def test_an_emoji_next_to_a_look_alike_word_never_lowers_the_network(
        index: TantivyIndex, market: dict[str, LabelledItem], tokenised: dict, word: str,
        cluster: str) -> None:
    benign = [i for i in _holding(tokenised, word) if not market[i].harmful]
    assert benign, f"{word} should have innocent look-alikes"
    emoji = _EMOJI[cluster][-1]

    def siblings(query: str) -> int:
        return sum(market[i].cluster == cluster for i in _ids(index.search(query, TOP)))

    # never fewer. (No longer always more: jieba makes 老冰糖 a word of its own, so the word
    # 冰糖 alone now ranks the network's listings holding 🧊 above the rock-sugar look-alikes.)
    assert siblings(f"{emoji}{word}") >= siblings(word)
    assert siblings(f"{word}{emoji}") == siblings(f"{emoji}{word}")


# --- queries the extractors derive from a Chinese seed -------------------------------------------


def _sibling_hits(index: TantivyIndex, market: dict[str, LabelledItem], seed: LabelledItem,
                  query: str) -> tuple[int, int]:
    """(siblings, all hits) in the top results of ``query``, the seed itself excluded."""
    hits = _ids(index.search(query, TOP, exclude=[seed.id]))
    return sum(market[i].cluster == seed.cluster for i in hits), len(hits)


def test_keyword_queries_of_a_chinese_seed_find_its_siblings(
        index: TantivyIndex, market: dict[str, LabelledItem],
        chinese_seeds: list[LabelledItem]) -> None:
    extractor = KeywordsExtractor("yake")
    extractions = extractor.extract_sync(
        [SeedText(s.id, s.title, s.description) for s in chinese_seeds], 4)
    found = total = 0
    for seed, extraction in zip(chinese_seeds, extractions, strict=True):
        assert 1 <= len(extraction.queries) <= 4, seed.id
        seed_found = 0
        for query in extraction.queries:
            assert _holds(seed, query), (query, seed.title, seed.description)  # a seed span
            siblings, hits = _sibling_hits(index, market, seed, query)
            seed_found += siblings
            found, total = found + siblings, total + hits
        assert seed_found, f"{seed.title} / {seed.description}: {extraction.queries}"
    assert found / total >= 0.5, f"sibling precision {found / total:.2f}"


def test_a_contact_id_in_a_chinese_seed_is_its_first_keyword_query(
        index: TantivyIndex, market: dict[str, LabelledItem],
        chinese_seeds: list[LabelledItem]) -> None:
    extractor = KeywordsExtractor("yake")
    checked = 0
    for seed in chinese_seeds:
        contacts = [c for c in _contact_ids(SPEC[seed.cluster])
                    if re.search(r"[a-z]", c) and c in seed.description]
        if not contacts:
            continue
        (extraction,) = extractor.extract_sync([SeedText(seed.id, seed.title,
                                                         seed.description)], 4)
        assert extraction.queries[0] == contacts[0], seed.description
        siblings, hits = _sibling_hits(index, market, seed, contacts[0])
        assert siblings == hits > 0, seed.description
        checked += 1
    assert checked >= 10


def test_candidate_spans_of_a_chinese_seed_hold_a_query_that_finds_only_siblings(
        index: TantivyIndex, market: dict[str, LabelledItem],
        chinese_seeds: list[LabelledItem]) -> None:
    for seed in chinese_seeds:
        spans = candidate_spans(seed.title, seed.description)
        assert spans and all(len(s) >= 2 for s in spans)
        counts = [_sibling_hits(index, market, seed, span) for span in spans]
        assert any(hits and siblings == hits for siblings, hits in counts), (
            f"no span of {seed.title} / {seed.description} finds only siblings")


def test_the_contact_span_of_a_chinese_seed_ranks_the_same_contact_first(
        index: TantivyIndex, market: dict[str, LabelledItem], tokenised: dict,
        chinese_seeds: list[LabelledItem]) -> None:
    checked = 0
    for seed in chinese_seeds:
        handle = next(h for h in SPEC[seed.cluster].handles if h in seed.description)
        spans = [s for s in candidate_spans(seed.title, seed.description)
                 if s in handle and any(ch.isdigit() for ch in s)]
        assert spans, (handle, seed.description)
        contact = min(spans, key=len)  # the id itself: 2837, ivory_888, bingtang520
        holders = _holding(tokenised, contact) - {seed.id}
        if not holders:  # the only listing with this spelling of the handle
            continue
        assert {market[i].cluster for i in holders} == {seed.cluster}
        top = _ids(index.search(contact, len(holders), exclude=[seed.id]))
        assert set(top) == holders, (contact, seed.description)
        checked += 1
    assert checked >= len(chinese_seeds) * 3 // 4
