"""``qexplorer dead-letter list|show|replay``: thin commands around ``streams.deadletters``.

This module owns only the command line: options, what is printed and exit codes. Reading,
choosing, refusing and replaying are ``streams.deadletters``'s.
"""

from __future__ import annotations

import asyncio
import getpass
from datetime import UTC
from typing import Annotated

import orjson
import typer

from qexplorer.cli.common import console, load_settings

dead_letter_app = typer.Typer(
    help="Dead letters: the messages a worker or the review service could not process. "
         "List them, show one, replay them to the topic they came from.",
    no_args_is_help=True)

TopicOption = Annotated[str | None, typer.Option(
    help="Only those from this topic (its name with or without the prefix).")]
StageOption = Annotated[str | None, typer.Option(
    help="Only those that failed at this stage (decode-listing, explore, rollout, ...).")]
SinceOption = Annotated[str | None, typer.Option(
    help="Only those that failed since an ISO time (UTC unless it says) or for a duration "
         "(90s, 15m, 2h, 7d).")]
ReplayedOption = Annotated[bool | None, typer.Option(
    "--replayed/--not-replayed", help="Only those whose message was (or was not) replayed.",
    show_default=False)]


def _print(text: str) -> None:
    console.print(text, highlight=False, soft_wrap=True, markup=False)


def _when(moment) -> str:
    """A time stamp in UTC, to the second."""
    from streams.deadletters import aware

    return f"{aware(moment).astimezone(UTC):%Y-%m-%d %H:%M:%S}"


def _json(data: object) -> None:
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def _filters(topic: str | None, stage: str | None, since: str | None,
             replayed: bool | None):
    from schemas.models import utcnow
    from streams.deadletters import Filters, parse_since

    try:
        moment = parse_since(since, utcnow()) if since is not None else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from None
    return Filters(topic=topic, stage=stage, since=moment, replayed=replayed)


def _status(row) -> str:
    """What happened to a dead letter's message since, in a few words."""
    from streams.deadletters import printable

    parts = []
    last = row.last_replay
    if last is None:
        parts.append("not replayed")
    elif row.replays:
        parts.append(f"replayed {_when(last.replayed_at)} by {printable(last.replayed_by)}"
                     + (f" (x{len(row.replays)})" if len(row.replays) > 1 else ""))
    else:
        parts.append(f"replayed {_when(last.replayed_at)} via "
                     f"{last.dead_letter_partition}:{last.dead_letter_offset}")
    if row.failed_again:
        parts.append(f"failed again as {', '.join(row.failed_again)}")
    if row.replay_of:
        parts.append(f"a replay of {row.replay_of}")
    if row.duplicates:
        parts.append(f"same message as {', '.join(row.duplicates)}")
    return "; ".join(parts)


@dead_letter_app.command("list")
def list_command(
    topic: TopicOption = None,
    stage: StageOption = None,
    since: SinceOption = None,
    replayed: ReplayedOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON, one object a dead letter.")
                       ] = False,
) -> None:
    """Every dead letter, oldest first, and whether its message was replayed.

    A row: its id (partition:offset on the dead-letter topic), where its message came from,
    the stage and time it failed, what happened since, the error. Records that break the
    dead letters' own contract are listed as unreadable whatever the filters."""
    from streams.deadletters import listed, printable, read_book, summary

    settings = load_settings()
    filters = _filters(topic, stage, since, replayed)
    book = asyncio.run(read_book(settings))
    rows = listed(book, filters, settings.topic.prefix)
    if as_json:
        _json([summary(row) for row in rows])
        return
    for row in rows:
        e, r = row.entry, row.entry.record
        if r is None:
            _print(f"{e.id:>7}  UNREADABLE  {printable(e.problem, 160)}")
            continue
        _print(f"{e.id:>7}  {printable(r.topic, 80)}[{r.partition}]@{r.offset}  "
               f"{printable(r.stage, 40)}  {_when(r.failed_at)}  {_status(row)}  "
               f"{printable(r.error, 100)}")
    unreadable = sum(row.entry.record is None for row in rows)
    notes = [f"{sum(row.replayed for row in rows)} replayed"]
    if unreadable:
        notes.append(f"{unreadable} unreadable")
    if book.orphans:
        notes.append(f"{len(book.orphans)} replay records name no dead letter there is")
    if book.unreadable_replays:
        notes.append(f"{book.unreadable_replays} replay records unreadable")
    _print(f"{len(rows)} of {len(book.rows)} dead letters on {settings.topics.dead_letter} "
           f"({'; '.join(notes)})")


