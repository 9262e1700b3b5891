"""The learned combination: a seed's spans ranked by a linear function of what is known about
each of them at run time, with weights fitted on search feedback
(``qexplorer.evaluation.combine``), where a blend (``decoding.blend``) adds hand-chosen weights
of the priors to the model's score.

A span's features (:data:`FEATURES`, :func:`span_features`):

* ``model``: the model's log-probability of the span as the first query line (0 without one);
* ``contrast``: its toxic-versus-all term contrast (``priors.contrast_scores``), at least
  :data:`CONTRAST_FLOOR` (the prior's -20 for a term no other listing holds would outweigh the
  rest of a linear score);
* ``probe``: the confirmed share of its top 10 (``priors.probe_scores``, the same number);
* ``results``: how many results it has in that top 10, over 10 (a span few listings hold);
* ``words``: its number of words;
* ``position``: where it starts in the seed's text, 0 at the first character, 1 at the end
  (1 when it is not found as written: cleaned of punctuation);
* ``rarity``: the inverse document frequency of its rarest term in the index.

A :class:`Combination` is a weight a feature, recorded with what chose it. When what was
fitted did no better than one of its parts on the fitting side's held-back seeds, the part is
kept, so a combination is never chosen below its best part there.
Pure functions, but the probe searches the worker's index.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.extractor.base import SeedText
from agents.extractor.priors import (
    PROBE_DEPTH,
    WithToxic,
    contrast_scores,
    probe_value,
    seed_text,
    terms_of,
)

FEATURES = ("model", "contrast", "probe", "results", "words", "position", "rarity")
#: The least contrast a feature holds.
CONTRAST_FLOOR = -8.0
#: The parts a combination is compared with, as weights: the model alone, and each prior
#: ranking as its keyword method does (``agents.extractor.keywords``: the probe's ties go by
#: contrast, then to the shorter span).
PARTS: dict[str, dict[str, float]] = {
    "model": {"model": 1.0}, "contrast": {"contrast": 1.0},
    "probe": {"probe": 1.0, "contrast": 1e-5, "words": -1e-8}}
#: The file a combination is kept in, beside a model or alone.
FILE_NAME = "combination.json"


def span_features(seed: SeedText, spans: Sequence[str], model_scores: Sequence[float] | None,
                  stats: WithToxic) -> list[tuple[float, ...]]:
    """Each span's features, in :data:`FEATURES` order (see the module docstring)."""
    spans = list(spans)
    if not spans:
        return []
    model = list(model_scores) if model_scores is not None else [0.0] * len(spans)
    contrast = contrast_scores(seed, spans, stats)
    tops = stats.top_ids(spans, PROBE_DEPTH, seed.id)
    text = seed_text(seed).casefold()
    size = max(len(text), 1)
    n_all = max(stats.count(), 1)
    rows = []
    for span, score, value, top in zip(spans, model, contrast, tops, strict=True):
        start = text.find(span.casefold())
        rarest = min((stats.doc_freq(t) for t in terms_of(span)), default=n_all)
        rows.append((float(score), max(float(value), CONTRAST_FLOOR), probe_value(top, stats),
                     len(top) / PROBE_DEPTH, float(len(span.split())),
                     start / size if start >= 0 else 1.0, math.log((n_all + 1) / (rarest + 1))))
    return rows


@dataclass(frozen=True)
class Combination:
    """Weights of :data:`FEATURES` (a span's score is their weighted sum) and what chose them:
    ``kind`` is ``learned``, ``probe_first`` (the probe, its ties broken by the learned
    weights) or the part kept; ``record`` the fit's figures."""

    weights: tuple[float, ...]
    kind: str = "learned"
    record: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if len(self.weights) != len(FEATURES):
            raise ValueError(f"a combination has {len(FEATURES)} weights ({', '.join(FEATURES)})"
                             f", got {len(self.weights)}")

    @classmethod
    def part(cls, name: str, record: dict[str, Any] | None = None) -> Combination:
        """One of the :data:`PARTS` (the model, the contrast or the probe) alone."""
        return cls(tuple(PARTS[name].get(f, 0.0) for f in FEATURES), name, record or {})

    def scores(self, features: Sequence[Sequence[float]]) -> list[float]:
        """Each span's score from its features."""
        return [sum(w * x for w, x in zip(self.weights, row, strict=True)) for row in features]

    def rank_scores(self, seed: SeedText, spans: Sequence[str],
                    model_scores: Sequence[float] | None, stats: WithToxic) -> list[float]:
        """The scores a backend ranks ``spans`` by (:func:`span_features`, then
        :meth:`scores`)."""
        return self.scores(span_features(seed, spans, model_scores, stats))

    @property
    def version(self) -> str:
        """The part's name, or the kind and a short hash of the weights:
        ``learned-1a2b3c4d``."""
        if self.kind in PARTS:
            return self.kind
        digest = hashlib.sha256(json.dumps([round(w, 9) for w in self.weights]).encode())
        return f"{self.kind}-{digest.hexdigest()[:8]}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (weights by feature name)."""
        return {"kind": self.kind, "version": self.version,
                "weights": dict(zip(FEATURES, self.weights, strict=True)),
                "record": self.record}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Combination:
        """From :meth:`to_dict`'s form; an unknown or missing feature is an error."""
        weights = data.get("weights", {})
        unknown = set(weights) - set(FEATURES)
        if unknown or set(weights) != set(FEATURES):
            raise ValueError(f"a combination's weights are {', '.join(FEATURES)}; got "
                             f"{', '.join(sorted(weights))}")
        return cls(tuple(float(weights[f]) for f in FEATURES), str(data.get("kind", "learned")),
                   dict(data.get("record", {})))

    def save(self, path: Path) -> Path:
        """Write it as JSON to ``path`` (a directory gets :data:`FILE_NAME`)."""
        target = path / FILE_NAME if path.is_dir() else path
        target.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True) + "\n")
        return target

    @classmethod
    def load(cls, path: Path) -> Combination:
        """Read one written by :meth:`save` (a directory: its :data:`FILE_NAME`)."""
        source = path / FILE_NAME if path.is_dir() else path
        return cls.from_dict(json.loads(source.read_text()))
