"""The leave-one-corpus-out table: each labelled set judged by models trained on the others
only, against the heuristics and the run-time priors on the same seeds.

A row per held-out set (its evaluation report's row: method -> metrics), for precision@10
over all queries or of the first alone: the best heuristic, ``probe``, the starting model
(``base``: zero-shot when it is a pretrained model), the trained model alone and with the
learned combination (fitted on the training sets, never on the held-out one), the oracle;
then where the trained model stands against the best heuristic, and the combination against
``probe``: ``above`` or ``below`` when their 95% intervals do not overlap, else ``level``.
Pure functions.
"""

from __future__ import annotations

from collections.abc import Mapping

from qexplorer.evaluation.evaluate import ORACLE, PRECISIONS, best_heuristic

#: The interval of each precision a table reads.
INTERVALS = {"precision_at_10": "ci95", "first_precision_at_10": "first_ci95"}


def standing(mine: Mapping, other: Mapping, metric: str) -> str:
    """``above``/``below`` when the two 95% intervals of ``metric`` do not overlap, else
    ``level``."""
    ci = INTERVALS[metric]
    if mine[ci][0] > other[ci][1]:
        return "above"
    if mine[ci][1] < other[ci][0]:
        return "below"
    return "level"


def loco_table(rows: Mapping[str, Mapping[str, Mapping]], metric: str = "precision_at_10",
               label: str = "sft_dpo") -> str:
    """The markdown table of held-out set -> its report row (see the module docstring)."""
    learned = f"{label}+learned"
    methods = ("probe", "base", label, learned)
    header = ["held-out set (eval seeds)", "best heuristic", *methods, ORACLE,
              f"{label} against the heuristic", f"{learned} against probe"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    ci = INTERVALS[metric]

    def cell(row: Mapping, method: str) -> str:
        if method not in row:
            return "-"
        return f"{row[method][metric]:.3f} ({row[method][ci][0]:.2f}-{row[method][ci][1]:.2f})"

    for name, row in rows.items():
        heuristic = best_heuristic(row, metric)
        if heuristic is None:
            continue
        seeds = row[heuristic]["n_seeds"]
        cells = [f"{heuristic} {cell(row, heuristic)}", *(cell(row, m) for m in methods),
                 f"{row[ORACLE][metric]:.3f}" if ORACLE in row else "-",
                 standing(row[label], row[heuristic], metric) if label in row else "-",
                 standing(row[learned], row["probe"], metric)
                 if learned in row and "probe" in row else "-"]
        lines.append(f"| {name} ({seeds}) | " + " | ".join(cells) + " |")
    lines += ["", f"{PRECISIONS[metric]}, mean (95% bootstrap interval); each set judged by "
              "models trained on the other sets only; above/below: the intervals do not "
              "overlap."]
    return "\n".join(lines) + "\n"
