"""Tiny models of other architectures than the bootstrapped one, built offline from configs,
with the tokenizer habits of the real families (no model hub here):

- ``qwen2``: a Qwen2 model; ChatML chat template (``<|im_start|>``/``<|im_end|>``), no BOS,
  ``<|im_end|>`` ends an answer (Qwen2.5-Instruct's layout).
- ``llama-bos``: a Llama model whose tokenizer puts a BOS before every text it encodes and
  whose chat template starts with the BOS too (Llama 3's habit: tokenising the rendered chat
  text again would give two).

Both keep head_dim at 32 (vLLM's CPU attention refuses less).
"""

from __future__ import annotations

from pathlib import Path

from qexplorer.marketplace.synthetic import generate_marketplace
from trainer.bootstrap import pretraining_texts, train_tokenizer

ARCHITECTURES = ("qwen2", "llama-bos")

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
LLAMA_CHAT = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def build(architecture: str, out: Path, seed: int = 0) -> Path:
    """A randomly initialised model of ``architecture`` and its tokenizer, saved to ``out``."""
    import torch
    from tokenizers.processors import TemplateProcessing
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    texts = pretraining_texts(generate_marketplace(n_benign=120, n_clusters=3, seed=1), k=3)
    tokenizer = train_tokenizer(texts, vocab_size=600)
    if architecture == "qwen2":
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>",
                                                                    "<|im_end|>"]})
        tokenizer.eos_token = "<|im_end|>"
        tokenizer.chat_template = CHATML
        kind, config = Qwen2ForCausalLM, Qwen2Config
        extra = {"num_key_value_heads": 1, "tie_word_embeddings": True}
    elif architecture == "llama-bos":
        tokenizer.add_special_tokens({"additional_special_tokens": ["<|system|>", "<|user|>",
                                                                    "<|assistant|>"]})
        tokenizer.backend_tokenizer.post_processor = TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B",
            special_tokens=[("<s>", tokenizer.bos_token_id)])
        tokenizer.chat_template = LLAMA_CHAT
        kind, config = LlamaForCausalLM, LlamaConfig
        extra = {"num_key_value_heads": 2, "tie_word_embeddings": False}
    else:
        raise ValueError(f"unknown architecture {architecture!r}")
    torch.manual_seed(seed)
    model = kind(config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                        num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=1024,
                        bos_token_id=tokenizer.bos_token_id,
                        eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id, **extra))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
