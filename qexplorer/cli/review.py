"""``qexplorer review``: the moderators' review service, and the password hashes it reads."""

from __future__ import annotations

import asyncio
import getpass
import logging.config
from typing import Annotated

import typer

from qexplorer.cli.common import console, load_settings

review_app = typer.Typer(help="The moderators' review queue in the browser.",
                         invoke_without_command=True)


@review_app.callback()
def review_command(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Bind address (QEXPLORER_REVIEW_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (QEXPLORER_REVIEW_PORT).")] = None,
) -> None:
    """Serve the review queue until Ctrl-C: detections to decide, decisions to the
    moderation-decisions topic, confirms to toxic-items (seeds)."""
    if ctx.invoked_subcommand is not None:
        return
    from qexplorer.review.service import ReviewService
    from streams.metrics import logging_config

    settings = load_settings(review={"host": host, "port": port})
    if not settings.review.users:
        console.print("[red]no reviewers: set QEXPLORER_REVIEW_USERS to "
                      '{"name": "<hash>"} with hashes from `qexplorer review hash-password`'
                      "[/red]")
        raise typer.Exit(2)
    logging.config.dictConfig(logging_config(settings.worker, "INFO"))
    service = ReviewService(settings)
    try:
        asyncio.run(service.run(ready=lambda url: console.print(
            f"review service at {url} ({len(service.queue.items)} listings found, "
            f"{service.queue.depth()} waiting)")))
    except KeyboardInterrupt:
        console.print("review service stopped")
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None


@review_app.command("hash-password")
def hash_password_command(
    name: Annotated[str, typer.Argument(help="The reviewer's sign-in name.")],
) -> None:
    """Read a password (twice, not echoed) and print the reviewer's entry for
    QEXPLORER_REVIEW_USERS."""
    import orjson

    from qexplorer.review.auth import hash_password

    password = getpass.getpass("password: ")
    if password != getpass.getpass("again: "):
        console.print("[red]the two passwords differ[/red]")
        raise typer.Exit(1)
    if len(password) < 8:
        console.print("[red]use at least 8 characters[/red]")
        raise typer.Exit(1)
    print(orjson.dumps({name: hash_password(password)}).decode())
