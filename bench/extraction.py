"""Query extraction throughput: the vLLM server against the in-process transformers backend.

Same model, same seeds, same run, for both decoding modes:

- ``extractive`` (the default): the model ranks each seed's word spans. Tokens counted are
  the prompt plus every ``span + newline`` continuation (what the model must score);
- ``free``: the model writes its query list. Tokens counted are the generated ones. Both
  backends decode greedily without constraints (the same algorithm); ``vllm+grammar`` adds the
  query-list grammar the worker uses by default (``structured_outputs``).

``transformers`` runs in this process (model loaded before the clock starts, batches in a
worker thread, as the worker runs it); ``vllm`` is a real server started from the project's
own virtualenv (``qexplorer serve-model``), reached over HTTP with ``concurrency`` requests
in flight, as the worker reaches it. Both run on the same CPU cores, one after the other.
Agreement (identical query lists) is reported next to speed: a faster path that answered
differently would not be the same model.

Usage: ``.venv/bin/python -m bench.extraction --seeds 64 --repeats 3 --out .cache/bench``
(``--model DIR``; default the model trained last, else a small bootstrapped one).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from pydantic import SecretStr

from agents.extractor.base import Extraction, Extractor, SeedText
from agents.extractor.model_input import prompt_ids
from agents.extractor.openai_backend import OpenAIExtractor, ServerUsage
from agents.extractor.transformers_backend import TransformersExtractor
from agents.queries import candidate_spans
from bench.common import free_port, machine, write_report
from qexplorer.config import Settings
from qexplorer.marketplace.synthetic import generate_marketplace, split_seeds
from qexplorer.serving.environment import detect_device, ensure_env, env_versions
from qexplorer.serving.server import ModelServer

K = 4


def seeds_for(n: int, seed: int = 7) -> list[SeedText]:
    """``n`` confirmed toxic items of the synthetic marketplace (EN and ZH clusters)."""
    items = generate_marketplace(n_benign=200, n_clusters=12, seed=seed)
    chosen = split_seeds(items, 1.0, seed=seed)[:n]
    return [SeedText(i.id, i.title, i.description) for i in chosen]


def load_tokenizer(model: str):
    """The model's own tokenizer (what both backends count tokens with), loaded apart from
    the extractor: ``AutoTokenizer`` from the model directory or hub id."""
    from transformers import AutoTokenizer

    path = Path(model).expanduser()
    if path.is_dir():
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    return AutoTokenizer.from_pretrained(model)


def work_tokens(tokenizer, seeds: list[SeedText], outputs: list[Extraction],
                extractive: bool) -> int:
    """Tokens of work, counted the same way for both backends (see the module docstring)."""
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    if extractive:
        return sum(len(prompt_ids(tokenizer, s.title, s.description, K))
                   + sum(count(f"{span}\n") for span in candidate_spans(s.title, s.description))
                   for s in seeds)
    return sum(count(text) for e in outputs for text in e.raw)


async def _time(extractor: Extractor, seeds: list[SeedText]) -> tuple[float, list[Extraction]]:
    started = time.perf_counter()
    out = await extractor.extract(seeds, K)
    return time.perf_counter() - started, out


async def _mode(local: TransformersExtractor, server: ModelServer, seeds: list[SeedText],
                repeats: int, concurrency: int, mode: str, api_key: SecretStr | None = None,
                ) -> tuple[dict[str, list[float]], dict[str, list[Extraction]], dict[str, int]]:
    """Alternate the backends ``repeats`` times in one event loop; also return the prompt
    tokens each server path reported (its real work). ``api_key``: what the server was
    started to require (the extractor settings' key)."""
    backends: dict[str, Extractor] = {"transformers": local}
    for name, structured in (("vllm", False), ("vllm+grammar", True)):
        if structured and local.extractive:
            continue  # the grammar only concerns free text
        backends[name] = OpenAIExtractor(
            server.base_url, model=server.name, api_key=api_key, extractive=local.extractive,
            structured=structured, concurrency=concurrency, timeout_s=120)
        await _time(backends[name], seeds[:2])  # warm-up: first requests compile, allocate
        backends[name].usage = ServerUsage()
    runs: dict[str, list[float]] = {name: [] for name in backends}
    outputs: dict[str, list[Extraction]] = {}
    for repeat in range(repeats):
        for name, extractor in backends.items():
            seconds, outputs[name] = await _time(extractor, seeds)
            runs[name].append(seconds)
        print(f"{mode} repeat {repeat + 1}/{repeats}: "
              + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in runs.items()), flush=True)
    prompt_tokens = {}
    for name, extractor in backends.items():
        if isinstance(extractor, OpenAIExtractor):
            prompt_tokens[name] = extractor.usage.prompt_tokens // repeats
            await extractor.aclose()
    return runs, outputs, prompt_tokens


