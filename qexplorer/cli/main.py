"""The ``qexplorer`` command: one entry point for every job, each a thin wrapper.

Every command reads the settings (environment / .env, ``cli.common.load_settings``); options
only override them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Annotated

import orjson
import typer

from qexplorer.cli.bench import bench_command
from qexplorer.cli.common import console, load_settings
from qexplorer.cli.deadletters import dead_letter_app
from qexplorer.cli.evaluate import disguises_command, eval_command
from qexplorer.cli.models import models_command, pretrained_command, promote_command
from qexplorer.cli.opensearch import opensearch_app
from qexplorer.cli.review import review_app
from qexplorer.cli.serve import rollout_command, serve_model_command
from qexplorer.cli.simulate import curves_command, replay_command
from qexplorer.cli.standing import standing_app
from qexplorer.cli.train import train_app

app = typer.Typer(help="QExplorer: find disguised toxic listings from confirmed ones.",
                  no_args_is_help=True, add_completion=False)
kafka_app = typer.Typer(help="The local development Kafka broker (KRaft, no Docker).",
                        no_args_is_help=True)
topics_app = typer.Typer(help="Create, list and delete QExplorer's topics.", no_args_is_help=True)
publish_app = typer.Typer(help="Publish listings or confirmed toxic items from a file.",
                          no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(opensearch_app, name="opensearch")
app.add_typer(topics_app, name="topics")
app.add_typer(publish_app, name="publish")
app.add_typer(train_app, name="train")
app.add_typer(review_app, name="review")
app.add_typer(standing_app, name="standing")
app.add_typer(dead_letter_app, name="dead-letter")
app.command("eval")(eval_command)
app.command("replay")(replay_command)
app.command("curves")(curves_command)
app.command("disguises")(disguises_command)
app.command("serve-model")(serve_model_command)
app.command("rollout")(rollout_command)
app.command("promote")(promote_command)
app.command("models")(models_command)
app.command("pretrained")(pretrained_command)
app.command("bench")(bench_command)


# --- kafka -----------------------------------------------------------------------------------


@kafka_app.command("start")
def kafka_start() -> None:
    """Fetch the broker jars (first time only), format storage and start the broker."""
    from qexplorer.harness import broker

    status = broker.start(broker.LocalBroker.of(load_settings()), progress=console.print)
    console.print(f"kafka running: pid {status.pid} at {status.bootstrap}")


@kafka_app.command("stop")
def kafka_stop() -> None:
    """Stop the local broker."""
    from qexplorer.harness import broker

    console.print("stopped" if broker.stop(broker.LocalBroker.of(load_settings()))
                  else "not running")


@kafka_app.command("status")
def kafka_status() -> None:
    """Show whether the local broker runs and answers."""
    from qexplorer.harness import broker

    status = broker.status(broker.LocalBroker.of(load_settings()))
    console.print(status)
    raise typer.Exit(0 if status.reachable else 1)


@kafka_app.command("reset")
def kafka_reset() -> None:
    """Stop the local broker and delete its data."""
    from qexplorer.harness import broker

    broker.reset(broker.LocalBroker.of(load_settings()))
    console.print("broker data deleted")


# --- topics ----------------------------------------------------------------------------------


@topics_app.command("create")
def topics_create() -> None:
    """Create the topics that are missing, as the registry declares them."""
    from qexplorer.kafka.admin import check_topics, create_topics

    settings = load_settings()
    created = asyncio.run(create_topics(settings.kafka, settings.topics))
    console.print(f"created: {', '.join(created) or 'nothing (all exist)'}")
    check = asyncio.run(check_topics(settings.kafka, settings.topics))  # topics that existed
    for line in [*check.refusals, *check.warnings]:
        console.print(f"[yellow]differs from the registry[/yellow] {line}", highlight=False)


@topics_app.command("list")
def topics_list() -> None:
    """Show QExplorer's topics: partitions, configuration and what each carries."""
    settings = load_settings()
    topics = settings.topics
    for name, spec in topics:
        config = ", ".join(f"{k}={v}" for k, v in topics.config(spec).items())
        console.print(f"{name}\t{topics.partitions(spec)} partitions\t{config}\t{spec.doc}",
                      highlight=False)


@topics_app.command("check")
def topics_check() -> None:
    """Compare the live topics with the registry (what a worker checks at start)."""
    from qexplorer.kafka.admin import check_topics

    settings = load_settings()
    check = asyncio.run(check_topics(settings.kafka, settings.topics))
    for line in check.refusals:
        console.print(f"[red]refused[/red] {line}", highlight=False)
    for line in check.warnings:
        console.print(f"[yellow]differs[/yellow] {line}", highlight=False)
    if check.ok and not check.warnings:
        console.print("the live topics match the registry")
    raise typer.Exit(0 if check.ok else 1)


