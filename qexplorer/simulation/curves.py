"""Review-budget curves: harmful items found against reviews spent, per extractor, in process.

The question of a deployment: with the same number of reviews, which extractor finds more
harmful items, and how many reviews does each need to find a given number? The Kafka replay
(``qexplorer.simulation.replay``) answers it once per extractor with the real system, minutes a
run; this module answers it on every set, over several replays each, with intervals, by running
the same exploration in process: the workers' merge of hits into detections
(``agents.explore.merge_hits``, confirmed items excluded), the same Tantivy analysis and BM25
(``qexplorer.evaluation.scoring.Searcher``) and the replay's moderator
(``qexplorer.simulation.replay.Moderator``: every detected listing is reviewed once, one review
delay after it was detected; a harmful one is confirmed and becomes a seed).
Exploring takes no time here, so the order of reviews is the Kafka replay's: round by round,
first in first out; a replay can also cap the reviews of a round (the moderators' capacity) and
take the due listings in the review service's priority order (``review.queue``), as moderators
working its queue do.

The marketplace of a replay (:func:`replay_market`) holds the benign items and the harmful
items of the held-out side of the cluster split used for training (``qexplorer.marketplace.corpora.
split_seeds``, seed 0), sampled to a marketplace's harmful rate: a model trained offline has
never seen any of its harmful items or their clusters. The training side counts as already
confirmed and removed: ``contrast`` knows it from the start, as it does in the evaluation, and
learns every item the replay's moderator confirms. Each replay draws other initial seeds.

A replay also leaves what the system's topics would hold (search feedback, toxic items,
moderation decisions), so the loop can run on itself mid-replay (:func:`retrainer`): the model
is retrained from those records exactly as from the live topics (``trainer.loop.
run_from_snapshot``), judged by the promotion gate on the newest reviewed seeds, and, only if
promoted, takes over and re-explores every confirmed seed, as the workers do after a rollout.

Pure functions: :func:`found_at`, :func:`reviews_at`, :func:`compare`; :func:`simulate` runs
one replay; :func:`run_curves` runs them all and writes ``curves.json``, ``curves.md`` and
``curves.png``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agents.explore import merge_hits
from agents.explorer import provenance_of
from agents.extractor.base import Extractor, SeedText
from agents.extractor.decoding import blend_label
from agents.extractor.priors import TermCounts, WithToxic
from qexplorer.config.versions import library_versions
from qexplorer.evaluation.evaluate import HEURISTICS, baseline_extractors, model_extractor
from qexplorer.evaluation.scoring import Searcher, bootstrap_ci, mean
from qexplorer.marketplace.corpora import data_hash, split_seeds
from qexplorer.marketplace.datasets import marketplace_sample
from qexplorer.marketplace.items import LabelledItem, to_listing_dict, to_toxic_dict
from qexplorer.review.queue import ReviewQueue
from qexplorer.search.protocol import search
from qexplorer.simulation.replay import MODERATOR, SEEDER, Moderator
from schemas.models import ModerationDecision, SearchFeedback, ToxicItem, text_hash
from trainer.feedback import TopicsSnapshot
from trainer.gate import judge, topic_set
from trainer.loop import run_from_snapshot
from trainer.train import TrainConfig, load_config

#: Reviews spent at which the found counts are compared, as multiples of the harmful items to
#: find (1.0: as many reviews as a perfect review queue would need to find them all).
BUDGETS = (0.25, 0.5, 1.0, 2.0)
#: Shares of the harmful items (beyond the initial seeds) at which reviews are compared.
TARGETS = (0.25, 0.5, 0.75)
PROTOCOL = ("marketplace = benign items + the held-out side of the cluster split (seed 0, as "
            "in training), sampled to 12% harmful (marketplace_sample seed 0); each replay "
            "confirms a different random share of its harmful items as initial seeds; every "
            "confirmed seed gives k queries, each searched top 10 (seed excluded); hits merged "
            "into detections as the workers do; every new detected listing is reviewed once, "
            "round by round (the replay moderator; at most per_round reviews a round when set, "
            "the confirmed explored after each round; in arrival order, or with order priority "
            "in the review service's queue order); a harmful one is confirmed and becomes a "
            "seed; found = harmful items confirmed beyond the initial seeds; contrast knows "
            "the training side's harmful items plus what the replay confirms, probe (which "
            "searches the marketplace) what the replay confirms; intervals: 95% bootstrap over "
            "replays, paired with the best heuristic (same initial seeds); "
            "model+retrain: the model, retrained once from the replay's own feedback, "
            "decisions and toxic items (SFT+DPO, newest 20% of reviewed seeds held back) "
            "after as many reviews as harmful items to find, and kept only if the promotion "
            "gate promotes it on the held-back seeds, then re-exploring every confirmed seed; "
            "model+<prior>[+<prior>]: the model's span ranking with those run-time priors "
            "blended in at the weights in meta.blends")

#: The orders the replay's moderators can take due listings in (:func:`simulate`).
ORDERS = ("arrival", "priority")

#: Label -> factory(searcher, confirmed term counts) of an extractor.
Factory = Callable[[Searcher, TermCounts], Extractor]


def replay_market(items: Sequence[LabelledItem], *, harmful_rate: float = 0.12
                  ) -> tuple[list[LabelledItem], list[LabelledItem]]:
    """(marketplace, already confirmed): the held-out side of the training split with every
    benign item, sampled to ``harmful_rate``; and the training side's harmful items."""
    split = split_seeds(items, seed=0)
    held_out = {i.id for i in split.eval}
    kept = [i for i in items if not i.harmful or i.id in held_out]
    return marketplace_sample(kept, harmful_rate=harmful_rate, seed=0), list(split.train)


