"""The real vLLM engine (the CPU build, in its own virtualenv) serving QExplorer models to a real
worker over Kafka: the queries it returns, a crash of the server mid-stream, and a rollout of
another model with the stream running.

The first run builds the server's virtualenv (about two minutes; it is reused afterwards).
"""

from __future__ import annotations

import asyncio

import pytest

from agents.extractor.base import SeedText
from agents.extractor.transformers_backend import TransformersExtractor
from agents.queries import candidate_spans
from qexplorer.config import Settings
from qexplorer.kafka.io import publish
from qexplorer.marketplace.items import to_listing_dict, to_toxic_dict
from qexplorer.marketplace.synthetic import generate_marketplace, split_seeds
from qexplorer.serving.server import ModelServer
from schemas.models import (
    DeadLetter,
    Detection,
    ListingUpsert,
    ModelRollout,
    ToxicItem,
)
from schemas.topics import LISTINGS, MODEL_ROLLOUTS, TOXIC_ITEMS
from tests.integration.conftest import explored, free_port, read_records, wait_for
from trainer.bootstrap import BootstrapConfig, bootstrap

pytestmark = pytest.mark.integration

K = 4


@pytest.fixture(scope="module")
def market():
    items = generate_marketplace(n_benign=600, n_clusters=6, seed=11)
    return items, split_seeds(items, 0.5, seed=2)


@pytest.fixture(scope="module")
def runtime(broker, vllm_runtime):
    """(interpreter of the server's virtualenv, device)."""
    return vllm_runtime


@pytest.fixture(scope="module")
def models(tmp_path_factory, market):
    """Two small bootstrapped models with different weights, hence different versions."""
    items, _ = market
    out = []
    for name, steps in (("a", 30), ("b", 60)):
        config = BootstrapConfig(vocab_size=512, hidden_size=64, heads=2, layers=2,
                                 intermediate_size=128, steps=steps, batch_size=8,
                                 max_length=192)
        out.append(bootstrap(items, tmp_path_factory.mktemp(f"model-{name}"), config, k=K))
    return out


def _server(runtime, model, tmp_path) -> ModelServer:
    python, device = runtime
    return ModelServer.of(Settings(), python, str(model), device=device, port=free_port(),
                          log_path=tmp_path / f"vllm-{model.name}.log")


@pytest.fixture(scope="module")
def servers(runtime, models, tmp_path_factory):
    """A vLLM server for each model, started together (each takes ~40 s to be ready)."""
    tmp = tmp_path_factory.mktemp("servers")
    started = [_server(runtime, m, tmp).start() for m in models]
    try:
        for server in started:
            server.wait_ready()
        yield started
    finally:
        for server in started:
            server.stop()


def _publish_market(cluster, items):
    asyncio.run(publish(cluster.settings.kafka, cluster.settings.topics, LISTINGS,
                        [ListingUpsert(**to_listing_dict(i)) for i in items]))


def _publish_seeds(cluster, seeds):
    asyncio.run(publish(cluster.settings.kafka, cluster.settings.topics, TOXIC_ITEMS,
                        [ToxicItem(**to_toxic_dict(s, "integration-test")) for s in seeds]))


def _use_server(cluster, server: ModelServer, **more: str) -> None:
    cluster.worker_env.update(QEXPLORER_EXTRACTOR="openai",
                             QEXPLORER_OPENAI_BASE_URL=server.base_url, QEXPLORER_MODEL="",
                             QEXPLORER_EXPLORE_BATCH="4",
                             **{f"QEXPLORER_{k.upper()}": v for k, v in more.items()})


def test_worker_explores_with_the_real_vllm_server(cluster, market, models, servers):
    items, seeds = market
    seeds = seeds[:24]
    server = servers[0]
    _use_server(cluster, server)
    _publish_market(cluster, items)
    cluster.start_worker()
    _publish_seeds(cluster, seeds)
    by_seed = wait_for(lambda: explored(cluster, {s.id for s in seeds}), 300, 1.0,
                       lambda: f"seeds not explored:\n{cluster.log()}")

    # The served model is named by its version, and that version is on every record.
    assert server.name.startswith("qx-base-")
    served = {(r.extractor, r.model_version) for rs in by_seed.values() for r in rs}
    assert served == {("openai", server.name)}

    # The queries are what the same model ranks in process: the engine, the tokenisation and
    # the span scoring over HTTP agree with transformers (ties may rarely flip in float32).
    local = TransformersExtractor(str(models[0]))
    expected = {e.seed_id: e.queries for e in asyncio.run(
        local.extract([SeedText(s.id, s.title, s.description) for s in seeds], K))}
    got = {sid: [r.query for r in sorted(rs, key=lambda r: r.query_index)]
           for sid, rs in by_seed.items()}
    same = sum(got[s.id] == expected[s.id] for s in seeds)
    assert same >= 0.9 * len(seeds), (same, got, expected)
    for seed in seeds:  # extractive: every query is a span of its own seed
        assert set(got[seed.id]) <= set(candidate_spans(seed.title, seed.description))

    detections = read_records(cluster, cluster.settings.topics.detections, Detection)
    seed_ids = {s.id for s in seeds}
    assert detections and all(d.model_version == server.name for d in detections)
    assert {d.listing_id for d in detections}.isdisjoint(seed_ids)
    by_id = {i.id: i for i in items}
    toxic = sum(by_id[d.listing_id].harmful for d in detections) / len(detections)
    assert toxic > 0.3, toxic  # the synthetic clusters share disguised words


