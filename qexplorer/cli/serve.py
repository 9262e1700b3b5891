"""``qexplorer serve-model`` and ``qexplorer rollout``: serve a model with vLLM, switch workers.

Blue/green rollout of a newly trained model, with the stream running::

    qexplorer serve-model .cache/models/run-v2/dpo --port 8001      # next to the live one
    qexplorer promote .cache/models/run-v2/dpo --extractor openai \
        --served-model dpo --base-url http://127.0.0.1:8001/v1      # gate, then rollout

``qexplorer rollout`` publishes a rollout directly: for a model, only one the gate promoted
(``model-registry``), unless ``--without-gate`` says otherwise on the record.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Annotated

import typer

from qexplorer.cli.common import console, load_settings


def serve_model_command(
    model: Annotated[str | None, typer.Argument(
        help="Model directory or Hugging Face id (default: the model trained last).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default QEXPLORER_SERVE_PORT).")] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or auto.")] = None,
    setup_only: Annotated[bool, typer.Option(
        "--setup-only", help="Build the server's virtualenv and exit.")] = False,
) -> None:
    """Serve a model with vLLM's OpenAI-compatible server (its own virtualenv; built on
    first use, a few minutes). Runs in the foreground until Ctrl-C."""
    from qexplorer.cli.common import latest_model
    from qexplorer.serving.environment import detect_device, ensure_env
    from qexplorer.serving.server import ModelServer

    settings = load_settings(serving={"device": device})
    device = detect_device(settings.serving)
    with console.status(f"model server environment ({device}): building if needed"):
        python = ensure_env(settings.serving, settings.paths.envs_dir, device)
    console.print(f"model server environment: {python.parent.parent}")
    if setup_only:
        return
    model = model or latest_model()
    if not model:
        console.print("[red]no model: pass a directory or train one (qexplorer train all, or "
                      "qexplorer train bootstrap for an untrained one)[/red]")
        raise typer.Exit(2)
    server = ModelServer.of(settings, python, model, device=device, port=port)
    server.start()
    try:
        with console.status(f"starting vLLM for {server.name} (log {server.log_path})"):
            server.wait_ready()
        console.print(f"[green]serving[/green] {server.name} at {server.base_url}\n"
                      f"workers: QEXPLORER_EXTRACTOR=openai "
                      f"QEXPLORER_OPENAI_BASE_URL={server.base_url}\n"
                      f"running workers: qexplorer rollout --base-url {server.base_url}")
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt))
        server.process.wait()
        console.print(f"[red]vLLM exited with {server.process.returncode}[/red]\n{server.tail()}")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        console.print("stopping the model server")
    except RuntimeError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        server.stop()


def rollout_command(
    model: Annotated[str | None, typer.Option(
        help="Served model name (openai; default: the server's first model), or a model "
             "directory / hub id (transformers).")] = None,
    base_url: Annotated[str | None, typer.Option(
        help="openai: the server's API root (default QEXPLORER_OPENAI_BASE_URL); workers "
             "must allow it (QEXPLORER_ROLLOUT_BASE_URLS).")] = None,
    extractor: Annotated[str, typer.Option(help="openai, transformers or keywords.")
                         ] = "openai",
    version: Annotated[str | None, typer.Option(
        help="Record detections under this version (default: served name / model card).")
                       ] = None,
    reason: Annotated[str, typer.Option(help="Why (kept with the record).")] = "",
    without_gate: Annotated[bool, typer.Option(
        "--without-gate", help="Roll out a model the gate has not promoted (said on the "
        "record); the way in is `qexplorer promote`.")] = False,
) -> None:
    """Switch every running worker to another model, without stopping the stream: each
    worker probes the new model, then explores its next seeds with it. A model must have been
    promoted by the gate (`qexplorer promote`), unless --without-gate."""
    from agents.extractor.registry import BACKENDS
    from qexplorer.kafka.io import publish
    from schemas.models import ModelRollout
    from schemas.topics import MODEL_ROLLOUTS

    settings = load_settings()
    try:
        if extractor not in BACKENDS:
            raise ValueError(f"unknown extractor {extractor!r}: one of {', '.join(BACKENDS)}")
        if extractor != "keywords" and not without_gate:
            _check_promoted(settings, extractor, model, version)
        record = ModelRollout(extractor=extractor, model=model, base_url=base_url,
                              model_version=version, issued_by="cli",
                              reason=f"{reason} [without gate]"[:200] if without_gate
                              and extractor != "keywords" else reason)
    except ValueError as exc:
        console.print(f"[red]invalid rollout:[/red] {exc}")
        raise typer.Exit(2) from None
    asyncio.run(publish(settings.kafka, settings.topics, MODEL_ROLLOUTS, [record]))
    console.print(f"published to {settings.topics.rollouts}: {extractor} "
                  f"{model or '(served model)'} "
                  f"{base_url or settings.extractor.openai_base_url}; workers log the switch "
                  f"or refuse it to {settings.topics.dead_letter}")


def _check_promoted(settings, extractor: str, model: str | None, version: str | None) -> None:
    """Raise ValueError unless the gate's last judgement of the model's version promoted it."""
    from trainer.promote import registry
    from trainer.train import model_card

    version = version or (model_card(model).get("version") if model else None)
    if not version:
        raise ValueError(f"{extractor} rollout without a known model version: pass --version "
                         "(the version the gate promoted) or --without-gate")
    judged = [e for e in registry(settings) if e.candidate_version == version]
    if not judged:
        raise ValueError(f"{version} was never judged by the gate: qexplorer promote it, or "
                         "pass --without-gate")
    if judged[-1].decision != "promoted":
        raise ValueError(f"the gate refused {version}: {judged[-1].reason}")
