"""``qexplorer standing list|retire``: thin commands around ``streams.standing``."""

from __future__ import annotations

import asyncio
import getpass
from typing import Annotated

import typer

from qexplorer.cli.common import console, load_settings

standing_app = typer.Typer(help="Standing queries: the queries that keep watching new "
                                "listings after their seed was explored.")


@standing_app.command("list")
def list_command(
    everything: Annotated[bool, typer.Option(
        "--all", help="Retired and expired queries too.")] = False,
) -> None:
    """Every standing query (newest first): state, precision so far, expiry, seed, version."""
    from streams.standing import read_book

    settings = load_settings()
    book, bad = asyncio.run(read_book(settings))
    rows = book.rows()
    shown = [r for r in rows if everything or r.active]
    for r in shown:
        q, o = r.query, r.outcomes
        precision = "   -" if o.precision is None else f"{o.precision:.2f}"
        state = "active " if r.active else "retired"
        console.print(
            f"{q.query_id}  {state}  precision {precision} ({o.confirmed}/{o.reviewed})  "
            f"expires {r.expires_at:%Y-%m-%d %H:%M}  seed {q.seed_id}  {q.model_version}  "
            f"{q.query!r}" + (f"  ({r.retired})" if r.retired else ""),
            highlight=False, soft_wrap=True, markup=False)
    active = sum(r.active for r in rows)
    console.print(f"{active} active of {len(rows)} standing queries "
                  f"({len(book.active())} matched, at most {settings.standing.max_active})"
                  + (f"; {bad} unreadable records skipped" if bad else ""), highlight=False)


@standing_app.command("retire")
def retire_command(
    query_ids: Annotated[list[str], typer.Argument(help="Query ids (from `standing list`).")],
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "",
) -> None:
    """Stop standing queries from watching new listings (every worker, at its next batch)."""
    from streams.standing import retire

    settings = load_settings()
    try:
        records = asyncio.run(retire(settings, query_ids, reason=reason,
                                     by=f"operator {getpass.getuser()}"))
    except KeyError as exc:
        console.print(f"[red]{exc.args[0]}[/red]")
        raise typer.Exit(2) from None
    for record in records:
        console.print(f"retired {record.query_id} {record.query!r}", highlight=False,
                      markup=False)
