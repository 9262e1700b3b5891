"""What every command shares: the console and the settings, loaded once and checked."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from qexplorer.config import Settings, SettingsError

console = Console()


def load_settings(**slices: dict[str, Any]) -> Settings:
    """The environment's settings with ``slices`` on top (values that are None are left
    out); an invalid value stops the command with a message naming its variable."""
    chosen = {name: {k: v for k, v in values.items() if v is not None}
              for name, values in slices.items()}
    try:
        settings = Settings.load(**{name: v for name, v in chosen.items() if v})
        from agents.extractor import registry

        registry.check(settings.extractor)
    except (SettingsError, ValueError) as exc:
        console.print(Text("invalid configuration: ", style="red") + Text(str(exc)))
        raise typer.Exit(2) from None
    return settings
