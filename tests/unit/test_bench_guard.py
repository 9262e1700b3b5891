"""The guard against sliding back (bench/guard.py): which ratios of a run moved beyond the
noise against the kept report, and a run that writes over the kept report still compares
with it."""

from __future__ import annotations

import orjson

from bench import guard, run
from bench.report import comparison, markdown


def _report(rows: list[dict], commit: str = "a" * 40) -> dict:
    return {"command": "qexplorer bench", "started_at": "2026-12-01T00:00:00+00:00",
            "duration_s": 1.0, "params": {"size": None, "repeats": 3},
            "machine": {"platform": "linux", "cpus": 2, "python": "3.11"},
            "git": {"commit": commit, "dirty_files": []},
            "benchmarks": {"exploration": {"rows": rows}}}


def _fanout(pipeline: list[float], ceiling: list[float], better: str = "higher") -> dict:
    return comparison("exploration", "fan-out, queries/s", "/s", pipeline, ceiling=ceiling,
                      ceiling_name="raw", better=better)


def _verdict(before: dict, now: dict) -> str:
    (shift,) = guard.compare(_report([before]), _report([now]))
    return shift.verdict


def test_a_ratio_moved_beyond_the_noise_the_worse_way_slid() -> None:
    kept = _fanout([45, 50, 55], [100, 100, 100])  # ratio 0.50, noise at least 0.225
    assert _verdict(kept, _fanout([20, 21, 22], [100, 100, 100])) == "slid"
    assert _verdict(kept, _fanout([52, 56, 58], [100, 100, 100])) == "steady"
    assert _verdict(kept, _fanout([80, 81, 82], [100, 100, 100])) == "rose"
    # the noise is the larger of the two runs' spreads when they are wider than the floor
    assert _verdict(kept, _fanout([5, 24, 60], [100, 100, 100])) == "steady"


def test_runs_of_one_commit_differing_as_much_as_measured_are_not_a_slide() -> None:
    from bench.guard import BETWEEN_RUNS

    kept = _fanout([42, 42, 42], [100, 100, 100])  # repeats agree: no spread at all
    assert _verdict(kept, _fanout([30, 30, 30], [100, 100, 100])) == "steady"
    below = round(42 * (1 - BETWEEN_RUNS)) - 1
    assert _verdict(kept, _fanout([below] * 3, [100, 100, 100])) == "slid"


def test_lower_is_better_turns_the_verdict() -> None:
    kept = _fanout([10, 10, 10], [10, 10, 10], better="lower")
    assert _verdict(kept, _fanout([20, 20, 20], [10, 10, 10], better="lower")) == "slid"
    assert _verdict(kept, _fanout([5, 5, 5], [10, 10, 10], better="lower")) == "rose"


def test_one_repeat_has_no_noise_to_judge_by_and_new_or_ceilingless_rows_are_left_out() -> None:
    assert _verdict(_fanout([50], [100]), _fanout([10], [100])) == "unjudged"
    other = comparison("exploration", "other", "/s", [1.0, 2.0], ceiling=[2.0, 2.0],
                       ceiling_name="raw")
    alone = comparison("exploration", "fan-out, queries/s", "/s", [1.0, 2.0])
    shifts = guard.compare(_report([_fanout([5, 5], [10, 10])]),
                           _report([other, alone, _fanout([5, 5], [10, 10])]))
    assert [(s.metric, s.verdict) for s in shifts] == [("fan-out, queries/s", "steady")]


def test_the_report_ends_with_the_comparison_and_names_the_kept_commit() -> None:
    kept = _report([_fanout([45, 50, 55], [100, 100, 100])], commit="3b45517c3b54" + "0" * 28)
    now = _report([_fanout([19, 20, 21], [100, 100, 100])])
    now["against"] = guard.against(kept, "docs/results/bench/bench.json", now)
    text = markdown(now)
    assert "## Against the kept report (docs/results/bench/bench.json, 3b45517c3b54" in text
    assert "| exploration | fan-out, queries/s | raw | 0.50 | 0.20 | 0.23 | **slid** |" in text
    assert [s["metric"] for s in guard.slid(now["against"])] == ["fan-out, queries/s"]


def test_a_run_written_over_the_kept_report_compares_with_what_was_kept(tmp_path,
                                                                      monkeypatch) -> None:
    kept = _report([_fanout([45, 50, 55], [100, 100, 100])], commit="b" * 40)
    (tmp_path / "bench.json").write_bytes(orjson.dumps(kept))

    def one(name, settings, **kwargs):
        return {"rows": [_fanout([19, 20, 21], [100, 100, 100])], "notes": []}

    monkeypatch.setattr(run, "_one", one)
    monkeypatch.setattr(run, "check_broker", lambda settings: None)
    report = run.run_benchmarks(tmp_path, only=["exploration"], against=tmp_path / "bench.json",
                                progress=lambda line: None)
    assert report["against"]["commit"] == "b" * 40
    assert [s["verdict"] for s in report["against"]["shifts"]] == ["slid"]
    written = orjson.loads((tmp_path / "bench.json").read_bytes())
    assert written["against"] == report["against"]
    assert "**slid**" in (tmp_path / "bench.md").read_text()
