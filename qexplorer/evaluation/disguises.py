"""The disguise benchmark: does search still find a seed's siblings when sellers disguise them?

Protocol (:data:`PROTOCOL`). On each corpus (the labelled sets, deduplicated; the synthetic
marketplace for Chinese), a seeded share of the harmful items (the *targets*) gets a disguise
of one kind (``marketplace.disguises``: a share of their words, each kind on its own, then
mixed). The seeds are the other harmful items of the held-out side of the cluster split (as in
``qexplorer.evaluation.evaluate``) and stay clean. Each seed's queries come from the model-free
methods, extracted once from the clean seed; each query's top 10 (the seed excluded) is
searched twice, in the clean corpus and in the disguised one.

- *forward*: the targets among the seed's siblings found in the disguised corpus, as a share
  of those found when the same items are clean;
- *reverse*: the seed itself disguised (the same kind and share), its queries extracted from
  the disguised text, the siblings found in the clean corpus, as a share of those the clean
  seed's queries find.

Each is measured with the disguise folding off (``fold=False``: the index, the queries and the
extractors' term statistics as before ``search.normalize``) and on. Shares are pooled over seeds
and methods (sums of found siblings), with a 95% bootstrap interval over seeds. Output:
``disguises.json`` and ``disguises.md``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from qexplorer.config.versions import library_versions
from qexplorer.evaluation.evaluate import baseline_extractors, extract_all
from qexplorer.evaluation.scoring import TOP, Searcher
from qexplorer.marketplace.corpora import SYNTHETIC, data_hash, sample_seeds, siblings, split_seeds
from qexplorer.marketplace.disguises import (
    BREAK_KINDS,
    KINDS,
    MIXED,
    PINYIN_KINDS,
    ZH_KINDS,
    ZH_MIXED,
    disguise_text,
)
from qexplorer.marketplace.items import LabelledItem

ENGLISH = (*KINDS, MIXED, *BREAK_KINDS)
CHINESE = (*ZH_KINDS, ZH_MIXED, *PINYIN_KINDS)
#: What the report's headline asks of every kind: the share kept, disguised against clean.
GOAL = 0.9
PROTOCOL = ("targets = a seeded share of the harmful items, a share of their words disguised "
            "with one kind (or a kind drawn per word: mixed); seeds = the other harmful items "
            "of the held-out side of the cluster split (at most max_seeds, clean); queries = "
            "k a seed from each model-free method (first_words, tfidf, yake, contrast), "
            "extracted from the clean seed; found = targets among the seed's siblings in the "
            "union of its queries' top 10 (the seed excluded); forward kept = found in the "
            "disguised corpus / found with the same items clean; reverse kept = siblings found "
            "from the disguised seed's own queries / from the clean seed's, in the clean "
            "corpus; pooled over seeds and methods, 95% bootstrap interval over seeds; fold off "
            "= index, queries and the extractors' term statistics without search.normalize, "
            "fold on = with it")


def disguise_items(items: Sequence[LabelledItem], targets: set[str], kind: str, seed: int,
                   word_share: float) -> list[LabelledItem]:
    """``items`` with the ``targets`` disguised (title and description), deterministically."""
    out = []
    for item in items:
        if item.id in targets:
            rng = random.Random(f"{seed}:{kind}:{item.id}")
            item = dataclasses.replace(
                item, title=disguise_text(item.title, kind, rng, word_share),
                description=disguise_text(item.description, kind, rng, word_share)
                if item.description else item.description)
        out.append(item)
    return out


def kept_share(found: Sequence[int], clean: Sequence[int], rounds: int = 1000, seed: int = 0
               ) -> dict:
    """Pooled share ``sum(found) / sum(clean)`` (None when nothing is found clean) and its 95%
    bootstrap interval over the paired per-seed counts."""
    total = sum(clean)
    if not total:
        return {"kept": None, "low": None, "high": None, "found": sum(found), "clean": 0}
    share = sum(found) / total
    rng = random.Random(seed)
    n = len(clean)
    shares = []
    for _ in range(rounds):
        picks = [rng.randrange(n) for _ in range(n)]
        base = sum(clean[i] for i in picks)
        if base:
            shares.append(sum(found[i] for i in picks) / base)
    shares.sort()
    low = shares[math.floor(0.025 * (len(shares) - 1))]
    high = shares[math.ceil(0.975 * (len(shares) - 1))]
    return {"kept": share, "low": low, "high": high, "found": sum(found), "clean": total}


def _found(searcher: Searcher, seed_id: str, queries: Sequence[str], wanted: frozenset[str]
           ) -> int:
    ids: set[str] = set()
    for query in queries:
        ids.update(searcher.ids(query, seed_id, TOP))
    return len(ids & wanted)


def _extract(extractors: Mapping, seeds: Sequence[LabelledItem], k: int
             ) -> dict[str, dict[str, list[str]]]:
    return {method: extract_all(extractor, seeds, k) for method, extractor in extractors.items()}


def evaluate_corpus(name: str, items: Sequence[LabelledItem], kinds: Sequence[str], *,
                    share: float = 0.3, word_share: float = 0.5, max_seeds: int = 100,
                    k: int = 4, seed: int = 0, language: str | None = None,
                    progress: Callable[[str], None] = print) -> dict:
    """Forward and reverse kept shares of every kind, fold off and on, on one corpus (seeds
    of ``language`` only, when given)."""
    split = split_seeds(items, seed=seed)
    rng = random.Random(seed)
    targets = {i.id for i in sorted(items, key=lambda i: i.id)
               if i.harmful and rng.random() < share}
    sibs = siblings(items)
    pool = [s for s in split.eval if s.id not in targets and sibs[s.id]
            and (language is None or s.language == language)]
    seeds = sample_seeds(pool, max_seeds, seed)
    seed_ids = {s.id for s in seeds}
    wanted = {s.id: sibs[s.id] & targets for s in seeds}
    clean = {fold: Searcher(items, fold=fold) for fold in (False, True)}
    extractors = {fold: baseline_extractors(clean[fold], known=split.train, fold=fold)
                  for fold in (False, True)}
    queries = {fold: _extract(extractors[fold], seeds, k) for fold in (False, True)}
    methods = list(extractors[True])
    result: dict = {"items": len(items), "data_hash": data_hash(items), "seeds": len(seeds),
                    "targets": len(targets), "methods": methods, "kinds": {}}
    for kind in kinds:
        started = time.monotonic()
        disguised_items = disguise_items(items, targets, kind, seed, word_share)
        disguised_seeds = [dataclasses.replace(s, title=d.title, description=d.description)
                           for s, d in zip(seeds, disguise_items(seeds, seed_ids, kind, seed + 1,
                                                                 word_share), strict=True)]
        row = {}
        for fold in (False, True):
            reverse_queries = _extract(extractors[fold], disguised_seeds, k)
            disguised = Searcher(disguised_items, fold=fold)
            forward_found, forward_clean, reverse_found, reverse_clean = [], [], [], []
            for s in seeds:
                for method in methods:
                    qs = queries[fold][method].get(s.id, [])
                    forward_clean.append(_found(clean[fold], s.id, qs, wanted[s.id]))
                    forward_found.append(_found(disguised, s.id, qs, wanted[s.id]))
                    reverse_clean.append(_found(clean[fold], s.id, qs, sibs[s.id]))
                    reverse_found.append(_found(clean[fold], s.id,
                                                reverse_queries[method].get(s.id, []),
                                                sibs[s.id]))
            # per seed: the methods' counts summed, so the interval resamples seeds
            per_seed = len(methods)
            row["on" if fold else "off"] = {
                "forward": kept_share(_by_seed(forward_found, per_seed),
                                      _by_seed(forward_clean, per_seed), seed=seed),
                "reverse": kept_share(_by_seed(reverse_found, per_seed),
                                      _by_seed(reverse_clean, per_seed), seed=seed)}
        result["kinds"][kind] = row
        progress(f"{name:20s} {kind:14s} forward {_fmt(row['off']['forward'])} -> "
                 f"{_fmt(row['on']['forward'])}  reverse {_fmt(row['off']['reverse'])} -> "
                 f"{_fmt(row['on']['reverse'])} ({time.monotonic() - started:.0f}s)")
    return result


def _by_seed(values: Sequence[int], per_seed: int) -> list[int]:
    return [sum(values[i:i + per_seed]) for i in range(0, len(values), per_seed)]


def _fmt(cell: Mapping) -> str:
    if cell["kept"] is None:
        return "n/a"
    return f"{cell['kept']:.2f} ({cell['low']:.2f}-{cell['high']:.2f})"


def run(corpora: Mapping[str, Sequence[LabelledItem]], out: Path, *, share: float = 0.3,
        word_share: float = 0.5, max_seeds: int = 100, k: int = 4, seed: int = 0,
        kinds: Sequence[str] | None = None, progress: Callable[[str], None] = print) -> dict:
    """The benchmark on every corpus (English kinds; Chinese kinds on the synthetic
    marketplace's Chinese seeds; only ``kinds`` when given); writes ``disguises.json`` and
    ``disguises.md``."""
    report: dict = {"protocol": PROTOCOL, "goal": GOAL,
                    "params": {"share": share, "word_share": word_share,
                               "max_seeds": max_seeds, "k": k, "seed": seed, "kinds": kinds},
                    "libraries": library_versions(), "corpora": {}}
    started = time.monotonic()
    for name, items in corpora.items():
        if name == SYNTHETIC:
            runs = {f"{name} (en)": (ENGLISH, "en"), f"{name} (zh)": (CHINESE, "zh")}
        else:
            runs = {name: (ENGLISH, None)}
        for label, (chosen, language) in runs.items():
            chosen = [kind for kind in chosen if kinds is None or kind in kinds]
            if not chosen:
                continue
            report["corpora"][label] = evaluate_corpus(
                label, items, chosen, share=share, word_share=word_share, max_seeds=max_seeds,
                k=k, seed=seed, language=language, progress=progress)
    report["duration_s"] = time.monotonic() - started
    out.mkdir(parents=True, exist_ok=True)
    (out / "disguises.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    (out / "disguises.md").write_text(markdown(report))
    return report


def markdown(report: Mapping) -> str:
    """The report's tables: per corpus and kind, the kept shares fold off -> on."""
    lines = [f"Kept = disguised siblings found / found clean; goal {report['goal']:.0%} for "
             "every kind. Cells: fold off -> fold on (95% interval).", ""]
    lines += ["| corpus | kind | forward: off | forward: on | reverse: off | reverse: on |",
              "|---|---|---|---|---|---|"]
    for name, corpus in report["corpora"].items():
        for kind, row in corpus["kinds"].items():
            lines.append(f"| {name} | {kind} | {_fmt(row['off']['forward'])} | "
                         f"{_fmt(row['on']['forward'])} | {_fmt(row['off']['reverse'])} | "
                         f"{_fmt(row['on']['reverse'])} |")
    lines += ["", "| corpus | items | seeds | targets | data hash |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {c['items']} | {c['seeds']} | {c['targets']} | {c['data_hash']} |"
              for name, c in report["corpora"].items()]
    short = {k: v for k, v in report["libraries"].items()
             if k in ("python", "tantivy", "confusable-homoglyphs", "rjieba", "pypinyin", "yake")}
    lines += ["", f"Parameters: {json.dumps(report['params'])}; libraries: {json.dumps(short)}"]
    return "\n".join(lines) + "\n"
