"""A tiny real SFT and DPO run (TRL on CPU): each moves the model toward the chosen queries."""

from __future__ import annotations

import asyncio
import json

import pytest

from agents.extractor.base import SeedText
from agents.prompt import build_prompt, format_completion
from qexplorer.marketplace.synthetic import generate_marketplace
from trainer.bootstrap import BootstrapConfig, bootstrap
from trainer.train import TrainConfig, train, write_rows

SEED = SeedText("s1", "sn0w ❄️ premium", "Pure sn0w, fast delivery. tg frostyplug")
PROMPT = build_prompt(SEED.title, SEED.description, 2)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    config = BootstrapConfig(vocab_size=512, hidden_size=64, heads=2, layers=2,
                             intermediate_size=128, steps=10, batch_size=8, max_length=160)
    return bootstrap(generate_marketplace(n_benign=80, n_clusters=2, seed=1), out, config, k=2)


def _logprob(model_dir, completion: str) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    prompt_ids = tok(PROMPT)["input_ids"]
    ids = tok(PROMPT + completion)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0]
    logp = torch.log_softmax(logits[:-1], -1)
    return sum(logp[i - 1, ids[i]].item() for i in range(len(prompt_ids), len(ids)))


def test_bootstrap_leaves_a_loadable_model_with_a_card(base):
    card = json.loads((base / "qexplorer.json").read_text())
    assert card["stage"] == "bootstrap" and card["parameters"] > 0
    config = json.loads((base / "config.json").read_text())
    assert config["hidden_size"] // config["num_attention_heads"] >= 32


def test_sft_then_dpo_move_the_model_toward_the_chosen_queries(base, tmp_path):
    from agents.extractor.transformers_backend import TransformersExtractor

    target = format_completion(["frostyplug", "sn0w"])
    other = format_completion(["fast delivery", "premium"])
    sft_rows = [{"prompt": PROMPT, "completion": target, "corpus": "t", "prompt_version": "v1"}]
    write_rows(sft_rows * 32, tmp_path / "sft.jsonl")
    before = _logprob(base, target)
    sft = train(tmp_path / "sft.jsonl", str(base), tmp_path / "sft",
                TrainConfig(stage="sft", epochs=10, batch_size=8, learning_rate=5e-3,
                            max_length=1024))
    assert _logprob(sft, target) > before + 5
    extraction = asyncio.run(TransformersExtractor(str(sft)).extract([SEED], 2))[0]
    assert extraction.queries == ["frostyplug", "sn0w"]

    # DPO prefers `other` over the SFT target: the margin must move toward it
    pairs = [{"prompt": PROMPT, "chosen": other, "rejected": target, "corpus": "t",
              "prompt_version": "v1"}]
    write_rows(pairs * 16, tmp_path / "dpo.jsonl")
    margin_before = _logprob(sft, other) - _logprob(sft, target)
    dpo = train(tmp_path / "dpo.jsonl", str(sft), tmp_path / "dpo",
                TrainConfig(stage="dpo", epochs=2, batch_size=8, learning_rate=2e-3,
                            max_length=1024, beta=0.1))
    assert _logprob(dpo, other) - _logprob(dpo, target) > margin_before + 1
    card = json.loads((dpo / "qexplorer.json").read_text())
    assert card["stage"] == "dpo" and card["base_model"] == str(sft)
    assert card["data"]["rows"] == 16 and len(card["data"]["sha256_16"]) == 16


def test_lora_adapters_are_merged_into_a_plain_model(base, tmp_path):
    from transformers import AutoModelForCausalLM

    target = format_completion(["frostyplug"])
    write_rows([{"prompt": PROMPT, "completion": target, "corpus": "t"}] * 8,
               tmp_path / "sft.jsonl")
    before = _logprob(base, target)
    out = train(tmp_path / "sft.jsonl", str(base), tmp_path / "lora",
                TrainConfig(stage="sft", epochs=3, batch_size=8, learning_rate=1e-2,
                            max_length=1024, lora=True, lora_r=8, lora_alpha=16))
    assert not (out / "adapter_config.json").exists()  # merged: any backend loads it as is
    AutoModelForCausalLM.from_pretrained(out)
    assert _logprob(out, target) > before
    assert json.loads((out / "qexplorer.json").read_text())["hyperparameters"]["lora"] is True