@topics_app.command("delete")
def topics_delete(yes: Annotated[bool, typer.Option("--yes", help="Really delete.")] = False
                  ) -> None:
    """Delete QExplorer's topics (with the configured prefix) and faust's own."""
    from qexplorer.kafka.admin import delete_topics

    if not yes:
        console.print("refusing without --yes")
        raise typer.Exit(2)
    settings = load_settings()
    deleted = asyncio.run(delete_topics(settings.kafka, settings.topics,
                                        app_id=settings.worker.app_id))
    console.print(f"deleted: {', '.join(deleted) or 'nothing'}")


# --- worker ----------------------------------------------------------------------------------


@app.command()
def worker(
    worker_id: Annotated[str | None, typer.Option(help="Names this worker's index.")] = None,
    loglevel: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
) -> None:
    """Run a worker: index every listing, explore the seeds assigned to it. It checks the
    broker and its topics first and exits with status 2, saying why in one line, when it
    cannot work."""
    from streams.app import run_worker
    from streams.startup import StartupRefused

    try:
        run_worker(load_settings(worker={"worker_id": worker_id}), loglevel=loglevel)
    except StartupRefused as exc:
        typer.echo(f"refusing to run: {exc}", err=True)
        raise typer.Exit(2) from None


# --- platform side ---------------------------------------------------------------------------


def _publish(kind: str, path: Path, confirmed_by: str) -> None:
    from qexplorer.kafka.io import publish, read_rows, rows_to_records
    from schemas.topics import LISTINGS, TOXIC_ITEMS

    settings = load_settings()
    records, errors = rows_to_records(read_rows(path), kind, confirmed_by)
    for error in errors[:20]:
        console.print(f"[red]{path}:{error.line}[/red] {error.error}")
    spec = LISTINGS if kind == "listings" else TOXIC_ITEMS
    sent = asyncio.run(publish(settings.kafka, settings.topics, spec, records))
    console.print(f"published {sent} records to {settings.topics.name(spec)}; "
                  f"{len(errors)} rows rejected")
    if errors:
        raise typer.Exit(1)


@publish_app.command("listings")
def publish_listings(path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)]) -> None:
    """Publish listings (JSONL or CSV: id, title, description, category, price, seller, ...)."""
    _publish("listings", path, "cli")


@publish_app.command("toxic")
def publish_toxic(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
    confirmed_by: Annotated[str, typer.Option(help="Who confirmed them.")] = "cli",
) -> None:
    """Publish confirmed toxic items (JSONL or CSV: id, title, description, cluster, ...)."""
    _publish("toxic", path, confirmed_by)


@app.command()
def tail(
    topic: Annotated[str, typer.Argument(
        help="A topic of the registry: detections, search-feedback, moderation-decisions, "
             "dead-letter, listings, toxic-items, model-rollouts, model-registry.")] = "detections",
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest message.")] = False,
    limit: Annotated[int, typer.Option(help="Stop after this many (0: never).")] = 0,
) -> None:
    """Show a topic live, one readable line a message."""
    from qexplorer.kafka.io import follow

    settings = load_settings()
    try:
        spec = settings.topics.spec(topic)
    except KeyError as exc:
        console.print(str(exc.args[0]))
        raise typer.Exit(2) from None

    async def run() -> None:
        seen = 0
        async for message in follow(settings.kafka, settings.topics.name(spec), from_beginning):
            console.print(format_message(spec.name, message.value), highlight=False)
            seen += 1
            if limit and seen >= limit:
                return

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


