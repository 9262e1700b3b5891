"""SFT and DPO of the query extractor with TRL, and the model directory they leave behind.

Each stage reads its JSONL rows (``trainer.dataset``), trains with TRL's SFTTrainer or
DPOTrainer (optionally a LoRA adapter, merged before saving so every backend, vLLM included,
serves a plain model), and saves a Hugging Face model directory with a ``qexplorer.json`` card:
version, stage, base model and its version, data hashes, hyperparameters and metrics.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from agents.extractor.device import Device, DevicePlan, count_parameters, detect, plan
from agents.extractor.model_input import trl_row, uses_chat
from qexplorer.config.versions import library_versions

CONFIG_DIR = Path(__file__).parent / "configs"
CARD = "qexplorer.json"


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training stage (YAML in ``trainer/configs``)."""

    stage: str = "sft"
    epochs: float = 3
    batch_size: int = 16
    learning_rate: float = 1e-3
    max_length: int = 512
    beta: float = 0.1
    lora: bool | None = None  # None: by the model's size (agents.extractor.device.LORA_ABOVE)
    lora_r: int = 16
    lora_alpha: int = 32
    #: full fine-tuning of the last N transformer blocks and the final norm only, the rest
    #: frozen (None: every weight). On the CPU the backward pass is most of a step's time, and
    #: it then stops N blocks down (``bench/training.py``).
    train_layers: int | None = None
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.stage not in ("sft", "dpo"):
            raise ValueError(f"stage={self.stage!r}: use 'sft' or 'dpo'")
        if self.epochs <= 0 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError(f"epochs={self.epochs}, batch_size={self.batch_size} and "
                             f"learning_rate={self.learning_rate} must be positive")
        if self.train_layers is not None and (self.train_layers < 1 or self.lora):
            raise ValueError(f"train_layers={self.train_layers}: a positive number of blocks, "
                             "and only with full fine-tuning (lora: false)")


def load_config(cls, path: Path | None, default: str, **overrides):
    """A config dataclass from a YAML file (or the default one), then non-None overrides. A
    bare file name that is not a file here names one of ``trainer/configs``."""
    if path is not None and not path.exists() and (CONFIG_DIR / path.name).is_file():
        path = CONFIG_DIR / path.name
    data = yaml.safe_load((path or CONFIG_DIR / default).read_text()) or {}
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown keys in {path or default}: {', '.join(sorted(unknown))}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    return cls(**data)


def read_rows(path: Path) -> list[dict]:
    """JSONL rows."""
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_rows(rows: list[dict], path: Path) -> str:
    """Write JSONL rows; returns the file's short sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()[:16]


def sha256_of(path: Path) -> str:
    """The sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_hash(path: Path) -> str:
    """Short sha256 of a file."""
    return sha256_of(path)[:16]


def model_card(model: str) -> dict:
    """The ``qexplorer.json`` card of a model directory (empty for hub ids)."""
    card = Path(model) / CARD
    return json.loads(card.read_text()) if card.is_file() else {}