def test_generative_data_reaches_beyond_the_seed_and_scores_by_its_own_kind(base, tmp_path):
    from agents.queries import seed_spans
    from qexplorer.evaluation.scoring import Searcher
    from trainer.dataset import BuildConfig
    from trainer.loop import build_data

    items = generate_marketplace(n_benign=80, n_clusters=2, seed=1)
    config = BuildConfig(k=2, generative=True, reward="siblings", pairs_per_seed=1)
    summary = build_data({"t": items}, tmp_path, config, model=str(base), samples=1,
                         max_train_seeds=20, progress=lambda _: None)
    assert summary["config"]["generative"] and summary["config"]["reward"] == "siblings"
    rows = [json.loads(line) for line in (tmp_path / "sft.jsonl").read_text().splitlines()]
    assert rows, summary
    by_id = {i.id: i for i in items}
    searcher = Searcher(items)
    beyond = 0
    for row in rows:
        seed = by_id[row["seed_id"]]
        own = set(seed_spans(seed.title, seed.description, config.max_words, config.max_spans,
                             config.seed))
        beyond += any(q not in own and source not in ("first_words", "tfidf", "yake")
                      for q, source in zip(row["queries"], row["sources"], strict=True))
        assert row["scores"] == [searcher.kin_precision(q, seed.id) for q in row["queries"]]
    assert beyond > 0  # some target is neither a span of its seed nor a baseline's


def test_training_the_last_blocks_leaves_the_others_as_they_were(base, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    target = format_completion(["frostyplug"])
    write_rows([{"prompt": PROMPT, "completion": target, "corpus": "t"}] * 8,
               tmp_path / "sft.jsonl")
    out = train(tmp_path / "sft.jsonl", str(base), tmp_path / "top",
                TrainConfig(stage="sft", epochs=3, batch_size=8, learning_rate=1e-2,
                            max_length=1024, lora=False, train_layers=1))
    before = AutoModelForCausalLM.from_pretrained(base).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    moved = {name for name in before if not torch.equal(before[name], after[name])}
    assert moved and all(name.startswith(("model.layers.1.", "model.norm.")) for name in moved)
    assert _logprob(out, target) > _logprob(base, target)
    pairs = [{"prompt": PROMPT, "chosen": target, "rejected": format_completion(["premium"]),
              "corpus": "t"}] * 8
    write_rows(pairs, tmp_path / "dpo.jsonl")
    dpo = train(tmp_path / "dpo.jsonl", str(out), tmp_path / "top-dpo",
                TrainConfig(stage="dpo", epochs=1, batch_size=8, learning_rate=1e-3,
                            max_length=1024, lora=False, train_layers=1))
    assert json.loads((dpo / "qexplorer.json").read_text())["hyperparameters"][
        "train_layers"] == 1
    with pytest.raises(ValueError, match="full fine-tuning"):
        TrainConfig(stage="sft", lora=True, train_layers=1)
    with pytest.raises(ValueError, match="has 2 blocks"):
        train(tmp_path / "sft.jsonl", str(base), tmp_path / "too-many",
              TrainConfig(stage="sft", lora=False, train_layers=3))


def test_the_fused_head_on_labelled_positions_only_gives_the_same_log_probabilities(base):
    """``trainer.train.labelled_positions_only``: TRL's patch point still exists, and
    projecting only the labelled positions changes nothing but the work."""
    import torch
    from transformers import AutoModelForCausalLM
    from trl.trainer import utils
    from trl.trainer.utils import add_fused_lm_head

    from trainer.train import labelled_positions_only

    model = AutoModelForCausalLM.from_pretrained(base).eval()
    add_fused_lm_head(model)
    ids = torch.randint(0, model.config.vocab_size, (3, 24),
                        generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :17] = -100
    with torch.no_grad():
        every = model(input_ids=ids, labels=labels, fused_lm_head=True)
        with labelled_positions_only("cpu"):
            assert utils._use_triton(torch.device("cpu"))
            only = model(input_ids=ids, labels=labels, fused_lm_head=True)
    assert not utils._use_triton(torch.device("cpu"))
    assert torch.allclose(every.log_probs, only.log_probs, atol=1e-5)
    assert torch.allclose(every.loss, only.loss, atol=1e-6)