def format_message(topic: str, value: bytes | None) -> str:
    """One readable line for a record of the topic with this logical name."""
    try:
        data = orjson.loads(value or b"null")
    except orjson.JSONDecodeError:
        return f"<undecodable {len(value or b'')} bytes>"
    if not isinstance(data, dict):
        return repr(data)
    if topic == "detections":
        return (f"{data.get('seed_id')} -> {data.get('listing_id')}  rank {data.get('best_rank')}"
                f"  score {data.get('best_score', 0):.2f}  [{data.get('model_version')}]  "
                f"{data.get('listing_title', '')[:60]!r}  via {data.get('queries')}")
    if topic == "search-feedback":
        ids = [r.get("listing_id") for r in data.get("results", [])][:5]
        return f"{data.get('seed_id')}  q={data.get('query')!r}  -> {ids}"
    if topic == "dead-letter":
        return (f"{data.get('stage')}: {data.get('error')}  "
                f"({data.get('topic')}@{data.get('offset')})")
    if topic == "moderation-decisions":
        return (f"{data.get('decision')} {data.get('listing_id')} by {data.get('reviewer')}"
                f"  seeds {data.get('seed_ids')}  [{', '.join(data.get('model_versions', []))}]"
                + (f"  {data.get('reason')!r}" if data.get("reason") else ""))
    if topic == "model-rollouts":
        return (f"{data.get('extractor')} {data.get('model') or ''} "
                f"{data.get('base_url') or ''} [{data.get('model_version') or ''}] "
                f"{data.get('reason', '')}")
    if topic == "model-registry":
        return (f"{data.get('decision')} {data.get('candidate_version')} vs "
                f"{data.get('incumbent_version')}: {data.get('reason')}")
    title = data.get("title")
    return f"{data.get('op', 'item')} {data.get('id')}" + (f"  {title[:60]!r}" if title else "")


@app.command("settings")
def show_settings() -> None:
    """Every setting: its variable, the value in effect (secrets masked) and its meaning."""
    from qexplorer.config.settings import environment_variables

    current = load_settings()
    for row in environment_variables():
        value = getattr(getattr(current, row["slice"]), row["field"])
        shown = "" if value is None else str(value)
        console.print(f"{row['variable']}={shown}\t# {row['description'] or row['field']}",
                      highlight=False, soft_wrap=True)


# --- schemas and data ------------------------------------------------------------------------


@app.command("schemas")
def schemas_export(
    out: Annotated[Path, typer.Option(help="Where to write the JSON Schema files.")] = Path(
        "schemas/json"),
) -> None:
    """Export each topic's contract as a JSON Schema file for other languages."""
    from schemas.export import export_json_schemas

    for path in export_json_schemas(out):
        console.print(f"wrote {path}")


@app.command()
def generate(
    out: Annotated[Path, typer.Argument(help="JSONL file to write.")],
    benign: Annotated[int, typer.Option(help="Benign listings.")] = 2000,
    clusters: Annotated[int, typer.Option(help="Toxic clusters.")] = 12,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 7,
    labels: Annotated[bool, typer.Option(help="Include harmful/cluster labels.")] = True,
    corpus: Annotated[list[str] | None, typer.Option(
        "--corpus", help="Instead: these labelled sets (synthetic or of "
        "QEXPLORER_DATASETS_DIR) as one shuffled file, each id prefixed with its set; a new "
        "labelled set for `train all --data`.")] = None,
) -> None:
    """Write a synthetic marketplace (benign listings and disguised toxic clusters), or a mix
    of labelled sets."""
    from qexplorer.marketplace.synthetic import generate_marketplace, write_jsonl

    if corpus:
        from qexplorer.marketplace.corpora import mix_corpora

        items = mix_corpora(corpus, seed=seed)
    else:
        items = generate_marketplace(n_benign=benign, n_clusters=clusters, seed=seed)
    write_jsonl(items, out, labels=labels)
    console.print(f"wrote {len(items)} listings ({sum(i.harmful for i in items)} toxic) to {out}")


@app.command()
def demo(
    dataset: Annotated[str | None, typer.Option(
        help="Run on a real set of the datasets directory (sms_spam, youtube_spam, "
             "scamspot_instagram, cryptoscamhunter, dream_market) instead of the synthetic one."
    )] = None,
    benign: Annotated[int, typer.Option(help="Synthetic benign listings.")] = 3000,
    confirm: Annotated[float, typer.Option(help="Share of toxic items confirmed as seeds.")
                       ] = 0.15,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for exploration.")] = 300.0,
    keep: Annotated[bool, typer.Option(help="Keep the demo's topics afterwards.")] = False,
    model: Annotated[str | None, typer.Option(
        help="Explore with this trained model (transformers backend) instead of keywords."
    )] = None,
    review: Annotated[bool, typer.Option(
        help="Then serve the review queue with the demo's detections until Ctrl-C.")] = False,
) -> None:
    """The main job on embedded defaults: broker, topics, a worker, a marketplace, detections."""
    from qexplorer.cli.demo import run_demo

    settings = load_settings(extractor={"backend": "transformers", "model": model}
                             if model else {})
    summary = run_demo(settings, dataset=dataset, benign=benign, confirm=confirm,
                       timeout_s=timeout, keep=keep, console=console, review=review)
    if summary.seeds_explored < summary.seeds:
        raise typer.Exit(1)


def main() -> None:
    """Console-script entry point."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":
    main()
