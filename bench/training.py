"""Training throughput: TRL's SFT (``trainer.train``) against a plain PyTorch loop, the ceiling.

Same model (the bootstrapped architecture of ``trainer/configs/bootstrap.yaml``, freshly
initialised each run), same rows (prompt and target queries from the synthetic marketplace),
same batch size, sequence limit, optimiser (AdamW, the SFT learning rate) and precision
(float32 on the CPU), one epoch each, alternating ``repeats`` times in this process. The plain
loop does only what training needs: pad a batch to its longest row, mask the prompt out of
the loss, forward, backward, step. Tokens are the non-padding tokens trained on (TRL's own
``num_tokens`` for TRL, the attention mask's sum for the loop); the ratio TRL / loop is what
the trainer's machinery costs. ``trl-defaults`` is TRL with its own defaults for precision
(bf16 autocast, gradient checkpointing), which ``trainer.train``'s device plan turns off on
the CPU (``agents.extractor.device.plan``): what that choice is worth, in the same run.

``--pretrained``: the pinned pretrained model (``qexplorer pretrained``) instead, SFT and
DPO steps on the same rows (through its chat template, cut to 256 tokens), by how it is
trained: every weight, a LoRA adapter (r16, all linear layers), or the last 10 of its 30
blocks (``trainer/configs/sft-pretrained.yaml``); and every weight with TRL's fused LM head
projecting every position, as TRL does on the CPU without ``trainer.train``'s
``labelled_positions_only``. The DPO rows put the listing's first words against its last.

Usage: ``.venv/bin/python -m bench.training --rows 256 --repeats 3 --out .cache/bench``;
``--pretrained --rows 32 --repeats 2`` (about 20 minutes here).
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import tempfile
import time
import unittest.mock
from dataclasses import replace
from pathlib import Path

from agents.extractor.device import DevicePlan
from agents.prompt import build_prompt, format_completion
from bench.common import machine, write_report
from qexplorer.marketplace.synthetic import generate_marketplace
from trainer.bootstrap import BootstrapConfig, bootstrap
from trainer.plan import steps
from trainer.train import CONFIG_DIR, TrainConfig, load_config, model_card, train, write_rows

#: TRL's own precision defaults on the CPU: bf16 autocast and gradient checkpointing.
TRL_DEFAULTS = DevicePlan("cpu", "bfloat16", True, False, "cpu with TRL's precision defaults")

K = 4


def sft_rows(n: int, seed: int = 3) -> list[dict]:
    """``n`` SFT rows: a listing's prompt and, as target, its first words (the shape and
    length of real rows; what is learned does not matter for speed)."""
    items = generate_marketplace(n_benign=max(n, 200), n_clusters=12, seed=seed)
    random.Random(seed).shuffle(items)
    return [{"prompt": build_prompt(i.title, i.description, K),
             "completion": format_completion(i.title.split()[:2] or ["x"]),
             "corpus": "bench", "prompt_version": "bench"} for i in items[:n]]


def plain_loop(model_dir: Path, rows: list[dict], config: TrainConfig) -> tuple[float, int]:
    """One epoch of the same training in a plain PyTorch loop: (seconds, tokens)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(config.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    encoded = []
    for row in rows:
        prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
        target = tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + \
            [tokenizer.eos_token_id]
        ids = (prompt + target)[-config.max_length:]  # keep_end, as the trainer does
        encoded.append((ids, min(len(target), len(ids))))
    order = list(range(len(encoded)))
    random.Random(config.seed).shuffle(order)
    pad = tokenizer.pad_token_id or 0
    tokens = 0
    started = time.perf_counter()
    for start in range(0, len(order), config.batch_size):
        batch = [encoded[i] for i in order[start:start + config.batch_size]]
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        labels = torch.full((len(batch), width), -100)
        for row, (ids, n_target) in enumerate(batch):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            mask[row, :len(ids)] = 1
            labels[row, len(ids) - n_target:len(ids)] = torch.tensor(ids[-n_target:])
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        tokens += int(mask.sum())
    return time.perf_counter() - started, tokens


def measure(rows: list[dict], repeats: int, workdir: Path) -> dict:
    """Alternate TRL and the plain loop ``repeats`` times; the report."""
    import torch

    base_config = load_config(BootstrapConfig, None, "bootstrap.yaml", steps=1)
    base = bootstrap(generate_marketplace(n_benign=300, n_clusters=6, seed=1),
                     workdir / "base", base_config, k=K)
    config = load_config(TrainConfig, CONFIG_DIR / "sft.yaml", "sft.yaml", epochs=1)
    rows_path = workdir / "rows.jsonl"
    write_rows(rows, rows_path)
    runs: dict[str, list[tuple[float, int]]] = {"trl": [], "trl-defaults": [], "plain": []}
    for repeat in range(repeats):
        for name, chosen in (("trl", None), ("trl-defaults", TRL_DEFAULTS)):
            out = train(rows_path, str(base), workdir / f"{name}-{repeat}", config,
                        device="cpu", device_plan=chosen)
            metrics = model_card(str(out))["metrics"]
            runs[name].append((metrics["train_runtime_s"], metrics["tokens"]))
        runs["plain"].append(plain_loop(base, rows, config))
        print(f"repeat {repeat + 1}/{repeats}: "
              + ", ".join(f"{k} {v[-1][1] / v[-1][0]:,.0f} tokens/s" for k, v in runs.items()),
              flush=True)
    results = {name: _summary(found) for name, found in runs.items()}
    for name in ("trl", "trl-defaults"):
        results[name]["ratio_to_plain"] = (results[name]["tokens_per_s_median"]
                                           / results["plain"]["tokens_per_s_median"])
    return {"benchmark": "training", "rows": len(rows), "repeats": repeats,
            "model": model_card(str(base)).get("version"),
            "parameters": model_card(str(base)).get("parameters"),
            "config": {"batch_size": config.batch_size, "max_length": config.max_length,
                       "learning_rate": config.learning_rate, "epochs": 1},
            "machine": {**machine(), "torch_threads": torch.get_num_threads()},
            "results": results}


#: How the pretrained model is trained, by name: TrainConfig keywords, and whether TRL's fused
#: head projects only the labelled positions (``trainer.train.labelled_positions_only``).
PRETRAINED_WAYS = {
    "every weight": ({"lora": False}, True),
    "LoRA r16": ({"lora": True}, True),
    "last 10 blocks": ({"lora": False, "train_layers": 10}, True),
    "every weight, every position projected": ({"lora": False}, False),
}


def dpo_rows(rows: list[dict]) -> list[dict]:
    """DPO pairs of the same prompts: the target against the listing's last words."""
    out = []
    for row in rows:
        words = row["prompt"].split("</listing>")[0].split()
        out.append({"prompt": row["prompt"], "chosen": row["completion"],
                    "rejected": format_completion([" ".join(words[-2:]) or "x"]),
                    "corpus": "bench", "prompt_version": "bench"})
    return out


def measure_pretrained(rows: list[dict], repeats: int, workdir: Path, model: Path) -> dict:
    """SFT and DPO of the pretrained model in each of :data:`PRETRAINED_WAYS`, one epoch of
    ``rows`` each, alternating ``repeats`` times; seconds a step and tokens a second."""
    import torch

    import trainer.train as training

    paths = {"sft": workdir / "sft.jsonl", "dpo": workdir / "dpo.jsonl"}
    write_rows(rows, paths["sft"])
    write_rows(dpo_rows(rows), paths["dpo"])
    runs: dict[str, list[tuple[float, int, int]]] = {}
    for repeat in range(repeats):
        for way, (keywords, labelled_only) in PRETRAINED_WAYS.items():
            for stage in ("sft", "dpo"):
                config = replace(load_config(TrainConfig, None, f"{stage}-pretrained.yaml",
                                             epochs=1), **{"train_layers": None, **keywords})
                with contextlib.ExitStack() as stack:
                    if not labelled_only:
                        stack.enter_context(unittest.mock.patch.object(
                            training, "labelled_positions_only",
                            lambda device: contextlib.nullcontext()))
                    out = train(paths[stage], str(model), workdir / f"{stage}-{repeat}", config,
                                device="cpu")
                metrics = model_card(str(out))["metrics"]
                n_steps = steps(len(rows), config.epochs, config.batch_size)
                runs.setdefault(f"{stage}: {way}", []).append(
                    (metrics["train_runtime_s"], metrics["tokens"], n_steps))
                print(f"repeat {repeat + 1}/{repeats} {stage} {way}: "
                      f"{metrics['train_runtime_s'] / n_steps:.2f} s a step", flush=True)
    results = {}
    for name, found in runs.items():
        per_step = [seconds / n_steps for seconds, _, n_steps in found]
        results[name] = {**_summary([(s, t) for s, t, _ in found]),
                         "seconds_a_step_median": statistics.median(per_step),
                         "seconds_a_step": [round(x, 2) for x in per_step]}
    card = model_card(str(model))
    return {"benchmark": "training-pretrained", "rows": len(rows), "repeats": repeats,
            "model": card.get("version"), "parameters": card.get("parameters"),
            "config": {"batch_size": 8, "max_length": 256, "epochs": 1},
            "machine": {**machine(), "torch_threads": torch.get_num_threads()},
            "results": results}


def _summary(found: list[tuple[float, int]]) -> dict:
    rates = [tokens / seconds for seconds, tokens in found]
    return {"tokens_per_s_median": statistics.median(rates), "tokens_per_s_min": min(rates),
            "tokens_per_s_max": max(rates), "tokens": found[0][1],
            "seconds": [round(s, 2) for s, _ in found]}


def markdown(report: dict) -> str:
    """The report as a Markdown table."""
    if report["benchmark"] == "training-pretrained":
        lines = ["| stage: how | seconds a step (median) | each | tokens/s (median) |",
                 "|---|---|---|---|"]
        lines += [f"| {name} | {f['seconds_a_step_median']:.2f} | "
                  f"{', '.join(map(str, f['seconds_a_step']))} | "
                  f"{f['tokens_per_s_median']:,.0f} |" for name, f in report["results"].items()]
        return "\n".join(lines) + "\n"
    lines = ["| path | tokens/s (median) | min-max | tokens an epoch | seconds | vs plain loop |",
             "|---|---|---|---|---|---|"]
    for name, f in report["results"].items():
        ratio = f.get("ratio_to_plain")
        lines.append(f"| {name} | {f['tokens_per_s_median']:,.0f} | "
                     f"{f['tokens_per_s_min']:,.0f}-{f['tokens_per_s_max']:,.0f} | "
                     f"{f['tokens']:,} | {', '.join(map(str, f['seconds']))} | "
                     f"{'' if ratio is None else f'{ratio:.2f}'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure and write ``training.json`` and ``training.md`` to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(".cache/bench"))
    parser.add_argument("--pretrained", action="store_true",
                        help="the pinned pretrained model's SFT and DPO, by how it is trained")
    args = parser.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        if args.pretrained:
            from qexplorer.config import Settings
            from trainer.pretrained import ensure

            body = measure_pretrained(sft_rows(args.rows), args.repeats, Path(tmp),
                                      ensure(Settings().paths.models_dir))
        else:
            body = measure(sft_rows(args.rows), args.repeats, Path(tmp))
    name = "training-pretrained" if args.pretrained else "training"
    report = write_report(args.out, name, body, started=started, render=markdown)
    print(markdown(report))


if __name__ == "__main__":
    main()
