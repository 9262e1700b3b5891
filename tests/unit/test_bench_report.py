"""The benchmark report's pure parts: percentiles, spreads and ratios, the Markdown table,
and the bookkeeping that turns timestamps into latencies (no broker, no clock)."""

from __future__ import annotations

import pytest

from agents.extractor.priors import STOPWORDS
from agents.watcher import arrivals_of
from bench.common import prometheus_samples
from bench.exploration import phase_figures as explore_figures
from bench.exploration import worker_metrics
from bench.freshness import phase_figures as fresh_figures
from bench.freshness import (
    searchable_at,
    standing_figures,
    standing_report,
    with_relistings,
    worker_delta,
)
from bench.report import comparison, fmt, latency_summary, markdown, percentile, spread, table
from bench.run import capped, failed, parse_only
from bench.scaling import sizes_up_to
from bench.standing import Stream, messages_of, positioned, query_pool, shares, words_of
from bench.standing import rows as standing_rows
from schemas.models import ListingUpsert


def test_percentile_interpolates_between_closest_ranks_like_numpy() -> None:
    values = [15, 20, 35, 40, 50]
    assert percentile(values, 0) == 15
    assert percentile(values, 100) == 50
    assert percentile(values, 50) == 35
    assert percentile(values, 40) == pytest.approx(29.0)  # numpy.percentile: 29.0
    assert percentile(values, 95) == pytest.approx(48.0)
    assert percentile(reversed(values), 95) == pytest.approx(48.0)  # order does not matter
    assert percentile([7.0], 99) == 7.0


@pytest.mark.parametrize("values,q", [([], 50), ([1.0], -1), ([1.0], 101)])
def test_percentile_refuses_no_values_and_out_of_range(values, q) -> None:
    with pytest.raises(ValueError):
        percentile(values, q)


def test_latency_summary_reports_milliseconds() -> None:
    summary = latency_summary([0.001 * k for k in range(1, 101)])
    assert summary["n"] == 100
    assert summary["p50_ms"] == pytest.approx(50.5)
    assert summary["p99_ms"] == pytest.approx(99.01)
    assert summary["max_ms"] == pytest.approx(100)
    assert latency_summary([]) == {"n": 0}


