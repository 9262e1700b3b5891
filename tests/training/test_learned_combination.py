"""The learned combination with a real (tiny) model: fitted on search feedback, judged on
corpora, written by ``qexplorer train combine``, and ranked by in a backend."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from agents.extractor.base import SeedText
from agents.extractor.combination import FILE_NAME, Combination
from agents.extractor.priors import TermCounts, WithToxic
from agents.queries import rank_spans
from qexplorer.cli.main import app
from qexplorer.evaluation.evaluate import model_extractor
from qexplorer.evaluation.learned import learned_results
from qexplorer.evaluation.scoring import Searcher
from qexplorer.marketplace.corpora import split_seeds
from qexplorer.marketplace.synthetic import generate_marketplace
from trainer.bootstrap import BootstrapConfig, bootstrap


def test_the_combination_is_fitted_judged_written_and_ranked_by(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # no .env of the caller
    items = generate_marketplace(n_benign=200, n_clusters=4, seed=4)
    other = generate_marketplace(n_benign=200, n_clusters=4, seed=5)
    model = str(bootstrap(items, tmp_path / "base", BootstrapConfig(
        vocab_size=512, hidden_size=64, heads=2, layers=2, intermediate_size=128, steps=10,
        batch_size=8, max_length=160), k=4))

    heard: list[str] = []
    report, deploy = learned_results({"x": items, "y": other}, model_extractor(model), k=4,
                                     max_seeds=10, fit_seeds=30, progress=heard.append)
    assert deploy is not None and deploy.record["corpora"].keys() == {"x", "y"}
    assert deploy.record["data"].keys() == {"x", "y"}
    assert set(report) == {"learned", "learned_own"}
    for label in report:
        for name in ("x", "y"):
            row = report[label][name]
            assert row["n_seeds"] == 10 and 0.0 <= row["precision_at_10"] <= 1.0
            chosen = Combination.from_dict(row["combination"])
            corpora = chosen.record["corpora"]
            # "learned" never saw the corpus it is judged on; "learned_own" saw only it
            assert set(corpora) == ({name} if label == "learned_own" else {"x", "y"} - {name})
    assert any("learned combination" in line for line in heard)

    data = tmp_path / "x.jsonl"
    data.write_text("".join(json.dumps(i.to_dict()) + "\n" for i in items))
    result = CliRunner().invoke(app, ["train", "combine", "--model", model, "--data", str(data),
                                      "--max-seeds", "30"])
    assert result.exit_code == 0, result.output
    combination = Combination.load(tmp_path / "base")
    assert (tmp_path / "base" / FILE_NAME).is_file()
    assert combination.record["model_version"] == model_extractor(model).model_version
    assert combination.record["data"] and combination.record["versions"]

    # a backend with the combination ranks the seed's spans by it
    searcher = Searcher(items)
    split = split_seeds(items, seed=0)
    stats = WithToxic(searcher.index, TermCounts(SeedText(i.id, i.title, i.description)
                                                 for i in split.train),
                      search=searcher.top_ids)
    learned = model_extractor(model, stats=stats, combination=combination)
    plain = model_extractor(model)
    assert learned.model_version == f"{plain.model_version}+{combination.version}"
    for seed in split.eval[:5]:
        text = SeedText(seed.id, seed.title, seed.description)
        spans, scores = plain.span_scores_sync(text, 4)
        expected = rank_spans(spans, combination.rank_scores(text, spans, scores, stats), 4)[0]
        assert learned.rank_spans_sync(text, 4).queries == expected
