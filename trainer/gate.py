"""The promotion gate: a candidate model against the model in service, on the same seeds.

Evaluation sets (:class:`EvalSet`):

* ``topics`` (:func:`topic_set`): the reviewed seeds confirmed after the candidate's training
  cut-off (the ``split`` its model card records; every reviewed seed when it has none), searched
  in an index of every live listing. A result counts only when moderators labelled it
  (``trainer.feedback.Labels``): unknown results are left out, never counted as misses.
* every labelled corpus given (:func:`corpus_set`): the held-out seeds of the evaluation
  protocol (``qexplorer.evaluation.evaluate``), every result labelled.

The test (:data:`TEST`): per seed, each model's score is the mean over its valid queries of the
toxic share of the labelled results in its top 10 (a query that finds nothing scores 0, as in
the evaluation); a seed where either model has no labelled result is skipped. The paired
differences (candidate minus incumbent) get a 95% percentile bootstrap interval of their mean,
per set and pooled over all sets. :func:`decide` promotes only when the pooled interval lies
above 0 over at least ``min_seeds`` pairs and no set of at least ``MIN_SET_SEEDS`` pairs is worse
beyond its own interval.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from agents.extractor.base import Extractor, SeedText
from agents.extractor.priors import TermCounts, WithToxic
from agents.queries import is_valid_query
from qexplorer.evaluation.scoring import TOP, Searcher, bootstrap_ci, mean
from qexplorer.marketplace.corpora import sample_seeds, split_seeds
from qexplorer.marketplace.items import LabelledItem
from schemas.models import GateSet, ModelEvaluation, ToxicItem
from trainer.feedback import Labels, TopicsSnapshot, feedback_candidates, labels_of

MIN_SEEDS = 20
MIN_SET_SEEDS = 10
TEST = ("paired per-seed precision@10 (labelled results only), candidate minus incumbent; "
        "95% percentile bootstrap of the mean difference (2,000 rounds, fixed seed); promoted "
        f"when the pooled interval is above 0 over at least {MIN_SEEDS} seeds and no set of "
        f"at least {MIN_SET_SEEDS} seeds is worse beyond its interval")

@dataclass(frozen=True)
class EvalSet:
    """Seeds, the index their queries are searched in, the label of a result, and the toxic
    items known before these seeds (what ``contrast`` may read)."""

    name: str
    searcher: Searcher
    seeds: list[SeedText]
    label: Callable[[str], bool | None]
    known: TermCounts

    @property
    def stats(self) -> WithToxic:
        """The term statistics an extractor reads on this set: the index's and the known
        toxic items'."""
        return WithToxic(self.searcher.index, self.known)


#: Builds a method's extractor for a set (TF-IDF and contrast read that set's statistics).
ExtractorFor = Callable[[EvalSet], Extractor]


def seed_score(searcher: Searcher, seed_id: str, queries: Sequence[str],
               label: Callable[[str], bool | None]) -> float | None:
    """Mean over the valid queries of the toxic share of their labelled top-10 results (0 for
    a query that finds nothing); None when no result of any query is labelled."""
    shares, evidence = [], False
    for query in (q for q in queries if is_valid_query(q)):
        top = searcher.ids(query, seed_id, TOP)
        known = [x for x in map(label, top) if x is not None]
        if known:
            evidence = True
            shares.append(sum(known) / len(known))
        elif not top:
            shares.append(0.0)
    return mean(shares) if evidence else None


def score_set(extractor: Extractor, evalset: EvalSet, k: int) -> dict[str, float | None]:
    """Seed id -> the extractor's score on that seed."""
    found = asyncio.run(extractor.extract(evalset.seeds, k))
    queries = {e.seed_id: e.queries for e in found}
    return {s.id: seed_score(evalset.searcher, s.id, queries.get(s.id, []), evalset.label)
            for s in evalset.seeds}


def paired(name: str, candidate: Mapping[str, float | None],
           incumbent: Mapping[str, float | None], seed: int = 0
           ) -> tuple[GateSet, list[float]]:
    """The set's paired comparison and its per-seed differences."""
    pairs = [(candidate[s], incumbent[s]) for s in candidate
             if candidate[s] is not None and incumbent.get(s) is not None]
    diffs = [c - i for c, i in pairs]
    low, high = bootstrap_ci(diffs, rounds=2000, seed=seed)
    return GateSet(name=name, seeds=len(pairs), skipped=len(candidate) - len(pairs),
                   candidate=mean(c for c, _ in pairs), incumbent=mean(i for _, i in pairs),
                   difference=mean(diffs), ci95=(low, high)), diffs


