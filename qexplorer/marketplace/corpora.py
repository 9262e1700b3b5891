"""Labelled corpora for training and evaluation: loading, seed splits, siblings, hashes.

A corpus is a list of :class:`LabelledItem`, exact duplicate texts collapsed (so a query cannot
score by finding copies). Seeds are its harmful items; a seed's siblings are the other harmful
items of its cluster, or all other harmful items where the set has no clusters
(the evaluation protocol, ``qexplorer.evaluation.evaluate``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from qexplorer.marketplace.datasets import (
    DATASETS,
    dedupe_texts,
    load_dataset,
    marketplace_sample,
    read_jsonl,
)
from qexplorer.marketplace.items import LabelledItem

#: The synthetic marketplace's name as a corpus source.
SYNTHETIC = "synthetic"


def corpus_names() -> list[str]:
    """Every built-in corpus: the synthetic marketplace and the sets in ../shared/datasets."""
    return [SYNTHETIC, *DATASETS]


def load_corpus(source: str | Path) -> tuple[str, list[LabelledItem]]:
    """(name, deduplicated items) of a built-in corpus name or a labelled JSONL file."""
    if isinstance(source, Path) or str(source).endswith(".jsonl"):
        path = Path(source)
        return path.stem, dedupe_texts(read_jsonl(path))
    if source == SYNTHETIC:
        from qexplorer.marketplace.synthetic import generate_marketplace

        return SYNTHETIC, generate_marketplace(n_benign=3_000, seed=7)
    items = dedupe_texts(load_dataset(str(source)))
    if all(i.harmful for i in items):  # Dream Market: mix into ordinary listings
        items = marketplace_sample(items, harmful_rate=0.12, seed=0)
    return str(source), items


def mix_corpora(names: Sequence[str], seed: int = 7) -> list[LabelledItem]:
    """The named corpora (:func:`load_corpus`) as one shuffled list, each id prefixed with its
    corpus (``sms_spam:17``) and each cluster too, so none is shared across sets."""
    items = [dataclasses.replace(item, id=f"{name}:{item.id}",
                                 cluster=None if item.cluster is None else f"{name}:{item.cluster}")
             for name in names for item in load_corpus(name)[1]]
    random.Random(seed).shuffle(items)
    return items


def data_hash(items: Iterable[LabelledItem]) -> str:
    """A short hash of ids, labels, clusters and texts (recorded with models and reports)."""
    digest = hashlib.sha256()
    for item in sorted(items, key=lambda i: i.id):
        digest.update(f"{item.id}\x1f{item.harmful}\x1f{item.cluster}\x1f{item.text}\x1e"
                      .encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class SeedSplit:
    """Harmful items split for training and evaluation, no cluster on both sides."""

    train: list[LabelledItem]
    eval: list[LabelledItem]


def split_seeds(items: Sequence[LabelledItem], eval_fraction: float = 0.4, seed: int = 0
                ) -> SeedSplit:
    """Split the harmful items by cluster where clusters exist, else by a fixed random split.

    Whole clusters go to one side (clusters shuffled with ``seed``, assigned to evaluation until
    it holds ``eval_fraction`` of the clustered items), so no evaluation seed's siblings were
    trained on. Items without a cluster are split item by item.
    """
    if not 0 < eval_fraction < 1:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    rng = random.Random(seed)
    clusters: dict[str, list[LabelledItem]] = defaultdict(list)
    loose: list[LabelledItem] = []
    for item in sorted((i for i in items if i.harmful), key=lambda i: i.id):
        (clusters[item.cluster] if item.cluster is not None else loose).append(item)
    train: list[LabelledItem] = []
    evaluation: list[LabelledItem] = []
    names = sorted(clusters)
    rng.shuffle(names)
    clustered = sum(len(v) for v in clusters.values())
    for name in names:
        side = evaluation if len(evaluation) < eval_fraction * clustered else train
        side.extend(clusters[name])
    rng.shuffle(loose)
    cut = round(eval_fraction * len(loose))
    evaluation += loose[:cut]
    train += loose[cut:]
    return SeedSplit(train=sorted(train, key=lambda i: i.id),
                     eval=sorted(evaluation, key=lambda i: i.id))


def sample_seeds(seeds: Sequence[LabelledItem], limit: int | None, seed: int = 0
                 ) -> list[LabelledItem]:
    """At most ``limit`` seeds, a fixed random sample, in id order."""
    if limit is None or len(seeds) <= limit:
        return list(seeds)
    return sorted(random.Random(seed).sample(list(seeds), limit), key=lambda i: i.id)


def siblings(items: Sequence[LabelledItem]) -> dict[str, frozenset[str]]:
    """Seed id -> ids of its siblings (same cluster; all harmful where it has none)."""
    by_cluster: dict[str | None, set[str]] = defaultdict(set)
    for item in items:
        if item.harmful:
            by_cluster[item.cluster].add(item.id)
    all_harmful = frozenset(i.id for i in items if i.harmful)
    out = {}
    for item in items:
        if item.harmful:
            group = by_cluster[item.cluster] if item.cluster is not None else all_harmful
            out[item.id] = frozenset(group - {item.id})
    return out
