"""Model rollouts without a broker: which rollouts are refused, and the probe-then-switch."""

from __future__ import annotations

import pytest

from agents.explorer import Explorer, RawMessage
from agents.rollout import PROBE, RolloutRefused, rollout_settings
from qexplorer.config import Settings
from qexplorer.search import memory_index
from schemas.codec import encode
from schemas.models import DeadLetter, ModelRollout
from streams.rollouts import RolloutFollower
from tests.agents.test_explorer import Sink, StubExtractor, StubReplica


@pytest.fixture
def settings() -> Settings:
    return Settings.load(topic={"prefix": "t."}, extractor={
        "openai_base_url": "http://10.0.0.1:8000/v1",
        "rollout_base_urls": "http://10.0.0.2:8000/v1/, http://10.0.0.3:8000/v1",
        "openai_api_key": "sk-live"})


def test_rollout_settings_only_trust_configured_servers(settings):
    current = settings.extractor
    switched = rollout_settings(current, ModelRollout(
        extractor="openai", model="qx-dpo-2", base_url="http://10.0.0.2:8000/v1"))
    assert switched.openai_base_url == "http://10.0.0.2:8000/v1"
    assert switched.model == "qx-dpo-2" and switched.backend == "openai"
    assert switched.openai_api_key.get_secret_value() == "sk-live"  # stays in the settings
    same = rollout_settings(current, ModelRollout(extractor="openai"))
    assert same.openai_base_url == current.openai_base_url
    with pytest.raises(RolloutRefused, match="QEXPLORER_ROLLOUT_BASE_URLS"):
        rollout_settings(current, ModelRollout(extractor="openai",
                                               base_url="http://evil.example/v1"))
    with pytest.raises(RolloutRefused, match="needs a model"):
        rollout_settings(current, ModelRollout(extractor="transformers"))


def test_a_rollout_to_a_backend_this_worker_lacks_is_refused(settings):
    with pytest.raises(RolloutRefused, match="not an extractor backend"):
        rollout_settings(settings.extractor, ModelRollout(extractor="quantum"))


def test_rollout_settings_are_validated(settings):
    with pytest.raises(RolloutRefused, match="model_version"):
        rollout_settings(settings.extractor, ModelRollout.model_construct(
            extractor="keywords", model=None, base_url=None, model_version=7))


def test_a_rollout_record_carries_no_secret(settings):
    record = ModelRollout(extractor="openai", model="m")
    assert "sk-live" not in encode(record).decode()
    assert "api_key" not in ModelRollout.model_fields


class Probed(StubExtractor):
    def __init__(self, *args, closed: list | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.closed = closed if closed is not None else []

    async def aclose(self) -> None:
        self.closed.append(self.model_version)


def _message(record: ModelRollout) -> RawMessage:
    return RawMessage("t.model-rollouts", 0, 7, b"extractor", encode(record))


def _explorer(settings: Settings, extractor) -> Explorer:
    return Explorer(settings.exploration, settings.topics, StubReplica(memory_index()),
                    extractor, Sink())


def _follower(settings: Settings, explorer: Explorer, dead: list, build) -> RolloutFollower:
    return RolloutFollower(settings.kafka, settings.topics, settings.extractor, explorer,
                           _collect(dead), build=build)


async def test_apply_probes_the_new_model_then_switches(settings, monkeypatch):
    import agents.rollout as rollout_module

    monkeypatch.setattr(rollout_module.asyncio, "sleep", _instant)
    closed: list[str] = []
    explorer = _explorer(settings, Probed({}, version="old", closed=closed))
    built: list = []
    new = Probed({PROBE.id: ["rollout probe"]}, failures=2, version="new", closed=closed)

    def build(s, stats):
        built.append((s, stats))
        return new

    dead: list[DeadLetter] = []
    follower = _follower(settings, explorer, dead, build)
    record = ModelRollout(extractor="openai", base_url="http://10.0.0.3:8000/v1")
    assert await follower.apply(_message(record), record)
    assert explorer.extractor is new and new.calls == 3  # two failed probes, then a good one
    assert closed == ["old"] and not dead
    assert built[0][0].openai_base_url == "http://10.0.0.3:8000/v1"
    # tf-idf and contrast weigh by the worker's index, contrast by its confirmed items too
    assert built[0][1].stats is explorer.replica.index
    assert built[0][1].toxic is explorer.replica.ledger.terms


async def test_a_model_that_never_answers_is_refused_and_the_old_one_serves(settings,
                                                                            monkeypatch):
    import agents.rollout as rollout_module

    monkeypatch.setattr(rollout_module.asyncio, "sleep", _instant)
    old = Probed({}, version="old")
    explorer = _explorer(settings, old)
    broken = Probed({}, failures=10**9, version="broken")
    dead: list[DeadLetter] = []
    follower = _follower(settings, explorer, dead, lambda s, stats: broken)
    record = ModelRollout(extractor="openai")
    assert not await follower.apply(_message(record), record)
    assert explorer.extractor is old and broken.closed == ["broken"]
    assert [d.stage for d in dead] == ["rollout"] and "probe" in dead[0].error
    assert dead[0].offset == 7 and follower.refused == 1


async def test_an_untrusted_server_is_refused_before_anything_is_built(settings):
    explorer = _explorer(settings, Probed({}, version="old"))
    dead: list[DeadLetter] = []

    def build(*_):
        raise AssertionError("must not build an extractor for an untrusted URL")

    follower = _follower(settings, explorer, dead, build)
    record = ModelRollout(extractor="openai", base_url="http://evil.example/v1")
    assert not await follower.apply(_message(record), record)
    assert "not one this worker may use" in dead[0].error


def _collect(out: list):
    async def send(record: DeadLetter) -> None:
        out.append(record)
    return send


async def _instant(_delay: float) -> None:
    return None

