"""The evaluation: every method on the same held-out seeds of every corpus, side by side.

Protocol (:data:`PROTOCOL`): a corpus is deduplicated and indexed whole; the evaluation seeds
are the held-out side of the cluster split (at most ``max_seeds``); each method gives ``k``
queries per seed; each query is searched with the seed excluded. Methods: the first words of
the title, TF-IDF top terms, YAKE, ``contrast`` (spans ranked by how much more common their
terms are among the toxic items confirmed so far, the training side, than among all listings),
``probe`` (spans ranked by the confirmed share of their own top 10) and any models (base
zero-shot, SFT, SFT+DPO). On the same seeds, always, the ``oracle``: each seed's single best
word span chosen with the labels (:func:`qexplorer.evaluation.scoring.best_span`), the ceiling
of what search feedback can teach; the report says how much of the gap from the best heuristic
to it each other method closes (:func:`gap_table`), with all k queries and with each method's
first query alone (the oracle gives one; a method giving fewer is not
favoured). Output: ``eval.json`` (dataset -> method -> metrics), ``eval_meta.json`` (the
run's seeds, data hashes, model versions and the oracle's spans), ``eval.md`` (tables),
``eval.png`` (a chart) and, with a model, ``combination.json`` (the learned combination to
deploy).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agents.extractor.base import Extractor, SeedText
from agents.extractor.keywords import KeywordsExtractor
from agents.extractor.priors import TermCounts, WithToxic
from agents.queries import SPAN_LIMIT, SPAN_WORDS
from qexplorer.config import OpenSearchSettings
from qexplorer.config.versions import library_versions
from qexplorer.evaluation.scoring import Searcher, best_span, gap_closed, score_seed, summarise
from qexplorer.marketplace.corpora import data_hash, sample_seeds, split_seeds
from qexplorer.marketplace.items import LabelledItem
from qexplorer.search import corpus_index
from qexplorer.search.protocol import SearchIndex

if TYPE_CHECKING:
    from agents.extractor.combination import Combination
    from agents.extractor.transformers_backend import TransformersExtractor

BASELINES = ("first_words", "tfidf", "yake", "contrast", "probe")
#: The methods that know the confirmed set (the training side of the split).
KNOWING = ("contrast", "probe")
#: The heuristics that know nothing of other toxic items: the gap is measured from their best.
HEURISTICS = ("first_words", "tfidf", "yake")
#: The labels' choice: each seed's best single span (not a method a worker can run).
ORACLE = "oracle"
#: The file the combination to deploy is written to (``QEXPLORER_COMBINATION``).
COMBINATION = "combination.json"
#: The suffix of a model's method when it writes free text (generative: its queries need not
#: be spans of the seed) instead of ranking the seed's spans.
FREE_TEXT = "+free"
#: How the numbers are made, recorded with every report.
PROTOCOL = ("corpus deduplicated and indexed whole (Tantivy BM25, terms OR-ed); evaluation "
            "seeds = the held-out side of the cluster split; k queries a seed, each searched "
            "with the seed excluded; precision@10, hits@10, recall@100 of the siblings, valid "
            "queries; mean and 95% bootstrap interval. oracle = on the same seeds, each seed's "
            "single word span (seed_spans, max 3 words, 200 a seed, sample seed 0, as the "
            "training data) with the best precision@10 by the labels, scored as a list of one "
            "query asked for one (valid queries 1.0); gap closed = (model - best heuristic) / "
            "(oracle - best heuristic), best heuristic = the best of first_words, tfidf, yake "
            "by precision@10; also at one query a seed: the precision@10 of each method's "
            "first query alone, the oracle's single span against it; contrast and probe know "
            "the training side's toxic items as the "
            "confirmed set (cluster-disjoint from the evaluation seeds)")


def baseline_extractors(searcher: Searcher,
                        known: Sequence[LabelledItem] | TermCounts | None = None, *,
                        fold: bool = True) -> dict[str, KeywordsExtractor]:
    """The model-free methods, TF-IDF with the corpus index's term statistics (as a worker's
    is with its replica's); with ``known`` (the toxic items confirmed so far: the training
    side of the split, or term counts that go on learning, as a worker's ledger does) also
    ``contrast`` and ``probe``, which read both (``probe`` through the searcher's cache).
    ``fold=False``: seeds read as written (no disguise folding)."""
    found = {method: KeywordsExtractor(method, fold=fold,
                                       stats=searcher.index if method == "tfidf" else None)
             for method in BASELINES if method not in KNOWING}
    if known is not None:
        toxic = known if isinstance(known, TermCounts) else TermCounts(
            (SeedText(i.id, i.title, i.description) for i in known), fold=fold)
        stats = WithToxic(searcher.index, toxic, search=searcher.top_ids)
        for method in KNOWING:
            found[method] = KeywordsExtractor(method, fold=fold, stats=stats)
    return found


def model_extractor(model: str, batch_size: int = 16, temperature: float = 0.0,
                    seed: int = 1234, extractive: bool = True, *,
                    blend: Mapping[str, float] | None = None,
                    stats: WithToxic | None = None,
                    combination: Combination | None = None) -> TransformersExtractor:
    """The in-process extractor for a model directory or hub id (greedy unless sampling;
    ranking the seed's spans unless ``extractive`` is False); ``blend`` (prior -> weight)
    adds run-time priors under ``stats`` to its ranking, as ``QEXPLORER_BLEND`` does in a
    worker, or it ranks by a learned ``combination`` (``QEXPLORER_COMBINATION``)."""
    from agents.extractor.transformers_backend import TransformersExtractor

    return TransformersExtractor(model, batch_size=batch_size, temperature=temperature,
                                 seed=seed, max_new_tokens=48, extractive=extractive,
                                 stats=stats, blend=blend, combination=combination)


def extract_all(extractor: Extractor, seeds: Sequence[LabelledItem], k: int) -> dict[str, list]:
    """Seed id -> the extractor's queries."""
    texts = [SeedText(s.id, s.title, s.description) for s in seeds]
    return {e.seed_id: e.queries for e in asyncio.run(extractor.extract(texts, k))}


def evaluate_corpus(name: str, items: Sequence[LabelledItem], models: Mapping[str, str], *,
                    k: int = 4, max_seeds: int = 300, split_seed: int = 0,
                    progress: Callable[[str], None] = print,
                    index: Callable[[], SearchIndex] | None = None,
                    free_text: Sequence[str] = (),
                    extractors: Mapping[str, Extractor] | None = None) -> dict:
    """Metrics of every method on one corpus's evaluation seeds; ``index`` makes the empty
    index the corpus is searched in (default: Tantivy in memory); the models labelled in
    ``free_text`` are also evaluated writing free text (``<label>+free``); ``extractors``
    (label -> extractor) runs a model through an extractor already made (its kept span
    scores serve the blends after)."""
    made = index() if index is not None else None
    try:
        return _evaluate_corpus(name, items, models, Searcher(items, index=made),
                                k=k, max_seeds=max_seeds, split_seed=split_seed,
                                progress=progress, free_text=free_text,
                                extractors=extractors or {})
    finally:
        if made is not None:
            made.close()


def _evaluate_corpus(name: str, items: Sequence[LabelledItem], models: Mapping[str, str],
                     searcher: Searcher, *, k: int, max_seeds: int, split_seed: int,
                     progress: Callable[[str], None], free_text: Sequence[str] = (),
                     extractors: Mapping[str, Extractor]) -> dict:
    split = split_seeds(items, seed=split_seed)
    seeds = sample_seeds(split.eval, max_seeds, split_seed)
    sibs = searcher.siblings
    methods: dict[str, Extractor] = dict(baseline_extractors(searcher, known=split.train))
    versions = {}
    for label, model in models.items():
        methods[label] = extractors.get(label) or model_extractor(model)
        if label in free_text:
            methods[f"{label}{FREE_TEXT}"] = model_extractor(model, extractive=False)
    results = {}
    for label, extractor in methods.items():
        started = time.monotonic()
        queries = extract_all(extractor, seeds, k)
        scores = [score_seed(searcher, s.id, queries.get(s.id, []), k, sibs[s.id])
                  for s in seeds]
        results[label] = summarise(scores, seed=split_seed)
        versions[label] = extractor.model_version
        progress(f"{name:20s} {label:12s} P@10={results[label]['precision_at_10']:.3f} "
                 f"({len(seeds)} seeds, {time.monotonic() - started:.1f}s)")
    started = time.monotonic()
    spans = oracle_spans(searcher, seeds)
    scores = [score_seed(searcher, s.id, [spans[s.id]] if spans[s.id] else [], 1, sibs[s.id])
              for s in seeds]
    results[ORACLE] = summarise(scores, seed=split_seed)
    versions[ORACLE] = f"oracle-spans-{SPAN_WORDS}w-{SPAN_LIMIT}-seed0"
    progress(f"{name:20s} {ORACLE:12s} P@10={results[ORACLE]['precision_at_10']:.3f} "
             f"({len(seeds)} seeds, {time.monotonic() - started:.1f}s)")
    meta = {"items": len(items), "harmful": len(searcher.harmful), "data_hash": data_hash(items),
            "eval_seeds": [s.id for s in seeds], "model_versions": versions, "k": k,
            "split_seed": split_seed, "oracle_spans": spans}
    return {"methods": results, "meta": meta}


def oracle_spans(searcher: Searcher, seeds: Sequence[LabelledItem]) -> dict[str, str | None]:
    """Seed id -> its best single span by the labels (None when it has none), from the span
    candidates of the training data (``agents.queries.SPAN_WORDS`` and ``SPAN_LIMIT``)."""
    return {s.id: best_span(searcher, s.id, s.title, s.description) for s in seeds}


def evaluate(corpora: Mapping[str, Sequence[LabelledItem]], models: Mapping[str, str],
             out: Path, *, k: int = 4, max_seeds: int = 300, split_seed: int = 0,
             blend: bool = True, progress: Callable[[str], None] = print,
             backend: str = "tantivy", cluster: OpenSearchSettings | None = None,
             free_text: Sequence[str] = (),
             fit_corpora: Mapping[str, Sequence[LabelledItem]] | None = None) -> dict:
    """Evaluate every corpus; write eval.json, eval.md and eval.png into ``out``. With
    ``blend`` and a model, the last model also ranks with the run-time priors blended in
    (``<label>+contrast``, ``<label>+probe``, ``<label>+contrast+probe``; the weights chosen on
    the other corpora: ``qexplorer.evaluation.blending``) and by the learned combination of
    the model and the priors (``<label>+learned``, fitted on the other corpora;
    ``<label>+learned_own``, on the corpus's own training side:
    ``qexplorer.evaluation.learned``); the one to deploy, fitted on every corpus's training
    side (and of ``fit_corpora``, corpora fitted on but not evaluated), is written to
    ``combination.json``. ``backend`` (and ``cluster``): the search engine
    the corpora are searched in. The models labelled in ``free_text`` are also evaluated
    writing free text (``<label>+free``)."""
    report, meta = {}, {}
    extractors = {label: model_extractor(model) for label, model in models.items()}
    for name, items in corpora.items():
        found = evaluate_corpus(name, items, models, k=k, max_seeds=max_seeds,
                                split_seed=split_seed, progress=progress,
                                index=lambda: corpus_index(backend, cluster),
                                free_text=free_text, extractors=extractors)
        report[name], meta[name] = found["methods"], found["meta"]
    blended, combinations, deploy = None, {}, None
    if blend and models:
        from qexplorer.evaluation.blending import blended_results

        label = list(models)[-1]
        blended = blended_results(corpora, extractors[label], k=k, max_seeds=max_seeds,
                                  split_seed=split_seed, progress=progress)
        for blended_label, found in blended.items():
            for name, row in found["corpora"].items():
                report[name][f"{label}+{blended_label}"] = row
        from qexplorer.evaluation.learned import learned_results

        learned, deploy = learned_results(corpora, extractors[label], k=k,
                                          max_seeds=max_seeds, split_seed=split_seed,
                                          fit_corpora=fit_corpora, progress=progress)
        for learned_label, found in learned.items():
            for name, row in found.items():
                combinations.setdefault(learned_label, {})[name] = row.pop("combination")
                report[name][f"{label}+{learned_label}"] = row
        if deploy is not None:
            combinations["deploy"] = deploy.to_dict()
    out.mkdir(parents=True, exist_ok=True)
    if deploy is not None:
        deploy.save(out / COMBINATION)
    (out / "eval.json").write_text(json.dumps(report, indent=2))
    (out / "eval_meta.json").write_text(json.dumps(
        {"models": dict(models), "corpora": meta, "protocol": PROTOCOL, "blend": blended,
         "learned": combinations, "search_backend": backend,
         "versions": library_versions(),
         "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=2))
    (out / "eval.md").write_text(markdown_table(report))
    plot(report, out / "eval.png")
    return report


#: The precision a gap table reads: of all a method's queries, or of its first alone.
PRECISIONS = {"precision_at_10": "precision@10",
              "first_precision_at_10": "precision@10 of the first query alone"}


def best_heuristic(row: Mapping[str, Mapping], metric: str = "precision_at_10") -> str | None:
    """The heuristic with the best ``metric`` in one corpus's row (None without any)."""
    present = [m for m in HEURISTICS if m in row]
    return max(present, key=lambda m: row[m][metric]) if present else None


def gap_table(report: Mapping[str, Mapping[str, Mapping]],
              metric: str = "precision_at_10") -> str:
    """Per corpus: the best heuristic, the oracle, and the share of the gap between them each
    other method (``contrast``, the models) closes in ``metric`` (:data:`PRECISIONS`; ``-``
    where the oracle is not above the heuristic or a method is missing)."""
    models = list(dict.fromkeys(m for row in report.values() for m in row
                                if m not in HEURISTICS and m != ORACLE))
    header = ["corpus", "best heuristic", ORACLE,
              *(cell for m in models for cell in (m, f"gap closed by {m}"))]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for corpus, row in report.items():
        heuristic = best_heuristic(row, metric)
        if heuristic is None or ORACLE not in row or metric not in row[ORACLE]:
            continue
        low, high = row[heuristic][metric], row[ORACLE][metric]
        cells = [f"{heuristic} {low:.3f}", f"{high:.3f}"]
        for model in models:
            if model not in row:
                cells += ["-", "-"]
                continue
            value = row[model][metric]
            closed = gap_closed(value, low, high)
            cells += [f"{value:.3f}", "-" if closed is None else f"{100 * closed:.0f}%"]
        lines.append(f"| {corpus} | " + " | ".join(cells) + " |")
    lines += ["", "gap closed = (method - best heuristic) / (oracle - best heuristic), in "
              f"{PRECISIONS[metric]}; best heuristic = the best of first_words, tfidf and yake "
              "by it; oracle = each seed's single best span by the labels (valid queries 1.0: "
              "one query asked, one given)."]
    return "\n".join(lines) + "\n"


def markdown_table(report: Mapping[str, Mapping[str, Mapping]]) -> str:
    """Precision@10 (95% CI) per corpus and method, the best real method of each row in bold
    (the oracle is never bolded), then the other metrics of every method, then the gap table
    (:func:`gap_table`); then the same at one query a seed (each method's first query)."""
    lines = _precision_table(report, "precision_at_10", "ci95")
    lines += ["", "| corpus | method | hits@10 | recall@100 | valid queries |",
              "|---|---|---|---|---|"]
    for corpus, row in report.items():
        for method, r in row.items():
            lines.append(f"| {corpus} | {method} | {r['hits_at_10']:.2f} | "
                         f"{r['recall_at_100']:.3f} | {r['valid_query_rate']:.2f} |")
    if any(ORACLE in row for row in report.values()):
        lines += ["", gap_table(report).rstrip("\n")]
    if all("first_precision_at_10" in r for row in report.values() for r in row.values()):
        lines += ["", "At one query a seed: the precision@10 of each method's first query alone.",
                  "", *_precision_table(report, "first_precision_at_10", "first_ci95")]
        if any(ORACLE in row for row in report.values()):
            lines += ["", gap_table(report, "first_precision_at_10").rstrip("\n")]
    return "\n".join(lines) + "\n"


def _precision_table(report: Mapping[str, Mapping[str, Mapping]], metric: str,
                     interval: str) -> list[str]:
    methods = list(dict.fromkeys(m for row in report.values() for m in row))
    lines = ["| corpus (eval seeds) | " + " | ".join(methods) + " |",
             "|---|" + "---|" * len(methods)]
    for corpus, row in report.items():
        real = [m for m in row if m != ORACLE] or list(row)
        best = max(real, key=lambda m: row[m][metric])
        seeds = next(iter(row.values()))["n_seeds"]
        cells = []
        for method in methods:
            if method not in row:
                cells.append("-")
                continue
            r = row[method]
            cell = f"{r[metric]:.3f} ({r[interval][0]:.2f}-{r[interval][1]:.2f})"
            cells.append(f"**{cell}**" if method == best else cell)
        lines.append(f"| {corpus} ({seeds}) | " + " | ".join(cells) + " |")
    return lines


def plot(report: Mapping[str, Mapping[str, Mapping]], path: Path) -> None:
    """Grouped bars: precision@10 per corpus and method, with 95% intervals; the oracle as a
    grey hatched bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corpora = list(report)
    methods = list(dict.fromkeys(m for row in report.values() for m in row))
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(corpora) + 3), 4.8))
    colors = plt.get_cmap("tab10")
    for j, method in enumerate(methods):
        xs, ys, errs = [], [], [[], []]
        for i, corpus in enumerate(corpora):
            r = report[corpus].get(method)
            if r is None:
                continue
            xs.append(i + (j - (len(methods) - 1) / 2) * width)
            ys.append(r["precision_at_10"])
            errs[0].append(max(0.0, r["precision_at_10"] - r["ci95"][0]))
            errs[1].append(max(0.0, r["ci95"][1] - r["precision_at_10"]))
        style = ({"color": "lightgrey", "hatch": "//", "edgecolor": "dimgrey"}
                 if method == ORACLE else {"color": colors(j % 10)})
        ax.bar(xs, ys, width, yerr=errs, capsize=2, label=method, **style)
    ax.set_xticks(range(len(corpora)), corpora, rotation=15)
    ax.set_ylabel("precision@10 (harmful share of top 10)")
    ax.set_ylim(0, 1.15)
    ax.set_title("Query extraction: precision@10 on held-out seeds (95% bootstrap CI)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncol=min(6, len(methods)), fontsize=8, loc="upper center")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
