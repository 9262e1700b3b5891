"""The replay simulation on the real broker: a real worker, a simulated moderator whose
confirmations become new seeds, and the report and plot it writes."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import orjson
import pytest

from qexplorer.harness.run import list_topics
from qexplorer.marketplace.synthetic import generate_marketplace
from qexplorer.simulation.replay import run_replay
from tests.integration.conftest import wait_for

pytestmark = pytest.mark.integration

SERIES_KEYS = {"elapsed_s", "reviewed", "harmful_found", "share_found"}
SUMMARY_KEYS = {"reviewed", "harmful_found", "share_found", "review_precision", "rounds",
                "seeds", "seeds_initial", "seeds_explored", "status"}


def test_replay_finds_harmful_items_beyond_the_initial_seeds(broker, tmp_path):
    items = generate_marketplace(n_benign=400, n_clusters=4, seed=5)
    harmful = sum(i.harmful for i in items)
    messages: list[str] = []
    settings = broker.replace(paths={"state_dir": tmp_path / "state"})

    report = run_replay(settings, items, {"keywords": {"backend": "keywords"}},
                        dataset_name="synthetic-test", out_dir=tmp_path / "out",
                        initial_fraction=0.1, review_delay_s=0.5, idle_s=5.0, timeout_s=80.0,
                        seed=3, progress=messages.append)

    run = report["extractors"]["keywords"]
    summary, series = run["summary"], run["series"]
    log = Path(run["log"]).read_text(errors="replace")
    assert summary["status"] == "idle", (summary, log[-3000:])
    assert summary["seeds_explored"] == summary["seeds"], summary

    # the moderator confirmed harmful items beyond the initial seeds, and they were explored
    assert summary["new_harmful_found"] > 0, (summary, log[-3000:])
    assert summary["seeds"] == summary["seeds_initial"] + summary["new_harmful_found"]
    assert summary["rounds"] >= 1
    assert series[-1]["share_found"] > series[0]["share_found"]
    assert series[0]["reviewed"] == 0
    assert series[0]["harmful_found"] == summary["seeds_initial"] == report["initial_seeds"]
    assert 0 < summary["review_precision"] <= 1
    assert summary["extractor"] == "keywords" and summary["model_version"]

    # the series is monotonic, one point per review
    assert [p["reviewed"] for p in series] == list(range(len(series)))
    for before, after in itertools.pairwise(series):
        assert after["elapsed_s"] >= before["elapsed_s"]
        assert after["harmful_found"] >= before["harmful_found"]
        assert after["share_found"] >= before["share_found"]
    assert all(set(p) == SERIES_KEYS for p in series)
    assert series[-1]["share_found"] == pytest.approx(series[-1]["harmful_found"] / harmful)

    # the files, with the documented keys
    written = orjson.loads((tmp_path / "out" / "replay.json").read_bytes())
    assert written == report
    assert {"dataset", "items", "harmful", "initial_fraction", "review_delay_s", "extractors",
            "seed", "data_hash"} <= set(written)
    assert (written["dataset"], written["items"], written["harmful"]) == (
        "synthetic-test", len(items), harmful)
    assert set(written["extractors"]["keywords"]) >= {"summary", "series"}
    assert set(summary) >= SUMMARY_KEYS
    png = (tmp_path / "out" / "replay.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert any("worker pid" in m for m in messages)

    # the run cleaned up after itself: state, topics (faust's own included)
    assert not list((tmp_path / "state").glob("replay-*/*"))
    # the broker deletes topics asynchronously: they go within a deadline
    def left() -> list[str]:
        return [t for t in asyncio.run(list_topics(settings))
                if t.startswith((run["topic_prefix"], run["app_id"]))]

    wait_for(lambda: not left(), 60, 0.5, lambda: f"topics of the run were not deleted: {left()}")

