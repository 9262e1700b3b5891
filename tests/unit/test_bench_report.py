"""The benchmark report's pure parts: percentiles, spreads and ratios, the Markdown table,
and the bookkeeping that turns timestamps into latencies (no broker, no clock)."""

from __future__ import annotations

import pytest

from bench.common import prometheus_samples
from bench.exploration import phase_figures as explore_figures
from bench.exploration import worker_metrics
from bench.freshness import phase_figures as fresh_figures
from bench.freshness import searchable_at
from bench.report import comparison, fmt, latency_summary, markdown, percentile, spread, table
from bench.run import capped, failed, parse_only
from bench.scaling import sizes_up_to


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
    assert parse_only(None) == ["indexing", "freshness", "exploration", "scaling"]
    assert parse_only("scaling, indexing,scaling") == ["scaling", "indexing"]
    assert parse_only("extraction") == ["extraction"]
    with pytest.raises(ValueError, match="unknown benchmark nope"):
        parse_only("indexing,nope")
