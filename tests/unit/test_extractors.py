"""Extractor backends: keywords, in-process transformers, OpenAI-compatible HTTP, registry."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from pathlib import Path

import pytest

from agents.extractor.base import Extraction, ExtractorError, SeedText
from agents.extractor.keywords import (
    ALGORITHM_REVISION,
    KeywordsExtractor,
    cjk_bigrams,
    tfidf_terms,
)
from agents.extractor.openai_backend import query_list_regex
from agents.extractor.priors import (
    TermCounts,
    WithToxic,
    contrast_scores,
    probe_scores,
    term_key,
)
from agents.extractor.registry import BACKENDS, build_extractor, check
from agents.prompt import END_MARKER, build_prompt, chat_messages
from agents.queries import candidate_spans, is_valid_query
from qexplorer.config import ExtractorSettings
from qexplorer.search import memory_index
from qexplorer.search.protocol import Change, TermStats
from schemas.models import ListingUpsert

SEEDS = [
    SeedText(
        "s1",
        "Brand NEW R0lex Submariner replica AAA quality!!",
        "Contact WeChat: lux888. Fast shipping worldwide; R0lex w@tch 50% off",
    ),
    SeedText("s2", "FREE iPhone 15 giveaway 🎁🔥",
             "DM me on telegram @freegift_22 to claim your FREE iPhone 🎁"),
    SeedText("s3", "每天在家轻松赚钱 日结工资", "加微信 vx888abc 每天在家轻松赚钱，日结工资"),
    SeedText("s4", "hi", ""),
    SeedText("s5", "", ""),
]


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text).lower().split())


def _assert_spans_of_seed(extraction: Extraction, seed: SeedText) -> None:
    seed_text = _norm(f"{seed.title} {seed.description}")
    for q in extraction.queries:
        assert _norm(q) in seed_text, (q, seed_text)


class FixedStats:
    """Term statistics from a table (``TermStats``); records the terms asked for."""

    def __init__(self, doc_freq: dict[str, int], count: int, default: int = 0) -> None:
        self.table = doc_freq
        self.total = count
        self.default = default
        self.asked: list[str] = []
        self.counted = 0

    def doc_freq(self, term: str) -> int:
        self.asked.append(term)
        return self.table.get(term, self.default)

    def count(self) -> int:
        self.counted += 1
        return self.total


#: A corpus of no statistics: every term in no listing (tf-idf ranks by term frequency).
EMPTY_STATS = FixedStats({}, 0)


def _extractor(method: str) -> KeywordsExtractor:
    """A keywords extractor; tfidf gets the term statistics it needs."""
    return KeywordsExtractor(method, stats=EMPTY_STATS if method == "tfidf" else None)


# --- keywords ---------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["yake", "tfidf", "first_words"])
async def test_keywords_are_deterministic_bounded_spans_of_the_seed(method):
    extractor = _extractor(method)
    first = await extractor.extract(SEEDS, 3)
    second = await extractor.extract(SEEDS, 3)
    assert first == second
    assert [e.seed_id for e in first] == [s.id for s in SEEDS]
    for extraction, seed in zip(first, SEEDS, strict=True):
        assert len(extraction.queries) <= 3
        assert all(is_valid_query(q) for q in extraction.queries)
        _assert_spans_of_seed(extraction, seed)
    assert first[4].queries == []  # an empty seed gives nothing, and no error
    assert extractor.model_version == f"keywords-{method}-{ALGORITHM_REVISION}"


async def test_yake_gives_one_to_three_word_phrases():
    [extraction] = await KeywordsExtractor("yake").extract(SEEDS[:1], 4)
    assert len(extraction.queries) == 4
    assert all(1 <= len(q.split()) <= 3 for q in extraction.queries)
    assert "Submariner replica" in extraction.queries


async def test_yake_falls_back_to_bigrams_for_chinese_and_first_words_for_tiny_seeds():
    chinese, tiny = await KeywordsExtractor("yake").extract([SEEDS[2], SEEDS[3]], 4)
    assert chinese.queries[0] == "vx888abc"  # contact ids first
    assert chinese.queries[1:] == ["每天", "在家", "轻松"]
    assert tiny.queries == ["hi"]


def test_contact_ids_with_underscores_or_hyphens_stay_whole_and_come_first():
    text = "高息贷款 无视黑白户 加电报 kuaidai_88 当天下款 vx-123abc"
    assert cjk_bigrams(text, 3) == ["kuaidai_88", "vx-123abc", "高息"]


def test_cjk_bigrams_do_not_overlap_while_others_remain():
    assert cjk_bigrams("每天在家", 4) == ["每天", "在家", "天在"]


def test_tfidf_uses_document_frequencies_when_given():
    text = "cheap watch cheap watch rolex replica"
    df = {"cheap": 900, "watch": 800, "rolex": 5, "replica": 50}
    ranked = tfidf_terms(text, 4, doc_freq=lambda t: df.get(t, 0), num_docs=1000)
    assert ranked[0] == "rolex"
    assert tfidf_terms(text, 2) == ["cheap", "watch"]  # plain term frequency without df


async def test_tfidf_extractor_reads_the_statistics_on_every_batch():
    stats = FixedStats({"replica": 1}, 1000, default=500)
    extractor = KeywordsExtractor("tfidf", stats=stats)
    [extraction] = await extractor.extract(SEEDS[:1], 2)
    assert extraction.queries[0] == "replica"
    assert "replica" in stats.asked and all(t == t.lower() for t in stats.asked)
    assert stats.counted == 1
    # the index grows: the next batch reads the new corpus size (not a cached one)
    # (the statistics are asked for R0lex as the index holds it: rolex)
    stats.total, stats.table = 3, {"replica": 3, "rolex": 0}
    [again] = await extractor.extract(SEEDS[:1], 2)
    assert stats.counted == 2
    assert again.queries[0] == "R0lex"  # in the seller's spelling


async def test_tfidf_doc_freq_failure_is_an_extractor_error():
    class Broken(FixedStats):
        def doc_freq(self, term: str) -> int:
            raise OSError("index closed")

    with pytest.raises(ExtractorError, match="index closed"):
        await KeywordsExtractor("tfidf", stats=Broken({}, 10)).extract(SEEDS[:1], 2)


async def test_tfidf_count_failure_is_an_extractor_error():
    class Broken(FixedStats):
        def count(self) -> int:
            raise OSError("index closed")

    with pytest.raises(ExtractorError, match="index closed"):
        await KeywordsExtractor("tfidf", stats=Broken({}, 10)).extract(SEEDS[:1], 2)


def test_keywords_configuration_errors():
    with pytest.raises(ValueError, match="unknown keywords method"):
        KeywordsExtractor("bm25")
    with pytest.raises(ValueError, match="tfidf needs the search index's term statistics"):
        KeywordsExtractor("tfidf")
    with pytest.raises(ValueError, match="first_n must be >= 1"):
        KeywordsExtractor("first_words", first_n=0)
    assert KeywordsExtractor(model_version="pinned").model_version == "pinned"
    assert isinstance(EMPTY_STATS, TermStats)


async def test_first_words_is_one_query_of_five_words():
    [extraction] = await KeywordsExtractor("first_words").extract(SEEDS[:1], 4)
    assert extraction.queries == ["Brand NEW R0lex Submariner replica"]


# --- registry ---------------------------------------------------------------------------------


def _settings(**values) -> ExtractorSettings:
    """Extractor settings from ``values`` alone (not the environment)."""
    return ExtractorSettings.model_validate(values)


def _stats_index():
    """A small committed in-memory index whose document frequencies tf-idf can see."""
    index = memory_index()
    index.apply(Change(ListingUpsert(id=f"l{i}", title=title)) for i, title in enumerate([
        "brand new watch", "new watch strap", "brand new shoes", "new phone case",
        "brand new bag", "new submariner watch", "new lamp", "new chair"]))
    index.commit(None)
    return index


def test_the_registry_builds_every_backend(tmp_path):
    from agents.extractor.openai_backend import OpenAIExtractor
    from agents.extractor.transformers_backend import TransformersExtractor

    kinds = {"keywords": KeywordsExtractor, "transformers": TransformersExtractor,
             "openai": OpenAIExtractor}
    assert set(BACKENDS) == set(kinds)  # a new backend must be added here too
    for name in BACKENDS:
        settings = _settings(backend=name, model=str(tmp_path) if name != "keywords" else None)
        check(settings)
        extractor = build_extractor(settings, EMPTY_STATS)
        assert isinstance(extractor, kinds[name]) and extractor.name == name


def test_the_registry_refuses_an_unknown_backend_listing_the_known_ones():
    settings = _settings(backend="bm25")
    for call in (lambda: check(settings), lambda: build_extractor(settings, EMPTY_STATS)):
        with pytest.raises(ValueError, match="QEXPLORER_EXTRACTOR='bm25'") as info:
            call()
        assert all(name in str(info.value) for name in BACKENDS), info.value


@pytest.mark.parametrize("model", [None, ""])
def test_transformers_without_a_model_is_refused_naming_the_setting(model):
    settings = _settings(backend="transformers", model=model)
    for call in (lambda: check(settings), lambda: build_extractor(settings, EMPTY_STATS)):
        with pytest.raises(ValueError, match="QEXPLORER_MODEL"):
            call()
    check(_settings(backend="openai"))  # the served model is discovered: no model needed
    check(_settings(backend="keywords"))


@pytest.mark.parametrize(("model", "method"), [(None, "yake"), ("yake", "yake"),
                                               ("tfidf", "tfidf"),
                                               ("first_words", "first_words"),
                                               ("some/hub-model", "yake")])
def test_keywords_model_selects_the_method(model, method):
    extractor = build_extractor(_settings(backend="keywords", model=model), EMPTY_STATS)
    assert isinstance(extractor, KeywordsExtractor) and extractor.method == method
    assert extractor.model_version == f"keywords-{method}-{ALGORITHM_REVISION}"


def test_model_version_overrides_the_recorded_version(tmp_path):
    tfidf = build_extractor(_settings(backend="keywords", model="tfidf", model_version="v9"),
                            EMPTY_STATS)
    assert isinstance(tfidf, KeywordsExtractor) and tfidf.method == "tfidf"
    assert tfidf.model_version == "v9"
    local = build_extractor(_settings(backend="transformers", model=str(tmp_path),
                                      model_version="sft-7"), EMPTY_STATS)
    assert local.model_version == "sft-7"
    remote = build_extractor(_settings(backend="openai", model="qx", model_version="pinned-2"),
                             EMPTY_STATS)
    assert remote.model_version == "pinned-2"


def test_the_openai_backend_keeps_the_api_key_out_of_its_repr():
    from agents.extractor.openai_backend import OpenAIExtractor

    remote = build_extractor(_settings(backend="openai", model="qx", openai_api_key="sk-x",
                                       openai_base_url="http://h:1/v1"), EMPTY_STATS)
    assert isinstance(remote, OpenAIExtractor)
    assert remote.model_version == "qx" and "sk-x" not in repr(remote)


async def test_registry_tfidf_weighs_terms_by_the_index_it_is_given():
    index = _stats_index()
    seed = SeedText("s", "brand new submariner watch", "")
    tfidf = build_extractor(_settings(backend="keywords", model="tfidf"), index)
    assert isinstance(tfidf, KeywordsExtractor) and tfidf.stats is index
    [extraction] = await tfidf.extract([seed], 4)
    # "new" is in all 8 listings, "brand" in 3, "watch" in 3, "submariner" in 1
    assert extraction.queries == ["submariner", "brand", "watch", "new"]
    expected = tfidf_terms("brand new submariner watch", 8, doc_freq=index.doc_freq,
                           num_docs=index.count())
    assert extraction.queries == expected
    # without the index's frequencies the order is the text's
    assert tfidf_terms("brand new submariner watch", 4) == ["brand", "new", "submariner",
                                                             "watch"]
    # and it reads the index as it grows
    index.apply(Change(ListingUpsert(id=f"m{i}", title="submariner")) for i in range(20))
    index.commit(None)
    [later] = await tfidf.extract([seed], 4)
    assert later.queries == ["brand", "watch", "new", "submariner"]


# --- transformers -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised 1-layer Llama and a byte-level BPE tokenizer, built offline."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from agents.prompt import format_completion

    corpus = [
        build_prompt(s.title, s.description, 3) + format_completion(["R0lex", "lux888"])
        for s in SEEDS
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=360, special_tokens=["<s>", "</s>", "<pad>"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    ))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_attention_heads=2, num_key_value_heads=2,
        num_hidden_layers=1, intermediate_size=128, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


async def test_transformers_extracts_k_bounded_clean_queries(tiny_model_dir):
    from agents.extractor.transformers_backend import TransformersExtractor

    extractor = TransformersExtractor(str(tiny_model_dir), max_new_tokens=16, batch_size=2,
                                      extractive=False)
    assert re.fullmatch(rf"{tiny_model_dir.name}@[0-9a-f]{{12}}", extractor.model_version)
    out = await extractor.extract(SEEDS, 3)
    assert [e.seed_id for e in out] == [s.id for s in SEEDS]
    for extraction in out:
        assert len(extraction.queries) <= 3
        assert all(is_valid_query(q) for q in extraction.queries)
        assert len(extraction.raw) == 1 and isinstance(extraction.raw[0], str)
    assert await extractor.extract(SEEDS, 3) == out  # greedy decoding is deterministic
    await extractor.aclose()


async def test_transformers_sampling_is_seeded_and_does_not_block_the_loop(tiny_model_dir):
    from agents.extractor.transformers_backend import TransformersExtractor

    extractor = TransformersExtractor(str(tiny_model_dir), max_new_tokens=16, temperature=0.9,
                                      extractive=False,
                                      seed=7)
    await extractor.load()
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    task = asyncio.create_task(ticker())
    first = await extractor.extract(SEEDS * 3, 2)
    done.set()
    await task
    assert ticks > 5  # the loop kept running while the model generated
    assert await extractor.extract(SEEDS * 3, 2) == first


async def test_transformers_unparseable_output_gives_no_queries(tiny_model_dir, monkeypatch):
    from agents.extractor.transformers_backend import TransformersExtractor

    extractor = TransformersExtractor(str(tiny_model_dir), extractive=False)
    outputs = iter([["%%%\n***\n"], [f"1. R0lex w@tch\n2) lux888\n{END_MARKER}junk"]])
    monkeypatch.setattr(extractor, "generate_sync", lambda prompts: next(outputs))
    [garbage] = await extractor.extract(SEEDS[:1], 3)
    assert garbage.queries == [] and garbage.raw == ["%%%\n***\n"]
    [good] = await extractor.extract(SEEDS[:1], 3)
    assert good.queries == ["R0lex w@tch", "lux888"]


async def test_extractive_decoding_ranks_the_seeds_own_spans(tiny_model_dir):
    from agents.extractor.transformers_backend import TransformersExtractor
    from agents.queries import seed_spans

    extractor = TransformersExtractor(str(tiny_model_dir))
    out = await extractor.extract(SEEDS, 3)
    for seed, extraction in zip(SEEDS, out, strict=True):
        spans = seed_spans(seed.title, seed.description)
        assert len(extraction.queries) == min(3, len(spans)) or not spans
        assert all(q in spans for q in extraction.queries)  # evidence from the item only
        scores = [float(line.split("\t")[0]) for line in extraction.raw]
        assert scores == sorted(scores, reverse=True)
    assert await extractor.extract(SEEDS, 3) == out
    sampler = TransformersExtractor(str(tiny_model_dir), temperature=1.0, seed=3)
    samples = [(await sampler.extract(SEEDS, 3))[0].queries for _ in range(2)]
    assert samples[0] == samples[1]  # seeded
    sampler.seed = 4
    assert all(q in seed_spans(SEEDS[0].title, SEEDS[0].description)
               for q in (await sampler.extract(SEEDS, 3))[0].queries)


async def test_transformers_load_failure_is_an_extractor_error(tmp_path):
    from agents.extractor.transformers_backend import TransformersExtractor

    with pytest.raises(ExtractorError, match="cannot load model"):
        await TransformersExtractor(str(tmp_path)).extract(SEEDS[:1], 2)


def test_transformers_version_comes_from_the_model_card(tmp_path):
    from agents.extractor.transformers_backend import TransformersExtractor

    (tmp_path / "qexplorer.json").write_text(json.dumps({"version": "qx-dpo-2026.11.3"}))
    assert TransformersExtractor(str(tmp_path)).model_version == "qx-dpo-2026.11.3"
    (tmp_path / "qexplorer.json").write_text("{not json")
    (tmp_path / "model_card.json").write_text(json.dumps({"version": 4}))
    assert TransformersExtractor(str(tmp_path)).model_version == "4"


def test_transformers_fingerprint_changes_with_the_weights(tmp_path):
    from agents.extractor.transformers_backend import TransformersExtractor

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    before = TransformersExtractor(str(tmp_path)).model_version
    (tmp_path / "model.safetensors").write_bytes(b"x" * 11)
    after = TransformersExtractor(str(tmp_path)).model_version
    assert before != after and before.startswith(f"{tmp_path.name}@")


# --- OpenAI-compatible server ----------------------------------------------------------------


@pytest.fixture
async def fake_server():
    """A tiny OpenAI-compatible server on 127.0.0.1; ``state`` steers its behaviour."""
    from aiohttp import web

    state = {
        "fail_first": 0, "status": 500, "delay": 0.0, "calls": 0, "inflight": 0,
        "max_inflight": 0, "headers": [], "bodies": [],
        "text": "1. R0lex w@tch\n2. lux888\n3. lux888\n" + END_MARKER,
        "max_model_len": 4096, "favourite": set("lux888\n"), "tokenized": 0,
        "tokenize_bodies": [], "chat_template": False,
    }

    async def tokenize(request: web.Request) -> web.Response:
        # one token a character: enough to check how prompts and spans are put together
        state["tokenized"] += 1
        body = await request.json()
        state["tokenize_bodies"].append(body)
        if "messages" in body:  # as vLLM: chat messages need the tokenizer's chat template
            if not state["chat_template"]:
                return web.json_response({"error": "no chat template"}, status=400)
            system, user = (m["content"] for m in body["messages"])
            text = f"<|system|>{system}<|user|>{user}<|assistant|>"
        else:
            text = ("^" if body["add_special_tokens"] else "") + body["prompt"]  # ^: a BOS
        return web.json_response({"tokens": [ord(c) for c in text],
                                  "max_model_len": state["max_model_len"]})

    async def models(request: web.Request) -> web.Response:
        return web.json_response({"object": "list",
                                  "data": [{"id": "/srv/models/qx-sft-v2", "object": "model"}]})

    async def completions(request: web.Request) -> web.Response:
        state["calls"] += 1
        state["headers"].append(dict(request.headers))
        body = await request.json()
        state["bodies"].append(body)
        if state["calls"] <= state["fail_first"]:
            return web.Response(status=state["status"], text="boom")
        state["inflight"] += 1
        state["max_inflight"] = max(state["max_inflight"], state["inflight"])
        try:
            if state["delay"]:
                await asyncio.sleep(state["delay"])
        finally:
            state["inflight"] -= 1
        if body.get("echo"):  # prompt log-probabilities: favourite characters are likely
            return web.json_response({"object": "text_completion", "choices": [
                {"index": i, "text": "x", "logprobs": {"token_logprobs": [None] + [
                    -0.1 if chr(t) in state["favourite"] else -5.0 for t in ids[1:]] + [-1.0]}}
                for i, ids in enumerate(body["prompt"])],
                "usage": {"prompt_tokens": sum(map(len, body["prompt"])),
                          "completion_tokens": len(body["prompt"])}})
        return web.json_response({
            "object": "text_completion",
            "choices": [{"index": i, "text": state["text"], "finish_reason": "stop"}
                        for i in range(body.get("n", 1))],
        })

    app = web.Application()
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/tokenize", tokenize)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/v1", state
    await runner.cleanup()


def _openai(base_url: str, **kwargs):
    from agents.extractor.openai_backend import OpenAIExtractor

    kwargs.setdefault("backoff_s", 0.01)
    kwargs.setdefault("max_backoff_s", 0.02)
    kwargs.setdefault("extractive", False)
    return OpenAIExtractor(base_url, **kwargs)


async def test_openai_normal_answer(fake_server):
    base_url, state = fake_server
    extractor = _openai(base_url, api_key="sk-test-123", max_new_tokens=20, seed=5)
    assert extractor.model_version == "openai:unresolved"
    [out] = await extractor.extract(SEEDS[:1], 3)
    await extractor.aclose()
    assert out.seed_id == "s1"
    assert out.queries == ["R0lex w@tch", "lux888"]
    assert out.raw == [state["text"]]
    body = state["bodies"][0]
    assert body == {
        "model": "/srv/models/qx-sft-v2",
        # token ids from the server's /tokenize: the plain prompt with the special tokens
        "prompt": [ord(c) for c in "^" + build_prompt(SEEDS[0].title, SEEDS[0].description, 3)],
        "max_tokens": 20, "temperature": 0.0, "n": 1, "seed": 5, "stop": [END_MARKER],
        "structured_outputs": {"regex": query_list_regex(3)},
    }
    assert state["headers"][0]["Authorization"] == "Bearer sk-test-123"
    assert extractor.model_version == "qx-sft-v2"
    assert "sk-test-123" not in repr(extractor)


async def test_openai_without_key_sends_no_authorization(fake_server):
    base_url, state = fake_server
    extractor = _openai(base_url, model="served-name", model_version="pinned-1")
    await extractor.extract(SEEDS[:2], 2)
    await extractor.aclose()
    assert all("Authorization" not in h for h in state["headers"])
    assert {b["model"] for b in state["bodies"]} == {"served-name"}
    assert extractor.model_version == "pinned-1"


async def test_openai_n_samples_are_merged(fake_server):
    base_url, state = fake_server
    state["text"] = "alpha\nbeta"
    extractor = _openai(base_url, model="m", n=3, temperature=0.7)
    [out] = await extractor.extract(SEEDS[:1], 4)
    await extractor.aclose()
    assert out.queries == ["alpha", "beta"] and len(out.raw) == 3


async def test_openai_retries_a_500_then_succeeds(fake_server):
    base_url, state = fake_server
    state["fail_first"] = 1
    extractor = _openai(base_url, model="m")
    [out] = await extractor.extract(SEEDS[:1], 3)
    await extractor.aclose()
    assert state["calls"] == 2
    assert out.queries == ["R0lex w@tch", "lux888"]


async def test_openai_gives_up_after_the_retries(fake_server):
    base_url, state = fake_server
    state["fail_first"], state["status"] = 100, 503
    extractor = _openai(base_url, model="m", attempts=3)
    with pytest.raises(ExtractorError, match="after 3 attempts"):
        await extractor.extract(SEEDS[:1], 3)
    await extractor.aclose()
    assert state["calls"] == 3


async def test_openai_does_not_retry_a_client_error(fake_server):
    base_url, state = fake_server
    state["fail_first"], state["status"] = 100, 400
    extractor = _openai(base_url, model="m", attempts=3)
    with pytest.raises(ExtractorError, match="HTTP 400"):
        await extractor.extract(SEEDS[:1], 3)
    await extractor.aclose()
    assert state["calls"] == 1


async def test_openai_times_out(fake_server):
    base_url, state = fake_server
    state["delay"] = 0.6
    extractor = _openai(base_url, model="m", attempts=2, timeout_s=0.15)
    with pytest.raises(ExtractorError, match="after 2 attempts"):
        await extractor.extract(SEEDS[:1], 3)
    await extractor.aclose()


async def test_openai_bounds_concurrency(fake_server):
    base_url, state = fake_server
    state["delay"] = 0.05
    extractor = _openai(base_url, model="m", concurrency=2)
    out = await extractor.extract(SEEDS * 2, 2)
    await extractor.aclose()
    assert [e.seed_id for e in out] == [s.id for s in SEEDS * 2]
    assert state["max_inflight"] == 2


async def test_openai_server_down_is_an_extractor_error():
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    extractor = _openai(f"http://127.0.0.1:{port}/v1", attempts=2, api_key="sk-secret")
    with pytest.raises(ExtractorError) as info:
        await extractor.extract(SEEDS[:1], 3)
    await extractor.aclose()
    assert "sk-secret" not in str(info.value)


async def test_openai_garbage_completion_gives_no_queries(fake_server):
    base_url, state = fake_server
    state["text"] = "*** ::: !!!"
    extractor = _openai(base_url, model="m")
    [out] = await extractor.extract(SEEDS[:1], 3)
    await extractor.aclose()
    assert out.queries == [] and out.raw == ["*** ::: !!!"]


async def test_openai_extractive_ranks_spans_by_prompt_logprobs(fake_server):
    base_url, state = fake_server
    extractor = _openai(base_url, model="m", extractive=True)
    [out] = await extractor.extract(SEEDS[:1], 3)
    await extractor.aclose()
    spans = candidate_spans(SEEDS[0].title, SEEDS[0].description)
    assert out.queries[0] == "lux888"  # made only of characters the fake model likes
    assert set(out.queries) <= set(spans) and len(out.queries) == 3
    [body] = state["bodies"]  # one batched request a seed: every span after the prompt
    prompt = [ord(c) for c in "^" + build_prompt(SEEDS[0].title, SEEDS[0].description, 3)]
    assert body["echo"] is True and body["logprobs"] == 0 and body["max_tokens"] == 1
    assert body["prompt"] == [prompt + [ord(c) for c in f"{s}\n"] for s in spans]
    assert state["tokenized"] == 2 + len(spans)  # chat messages refused, then the plain prompt
    assert extractor.usage.requests == 1 and extractor.usage.prompt_tokens > len(prompt)


async def test_openai_prompts_go_through_the_served_chat_template_when_there_is_one(
        fake_server):
    """The served tokenizer decides, as in training (agents.extractor.model_input): with a
    chat template the prompt is the chat messages' tokens; without one the plain prompt's
    (the server is asked for chat once)."""
    base_url, state = fake_server
    state["chat_template"] = True
    extractor = _openai(base_url, model="m", extractive=True)
    await extractor.extract(SEEDS[:2], 3)
    await extractor.aclose()
    system, user = (m["content"] for m in chat_messages(SEEDS[0].title, SEEDS[0].description, 3))
    chat = [ord(c) for c in f"<|system|>{system}<|user|>{user}<|assistant|>"]
    assert state["bodies"][0]["prompt"][0][:len(chat)] == chat
    asked = [b for b in state["tokenize_bodies"] if "messages" in b]
    assert len(asked) == 2 and all(b["add_generation_prompt"] for b in asked)

    state["chat_template"], state["tokenize_bodies"] = False, []
    extractor = _openai(base_url, model="m", extractive=True)
    await extractor.extract(SEEDS[:1], 3)
    await extractor.extract(SEEDS[1:2], 3)
    await extractor.aclose()
    assert sum("messages" in b for b in state["tokenize_bodies"]) == 1


async def test_openai_extractive_cuts_long_prompts_from_the_front(fake_server):
    base_url, state = fake_server
    state["max_model_len"] = 100
    extractor = _openai(base_url, model="m", extractive=True, max_new_tokens=20)
    await extractor.extract(SEEDS[:1], 3)
    await extractor.aclose()
    prompt = build_prompt(SEEDS[0].title, SEEDS[0].description, 3)
    first = state["bodies"][0]["prompt"][0]
    assert "".join(map(chr, first[:64])) == prompt[-64:]  # the end (the cue) is kept


async def test_openai_extractive_sampling_is_reproducible(fake_server):
    base_url, _ = fake_server
    runs = []
    for seed in (1, 1, 2):
        extractor = _openai(base_url, model="m", extractive=True, temperature=5.0, seed=seed)
        runs.append((await extractor.extract(SEEDS[:1], 3))[0].queries)
        await extractor.aclose()
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_query_list_grammar_admits_query_lists_only():
    grammar = re.compile(query_list_regex(3))
    assert grammar.fullmatch("lux888\nR0lex w@tch\n")
    assert not grammar.fullmatch("a\nb\nc\nd\n")  # more than k lines
    assert not grammar.fullmatch("lux888\n" + END_MARKER + "\n")
    assert not grammar.fullmatch("x" * 81 + "\n")
    assert not grammar.fullmatch("tab\there\n")


# --- contrast: what the system already knows at run time -------------------------------------


def _contrast(doc_freq: dict[str, int], count: int, toxic: list[SeedText]) -> KeywordsExtractor:
    return KeywordsExtractor("contrast", stats=WithToxic(FixedStats(doc_freq, count, 5),
                                                         TermCounts(toxic)))


def test_contrast_prefers_terms_common_among_confirmed_items_and_rare_among_listings():
    seed = SeedText("s", "warm winter jacket frostyplug", "ask for the price, fast delivery")
    confirmed = [SeedText(f"t{n}", f"winter deal frostyplug {n}", "") for n in range(4)]
    # "winter" is in every confirmed item but also in 400 of 1,000 listings
    stats = {"winter": 400, "jacket": 200, "frostyplug": 6, "delivery": 300, "price": 500,
             "fast": 300, "warm": 250, "ask": 600}
    [found] = _contrast(stats, 1000, confirmed).extract_sync([seed], 2)
    assert found.queries[0] == "frostyplug"
    assert "price" not in found.queries and "ask" not in found.queries
    # with nothing confirmed yet it ranks by rarity alone: still the rare term first
    [cold] = _contrast(stats, 1000, []).extract_sync([seed], 2)
    assert cold.queries[0] == "frostyplug"


def test_contrast_does_not_count_the_seed_itself_nor_terms_only_it_holds():
    seed = SeedText("s", "kx9 own1 zzq7 winter", "")
    others = [SeedText(f"t{n}", f"zzq7 deal {n}", "") for n in range(3)]
    # kx9: only the seed holds it; own1: the seed and one innocent listing. Counting the seed
    # as a confirmed holder of own1 would rank own1 above zzq7, which 3 other toxic items hold.
    # (statistics are kept for the words as the index holds them: term_key folds kx9 to kxg)
    stats = {term_key(t): n for t, n in {"kx9": 1, "own1": 2, "zzq7": 12, "winter": 300}.items()}
    [found] = _contrast(stats, 1000, [seed, *others]).extract_sync([seed], 2)
    assert found.queries[0] == "zzq7" and "kx9" not in found.queries
    counts = TermCounts([seed, seed])
    assert counts.toxic_count() == 1 and counts.toxic_doc_freq(term_key("kx9")) == 1


def test_contrast_needs_the_confirmed_set_and_the_worker_ledger_provides_it():
    from agents.explore import Ledger
    from schemas.models import ToxicItem

    with pytest.raises(ValueError, match="confirmed"):
        KeywordsExtractor("contrast", stats=EMPTY_STATS)
    ledger = Ledger()
    item = ToxicItem(id="t1", title="Frostyplug snow", description="tg frostyplug",
                     confirmed_by="mod")
    ledger.confirm_item(item)
    ledger.confirm_item(item)
    assert ledger.terms.toxic_count() == 1 and ledger.terms.toxic_doc_freq("frostyplug") == 1
    assert ledger.terms.is_confirmed("t1") and "t1" in ledger.confirmed
    extractor = build_extractor(_settings(backend="keywords", model="contrast"),
                                WithToxic(EMPTY_STATS, ledger.terms))
    assert extractor.model_version == "keywords-contrast-2"


# --- probe: each span searched, ranked by the confirmed share of its results ------------------


def _probe_index(listings: dict[str, str]):
    index = memory_index()
    index.apply(Change(ListingUpsert(id=i, title=t)) for i, t in listings.items())
    index.commit(None)
    return index


def test_probe_ranks_spans_by_the_confirmed_share_of_their_results():
    # "snow" finds three confirmed items; "winter" finds one confirmed and three ordinary
    listings = {"t1": "snow winter deal", "t2": "snow plug", "t3": "snow fast",
                "b1": "winter jacket", "b2": "winter boots", "b3": "winter hat", "s": "winter snow"}
    index = _probe_index(listings)
    confirmed = TermCounts([SeedText(i, listings[i], "") for i in ("t1", "t2", "t3")])
    stats = WithToxic(index, confirmed)
    seed = SeedText("s", "winter snow", "")
    assert probe_scores(seed, ["snow", "winter", "nothing"], stats) == [
        pytest.approx(1.003), pytest.approx(0.25 + 0.001), 0.0]
    [found] = KeywordsExtractor("probe", stats=stats).extract_sync([seed], 2)
    assert found.queries[0] == "snow"
    # with nothing confirmed every span ties at 0: the contrast decides (here rarity alone)
    cold = WithToxic(index, TermCounts())
    assert probe_scores(seed, ["snow", "winter"], cold) == [0.0, 0.0]
    [found] = KeywordsExtractor("probe", stats=cold).extract_sync([seed], 2)
    assert found.queries == ["snow", "winter"]
    # the seed's own listing is never counted: confirming it changes nothing
    confirmed.add(SeedText("s", "winter snow", ""))
    assert probe_scores(seed, ["snow"], stats) == [pytest.approx(1.003)]
    # a model's ranking with the probe blended in: the model alone prefers "winter"
    from agents.extractor.decoding import blend, blend_version

    mixed = blend(seed, ["winter", "snow"], [-1.0, -3.0], stats, {"probe": 4.0})
    assert mixed[1] > mixed[0]
    assert blend_version("qx-dpo-1", stats, {"probe": 4.0}) == "qx-dpo-1+probe4"


def test_probe_needs_a_searchable_index_and_says_so():
    with pytest.raises(ValueError, match="confirmed"):
        KeywordsExtractor("probe", stats=EMPTY_STATS)
    extractor = KeywordsExtractor("probe", stats=WithToxic(EMPTY_STATS, TermCounts()))
    with pytest.raises(ExtractorError, match="searchable index"):
        extractor.extract_sync([SeedText("s", "winter snow", "")], 2)


# --- a model's span ranking with the contrast blended in -------------------------------------


def test_blend_adds_the_weighted_contrast_and_changes_the_version():
    from agents.extractor.decoding import blend, blend_stats, blend_version

    seed = SeedText("s", "warm winter jacket frostyplug", "")
    stats = WithToxic(FixedStats({"winter": 400, "jacket": 200, "frostyplug": 6, "warm": 250},
                                 1000, 5), TermCounts([SeedText("t", "winter frostyplug", "")]))
    spans = ["winter jacket", "frostyplug"]
    scores = [-2.0, -6.0]  # the model alone prefers "winter jacket"
    assert blend(seed, spans, scores, stats, {"contrast": 0.0}) == scores
    assert blend(seed, spans, scores, stats, {}) == scores
    assert blend(seed, spans, scores, None, {"contrast": 2.0}) == scores
    mixed = blend(seed, spans, scores, stats, {"contrast": 2.0})
    assert mixed[1] > mixed[0]  # the contrast turns it round
    prior = contrast_scores(seed, spans, stats)
    assert mixed == [s + 2.0 * p for s, p in zip(scores, prior, strict=True)]
    assert blend_version("qx-dpo-1", stats, {"contrast": 2.0}) == "qx-dpo-1+contrast2"
    assert blend_version("qx-dpo-1", stats, {"contrast": 0.0}) \
        == blend_version("qx-dpo-1", None, {"contrast": 2.0}) == "qx-dpo-1"
    assert blend_stats(EMPTY_STATS, {"contrast": 0.0}) is None
    assert blend_stats(stats, {"contrast": 1.0}) is stats
    with pytest.raises(ValueError, match="confirmed items"):
        blend_stats(EMPTY_STATS, {"contrast": 1.0})


def test_both_priors_add_up_and_are_named_in_one_order():
    from agents.extractor.decoding import (
        blend,
        blend_label,
        blend_values,
        blend_version,
        blend_weights,
    )

    seed = SeedText("s", "warm winter jacket frostyplug", "")
    stats = WithToxic(FixedStats({"winter": 400, "jacket": 200, "frostyplug": 6, "warm": 250},
                                 1000, 5), TermCounts([SeedText("t", "winter frostyplug", "")]))
    spans, scores = ["winter jacket", "frostyplug"], [-2.0, -6.0]
    values = {"contrast": [1.0, 3.0], "probe": [0.5, 0.0]}
    assert blend_values(scores, values, {"contrast": 2.0, "probe": 4.0}) == [2.0, 0.0]
    assert blend_values(scores, values, {"probe": 0.0}) == scores
    # a worker's blend is the sum of each prior's own values
    assert blend(seed, spans, scores, stats, {"contrast": 2.0, "probe": 0.0}) \
        == blend_values(scores, {"contrast": contrast_scores(seed, spans, stats)},
                        {"contrast": 2.0})
    weights = {"probe": 64.0, "contrast": 2.0}
    assert list(blend_weights(weights)) == ["contrast", "probe"]
    assert blend_version("v1", stats, weights) == "v1+contrast2+probe64"
    assert blend_label("sft_dpo", weights) == "sft_dpo+contrast+probe"
    with pytest.raises(ValueError, match="unknown prior"):
        blend_weights({"popularity": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        blend_weights({"probe": -1.0})


def test_the_blend_reaches_both_model_backends_from_the_settings():
    stats = WithToxic(EMPTY_STATS, TermCounts())
    for backend in ("transformers", "openai"):
        extractor = build_extractor(_settings(backend=backend, model="m", model_version="v1",
                                              blend={"contrast": 0.5}), stats)
        assert extractor.stats is stats and extractor.blend == {"contrast": 0.5}
        assert extractor.model_version == "v1+contrast0.5"
        plain = build_extractor(_settings(backend=backend, model="m", model_version="v1"), stats)
        assert plain.stats is None and plain.model_version == "v1"
        both = build_extractor(_settings(backend=backend, model="m", model_version="v1",
                                         blend={"probe": 8, "contrast": 1}), stats)
        assert both.model_version == "v1+contrast1+probe8"


def test_span_rows_run_each_body_once_in_the_longest_row_that_starts_with_it():
    from agents.extractor.decoding import span_rows

    nl = 9
    conts = [[1, nl], [1, 2, nl], [1, 2, 3, nl], [1, 4, nl], [5, 6, nl], [7], [1, 2, nl]]
    rows, row_of = span_rows(conts)
    assert sorted(rows) == [[1, 2, 3], [1, 4], [5, 6]]
    for cont, row in zip(conts, row_of, strict=True):
        if len(cont) == 1:
            assert row == -1  # scored by the prompt's last distribution alone
        else:
            assert rows[row][: len(cont) - 1] == cont[:-1]
    assert span_rows([]) == ([], [])
