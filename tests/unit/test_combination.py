"""The learned combination: span features, the fit, the choice against its parts, and what a
backend and the settings do with it."""

from __future__ import annotations

import math
import random

import pytest

from agents.extractor.base import SeedText
from agents.extractor.combination import (
    CONTRAST_FLOOR,
    FEATURES,
    PARTS,
    Combination,
    span_features,
)
from agents.extractor.decoding import blend, blend_stats, blend_version
from agents.extractor.priors import TermCounts, WithToxic, contrast_scores, probe_scores
from qexplorer.evaluation.combine import (
    PROBE_FIRST,
    SeedRows,
    choose,
    fit_weights,
    halves,
    precision,
    probe_first,
)
from qexplorer.evaluation.scoring import Searcher
from qexplorer.marketplace.items import LabelledItem

LISTINGS = {"t1": "snow winter deal", "t2": "snow plug", "t3": "snow fast",
            "b1": "winter jacket", "b2": "winter boots", "b3": "winter hat",
            "s": "winter snow frostyplug"}


def _stats() -> tuple[SeedText, WithToxic]:
    items = [LabelledItem(i, t, harmful=i.startswith("t")) for i, t in LISTINGS.items()]
    searcher = Searcher(items)
    confirmed = TermCounts([SeedText(i, LISTINGS[i], "") for i in ("t1", "t2", "t3")])
    return (SeedText("s", LISTINGS["s"], ""),
            WithToxic(searcher.index, confirmed, search=searcher.top_ids))


def test_a_spans_features_are_the_priors_and_what_the_span_is() -> None:
    seed, stats = _stats()
    spans = ["snow", "winter", "frostyplug"]
    rows = span_features(seed, spans, [-1.0, -2.0, -3.0], stats)
    assert [len(r) for r in rows] == [len(FEATURES)] * 3
    column = {name: [r[i] for r in rows] for i, name in enumerate(FEATURES)}
    assert column["model"] == [-1.0, -2.0, -3.0]
    assert column["probe"] == pytest.approx(probe_scores(seed, spans, stats))
    # a term no other listing holds: the prior's -20, floored for a linear score
    contrast = contrast_scores(seed, spans, stats)
    assert contrast[2] < CONTRAST_FLOOR
    assert column["contrast"] == pytest.approx([*contrast[:2], CONTRAST_FLOOR])
    assert column["results"] == [0.3, 0.4, 0.0]  # snow: t1-t3; winter: t1, b1-b3; nothing
    assert column["words"] == [1.0, 1.0, 1.0]
    text = LISTINGS["s"]
    assert column["position"] == pytest.approx([text.find(s) / len(text) for s in spans])
    n = stats.count()
    assert column["rarity"] == pytest.approx([math.log((n + 1) / 5), math.log((n + 1) / 6),
                                              math.log((n + 1) / 2)])
    # without a model the model's feature is 0
    assert [r[0] for r in span_features(seed, spans, None, stats)] == [0.0] * 3
    assert span_features(seed, [], None, stats) == []


def test_a_combination_scores_saves_and_names_itself(tmp_path) -> None:
    weights = tuple(float(i) for i in range(len(FEATURES)))
    combination = Combination(weights, record={"k": 4})
    assert combination.scores([[1.0] * len(FEATURES)]) == [sum(weights)]
    assert combination.version.startswith("learned-")
    assert combination.version != Combination(weights[::-1]).version
    written = combination.save(tmp_path)
    assert written.name == "combination.json"
    back = Combination.load(tmp_path)
    assert back == combination and back.record == {"k": 4}
    assert Combination.part("probe").version == "probe"
    with pytest.raises(ValueError, match="weights"):
        Combination((1.0,))
    data = combination.to_dict()
    data["weights"]["popularity"] = 1.0
    with pytest.raises(ValueError, match="popularity"):
        Combination.from_dict(data)


def test_a_backend_ranks_by_the_combination_and_records_it() -> None:
    seed, stats = _stats()
    spans, scores = ["winter", "snow"], [-1.0, -3.0]  # the model alone prefers winter
    probe = Combination.part("probe")
    ranked = blend(seed, spans, scores, stats, {}, probe)
    assert ranked[1] > ranked[0]
    assert ranked == probe.rank_scores(seed, spans, scores, stats)
    assert blend_version("qx-dpo-1", stats, {}, probe) == "qx-dpo-1+probe"
    assert blend_stats(stats, {}, probe) is stats
    with pytest.raises(ValueError, match="give one"):
        blend_stats(stats, {"probe": 1.0}, probe)
    with pytest.raises(ValueError, match="confirmed items"):
        blend_stats(None, {}, probe)


