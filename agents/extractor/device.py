"""Where and in which precision a model runs, in training and in the in-process backend.

This module owns the device plan: a pure function of the hardware (:class:`Hardware`, read
by :func:`detect`) and the model's size, so its choices are tested on a machine without a GPU
by handing it one. On a GPU: bfloat16 where the GPU computes in it (float16 otherwise),
gradient checkpointing above :data:`CHECKPOINT_ABOVE` parameters and a LoRA adapter instead
of full fine-tuning above :data:`LORA_ABOVE`. On the CPU: float32, no checkpointing (on a CPU
without bf16 matrix units both only cost time: ``bench/training.py`` measured SFT at a tenth
of a plain loop's speed with TRL's defaults), LoRA above the same size (full fine-tuning of a
0.5B model with Adam needs about 8 GB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Parameters above which training trains a LoRA adapter (merged before saving) by default.
LORA_ABOVE = 300_000_000
#: Parameters above which training on a GPU recomputes activations to save memory.
CHECKPOINT_ABOVE = 100_000_000

Device = Literal["auto", "cpu", "cuda"]
DType = Literal["float32", "bfloat16", "float16"]


@dataclass(frozen=True)
class Hardware:
    """What the machine offers."""

    cuda: bool = False
    bf16: bool = False  # the GPU computes in bfloat16 (Ampere and later)
    name: str = "cpu"


def detect() -> Hardware:
    """The hardware of this process (torch's view of it)."""
    import torch

    if not torch.cuda.is_available():
        return Hardware()
    return Hardware(cuda=True, bf16=bool(torch.cuda.is_bf16_supported()),
                    name=torch.cuda.get_device_name(0))


@dataclass(frozen=True)
class DevicePlan:
    """The choices for one model on one machine; ``why`` says them in words (logs, cards)."""

    device: Literal["cpu", "cuda"]
    dtype: DType  # serving: the weights; training: the compute precision
    gradient_checkpointing: bool
    lora: bool
    why: str

    def training_args(self) -> dict:
        """The TrainingArguments keywords of this plan (TRL's SFT and DPO configs)."""
        return {"use_cpu": self.device == "cpu", "bf16": self.dtype == "bfloat16",
                "fp16": self.dtype == "float16",
                "gradient_checkpointing": self.gradient_checkpointing}

    @property
    def train_weights_dtype(self) -> DType:
        """The dtype training loads the weights in: a frozen base under LoRA in the compute
        precision (half the memory), weights being trained in float32 (mixed precision)."""
        return self.dtype if self.lora and self.dtype == "bfloat16" else "float32"

    def card(self) -> dict:
        """What a model card records of the plan."""
        return {"device": self.device, "dtype": self.dtype,
                "gradient_checkpointing": self.gradient_checkpointing, "lora": self.lora}


def plan(parameters: int, hardware: Hardware, requested: Device = "auto",
         lora: bool | None = None) -> DevicePlan:
    """The plan for a model of ``parameters`` on ``hardware``. ``requested``: ``auto`` takes
    the GPU when there is one; ``cuda`` without one is an error. ``lora``: None chooses by
    size (above :data:`LORA_ABOVE`), a bool is the caller's choice."""
    if requested == "cuda" and not hardware.cuda:
        raise ValueError("device 'cuda' asked for, but torch sees no GPU on this machine")
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device {requested!r}: use auto, cpu or cuda")
    adapter = parameters > LORA_ABOVE if lora is None else lora
    size = f"{parameters / 1e6:.1f}M parameters"
    tuning = "LoRA" if adapter else "full fine-tuning"
    if requested == "cpu" or not hardware.cuda:
        return DevicePlan("cpu", "float32", False, adapter,
                          f"cpu, float32, {tuning}: {size}, "
                          f"{'no GPU' if requested == 'auto' else 'cpu asked for'}")
    dtype: DType = "bfloat16" if hardware.bf16 else "float16"
    checkpointing = parameters > CHECKPOINT_ABOVE
    return DevicePlan("cuda", dtype, checkpointing, adapter,
                      f"cuda ({hardware.name}), {dtype}, {tuning}"
                      f"{', gradient checkpointing' if checkpointing else ''}: {size}")


def count_parameters(model: str) -> int:
    """The parameters of model ``model`` (id or directory) without loading its weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in skeleton.parameters())
