"""The device plan: the choices for training and serving on the hardware a machine has. This
machine has no GPU, so the GPU choices are checked by handing the plan one."""

from __future__ import annotations

import pytest

from agents.extractor.device import (
    CHECKPOINT_ABOVE,
    LORA_ABOVE,
    DevicePlan,
    Hardware,
    count_parameters,
    detect,
    plan,
)

TINY = 4_000_000
HALF_B = 494_000_000  # Qwen2.5-0.5B-Instruct
AMPERE = Hardware(cuda=True, bf16=True, name="A10G")
TURING = Hardware(cuda=True, bf16=False, name="T4")


def test_this_machine_is_planned_on_the_cpu_in_float32():
    assert detect() == Hardware()  # no GPU here: the CPU path is the one that runs
    chosen = plan(TINY, detect())
    assert (chosen.device, chosen.dtype, chosen.gradient_checkpointing, chosen.lora) == (
        "cpu", "float32", False, False)
    assert chosen.training_args() == {"use_cpu": True, "bf16": False, "fp16": False,
                                      "gradient_checkpointing": False}
    assert chosen.train_weights_dtype == "float32"


def test_a_gpu_with_bf16_trains_a_tiny_model_fully_in_bf16_without_checkpointing():
    chosen = plan(TINY, AMPERE)
    assert (chosen.device, chosen.dtype, chosen.gradient_checkpointing, chosen.lora) == (
        "cuda", "bfloat16", False, False)
    assert chosen.training_args() == {"use_cpu": False, "bf16": True, "fp16": False,
                                      "gradient_checkpointing": False}
    assert chosen.train_weights_dtype == "float32"  # mixed precision: trained weights fp32
    assert "A10G" in chosen.why


def test_a_pretrained_half_billion_model_gets_lora_checkpointing_and_a_bf16_base():
    chosen = plan(HALF_B, AMPERE)
    assert (chosen.dtype, chosen.gradient_checkpointing, chosen.lora) == ("bfloat16", True, True)
    assert chosen.train_weights_dtype == "bfloat16"  # the frozen base: half the memory
    assert "LoRA" in chosen.why and "gradient checkpointing" in chosen.why


def test_a_gpu_without_bf16_uses_float16_mixed_precision():
    chosen = plan(HALF_B, TURING)
    assert chosen.dtype == "float16"
    assert chosen.training_args()["fp16"] and not chosen.training_args()["bf16"]
    assert chosen.train_weights_dtype == "float32"  # fp16 weights cannot be trained stably


@pytest.mark.parametrize("parameters", [LORA_ABOVE, LORA_ABOVE + 1])
def test_lora_starts_above_its_threshold_on_any_device(parameters):
    for hardware in (Hardware(), AMPERE):
        assert plan(parameters, hardware).lora == (parameters > LORA_ABOVE)


def test_checkpointing_starts_above_its_threshold_on_a_gpu_only():
    assert not plan(CHECKPOINT_ABOVE, AMPERE).gradient_checkpointing
    assert plan(CHECKPOINT_ABOVE + 1, AMPERE).gradient_checkpointing
    assert not plan(HALF_B, Hardware()).gradient_checkpointing


def test_the_callers_choices_win():
    assert plan(HALF_B, AMPERE, "cpu").device == "cpu"
    assert not plan(HALF_B, AMPERE, lora=False).lora
    assert plan(TINY, Hardware(), lora=True).lora
    with pytest.raises(ValueError, match="no GPU"):
        plan(TINY, Hardware(), "cuda")
    with pytest.raises(ValueError, match="auto, cpu or cuda"):
        plan(TINY, Hardware(), "tpu")  # type: ignore[arg-type]


def test_the_card_records_the_choices():
    chosen = DevicePlan("cuda", "bfloat16", True, True, "why")
    assert chosen.card() == {"device": "cuda", "dtype": "bfloat16",
                             "gradient_checkpointing": True, "lora": True}


def test_parameters_are_counted_without_loading_weights(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=512, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
    model = Qwen2ForCausalLM(config)
    model.save_pretrained(tmp_path)
    assert count_parameters(str(tmp_path)) == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("stage", ["sft", "dpo"])
def test_the_instruct_configs_train_a_lora_adapter_at_an_adapters_learning_rate(stage):
    from pathlib import Path

    from trainer.train import TrainConfig, load_config

    tiny = load_config(TrainConfig, None, f"{stage}.yaml")
    instruct = load_config(TrainConfig, Path(f"{stage}-instruct.yaml"), f"{stage}.yaml")
    assert instruct.stage == stage and instruct.lora is True
    assert instruct.learning_rate < tiny.learning_rate
