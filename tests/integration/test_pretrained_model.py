"""The pretrained instruct model that setup fetched from the package registry and converted
(``qexplorer pretrained``): its card matches its pins and what loads, its chat template
renders a conversation, and it generates."""

from __future__ import annotations

import pytest

from qexplorer.config import Settings
from trainer.pretrained import SMOLLM2, installed, model_dir
from trainer.train import model_card


@pytest.fixture(scope="module")
def converted():
    path = model_dir(Settings().paths.models_dir)
    assert model_card(str(path)), f"no converted model at {path}: run scripts/setup.sh"
    return path


def test_the_converted_model_matches_its_card_and_generates(converted):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    card = model_card(str(converted))
    assert card["source"]["member_sha256"] == SMOLLM2.member_sha256
    assert card["source"]["wheel_sha256"] == SMOLLM2.wheel_sha256
    tokenizer = AutoTokenizer.from_pretrained(converted)
    model = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32)
    assert type(model).__name__ == card["architecture"] == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == card["parameters"]
    assert 130e6 < card["parameters"] < 140e6
    assert tokenizer.chat_template == card["chat_template"] is not None
    # a turn ends (and a batch pads) with the token the model's config names
    assert tokenizer.eos_token == "<|im_end|>" == card["special_tokens"]["eos"]
    assert tokenizer.eos_token_id == model.config.eos_token_id
    assert tokenizer.pad_token_id == model.config.pad_token_id
    messages = [{"role": "user", "content": "Name one colour."}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "Name one colour." in prompt
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    reply = tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert reply.strip(), "the model answered nothing"
    assert (converted, card) in installed(Settings().paths.models_dir)
