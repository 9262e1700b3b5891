"""The OpenSearch backend's pure parts, without a cluster: the documents it writes (the
Tantivy analysis, token for token), the queries it sends (the clauses Tantivy's parser makes),
index names, and the local cluster's configuration. The real cluster is in
tests/integration/test_opensearch_backend.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from qexplorer.config import OpenSearchSettings
from qexplorer.harness.opensearch import LocalOpenSearch, plugin_descriptor, render_node_config
from qexplorer.search.normalize import analyze
from qexplorer.search.opensearch_index import index_name, listing_document, query_clauses
from qexplorer.search.tantivy_index import analyzer, position_of
from schemas.models import ListingUpsert


def _listing(title: str, description: str = "") -> ListingUpsert:
    return ListingUpsert(id="a", title=title, description=description, seller="s", category="c")


@pytest.mark.parametrize("text", [
    "Selling FULLZ 冰糖 💊 x" + "y" * 45 + " café_au_lait",
    "ＣＡＳＨ w1n — Ünïcödé İstanbul ß 123abc ٣٤ naïve\u0301",
    "出售冰糖 mammoth ivory 🧊❄️ carving, 电报:kuaidai_88",
])
def test_analyze_gives_the_tantivy_analyzers_tokens(text: str) -> None:
    assert analyze(text) == analyzer().analyze(text)
    assert all(len(t.encode()) <= 39 for t in analyze(text)), "long tokens are dropped"


def test_a_disguised_listing_is_indexed_folded_and_shown_as_written() -> None:
    doc = listing_document(_listing("Ｃ０ＣＡＩＮＥ for sale", "w33d"), (3, 17))
    assert doc["title"].split() == ["cocaine", "for", "sale"]
    assert doc["shown"] == {"title": "Ｃ０ＣＡＩＮＥ for sale", "description": "w33d"}
    assert doc["kafka_pos"] == position_of(3, 17)
    assert doc["deleted"] is False
    plain = listing_document(_listing("lamp", ""), None, fold=False)
    assert plain["title"] == "lamp" and "kafka_pos" not in plain and "variants" not in plain


def test_chinese_listings_get_words_and_pinyin() -> None:
    doc = listing_document(_listing("出售冰糖", "最新 包下款"), None)
    assert "冰 糖" in doc["title"]
    assert "pinyin" in doc and "bing tang" in doc["pinyin"]


def test_a_query_becomes_the_clauses_tantivys_parser_makes() -> None:
    one = query_clauses("Lamp")
    assert one == {"bool": {"should": [{"term": {"title": "lamp"}},
                                       {"term": {"description": "lamp"}},
                                       {"term": {"variants": "lamp"}}]}}
    two = query_clauses("red lamp", fold=False)
    assert [c["bool"]["should"][0] for c in two["bool"]["should"]] == [
        {"term": {"title": "red"}}, {"term": {"title": "lamp"}}]
    # a Han run is a phrase of its characters, with the words and the sound beside it
    han = query_clauses("冰糖")
    clauses = han["bool"]["should"]
    assert clauses[0]["bool"]["should"][0] == {"match_phrase": {"title": "冰 糖"}}
    assert {"match_phrase": {"pinyin": "bing tang"}} in clauses


def test_query_syntax_never_reaches_the_engine() -> None:
    assert query_clauses("") is None
    assert query_clauses('"*" : ( ) ~') is None
    clauses = query_clauses("title:lamp OR x^2")
    text = str(clauses)
    assert "title:lamp" not in text and "^" not in text


def test_index_names_are_lowercase_and_carry_the_format() -> None:
    assert index_name("it-ab12.Listings") == "it-ab12.listings-v2"
    assert index_name("_odd name") == "odd-name-v2"


def test_the_local_cluster_config_names_every_node() -> None:
    cluster = LocalOpenSearch(OpenSearchSettings(local_nodes=2, local_http_port=9250,
                                                 local_transport_port=9350), Path("/x"))
    two = render_node_config(cluster, 2)
    assert "http.port: 9251" in two and "transport.port: 9351" in two
    assert '"127.0.0.1:9350", "127.0.0.1:9351"' in two
    assert 'cluster.initial_cluster_manager_nodes: ["node-1", "node-2"]' in two
    assert "network.host: 127.0.0.1" in two
    single = LocalOpenSearch(OpenSearchSettings(local_nodes=1), Path("/x"))
    assert "discovery.type: single-node" in render_node_config(single, 1)
    assert cluster.url(2) == "http://127.0.0.1:9251"
    descriptor = plugin_descriptor("analysis-common", "org.x.Plugin", "2.19.6")
    assert "classname=org.x.Plugin" in descriptor and "opensearch.version=2.19.6" in descriptor


def test_settings_name_the_local_cluster_unless_hosts_are_given() -> None:
    assert OpenSearchSettings().urls == ["http://127.0.0.1:9200", "http://127.0.0.1:9201"]
    given = OpenSearchSettings(hosts="https://a:9200/, https://b:9200")
    assert given.urls == ["https://a:9200", "https://b:9200"]
