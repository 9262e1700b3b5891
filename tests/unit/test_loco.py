"""The leave-one-corpus-out table: where a model stands against the heuristics and the
combination against the probe, by their intervals."""

from __future__ import annotations

from qexplorer.evaluation.loco import loco_table, standing


def _m(p: float, low: float, high: float, first: float = 0.5) -> dict:
    return {"precision_at_10": p, "ci95": [low, high], "n_seeds": 50,
            "first_precision_at_10": first, "first_ci95": [first - 0.05, first + 0.05]}


def test_standing_is_above_or_below_only_when_the_intervals_part() -> None:
    assert standing(_m(0.8, 0.75, 0.85), _m(0.6, 0.55, 0.7), "precision_at_10") == "above"
    assert standing(_m(0.6, 0.55, 0.7), _m(0.8, 0.75, 0.85), "precision_at_10") == "below"
    assert standing(_m(0.8, 0.7, 0.85), _m(0.7, 0.6, 0.72), "precision_at_10") == "level"
    assert standing(_m(0.8, 0.7, 0.9, first=0.9), _m(0.8, 0.7, 0.9, first=0.6),
                    "first_precision_at_10") == "above"


def test_the_table_has_a_row_per_held_out_set_with_its_best_heuristic() -> None:
    row = {"first_words": _m(0.6, 0.55, 0.65), "tfidf": _m(0.5, 0.45, 0.55),
           "yake": _m(0.62, 0.58, 0.66), "probe": _m(0.85, 0.82, 0.88),
           "base": _m(0.4, 0.35, 0.45), "sft_dpo": _m(0.75, 0.7, 0.8),
           "sft_dpo+learned": _m(0.84, 0.81, 0.87), "oracle": _m(0.98, 0.97, 0.99)}
    table = loco_table({"sms_spam": row, "no_heuristic": {"probe": row["probe"]}})
    [line] = [line for line in table.splitlines() if line.startswith("| sms_spam")]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[0] == "sms_spam (50)"
    assert cells[1] == "yake 0.620 (0.58-0.66)"
    assert cells[2:6] == ["0.850 (0.82-0.88)", "0.400 (0.35-0.45)", "0.750 (0.70-0.80)",
                          "0.840 (0.81-0.87)"]
    assert cells[6:] == ["0.980", "above", "level"]
    assert "no_heuristic" not in table
    # a row without the trained model says so instead of failing
    partial = loco_table({"x": {k: v for k, v in row.items() if not k.startswith("sft_dpo")}})
    assert partial.splitlines()[2].endswith("| 0.980 | - | - |")
