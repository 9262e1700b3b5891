"""What every command shares: the console, the settings (loaded once and checked), and the
options and helpers of the commands that work on corpora and models.

Corpora are chosen with ``--data FILE.jsonl`` (the generic labelled format) or ``--corpus NAME``
(``synthetic`` or a set of the labelled datasets directory; default: every one available). The
latest trained model is remembered in ``<cache>/models/LATEST`` and is the default ``--model``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

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


DataOpt = Annotated[Path | None, typer.Option(
    "--data", exists=True, dir_okay=False,
    help="Labelled JSONL: id, text (or title+description), harmful, optional cluster.")]
CorpusOpt = Annotated[list[str] | None, typer.Option(
    "--corpus", help="synthetic or a set of QEXPLORER_DATASETS_DIR (repeatable; default: all).")]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", help="Hugging Face model id or directory (default: the latest trained).")]


def models_dir() -> Path:
    """Where models, runs and reports go by default (``<cache>/models``)."""
    return load_settings().paths.models_dir


def corpora(data: Path | None, names: list[str] | None) -> dict:
    """The corpora a command works on: ``--data`` alone, else the ``--corpus`` names, else
    every set available (the missing ones skipped with a word)."""
    from qexplorer.marketplace.corpora import corpus_names, load_corpus

    if data is not None:
        return dict([load_corpus(data)])
    corpora = {}
    for name in names or corpus_names():
        try:
            key, items = load_corpus(name)
        except FileNotFoundError:
            if names:
                raise
            console.print(f"[yellow]skipping {name}: not in the datasets directory "
                          "(QEXPLORER_DATASETS_DIR)[/yellow]")
            continue
        corpora[key] = items
    return corpora


def remember_model(model: Path) -> None:
    models_dir().mkdir(parents=True, exist_ok=True)
    (models_dir() / "LATEST").write_text(str(model.resolve()))


def latest_model() -> str | None:
    """The directory of the model trained last on this machine, if any."""
    pointer = models_dir() / "LATEST"
    return pointer.read_text().strip() if pointer.is_file() else None


def require_model(model: str | None) -> str:
    """``model``, else the latest trained; a usage error when there is none."""
    found = model or latest_model()
    if not found:
        console.print("[red]no model: pass --model or train one (qexplorer train all)[/red]")
        raise typer.Exit(2)
    return found


def out_dir(out: Path | None, kind: str) -> Path:
    """``out``, else a new ``<kind>-<time>`` directory under :func:`models_dir`."""
    return out or models_dir() / f"{kind}-{time.strftime('%Y%m%d-%H%M%S')}"


def blend_spec(spec: str) -> dict[str, float]:
    """``PRIOR=WEIGHT[,PRIOR=WEIGHT]`` as prior -> weight, or a usage error."""
    from agents.extractor.decoding import blend_weights

    weights = {}
    for part in spec.split(","):
        prior, _, weight = part.strip().partition("=")
        try:
            weights[prior] = float(weight)
        except ValueError:
            raise typer.BadParameter(f"--blend {spec!r}: expected PRIOR=WEIGHT") from None
    try:
        return blend_weights(weights)
    except ValueError as e:
        raise typer.BadParameter(f"--blend {spec!r}: {e}") from None
