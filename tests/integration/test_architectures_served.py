"""Models of two other architectures (Qwen2 with ChatML; a Llama with a BOS and a chat template
that starts with it), trained with SFT, served by the real vLLM engine: the prompt goes through
the served chat template, and the extractive ranking over HTTP is the in-process one."""

from __future__ import annotations

import asyncio

import pytest

from agents.extractor.base import SeedText
from agents.extractor.openai_backend import OpenAIExtractor
from agents.extractor.transformers_backend import TransformersExtractor
from agents.prompt import build_prompt, format_completion
from qexplorer.config import Settings
from qexplorer.marketplace.synthetic import generate_marketplace
from qexplorer.serving.server import ModelServer
from tests.architectures import ARCHITECTURES, build
from tests.integration.conftest import free_port
from trainer.train import TrainConfig, train, write_rows

pytestmark = pytest.mark.integration

K = 3


@pytest.fixture(scope="module")
def seeds() -> list[SeedText]:
    items = [i for i in generate_marketplace(n_benign=40, n_clusters=4, seed=21) if i.harmful]
    return [SeedText(i.id, i.title, i.description) for i in items[:12]]


@pytest.fixture(scope="module")
def served(vllm_runtime, seeds, tmp_path_factory):
    """Each architecture, briefly fine-tuned on its first seed, and a vLLM server for each
    (started together: each takes ~40 s to be ready)."""
    python, device = vllm_runtime
    models, servers = {}, []
    for name in ARCHITECTURES:
        tmp = tmp_path_factory.mktemp(name)
        rows = [{"prompt": build_prompt(s.title, s.description, K),
                 "completion": format_completion(s.title.split()[:K]), "corpus": "t",
                 "prompt_version": "v1"} for s in seeds]
        write_rows(rows, tmp / "sft.jsonl")
        models[name] = train(tmp / "sft.jsonl", str(build(name, tmp / "base")), tmp / "sft",
                             TrainConfig(stage="sft", epochs=2, batch_size=4,
                                         learning_rate=5e-3, max_length=1024), device="cpu")
        servers.append(ModelServer.of(Settings(), python, str(models[name]), device=device,
                                      port=free_port(), log_path=tmp / "vllm.log").start())
    try:
        for server in servers:
            server.wait_ready()
        yield {name: (models[name], server)
               for name, server in zip(ARCHITECTURES, servers, strict=True)}
    finally:
        for server in servers:
            server.stop()


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_vllm_ranks_spans_as_the_model_does_in_process(served, seeds, name):
    model, server = served[name]
    local = TransformersExtractor(str(model), extractive=True)
    remote = OpenAIExtractor(server.base_url, extractive=True)

    async def both():
        try:
            return await local.extract(seeds, K), await remote.extract(seeds, K)
        finally:
            await remote.aclose()

    here, there = asyncio.run(both())
    assert remote._chat is True  # the served tokenizer's chat template rendered the prompt
    pairs = [(a.queries, b.queries) for a, b in zip(here, there, strict=True)]
    same = sum(a == b for a, b in pairs)
    assert same >= 0.9 * len(seeds), pairs
    # the scores themselves, not only their order: the same tokens reach the same model
    spans, scores = local.span_scores_sync(seeds[0], K)
    remote = OpenAIExtractor(server.base_url, extractive=True)

    async def served_scores():
        try:
            return await remote.span_scores(seeds[0], K)
        finally:
            await remote.aclose()

    served_spans, served = asyncio.run(served_scores())
    assert served_spans == spans
    assert served == pytest.approx(scores, abs=2e-2)