def test_spread_is_median_min_max_over_repeats() -> None:
    s = spread([3.0, 1.0, 10.0, 2.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.5, 1.0, 10.0, 4)
    assert s["values"] == [3.0, 1.0, 10.0, 2.0]
    with pytest.raises(ValueError):
        spread([])


def test_comparison_ratio_is_pipeline_median_over_ceiling_median() -> None:
    row = comparison("indexing", "listings/s", "/s", [10.0, 20.0, 30.0],
                     ceiling=[100.0, 50.0, 300.0], ceiling_name="raw")
    assert row["ratio"] == pytest.approx(20 / 100)
    assert row["ceiling"]["name"] == "raw"
    # paired per repeat: 0.1, 0.4, 0.1
    assert row["ratio_per_repeat"]["median"] == pytest.approx(0.1)
    assert row["ratio_per_repeat"]["max"] == pytest.approx(0.4)


def test_comparison_without_ceiling_has_no_ratio_and_checks_its_arguments() -> None:
    row = comparison("scaling", "disk", "MB", [1.5], better="lower")
    assert row["ceiling"] is None and row["ratio"] is None and row["ratio_per_repeat"] is None
    unpaired = comparison("x", "y", "/s", [1.0, 2.0], ceiling=[4.0])
    assert unpaired["ratio"] == pytest.approx(1.5 / 4) and unpaired["ratio_per_repeat"] is None
    with pytest.raises(ValueError):
        comparison("x", "y", "furlongs", [1.0])
    with pytest.raises(ValueError):
        comparison("x", "y", "ms", [1.0], better="faster")


def test_numbers_are_printed_per_unit() -> None:
    assert fmt(224840.4, "/s") == "224,840"
    assert fmt(30.391, "/s") == "30.39"
    assert fmt(303.71, "ms") == "303.7"
    assert fmt(0.0412, "ms") == "0.04"
    assert fmt(None, "ms") == "-"


def _report() -> dict:
    rows = [comparison("indexing", "pipeline listings/s", "/s", [29016.0, 23533.0, 30093.0],
                       ceiling=[224840.0, 221736.0, 288856.0], ceiling_name="raw_tantivy"),
            comparison("freshness", "200/s p50", "ms", [300.0], ceiling=[500.0],
                       ceiling_name="commit interval", better="lower"),
            comparison("scaling", "disk", "MB", [1.7], better="lower")]
    return {"command": "qexplorer bench --out x", "started_at": "2026-11-24T19:00:00+00:00",
            "duration_s": 312.4, "params": {"size": None, "repeats": 3},
            "machine": {"platform": "Linux", "cpus": 2, "python": "3.11.7",
                        "versions": {"tantivy": "0.27.0", "aiokafka": "0.14.0",
                                     "faust-streaming": "0.15.3"}},
            "git": {"commit": "b8c9030e1f65aaaa", "dirty_files": ["agents/index.py"]},
            "benchmarks": {"indexing": {"rows": rows[:1], "notes": ["published once"],
                                        "duration_s": 40.0},
                           "freshness": {"rows": rows[1:2], "duration_s": 80.0},
                           "scaling": {"rows": rows[2:], "duration_s": 3.0},
                           "exploration": {"rows": [], "error": "TimeoutError: no feedback",
                                           "duration_s": 1.0}}}


def test_table_has_a_header_and_one_line_per_row_with_the_same_columns() -> None:
    rows = [row for b in _report()["benchmarks"].values() for row in b["rows"]]
    lines = table(rows).strip().splitlines()
    assert len(lines) == 2 + len(rows)
    assert {line.count("|") for line in lines} == {10}
    assert lines[2] == ("| indexing | pipeline listings/s | /s | 29,016 | 23,533-30,093 | "
                        "raw_tantivy | 224,840 | 221,736-288,856 | 0.13 |")
    assert lines[4].endswith("| - | - | - | - |")  # no ceiling, no ratio


def test_markdown_names_the_command_machine_code_and_every_benchmark() -> None:
    text = markdown(_report())
    assert "`qexplorer bench --out x`" in text
    assert "2 cpus" in text and "tantivy 0.27.0" in text and "faust-streaming 0.15.3" in text
    assert "b8c9030e1f65 with 1 uncommitted files" in text
    for name in ("indexing", "freshness", "scaling", "exploration"):
        assert f"## {name}" in text
    assert "- FAILED: TimeoutError: no feedback" in text
    assert "- published once" in text
    assert text.count("| indexing |") == 1 and text.count("| freshness |") == 1


def test_failed_lists_the_benchmarks_with_errors() -> None:
    assert failed(_report()) == ["exploration"]


def test_a_listing_is_searchable_at_the_first_commit_past_its_offset() -> None:
    timeline = [(10.0, {}), (10.5, {0: 2, 1: 1}), (11.0, {0: 2, 1: 5}), (11.5, {0: 9, 1: 5})]
    sent = [(0, 0, 9.9, 9.91), (0, 1, 9.95, 9.96), (1, 1, 10.2, 10.21), (0, 2, 10.6, 10.61),
            (1, 7, 11.2, 11.21)]
    assert searchable_at(timeline, sent) == [10.5, 10.5, 11.0, 11.5, None]
    figures = fresh_figures(sent, searchable_at(timeline, sent))
    assert figures["published"] == 5 and figures["never_seen"] == 1
    assert figures["searchable"]["n"] == 4
    assert figures["searchable"]["max_ms"] == pytest.approx(900.0)  # 10.6 -> 11.5
    assert figures["acknowledged"]["p50_ms"] == pytest.approx(10.0)
    assert figures["rate_achieved"] == pytest.approx(4 / 1.3)


def test_exploration_latency_is_last_feedback_minus_seed_and_rate_spans_the_phase() -> None:
    seed_ts = {"a": 100.0, "b": 100.5, "c": 101.0}
    feedback = {"a": [100.2, 100.4], "b": [101.5], "x": [90.0]}
    figures = explore_figures(seed_ts, feedback, ["a", "b", "c"])
    assert figures["explored"] == 2 and figures["seeds"] == 3
    assert figures["latency"]["max_ms"] == pytest.approx(1000.0)
    assert figures["latency"]["p50_ms"] == pytest.approx(700.0)
    assert figures["seeds_per_s"] == pytest.approx(2 / 1.5)


def test_worker_metrics_are_read_from_the_prometheus_text() -> None:
    samples = prometheus_samples(
        "# HELP qexplorer_latency_seconds x\n"
        'qexplorer_latency_seconds_count{stage="extract"} 4.0\n'
        'qexplorer_latency_seconds_sum{stage="extract"} 0.2\n'
        "qexplorer_seeds_explored_total 12.0\n"
        "garbage line\n")
    assert samples["qexplorer_seeds_explored_total"] == 12.0
    metrics = worker_metrics(samples)
    assert metrics["extract"] == {"count": 4, "mean_ms": pytest.approx(50.0)}
    assert metrics["seeds_explored"] == 12 and "queries" not in metrics


def test_size_caps_every_benchmark() -> None:
    assert sizes_up_to(None) == [10_000, 100_000, 1_000_000]
    assert sizes_up_to(200_000) == [10_000, 100_000, 200_000]
    assert sizes_up_to(100_000) == [10_000, 100_000]
    assert sizes_up_to(5_000) == [5_000]
    assert sizes_up_to(5_000_000) == [10_000, 100_000, 1_000_000]
    assert capped(50_000, None) == 50_000 and capped(50_000, 5_000) == 5_000


def test_only_selects_known_benchmarks_and_extraction_is_opt_in() -> None:
    assert parse_only(None) == ["indexing", "freshness", "exploration", "scaling", "standing"]
    assert parse_only("scaling, indexing,scaling") == ["scaling", "indexing"]
    assert parse_only("extraction") == ["extraction"]
    with pytest.raises(ValueError, match="unknown benchmark nope"):
        parse_only("indexing,nope")


def test_standing_queries_are_spans_of_one_to_three_words_not_ending_in_stopwords() -> None:
    assert words_of("Pure sn0w, tg @frosty_plug!") == ["Pure", "sn0w", "tg", "frosty_plug"]
    assert words_of("二手运动鞋 a 包邮") == ["二手", "运动", "鞋", "包邮"]
    listings = [ListingUpsert(id="a", title="White powder for the weekend",
                              description="Discreet packaging, ask tg @frosty_plug"),
                ListingUpsert(id="b", title="冰糖 纯度高", description="懂的来，私聊")]
    queries = query_pool(listings, 200, seed=3)
    assert queries == query_pool(listings, 200, seed=3) != query_pool(listings, 200, seed=4)
    assert len(queries) == 200
    for query in queries:
        words = query.split()
        assert 1 <= len(words) <= 3
        assert words[0].lower() not in STOPWORDS and words[-1].lower() not in STOPWORDS


def test_standing_batches_carry_positions_and_arrivals_span_each_partition() -> None:
    listings = [ListingUpsert(id=f"l{k}", title=f"item {k}") for k in range(7)]
    changes = positioned(listings, 10, 4)
    assert [c.position for c in changes[:5]] == [(2, 2), (3, 2), (0, 3), (1, 3), (2, 3)]
    assert arrivals_of(messages_of(changes, "listings", 0.0)) == \
        {0: (3, 4), 1: (3, 3), 2: (2, 3), 3: (2, 3)}
    stream = Stream(None, listings, 4, 17)  # type: ignore[arg-type]  # no index needed here
    assert stream.next_offsets() == {0: 5, 1: 4, 2: 4, 3: 4}
    assert [c.position for c in stream.take(2)] == [(1, 4), (2, 4)]
    assert shares(list(range(7)), 2) == [[0, 1, 2, 3], [4, 5, 6]]
    assert shares([1], 2) == [[1]]


def test_standing_rows_turn_seconds_into_rates_and_mark_extrapolations() -> None:
    cell = {"watcher_s": [2.0, 4.0], "raw_s": [1.0, 2.0], "memory_s": [0.5, 0.5]}
    result = {"threads": 2, "limit": 10, "indexing": None, "interference": None,
              "cases": {"seed/100000": {"workload": "seed", "queries": 100_000, "scale": 20.0,
                                        "unfiltered_s": [10.0, 20.0],
                                        "unfiltered_raw_s": [5.0, 5.0],
                                        "batches": {"2000": cell}}}}
    watcher_raw, watcher_memory, unfiltered = standing_rows(result)
    assert watcher_raw["metric"].startswith("100,000 seed queries (extrapolated), batch 2,000")
    assert watcher_raw["pipeline"]["median"] == pytest.approx((1000 + 500) / 2)
    assert watcher_raw["ratio"] == pytest.approx(750 / 1500)
    assert watcher_memory["ratio"] == pytest.approx(750 / 4000)
    assert unfiltered["unit"] == "/s" and unfiltered["ratio"] == pytest.approx(7500 / 20000)


def test_relistings_replace_every_nth_listing_and_their_detections_become_latencies() -> None:
    messages = [(f"k{i}".encode(), f"v{i}".encode()) for i in range(7)]
    mixed, relisted = with_relistings(messages, 3, start=5)
    assert list(relisted) == [2, 5] and relisted[2].endswith("-relist-5")
    assert mixed[2][0] == relisted[2].encode() and mixed[:2] == messages[:2]
    assert len(mixed) == 7 and mixed[6] == messages[6]
    sent = [(0, i, 10.0 + i, 10.0 + i + 0.005) for i in range(7)]
    seen = [10.5 + i for i in range(7)]
    detected = {relisted[2]: 12.8}  # the second relisting is never detected
    figures = standing_figures(sent, seen, relisted, detected)
    assert figures["relistings"] == 2 and figures["never_detected"] == 1
    assert figures["detected"]["p50_ms"] == pytest.approx(800.0)
    assert figures["relistings_searchable"]["p50_ms"] == pytest.approx(500.0)
    assert figures["searchable_to_detected"]["p50_ms"] == pytest.approx(300.0)
    assert figures["matched_rate"] is None  # one detection: no pace
    both = standing_figures(sent, seen, relisted, {**detected, relisted[5]: 15.3})
    assert both["never_detected"] == 0 and both["matched_rate"] == pytest.approx(3 / 2.5)
    rows, notes = standing_report({200: [figures, both]}, phase_s=5, every=3, unrelated=0,
                                  window_s=0.2, interval_s=0.5, batch=2000, worker={})
    never = next(r for r in rows if "never detected" in r["metric"])
    assert never["pipeline"]["values"] == [1.0, 0.0] and never["unit"] == "count"
    assert any("1 NEVER DETECTED" in n for n in notes)


def test_worker_delta_counts_commits_and_watcher_passes_between_scrapes() -> None:
    before = {"scraped_at": 100.0, "qexplorer_index_commits_total": 10.0,
              'qexplorer_latency_seconds_count{stage="watch_wait_index"}': 2.0,
              'qexplorer_latency_seconds_sum{stage="watch_wait_index"}': 0.2}
    after = {"scraped_at": 110.0, "qexplorer_index_commits_total": 30.0,
             "qexplorer_standing_listings_total": 500.0,
             'qexplorer_latency_seconds_count{stage="watch_wait_index"}': 6.0,
             'qexplorer_latency_seconds_sum{stage="watch_wait_index"}': 0.6}
    delta = worker_delta(before, after)
    assert delta["commits"] == 20 and delta["commits_per_s"] == pytest.approx(2.0)
    assert delta["listings_matched"] == 500
    assert delta["watch_wait_index"] == {"count": 4, "mean_ms": pytest.approx(100.0)}
    assert delta["watch_search"]["mean_ms"] is None
    assert worker_delta({"scraped_at": 1.0}, after) == {}