def test_seeds_wait_while_the_server_is_down_and_all_areexplored(
        cluster, market, models, runtime, tmp_path):
    items, seeds = market
    first, second = seeds[:8], seeds[8:20]
    server = _server(runtime, models[0], tmp_path).start().wait_ready()
    try:
        _use_server(cluster, server)
        _publish_market(cluster, items)
        cluster.start_worker()
        _publish_seeds(cluster, first)
        wait_for(lambda: explored(cluster, {s.id for s in first}), 300, 1.0,
                 lambda: f"first seeds not explored:\n{cluster.log()}")

        server.kill()  # a crash: no goodbye to in-flight requests
        _publish_seeds(cluster, second)
        wait_for(lambda: "extractor openai failed" in cluster.full_log(), 120, 1.0,
                 lambda: f"the worker never noticed the server was down:\n{cluster.log()}")
        so_far = explored(cluster, set()) or {}
        assert not {s.id for s in second} & set(so_far), "explored without a model?"

        server.start().wait_ready()
        by_seed = wait_for(lambda: explored(cluster, {s.id for s in seeds[:20]}), 300, 1.0,
                           lambda: f"seeds lost after the restart:\n{cluster.log()}")
    finally:
        server.stop()
    assert set(by_seed) == {s.id for s in seeds[:20]}
    for records in by_seed.values():  # each seed explored once: one record per query slot
        assert sorted(r.query_index for r in records) == list(range(len(records)))
        assert {r.model_version for r in records} == {server.name}


def test_rollout_switches_models_without_stopping_or_losing_seeds(cluster, market, servers):
    items, seeds = market
    old, new = servers
    before, during, after = seeds[:8], seeds[8:16], seeds[16:24]
    _use_server(cluster, old, rollout_base_urls=new.base_url)
    _publish_market(cluster, items)
    cluster.start_worker()
    _publish_seeds(cluster, before)
    wait_for(lambda: explored(cluster, {s.id for s in before}), 300, 1.0,
             lambda: f"seeds not explored:\n{cluster.log()}")

    kafka, topics = cluster.settings.kafka, cluster.settings.topics
    refused = ModelRollout(extractor="openai", base_url="http://203.0.113.9:8000/v1")
    asyncio.run(publish(kafka, topics, MODEL_ROLLOUTS, [refused]))
    _publish_seeds(cluster, during)  # seeds keep arriving while the model changes
    rollout = ModelRollout(extractor="openai", base_url=new.base_url, reason="test")
    asyncio.run(publish(kafka, topics, MODEL_ROLLOUTS, [rollout]))
    wait_for(lambda: f"-> openai {new.name}" in cluster.full_log(), 180, 1.0,
             lambda: f"the worker did not switch:\n{cluster.log()}")
    _publish_seeds(cluster, after)

    # No seed is lost, and after the switch the recent ones are explored again by the new
    # model (re-exploration), each once a version.
    ids = {s.id for s in seeds[:24]}

    def by_new_model():
        found = explored(cluster, ids)
        return found if found and all(new.name in {r.model_version for r in found[i]}
                                      for i in ids) else None

    by_seed = wait_for(by_new_model, 300, 1.0,
                       lambda: f"seeds lost or not explored again in the rollout:\n{cluster.log()}")
    version = {sid: {r.model_version for r in rs} for sid, rs in by_seed.items()}
    assert all(version[s.id] == {old.name, new.name} for s in before), version
    assert all(new.name in version[s.id] <= {old.name, new.name} for s in during), version
    assert all(version[s.id] == {new.name} for s in after), version
    for records in by_seed.values():  # once a version: one record per query slot
        for name in {r.model_version for r in records}:
            slots = sorted(r.query_index for r in records if r.model_version == name)
            assert slots == list(range(len(slots))), records

    # The untrusted server was refused (its URL never got the API key) and dead-lettered.
    dead = read_records(cluster, cluster.settings.topics.dead_letter, DeadLetter)
    assert [d.stage for d in dead] == ["rollout"]
    assert "not one this worker may use" in dead[0].error