def default_model(settings: Settings, workdir: Path) -> str:
    """The model trained last (``<cache>/models/LATEST``), else a small model bootstrapped
    into ``workdir``."""
    pointer = settings.paths.models_dir / "LATEST"
    if pointer.is_file():
        return pointer.read_text().strip()
    from trainer.bootstrap import BootstrapConfig, bootstrap

    items = generate_marketplace(n_benign=2000, n_clusters=12, seed=1)
    return str(bootstrap(items, workdir / "bootstrap", BootstrapConfig(steps=100), k=K))


def measure(model: str, seeds: list[SeedText], repeats: int, concurrency: int,
            settings: Settings, workdir: Path) -> dict:
    """Run both backends ``repeats`` times in each mode; return the report."""
    device = detect_device(settings.serving)
    python = ensure_env(settings.serving, settings.paths.envs_dir, device)
    server = ModelServer.of(settings, python, model, device=device, port=free_port(),
                            log_path=workdir / "vllm.log")
    tokenizer = load_tokenizer(model)
    results: dict[str, dict] = {}
    with server:
        for extractive in (True, False):
            mode = "extractive" if extractive else "free"
            local = TransformersExtractor(model, extractive=extractive)
            local.load_sync()  # loading is not extraction: outside the clock
            runs, outputs, prompt_tokens = asyncio.run(
                _mode(local, server, seeds, repeats, concurrency, mode,
                      settings.extractor.openai_api_key))
            baseline = outputs["transformers"]
            for name, seconds in runs.items():
                tokens = work_tokens(tokenizer, seeds, outputs[name], extractive)
                figures = results[f"{mode}/{name}"] = _summary(seconds, len(seeds), tokens)
                if name == "transformers":
                    continue
                figures["ratio_to_transformers"] = (
                    figures["seeds_per_s_median"]
                    / results[f"{mode}/transformers"]["seeds_per_s_median"])
                figures["identical_query_lists"] = sum(
                    a.queries == b.queries
                    for a, b in zip(baseline, outputs[name], strict=True)) / len(seeds)
                figures["server_prompt_tokens"] = prompt_tokens[name]
    return {
        "benchmark": "extraction", "seeds": len(seeds), "repeats": repeats, "k": K,
        "concurrency": concurrency, "model": model, "model_version": server.name,
        "machine": _machine(python, device), "results": results,
    }


def _summary(seconds: list[float], seeds: int, tokens: int) -> dict:
    rates = [seeds / s for s in seconds]
    return {"seeds_per_s_median": statistics.median(rates), "seeds_per_s_min": min(rates),
            "seeds_per_s_max": max(rates),
            "tokens_per_s_median": tokens / statistics.median(seconds), "tokens": tokens,
            "seconds": seconds}


def _machine(python: Path, device: str) -> dict:
    return {**machine(), "device": device, "server": env_versions(python)}


def markdown(report: dict) -> str:
    """The report as a Markdown table."""
    lines = ["| mode | backend | seeds/s (median) | min-max | tokens/s | vs transformers | "
             "same queries |", "|---|---|---|---|---|---|---|"]
    for key, f in report["results"].items():
        mode, backend = key.split("/")
        ratio = f.get("ratio_to_transformers")
        same = f.get("identical_query_lists")
        lines.append(
            f"| {mode} | {backend} | {f['seeds_per_s_median']:.2f} | "
            f"{f['seeds_per_s_min']:.2f}-{f['seeds_per_s_max']:.2f} | "
            f"{f['tokens_per_s_median']:,.0f} | {'' if ratio is None else f'{ratio:.2f}'} | "
            f"{'' if same is None else f'{same:.0%}'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure and write ``extraction.json`` and ``extraction.md`` to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="model directory (default: the model trained last)")
    parser.add_argument("--seeds", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path(".cache/bench"))
    args = parser.parse_args()
    started = time.time()
    settings = Settings()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or default_model(settings, Path(tmp))
        body = measure(model, seeds_for(args.seeds), args.repeats, args.concurrency,
                       settings, Path(tmp))
    report = write_report(args.out, "extraction", body, started=started, render=markdown)
    print(markdown(report))


if __name__ == "__main__":
    main()
