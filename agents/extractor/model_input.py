"""The tokens a model reads for a seed: the same in training, in process and through vLLM.

TRL tokenises a conversational training row (chat messages) with the tokenizer's chat
template and no further special tokens, and a plain row as ``tokenizer(prompt)``, with the
special tokens the tokenizer adds (a Llama's BOS). Serving must feed a model exactly the
tokens it was trained on, so the rule lives here once: a tokenizer with a chat template gets
the task as chat messages (:func:`agents.prompt.chat_messages`), one without gets the plain
prompt (:func:`agents.prompt.build_prompt`). Training rows (:func:`trl_row`), the in-process
backend (:func:`prompt_ids`) and the vLLM backend (its ``/tokenize`` request body,
:func:`tokenize_request`) all follow it. QExplorer's own models carry a template that renders
the messages as the plain prompt, so for them both ways give the same tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agents.prompt import as_chat, build_prompt, chat_messages


def uses_chat(tokenizer: Any) -> bool:
    """Whether a model with this tokenizer is trained and served through its chat template."""
    return bool(getattr(tokenizer, "chat_template", None))


def prompt_ids(tokenizer: Any, title: str, description: str | None, k: int) -> list[int]:
    """The prompt's token ids, as training tokenised them (the completion follows them)."""
    if uses_chat(tokenizer):
        out = tokenizer.apply_chat_template(chat_messages(title, description, k),
                                            add_generation_prompt=True, tokenize=True)
        return list(out["input_ids"] if isinstance(out, Mapping) else out)
    return list(tokenizer(build_prompt(title, description, k))["input_ids"])


def tokenize_request(chat: bool, title: str, description: str | None, k: int) -> dict:
    """The body of a vLLM ``/tokenize`` request giving :func:`prompt_ids`' tokens (the server
    holds the tokenizer: ``chat`` when it has a chat template)."""
    if chat:
        return {"messages": chat_messages(title, description, k),
                "add_generation_prompt": True, "add_special_tokens": False}
    return {"prompt": build_prompt(title, description, k), "add_special_tokens": True}


def trl_row(row: Mapping[str, Any], chat: bool) -> dict:
    """A training row (plain ``prompt`` and completions, as :mod:`trainer.dataset` writes
    them) as TRL gets it: conversational when the model is trained through its template."""
    texts = ("completion",) if "completion" in row else ("chosen", "rejected")
    if not chat:
        return {"prompt": row["prompt"], **{key: row[key] for key in texts}}
    return {"prompt": as_chat(row["prompt"]),
            **{key: [{"role": "assistant", "content": row[key]}] for key in texts}}