def initial_seeds(market: Sequence[LabelledItem], fraction: float, replay: int
                  ) -> list[LabelledItem]:
    """A replay's initial seeds: ``fraction`` of the harmful items (at least 2), drawn with
    the replay number as the seed."""
    harmful = sorted((i for i in market if i.harmful), key=lambda i: i.id)
    count = min(len(harmful), max(2, round(fraction * len(harmful))))
    return sorted(random.Random(replay).sample(harmful, count), key=lambda i: i.id)


def _text(item: LabelledItem) -> SeedText:
    return SeedText(item.id, item.title, item.description)


#: The replay's records are dated from here, a second a review.
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Replay:
    """One replay: the moderator's series (``qexplorer.simulation.replay.Moderator.series``),
    what the system's topics would hold after it (search feedback, toxic items, moderation
    decisions), and the mid-replay retraining's record when there was one."""

    series: list[dict]
    snapshot: TopicsSnapshot
    retrained: dict | None = None


#: Called once mid-replay with what the replay's topics hold and the extractor in service;
#: returns the extractor to go on with (the promoted candidate, or the same one) and a record of
#: the gate's judgement.
Retrain = Callable[[TopicsSnapshot, Extractor], tuple[Extractor, dict]]


def simulate(searcher: Searcher, extractor: Extractor, market: Sequence[LabelledItem],
             seeds: Sequence[LabelledItem], *, confirmed: TermCounts | None = None,
             k: int = 4, top: int = 10, max_reviews: int | None = None,
             retrain: Retrain | None = None, retrain_at: int = 0,
             per_round: int | None = None, order: str = "arrival") -> Replay:
    """One replay until the exploration runs dry or ``max_reviews`` have been spent.

    A round reviews every listing due (at most ``per_round``: the moderators' capacity), then
    explores what it confirmed; with a capacity the queue drains over several rounds, so the
    seeds a review confirms are explored (and a retraining due comes) after that many reviews
    rather than after the whole round. ``order`` is the order the moderators take the due
    listings in: ``arrival`` (first in, first out) or ``priority`` (the review service's queue,
    ``review.queue.ReviewQueue``: more seeds and queries that found a listing, a better rank,
    the confirm rate of the seeds' category, first).

    ``confirmed`` (the term counts a ``contrast`` extractor reads) learns every item the
    moderator confirms. With ``retrain``, once ``retrain_at`` reviews are spent, it is called
    with the replay's records; when it returns another extractor, that one goes on and every
    seed confirmed so far is explored again with it (the workers' re-exploration after a
    rollout; listings already reviewed are not reviewed again).
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    by_id = {i.id: i for i in market}
    moderator = Moderator(market, [s.id for s in seeds], delay_s=1.0)
    feedback: list[SearchFeedback] = []
    toxic = [_toxic(s, 0.0, SEEDER) for s in seeds]
    queue = ReviewQueue() if order == "priority" else None
    for record in toxic if queue is not None else ():
        queue.apply_toxic_item(record)
    decisions: list[ModerationDecision] = []
    retrained: dict | None = None
    todo, clock = list(seeds), 0.0
    while True:
        if todo:
            extractions = asyncio.run(extractor.extract([_text(s) for s in todo], k))
            provenance, todo = provenance_of(extractor), []
            for extraction in extractions:
                per_query = [(q, search(searcher.index, q, top, exclude=(extraction.seed_id,)))
                             for q in extraction.queries]
                detections, records = merge_hits(extraction.seed_id, per_query,
                                                 moderator.confirmed, provenance)
                feedback += records
                for detection in detections:
                    moderator.observe(detection, clock)
                    if queue is not None:
                        queue.apply_detection(detection)
        if retrain is not None and retrained is None and moderator.reviewed >= retrain_at:
            going_on, retrained = retrain(TopicsSnapshot(list(feedback), list(toxic),
                                                         list(decisions), 0), extractor)
            retrained = {**retrained, "at_reviews": moderator.reviewed}
            if going_on is not extractor:
                extractor = going_on
                todo = [by_id[i] for i in sorted(moderator.confirmed)]
                continue
        if moderator.next_due is None or (max_reviews is not None
                                          and moderator.reviewed >= max_reviews):
            return Replay(moderator.series, TopicsSnapshot(feedback, toxic, decisions, 0),
                          retrained)
        clock = max(clock, moderator.next_due)
        judgements = moderator.due(clock, per_round, order=None if queue is None else [
            item.listing_id for item in queue.pending(per_round)])
        for n, judgement in enumerate(judgements, moderator.reviewed - len(judgements) + 1):
            # one review after the other: the records are dated by the review's number
            item = by_id[judgement.listing_id]
            decisions.append(ModerationDecision(
                decision_id=f"replay-{len(decisions):08d}", listing_id=item.id,
                decision="confirm" if judgement.harmful else "reject",
                text_hash=text_hash(item.title, item.description), reviewer=MODERATOR,
                detection_keys=[judgement.detection_key], seed_ids=[judgement.seed_id],
                model_versions=[extractor.model_version], decided_at=_at(n)))
            if queue is not None:
                queue.apply_decision(decisions[-1])
            if judgement.confirm:
                toxic.append(_toxic(item, n, MODERATOR))
                if queue is not None:
                    queue.apply_toxic_item(toxic[-1])
                todo.append(item)
                if confirmed is not None:
                    confirmed.add(_text(item))


def _at(seconds: float) -> datetime:
    return EPOCH + timedelta(seconds=seconds)


def _toxic(item: LabelledItem, seconds: float, by: str) -> ToxicItem:
    return ToxicItem(**to_toxic_dict(item, by), confirmed_at=_at(seconds))


def retrainer(model: str, market: Sequence[LabelledItem], out: Path, *, k: int = 4,
              sft_config: TrainConfig | None = None, dpo_config: TrainConfig | None = None,
              progress: Callable[[str], None] = print) -> Retrain:
    """The loop on the replay's own records: SFT and DPO from ``model`` on the older reviewed
    seeds (``trainer.loop.run_from_snapshot``; the configs default to the trainer's YAML
    files), the promotion gate (``trainer.gate.judge``) against the extractor in service on
    the newest ones; the candidate goes on only when the gate promotes it."""
    listings = {i.id: to_listing_dict(i) for i in market}
    configs = {"sft_config": sft_config or load_config(TrainConfig, None, "sft.yaml"),
               "dpo_config": dpo_config or load_config(TrainConfig, None, "dpo.yaml")}

    def retrain(snapshot: TopicsSnapshot, current: Extractor) -> tuple[Extractor, dict]:
        try:
            run = run_from_snapshot(snapshot, out, model=model, progress=lambda _: None,
                                    **configs)
        except ValueError as exc:
            return current, {"decision": "refused", "reason": str(exc)}
        evalset = topic_set(listings, snapshot, run["data"]["split"]["cutoff"])
        candidate = model_extractor(run["final"])
        verdict = judge(lambda _: candidate, lambda _: current, [evalset], k=k,
                        candidate_model=run["final"], incumbent_extractor=current.name,
                        incumbent_model=model, progress=progress)
        record = {"decision": verdict.decision, "reason": verdict.reason,
                  "candidate_version": verdict.candidate_version,
                  "sft_rows": run["data"]["sft_rows"], "dpo_rows": run["data"]["dpo_rows"],
                  "gate_seeds": verdict.seeds, "difference": round(verdict.difference, 4),
                  "ci95": [round(x, 4) for x in verdict.ci95]}
        return (candidate if verdict.decision == "promoted" else current), record
    return retrain


def found_at(series: Sequence[dict], reviews: int) -> int:
    """Harmful items found beyond the initial seeds once ``reviews`` reviews were spent (all
    that was found, when the exploration ran dry before)."""
    start = series[0]["harmful_found"]
    return max(p["harmful_found"] for p in series if p["reviewed"] <= reviews) - start


def reviews_at(series: Sequence[dict], found: int) -> int | None:
    """Reviews it took to find ``found`` harmful items beyond the initial seeds (None: never)."""
    start = series[0]["harmful_found"]
    return next((p["reviewed"] for p in series if p["harmful_found"] - start >= found), None)


def _interval(values: Sequence[float]) -> dict:
    low, high = bootstrap_ci(values, rounds=2000)
    return {"mean": round(mean(values), 2), "ci95": [round(low, 2), round(high, 2)]}


def compare(runs: Mapping[str, Sequence[Sequence[dict]]], to_find: int,
            budgets: Sequence[float] = BUDGETS, targets: Sequence[float] = TARGETS) -> dict:
    """The report of one set: label -> replays' series in, per label out: found at each budget
    (``budgets`` times ``to_find`` reviews) and reviews to each target share of ``to_find``
    (mean and interval over the replays; a replay that never reached a target counts as not
    reached), and, per budget, the paired difference in found from the best heuristic at that
    budget (same initial seeds)."""
    spent = sorted({max(1, round(b * to_find)) for b in budgets})
    out: dict[str, dict] = {}
    for label, series in runs.items():
        found = {str(b): _interval([found_at(s, b) for s in series]) for b in spent}
        reviews = {}
        for share in targets:
            needed = [reviews_at(s, max(1, round(share * to_find))) for s in series]
            reached = [n for n in needed if n is not None]
            reviews[str(share)] = {
                "reached": f"{len(reached)}/{len(needed)}",
                "median": statistics.median(reached) if reached else None,
                **(_interval(reached) if len(reached) == len(needed) else {})}
        out[label] = {"found_at": found, "reviews_to": reviews,
                      "final": _interval([s[-1]["harmful_found"] - s[0]["harmful_found"]
                                          for s in series]),
                      "reviewed": _interval([s[-1]["reviewed"] for s in series])}
    heuristics = [h for h in HEURISTICS if h in runs]
    for budget in spent:
        if not heuristics:
            break
        best = max(heuristics, key=lambda h: out[h]["found_at"][str(budget)]["mean"])
        for label, series in runs.items():
            diff = [found_at(a, budget) - found_at(b, budget)
                    for a, b in zip(series, runs[best], strict=True)]
            out[label].setdefault("vs_best_heuristic", {})[str(budget)] = {
                "best": best, **_interval(diff)}
    return out


def extractors(methods: Sequence[str], model: str | None,
               blends: Sequence[Mapping[str, float]] = ()) -> dict[str, Factory]:
    """Factories of the keyword methods named
    (``qexplorer.evaluation.evaluate.baseline_extractors``; ``contrast`` and ``probe`` read the
    confirmed counts) and, with ``model``, of the in-process model extractor (loaded once) and,
    per prior -> weight mapping of ``blends``, of the model ranking with those run-time priors
    blended in (``model+<prior>+...``, as a worker with ``QEXPLORER_BLEND``)."""
    found: dict[str, Factory] = {
        m: lambda s, known, m=m: baseline_extractors(s, known)[m] for m in methods}
    if model:
        loaded = functools.cache(lambda: model_extractor(model))
        found["model"] = lambda _searcher, _known: loaded()
        for weights in blends:
            found[blend_label("model", weights)] = functools.partial(_blended, model,
                                                                     dict(weights))
    return found


def _blended(model: str, weights: Mapping[str, float], searcher: Searcher, known: TermCounts
             ) -> Extractor:
    """The model ranking with the priors of ``weights`` over this replay's index and
    confirmed counts."""
    stats = WithToxic(searcher.index, known, search=searcher.top_ids)
    return model_extractor(model, blend=weights, stats=stats)


def markdown(report: Mapping[str, Mapping]) -> str:
    """The tables: per set, found at each budget and reviews to each target, per method."""
    lines = []
    for name, block in report.items():
        rows = block["methods"]
        budgets = list(next(iter(rows.values()))["found_at"])
        targets = list(next(iter(rows.values()))["reviews_to"])
        lines += [f"### {name} ({block['market_size']} listings, {block['harmful']} harmful, "
                  f"{block['initial_seeds']} initial seeds, {block['replays']} replays)", "",
                  "| method | " + " | ".join(f"found @{b} reviews" for b in budgets)
                  + " | " + " | ".join(f"reviews to {float(t):.0%}" for t in targets)
                  + " | found in all | reviewed in all |",
                  "|---" * (len(budgets) + len(targets) + 3) + "|"]
        for label, row in rows.items():
            cells = []
            for b in budgets:
                cell = row["found_at"][b]
                diff = row.get("vs_best_heuristic", {}).get(b)
                mark = ""
                if diff and diff["best"] != label and (diff["ci95"][0] > 0 or diff["ci95"][1] < 0):
                    mark = " ▲" if diff["ci95"][0] > 0 else " ▼"
                cells.append(f"{cell['mean']:.1f} [{cell['ci95'][0]:.0f}, {cell['ci95'][1]:.0f}]"
                             f"{mark}")
            for t in targets:
                cell = row["reviews_to"][t]
                cells.append("never" if cell["median"] is None else
                             f"{cell['median']:.0f} ({cell['reached']})")
            cells += [f"{row['final']['mean']:.1f}", f"{row['reviewed']['mean']:.0f}"]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        for label, records in block.get("retrained", {}).items():
            promoted = [r for r in records if r["decision"] == "promoted"]
            lines.append(f"\n{label}: retrained after {records[0]['at_reviews']}+ reviews; "
                         f"the gate promoted the candidate in {len(promoted)} of {len(records)} "
                         "replays (" + "; ".join(r["reason"] for r in records) + ").")
        lines.append("")
    lines.append("▲/▼: above/below the best heuristic at that budget beyond the paired 95% "
                 "interval. reviews to X%: median over the replays that got there (how many "
                 "did).")
    return "\n".join(lines)


def plot(report: Mapping[str, Mapping], path: Path) -> Path:
    """One panel a set: mean harmful found against reviews, a line a method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        block = report[name]
        for label, curve in block["curves"].items():
            ax.plot([p[0] for p in curve], [p[1] for p in curve], label=label)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("reviews")
        ax.set_ylabel("harmful found (mean)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _mean_curve(series: Sequence[Sequence[dict]], step: int = 5) -> list[tuple[int, float]]:
    last = max(s[-1]["reviewed"] for s in series)
    return [(r, round(mean(found_at(s, r) for s in series), 2))
            for r in range(0, last + step, step)]


def run_curves(corpora: Mapping[str, Sequence[LabelledItem]], methods: Sequence[str],
               out: Path, *, model: str | None = None, replays: int = 5,
               initial: float = 0.1, k: int = 4, max_reviews: int | None = 2000,
               retrain_at: float | None = 1.0, retrain_sets: Sequence[str] | None = None,
               retrain_epochs: int | None = None, blends: Sequence[Mapping[str, float]] = (),
               per_round: int | None = None, order: str = "arrival",
               progress: Callable[[str], None] = print) -> dict:
    """Every method on every set, ``replays`` replays each; writes curves.json/.md/.png.

    With ``model`` and ``retrain_at``, ``model+retrain`` is the model retrained once from the
    replay's own records after ``retrain_at`` times the harmful items to find in reviews
    (:func:`retrainer`; its models under ``out/retrain``), on the sets named in
    ``retrain_sets`` (None: all), SFT and DPO for ``retrain_epochs`` each (None: the YAML's);
    each prior -> weight mapping of ``blends`` adds the model with those priors blended in
    (:func:`extractors`);
    ``per_round`` caps the reviews of a round and ``order`` is the order moderators take
    listings in (:func:`simulate`).
    """
    out.mkdir(parents=True, exist_ok=True)
    factories = extractors(methods, model, blends)
    configs = {"sft_config": load_config(TrainConfig, None, "sft.yaml", epochs=retrain_epochs),
               "dpo_config": load_config(TrainConfig, None, "dpo.yaml", epochs=retrain_epochs)}
    report: dict[str, dict] = {}
    for name, items in corpora.items():
        market, known = replay_market(items)
        searcher = Searcher(market)
        harmful = sum(i.harmful for i in market)
        seeds_by_replay = [initial_seeds(market, initial, r) for r in range(replays)]
        to_find = harmful - len(seeds_by_replay[0])
        plans = [(label, label, None) for label in factories]
        if model and retrain_at is not None and (retrain_sets is None or name in retrain_sets):
            plans.append(("model+retrain", "model", max(1, round(retrain_at * to_find))))
        runs: dict[str, list[list[dict]]] = {}
        versions: dict[str, str] = {}
        retrained: dict[str, list[dict]] = {}
        for label, factory, after in plans:
            started = time.monotonic()
            for n, seeds in enumerate(seeds_by_replay):
                confirmed = TermCounts(_text(i) for i in [*known, *seeds])
                extractor = factories[factory](searcher, confirmed)
                versions[label] = extractor.model_version
                hook = None if after is None else retrainer(
                    model, market, out / "retrain" / name / f"replay-{n}", k=k,
                    progress=progress, **configs)
                replay = simulate(searcher, extractor, market, seeds, confirmed=confirmed, k=k,
                                  max_reviews=max_reviews, retrain=hook,
                                  retrain_at=after or 0, per_round=per_round, order=order)
                runs.setdefault(label, []).append(replay.series)
                if replay.retrained:
                    retrained.setdefault(label, []).append(replay.retrained)
            progress(f"{name} {label}: {replays} replays in {time.monotonic() - started:.1f}s")
        report[name] = {"market_size": len(market), "harmful": harmful,
                        "initial_seeds": len(seeds_by_replay[0]), "to_find": to_find,
                        "replays": replays, "data_hash": data_hash(market),
                        "model_versions": versions, "retrained": retrained,
                        "methods": compare(runs, to_find),
                        "curves": {label: _mean_curve(series) for label, series in runs.items()}}
    meta = {"protocol": PROTOCOL, "k": k, "initial": initial, "max_reviews": max_reviews,
            "per_round": per_round, "order": order,
            "blends": [dict(b) for b in blends] if model else None,
            "retrain_at": retrain_at if model else None, "retrain_sets": retrain_sets,
            "retrain_configs": {k: asdict(c) for k, c in configs.items()}, "model": model,
            "versions": library_versions()}
    (out / "curves.json").write_text(json.dumps({"meta": meta, "sets": report}, indent=1))
    (out / "curves.md").write_text(markdown(report) + "\n")
    plot(report, out / "curves.png")
    return report