def decide(sets: Sequence[GateSet], diffs: Sequence[float], min_seeds: int = MIN_SEEDS
           ) -> tuple[str, str, tuple[float, float]]:
    """(decision, reason, pooled interval) by the rule of :data:`TEST`."""
    low, high = bootstrap_ci(list(diffs), rounds=2000, seed=0)
    if len(diffs) < min_seeds:
        return "refused", f"{len(diffs)} paired seeds: fewer than {min_seeds} cannot tell", \
            (low, high)
    worse = [s.name for s in sets if s.seeds >= MIN_SET_SEEDS and s.ci95[1] < 0]
    if worse:
        return "refused", f"worse beyond the noise on {', '.join(worse)}", (low, high)
    if low <= 0:
        return "refused", (f"not better beyond the noise: pooled difference {mean(diffs):+.3f}, "
                           f"interval [{low:+.3f}, {high:+.3f}] includes 0"), (low, high)
    return "promoted", (f"better beyond the noise: pooled difference {mean(diffs):+.3f}, "
                        f"interval [{low:+.3f}, {high:+.3f}]"), (low, high)


def judge(candidate: ExtractorFor, incumbent: ExtractorFor, sets: Sequence[EvalSet], *,
          k: int, candidate_model: str, incumbent_extractor: str,
          incumbent_model: str | None = None, min_seeds: int = MIN_SEEDS,
          decided_by: str = "", progress: Callable[[str], None] = print) -> ModelEvaluation:
    """Score both models on every set and decide; the record the model registry keeps."""
    results, pooled, versions = [], [], {}
    for evalset in sets:
        scores = {}
        for role, build in (("candidate", candidate), ("incumbent", incumbent)):
            extractor = build(evalset)
            versions[role] = extractor.model_version
            scores[role] = score_set(extractor, evalset, k)
        found, diffs = paired(evalset.name, scores["candidate"], scores["incumbent"])
        progress(f"{evalset.name:20s} {found.seeds} paired seeds ({found.skipped} without "
                 f"labelled results): candidate {found.candidate:.3f}, incumbent "
                 f"{found.incumbent:.3f}, difference {found.difference:+.3f} "
                 f"[{found.ci95[0]:+.3f}, {found.ci95[1]:+.3f}]")
        results.append(found)
        pooled += diffs
    decision, reason, interval = decide(results, pooled, min_seeds)
    return ModelEvaluation(
        evaluation_id=uuid.uuid4().hex, candidate_version=versions.get("candidate", "?"),
        candidate_model=candidate_model, incumbent_version=versions.get("incumbent", "?"),
        incumbent_extractor=incumbent_extractor, incumbent_model=incumbent_model,
        sets=results, seeds=len(pooled), difference=mean(pooled), ci95=interval, test=TEST,
        decision=decision, reason=reason, decided_by=decided_by)


def corpus_set(name: str, items: Sequence[LabelledItem], max_seeds: int = 300,
               split_seed: int = 0) -> EvalSet:
    """A labelled corpus's held-out seeds, as the evaluation protocol picks them."""
    searcher = Searcher(items)
    split = split_seeds(items, seed=split_seed)
    seeds = sample_seeds(split.eval, max_seeds, split_seed)
    harmful = searcher.harmful
    return EvalSet(name, searcher, [SeedText(s.id, s.title, s.description) for s in seeds],
                   lambda listing_id: listing_id in harmful,
                   TermCounts(SeedText(i.id, i.title, i.description) for i in split.train))


def held_back_seeds(snapshot: TopicsSnapshot, labels: Labels, cutoff: str | None
                    ) -> list[ToxicItem]:
    """Reviewed seeds (some result of theirs labelled) confirmed after ``cutoff`` (ISO time;
    None: all), oldest first."""
    reviewed = feedback_candidates(snapshot.feedback, labels)
    after = datetime.fromisoformat(cutoff) if cutoff else None
    return sorted((t for t in snapshot.toxic if t.id in reviewed
                   and (after is None or t.confirmed_at > after)),
                  key=lambda t: (t.confirmed_at, t.id))


def topic_set(listings: Mapping[str, Mapping], snapshot: TopicsSnapshot, cutoff: str | None
              ) -> EvalSet:
    """The reviewed seeds after ``cutoff``, searched among the live listings."""
    labels = labels_of(snapshot.toxic, snapshot.decisions)
    items = [LabelledItem(id=i, title=x["title"], description=x.get("description", ""),
                          category=x.get("category", ""), language=x.get("language", "und"))
             for i, x in listings.items()]
    seeds = held_back_seeds(snapshot, labels, cutoff)
    held = {t.id for t in seeds}
    known = TermCounts(SeedText(t.id, t.title, t.description) for t in snapshot.toxic
                       if t.id not in held)
    return EvalSet("topics", Searcher(items),
                   [SeedText(t.id, t.title, t.description) for t in seeds], labels.of, known)