def _load(model: str, dtype: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(model, dtype=getattr(torch, dtype)), tokenizer


def freeze_below(model, layers: int) -> int:
    """Freeze every weight of ``model`` but its last ``layers`` transformer blocks and the
    final norm (tied embeddings stay frozen too); returns the parameters left to train."""
    decoder = model.get_decoder()
    blocks = decoder.layers
    if layers > len(blocks):
        raise ValueError(f"train_layers={layers}, but the model has {len(blocks)} blocks")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for module in [*blocks[len(blocks) - layers:], decoder.norm]:
        for parameter in module.parameters():
            parameter.requires_grad_(True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@contextmanager
def labelled_positions_only(device: str) -> Iterator[None]:
    """On the CPU, let TRL's fused LM head project only the positions that carry a label.

    TRL scores every position through the vocabulary unless its Triton kernels run (so that
    Neuron devices do not recompile for each batch's number of labelled positions). Here only
    the completion, about a tenth of a row, has labels, and that projection was most of an
    SFT step on the CPU (``bench/training.py``). The log-probabilities of the labelled
    positions are the same either way (``tests/training``)."""
    from trl.trainer import utils

    if device != "cpu":
        yield
        return
    original = utils._use_triton
    utils._use_triton = lambda where: where.type == "cpu" or original(where)
    try:
        yield
    finally:
        utils._use_triton = original


def _lora(config: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules="all-linear", task_type="CAUSAL_LM")


def stage_clock(name: str, progress: Callable[[str], None]):
    """A trainer callback that says how long the stage will take: its steps at the start,
    then, from the measured pace, the time left after 3 steps and at each quarter."""
    from transformers import TrainerCallback

    class StageClock(TrainerCallback):
        started = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.monotonic()
            progress(f"    {name}: {state.max_steps} steps")

        def on_step_end(self, args, state, control, **kwargs):
            step, total = state.global_step, max(state.max_steps, 1)
            if step == 3 or (step < total and step % max(1, total // 4) == 0):
                pace = (time.monotonic() - self.started) / step
                progress(f"    {name}: step {step}/{total}, {pace:.2f} s a step, about "
                         f"{pace * (total - step) / 60:.1f} min left")

    return StageClock()


def train(stage_rows: Path, model: str, out: Path, config: TrainConfig,
          card_extra: dict | None = None, progress: Callable[[str], None] | None = None,
          *, device: Device = "auto", device_plan: DevicePlan | None = None) -> Path:
    """Run one stage on ``stage_rows`` from ``model`` (id or directory); save to ``out``.
    ``card_extra`` is added to the model card (e.g. the time split the gate must respect);
    ``progress`` hears how long the stage will take (:func:`stage_clock`) and the device
    plan. ``device``: auto (a GPU when there is one), cpu or cuda; ``device_plan`` overrides
    the plan :func:`agents.extractor.device.plan` makes (the training benchmark)."""
    import torch
    from datasets import Dataset

    torch.manual_seed(config.seed)
    started = time.monotonic()
    rows = read_rows(stage_rows)
    if not rows:
        raise ValueError(f"{stage_rows} has no rows: nothing to train on")
    chosen = device_plan or plan(count_parameters(model), detect(), device, config.lora)
    if progress is not None:
        progress(f"    {config.stage.upper()}: {chosen.why}")
    base, tokenizer = _load(model, chosen.train_weights_dtype)
    if config.train_layers:
        if chosen.lora:
            raise ValueError(f"train_layers={config.train_layers} needs full fine-tuning, but "
                             f"the plan chose LoRA ({chosen.why}): set lora: false")
        trainable = freeze_below(base, config.train_layers)
        if progress is not None:
            progress(f"    {config.stage.upper()}: the last {config.train_layers} blocks "
                     f"({trainable / 1e6:.1f}M parameters) trained, the rest frozen")
    common = dict(output_dir=str(out / "checkpoints"), num_train_epochs=config.epochs,
                  per_device_train_batch_size=config.batch_size,
                  learning_rate=config.learning_rate, lr_scheduler_type="cosine",
                  warmup_steps=5, logging_steps=10, save_strategy="epoch", save_total_limit=1,
                  report_to="none", seed=config.seed, max_length=config.max_length,
                  **chosen.training_args(),
                  # a long listing loses the start of the instruction, never the target queries
                  truncation_mode="keep_end")
    peft_config = _lora(config) if chosen.lora else None
    # through the chat template when the tokenizer has one: the tokens serving will feed
    data = Dataset.from_list([trl_row(r, uses_chat(tokenizer)) for r in rows])
    with labelled_positions_only(chosen.device):
        trainer = _trainer(config, chosen.lora, base, tokenizer, data, common, peft_config)
        if progress is not None:
            trainer.add_callback(stage_clock(config.stage.upper(), progress))
        result = trainer.train()
    trained = trainer.model
    if chosen.lora:
        trained = trained.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    trained.save_pretrained(out)
    tokenizer.save_pretrained(out)
    parent = model_card(model)
    data_hash = file_hash(stage_rows)
    card = {
        "version": f"qx-{config.stage}-{data_hash[:8]}-{_config_hash(config)}",
        "stage": config.stage,
        "base_model": model,
        "base_version": parent.get("version"),
        "lineage": [*parent.get("lineage", []), parent.get("version")] if parent else [],
        "data": {"file": str(stage_rows), "sha256_16": data_hash, "rows": len(rows),
                 "corpora": sorted({r.get("corpus", "?") for r in rows})},
        "hyperparameters": asdict(config),
        "device": chosen.card(),
        "metrics": {"train_loss": result.training_loss,
                    "seconds": round(time.monotonic() - started, 1),
                    "train_runtime_s": result.metrics.get("train_runtime"),
                    "tokens": _tokens_seen(trainer)},
        "prompt_version": rows[0].get("prompt_version"),
        "prompt_format": "chat" if uses_chat(tokenizer) else "plain",
        "versions": library_versions(),
        **(card_extra or {}),
    }
    (out / CARD).write_text(json.dumps(card, indent=2))
    return out


def _trainer(config: TrainConfig, lora: bool, model, tokenizer, data, common: dict, peft_config):
    """TRL's trainer of the stage (the DPO one computes its reference log-probabilities
    while it is made, unless LoRA can switch its adapter off)."""
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    if config.stage == "sft":
        return SFTTrainer(model=model, args=SFTConfig(**common), train_dataset=data,
                          processing_class=tokenizer, peft_config=peft_config)
    # the reference is the model before this stage: the adapter switched off under LoRA, else
    # its log-probabilities computed once before training (no second copy in memory)
    args = DPOConfig(**common, beta=config.beta, precompute_ref_log_probs=not lora)
    return DPOTrainer(model=model, ref_model=None, args=args, train_dataset=data,
                      processing_class=tokenizer, peft_config=peft_config)


def _config_hash(config: TrainConfig) -> str:
    return hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:6]


def _tokens_seen(trainer) -> int | None:
    """The tokens TRL trained on (the ``num_tokens`` it logs: non-padding tokens)."""
    seen = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h]
    return int(max(seen)) if seen else None
