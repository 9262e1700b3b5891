"""Models of two other architectures (Qwen2 with ChatML; a Llama with a BOS and a chat template
that starts with it), built offline: TRL trains on exactly the tokens the backends feed, SFT
and DPO run through the chat template, and the in-process ranking scores a span as the model
does without the prompt's cache."""

from __future__ import annotations

import json

import pytest

from agents.extractor.base import SeedText
from agents.extractor.model_input import prompt_ids, trl_row, uses_chat
from agents.extractor.transformers_backend import TransformersExtractor
from agents.prompt import build_prompt, format_completion
from tests.architectures import ARCHITECTURES, build
from trainer.train import TrainConfig, train, write_rows

SEED = SeedText("s1", "sn0w ❄️ premium", "Pure sn0w, fast delivery. tg frostyplug")
K = 2
PROMPT = build_prompt(SEED.title, SEED.description, K)
TARGET = format_completion(["frostyplug", "sn0w"])
OTHER = format_completion(["fast delivery", "premium"])


@pytest.fixture(scope="module", params=ARCHITECTURES)
def model(request, tmp_path_factory):
    return build(request.param, tmp_path_factory.mktemp(request.param))


def _tokenizer(model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def _logprob(model_dir, completion: str) -> float:
    """log P(completion | prompt) over the tokens training uses for the pair."""
    import torch
    from transformers import AutoModelForCausalLM

    tok = _tokenizer(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt = prompt_ids(tok, SEED.title, SEED.description, K)
    answer = tok(completion, add_special_tokens=False)["input_ids"]
    ids = prompt + answer
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1], -1)
    return sum(logp[i - 1, ids[i]].item() for i in range(len(prompt), len(ids)))


def test_trl_trains_on_the_prompt_tokens_the_backends_feed(model, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    tok = _tokenizer(model)
    assert uses_chat(tok)
    expected = prompt_ids(tok, SEED.title, SEED.description, K)
    assert expected.count(tok.bos_token_id) <= 1  # never the BOS twice
    common = dict(output_dir=str(tmp_path), report_to="none", use_cpu=True, max_length=1024)
    sft = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(model),
                     args=SFTConfig(**common), processing_class=tok,
                     train_dataset=Dataset.from_list([trl_row(
                         {"prompt": PROMPT, "completion": TARGET}, True)]))
    row = sft.train_dataset[0]
    prompt_len = next(i for i, label in enumerate(row["labels"]) if label != -100)
    assert row["input_ids"][:prompt_len] == expected
    assert tok.decode(row["input_ids"][prompt_len:]).startswith(TARGET)

    dpo = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(model), ref_model=None,
                     args=DPOConfig(**common), processing_class=tok,
                     train_dataset=Dataset.from_list([trl_row(
                         {"prompt": PROMPT, "chosen": TARGET, "rejected": OTHER}, True)]))
    pair = dpo.train_dataset[0]
    assert pair["prompt_ids"] == expected
    assert tok.decode(pair["chosen_ids"]).startswith(TARGET)


def test_sft_then_dpo_through_the_chat_template_and_ranking_in_process(model, tmp_path):
    import torch

    write_rows([{"prompt": PROMPT, "completion": TARGET, "corpus": "t",
                 "prompt_version": "v1"}] * 32, tmp_path / "sft.jsonl")
    before = _logprob(model, TARGET)
    sft = train(tmp_path / "sft.jsonl", str(model), tmp_path / "sft",
                TrainConfig(stage="sft", epochs=6, batch_size=8, learning_rate=5e-3,
                            max_length=1024), device="cpu")
    card = json.loads((sft / "qexplorer.json").read_text())
    assert card["prompt_format"] == "chat"
    assert card["device"] == {"device": "cpu", "dtype": "float32",
                              "gradient_checkpointing": False, "lora": False}
    after_sft = _logprob(sft, TARGET)
    assert after_sft > before + 5

    write_rows([{"prompt": PROMPT, "chosen": OTHER, "rejected": TARGET, "corpus": "t",
                 "prompt_version": "v1"}] * 16, tmp_path / "dpo.jsonl")
    dpo = train(tmp_path / "dpo.jsonl", str(sft), tmp_path / "dpo",
                TrainConfig(stage="dpo", epochs=3, batch_size=8, learning_rate=5e-3,
                            max_length=1024, beta=0.1), device="cpu")
    # DPO moves the margin toward the chosen answer
    assert (_logprob(dpo, OTHER) - _logprob(dpo, TARGET)
            > _logprob(sft, OTHER) - _logprob(sft, TARGET))

    extractor = TransformersExtractor(str(dpo), extractive=True)
    spans, scores = extractor.span_scores_sync(SEED, K)
    tok, net = extractor._tokenizer, extractor._model
    prompt = prompt_ids(tok, SEED.title, SEED.description, K)
    assert len(spans) > 6
    for span, score in zip(spans, scores, strict=True):  # every row of the trie
        cont = tok(f"{span}\n", add_special_tokens=False)["input_ids"]
        ids = prompt + cont
        with torch.no_grad():
            logp = torch.log_softmax(net(torch.tensor([ids])).logits[0, :-1], -1)
        direct = sum(logp[i - 1, ids[i]].item() for i in range(len(prompt), len(ids)))
        assert score == pytest.approx(direct, abs=1e-3), span
    [extraction] = extractor.extract_sync([SEED], K)
    assert extraction.queries and set(extraction.queries) <= set(spans)