@dead_letter_app.command("show")
def show_command(
    dead_letter: Annotated[str, typer.Argument(
        metavar="ID", help="The dead letter's id (partition:offset, from `dead-letter list`).")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON, raw bytes whole.")] = False,
) -> None:
    """Everything about one dead letter, its raw message and its replays.

    Where its message came from, the error, its raw key and value (as text when they are
    UTF-8, else base64 and hex), whether it can be replayed, its replays and the other dead
    letters of the same message."""
    from streams.deadletters import printable, read_book, refusal, summary

    settings = load_settings()
    book = asyncio.run(read_book(settings))
    try:
        row = book.find(dead_letter)
    except (KeyError, ValueError) as exc:
        console.print(f"[red]{printable(str(exc.args[0]))}[/red]")
        raise typer.Exit(2) from None
    data = summary(row, raw=True)
    if as_json:
        _json(data)
        return
    e, r = row.entry, row.entry.record
    _print(f"dead letter {e.id} on {settings.topics.dead_letter}, written {data['written_at']}")
    if r is None:
        _print(f"unreadable: {printable(e.problem)}")
        return
    why = refusal(row, settings.topics, again=True)
    for label, value in [
        ("key", data["key"]),
        ("source", f"{r.topic}[{r.partition}]@{r.offset}"),
        ("stage", r.stage),
        ("failed at", data["failed_at"]),
        ("error", r.error),
        ("replayable", "yes (a newer record of its key is looked for when replaying)"
                       if why is None else f"no: {why}"),
    ]:
        _print(f"{label:<11}{printable(str(value))}")
    if "raw_error" in data:
        _print(f"{'raw':<11}{data['raw_error']}: key {printable(str(r.raw_key_b64), 200)!r}, "
               f"value {printable(r.raw_value_b64, 200)!r}")
    for label in ("raw_key", "raw_value"):
        raw = data.get(label)
        name = label.replace("_", " ")
        if raw is None:
            if label in data:
                _print(f"{name:<11}none")
            continue
        if raw["utf8"] is not None:
            _print(f"{name:<11}{raw['bytes']} bytes, UTF-8:")
            _print(printable(raw["utf8"], 4_000, lines=True)
                   + ("\n(cut at 4,000 characters: --json shows it whole)"
                      if len(raw["utf8"]) > 4_000 else ""))
        else:
            _print(f"{name:<11}{raw['bytes']} bytes, not UTF-8; first bytes in hex: "
                   f"{raw['hex_preview']}")
            _print(f"{'':<11}base64: {printable(raw['base64'], 4_000)}")
    for replay in row.replays:
        _print(f"replayed   {_when(replay.replayed_at)} by "
               f"{printable(replay.replayed_by)} to {replay.topic}[{replay.partition}]@"
               f"{replay.offset}" + (f": {printable(replay.reason)}" if replay.reason else ""))
    for replay in row.via:
        _print(f"replayed   {_when(replay.replayed_at)} via "
               f"{replay.dead_letter_partition}:{replay.dead_letter_offset} (the same message) "
               f"to {replay.topic}[{replay.partition}]@{replay.offset}")
    if not row.replayed:
        _print("replayed   never")
    for label, ids in [("failed again as", row.failed_again),
                       ("same message as", row.duplicates),
                       ("a replay of", [row.replay_of] if row.replay_of else [])]:
        if ids:
            _print(f"{label} {', '.join(ids)}")


@dead_letter_app.command("replay")
def replay_command(
    dead_letters: Annotated[list[str] | None, typer.Argument(
        metavar="ID", help="Dead letter ids (partition:offset, from `dead-letter list`).",
        show_default=False)] = None,
    everything: Annotated[bool, typer.Option(
        "--all", help="Every dead letter passing the filters instead of ids.")] = False,
    topic: TopicOption = None,
    stage: StageOption = None,
    since: SinceOption = None,
    replayed: ReplayedOption = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Say what would be replayed; send nothing.")] = False,
    again: Annotated[bool, typer.Option(
        "--again", help="Replay a message that was replayed before too.")] = False,
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
    by: Annotated[str | None, typer.Option(
        help="Who replays, for the record (default: the user running this).")] = None,
) -> None:
    """Re-publish dead letters' messages, unchanged, to the topic they came from.

    The raw key and value go to the topic and partition they came from (an input topic of
    this deployment: listings, toxic-items, moderation-decisions, model-rollouts); each
    replay is recorded on dead-letter-replays once the broker has the message. A message
    already replayed is refused unless --again; so is one that a newer record of its key
    has superseded. Exits 1 when any chosen dead letter was refused."""
    from streams.deadletters import ReplayError, printable, read_book, replay, selected

    if everything == bool(dead_letters):
        raise typer.BadParameter("name dead letter ids or --all, not both or neither")
    if dead_letters and any(x is not None for x in (topic, stage, since, replayed)):
        raise typer.BadParameter("--topic, --stage, --since and --replayed go with --all")
    settings = load_settings()
    filters = _filters(topic, stage, since, replayed)
    try:
        who = by or getpass.getuser()
    except (KeyError, OSError):  # no user name in the environment or the password database
        who = "unknown"

    async def run():
        book = await read_book(settings)
        if everything:
            rows = selected(book, filters, settings.topic.prefix)
        else:
            rows = [book.find(x) for x in dead_letters]
        return await replay(settings, rows, again=again, dry_run=dry_run, reason=reason,
                            by=who)

    try:
        planned = asyncio.run(run())
    except (KeyError, ValueError) as exc:
        console.print(f"[red]{printable(str(exc.args[0]))}[/red]")
        raise typer.Exit(2) from None
    except ReplayError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    for p in planned:
        r = p.row.entry.record
        if p.replay is not None:
            _print(f"replayed {p.row.id} -> {p.replay.topic}[{p.replay.partition}]@"
                   f"{p.replay.offset}")
        elif p.go:
            _print(f"would replay {p.row.id} -> {r.topic}[{r.partition}]")
        elif p.duplicate_of:
            _print(f"skipped {p.row.id}: the same message as {p.duplicate_of}, replayed once")
        else:
            _print(f"refused {p.row.id}: {printable(p.refused)}")
    done = sum(p.go for p in planned)
    refused = sum(p.refused is not None for p in planned)
    duplicates = sum(p.duplicate_of is not None for p in planned)
    _print(f"{done} {'would be ' if dry_run else ''}replayed, {refused} refused, "
           f"{duplicates} skipped as duplicates")
    if refused:
        raise typer.Exit(1)
