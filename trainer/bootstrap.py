"""A base model without any download: a byte-level BPE tokenizer and a small Llama, from scratch.

The corpus is listing text as the extractor's prompt shows it (the synthetic marketplace plus
any labelled corpora given), so the model learns the prompt's shape and the marketplace's
language, not the answers. Sized for 2 CPU cores: a few million parameters, head_dim 32 (vLLM's
CPU attention refuses 16). The result is a plain Hugging Face model directory with a
``qexplorer.json`` card that every extractor backend and training command loads.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from agents.extractor.device import Device, detect, plan
from agents.prompt import END_MARKER, build_prompt
from qexplorer.config.versions import library_versions
from qexplorer.marketplace.items import LabelledItem
from trainer.train import stage_clock

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>"]
#: Renders the task's chat messages as the plain prompt (``agents.prompt.as_chat``), so the
#: model reads the same tokens either way; an answer ends with the end-of-text token.
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}"
    "{% else %}{{ m['content'] }}{% endif %}{% endfor %}"
)


@dataclass(frozen=True)
class BootstrapConfig:
    """Tokenizer, architecture and pre-training knobs."""

    vocab_size: int = 4096
    hidden_size: int = 256
    layers: int = 4
    heads: int = 8
    intermediate_size: int = 688
    max_positions: int = 1024
    steps: int = 600
    batch_size: int = 16
    max_length: int = 384
    learning_rate: float = 1e-3
    seed: int = 1234

    def __post_init__(self) -> None:
        if self.hidden_size % self.heads or self.hidden_size // self.heads < 32:
            raise ValueError(f"hidden_size={self.hidden_size} / heads={self.heads} must give an "
                             "integer head_dim of at least 32 (vLLM's CPU attention)")


def pretraining_texts(items: Sequence[LabelledItem], k: int, seed: int = 0) -> list[str]:
    """Prompt-shaped listing texts (no target queries), shuffled."""
    texts = [build_prompt(i.title, i.description, k) for i in items]
    random.Random(seed).shuffle(texts)
    return texts


def train_tokenizer(texts: Sequence[str], vocab_size: int):
    """A byte-level BPE tokenizer wrapped for transformers, with bos/eos/pad and a template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator([*texts, END_MARKER], trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>",
                                      bos_token="<s>", eos_token="</s>")
    wrapped.chat_template = CHAT_TEMPLATE
    return wrapped


def bootstrap_version(texts: Sequence[str], config: BootstrapConfig) -> str:
    """``qx-base-<hash of the pre-training texts>-<hash of the config>``: the same data and
    configuration give the same name, anything else another one."""
    data = hashlib.sha256("\x1e".join(texts).encode()).hexdigest()[:8]
    conf = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:6]
    return f"qx-base-{data}-{conf}"


def bootstrap(items: Sequence[LabelledItem], out: Path, config: BootstrapConfig, *,
              k: int = 4, corpora: dict[str, str] | None = None,
              progress: Callable[[str], None] | None = None, device: Device = "auto") -> Path:
    """Train the tokenizer and pre-train the model on ``items``; save to ``out``
    (``progress`` hears how long it will take; ``device`` as in :func:`trainer.train.train`,
    never LoRA: the model is new)."""
    import torch
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import SFTConfig, SFTTrainer

    torch.manual_seed(config.seed)
    started = time.monotonic()
    texts = pretraining_texts(items, k, config.seed)
    tokenizer = train_tokenizer(texts, config.vocab_size)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size, num_hidden_layers=config.layers,
        num_attention_heads=config.heads, num_key_value_heads=config.heads,
        max_position_embeddings=config.max_positions, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    chosen = plan(sum(p.numel() for p in model.parameters()), detect(), device, lora=False)
    args = SFTConfig(
        output_dir=str(out / "checkpoints"), max_steps=config.steps,
        per_device_train_batch_size=config.batch_size, learning_rate=config.learning_rate,
        lr_scheduler_type="cosine", warmup_steps=max(1, config.steps // 20),
        max_length=config.max_length, logging_steps=max(1, config.steps // 20),
        save_strategy="no", report_to="none", seed=config.seed, **chosen.training_args(),
        dataset_text_field="text", packing=False, disable_tqdm=False)
    trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_dict({"text": texts}))
    if progress is not None:
        trainer.add_callback(stage_clock("bootstrap", progress))
    result = trainer.train()
    out.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    card = {
        "version": bootstrap_version(texts, config),
        "stage": "bootstrap",
        "base_model": None,
        "parameters": sum(p.numel() for p in model.parameters()),
        "corpora": corpora or {},
        "texts": len(texts),
        "hyperparameters": asdict(config),
        "device": chosen.card(),
        "metrics": {"train_loss": result.training_loss,
                    "seconds": round(time.monotonic() - started, 1)},
        "versions": library_versions(),
    }
    (out / "qexplorer.json").write_text(json.dumps(card, indent=2))
    return out