def test_the_settings_take_a_combination_or_a_blend_not_both(clean_env, tmp_path) -> None:
    from qexplorer.config import Settings

    path = Combination.part("probe").save(tmp_path)
    clean_env.setenv("QEXPLORER_COMBINATION", str(path))
    assert Settings().extractor.combination == path
    clean_env.setenv("QEXPLORER_BLEND", '{"probe": 64}')
    with pytest.raises(ValueError, match="give one"):
        Settings()


def test_halves_keep_each_cluster_on_one_side() -> None:
    items = [LabelledItem(f"{c}{i}", "x", harmful=True, cluster=c)
             for c, n in (("a", 5), ("b", 3), ("c", 2), ("d", 2)) for i in range(n)]
    items += [LabelledItem(f"loose{i}", "x", harmful=True) for i in range(4)]
    first, second = halves(items)
    assert sorted(i.id for i in first + second) == sorted(i.id for i in items)
    assert not {i.cluster for i in first if i.cluster} & {i.cluster for i in second if i.cluster}
    assert abs(len(first) - len(second)) <= 5
    assert halves(items) == (first, second)


def _rows(n_seeds: int, target, seed: int = 0) -> list[SeedRows]:
    """Seeds of 30 spans with random features and ``target(features)`` as precision."""
    rng = random.Random(seed)
    rows = []
    for s in range(n_seeds):
        features = [tuple(rng.random() for _ in FEATURES) for _ in range(30)]
        rows.append(SeedRows(f"seed{s}", "x", tuple(f"span{i}" for i in range(30)),
                             tuple(features), tuple(target(f) for f in features)))
    return rows


def _index(name: str) -> int:
    return FEATURES.index(name)


def test_the_fit_finds_the_features_that_rank_the_best_spans_first() -> None:
    # precision rises with position and falls with rarity; the rest is noise
    rows = _rows(80, lambda f: min(1.0, max(0.0, f[_index("position")] - f[_index("rarity")]
                                              + 0.5)))
    weights = fit_weights(rows)
    assert weights[_index("position")] > 0 > weights[_index("rarity")]
    assert abs(weights[_index("probe")]) < weights[_index("position")] / 4
    learned = precision(rows, Combination(weights), 4)
    assert learned[0] > precision(rows, Combination.part("probe"), 4)[0] + 0.2
    # a feature that never varies gets no weight; no pair at all: no weights
    flat = [SeedRows(r.seed_id, r.corpus, r.spans, tuple((0.0, *f[1:]) for f in r.features),
                     r.targets) for r in rows]
    assert fit_weights(flat)[_index("model")] == 0.0
    assert fit_weights(_rows(5, lambda f: 0.0)) == tuple(0.0 for _ in FEATURES)


def test_the_choice_keeps_a_part_unless_the_fit_beats_it_where_it_was_not_fitted() -> None:
    # precision is the probe itself: nothing beats the probe part, so it is kept
    probe_only = _rows(120, lambda f: f[_index("probe")])
    chosen = choose(probe_only, k=4)
    assert chosen.kind == "probe"
    assert chosen.weights == Combination.part("probe").weights
    figures = chosen.record["held_back_precision_at_10"]
    assert set(figures) == {"learned", PROBE_FIRST, *PARTS}
    assert figures["probe"] == max(figures.values())
    # precision needs two features: the fitted weights win and are refitted on every row
    mixed = _rows(120, lambda f: 0.5 * f[_index("probe")] + 0.5 * f[_index("words")])
    chosen = choose(mixed, k=4)
    assert chosen.kind == "learned"
    figures = chosen.record["held_back_precision_at_10"]
    assert figures["learned"] > max(figures[p] for p in PARTS)
    assert chosen.weights == fit_weights(mixed)
    assert chosen.record["fit_seeds"] + chosen.record["held_back_seeds"] == 120
    assert chosen.record["corpora"] == {"x": 120}
    with pytest.raises(ValueError, match="too few"):
        choose(mixed[:1])


def test_probe_first_ranks_by_the_probe_and_breaks_its_ties_with_the_fit() -> None:
    rows = [SeedRows("s", "x", ("a", "b", "c"),
                     ((0.0, 0.0, 1.001, 1.0, 1.0, 0.9, 1.0),
                      (0.0, 0.0, 1.001, 1.0, 1.0, 0.1, 1.0),
                      (0.0, 0.0, 0.9, 1.0, 1.0, 0.0, 1.0)), (1.0, 1.0, 0.5))]
    # the fit likes an early span: it breaks the tie between a and b, never passes c over b
    fitted = tuple(-5.0 if f == "position" else 0.0 for f in FEATURES)
    scores = Combination(probe_first(fitted, rows), PROBE_FIRST).scores(rows[0].features)
    assert scores[1] > scores[0] > scores[2]
