"""Model rollouts without a broker: which rollouts are refused, and the probe-then-switch."""

from __future__ import annotations

import pytest

from agents.explorer import Explorer, RawMessage
from agents.rollout import PROBE, RolloutFollower, RolloutRefused, rollout_settings
from schemas.codec import encode
from schemas.models import DeadLetter, ModelRollout
from streams.settings import Settings
from tests.agents.test_explorer import Sink, StubExtractor, StubReplica


@pytest.fixture
def settings() -> Settings:
    return Settings(topic_prefix="t.", openai_base_url="http://10.0.0.1:8000/v1",
                    rollout_base_urls="http://10.0.0.2:8000/v1/, http://10.0.0.3:8000/v1",
                    openai_api_key="sk-live")


def test_rollout_settings_only_trust_configured_servers(settings):
    switched = rollout_settings(settings, ModelRollout(
        extractor="openai", model="qx-dpo-2", base_url="http://10.0.0.2:8000/v1"))
    assert switched.openai_base_url == "http://10.0.0.2:8000/v1"
    assert switched.model == "qx-dpo-2" and switched.extractor == "openai"
    assert switched.openai_api_key.get_secret_value() == "sk-live"  # stays in the settings
    same = rollout_settings(settings, ModelRollout(extractor="openai"))
    assert same.openai_base_url == settings.openai_base_url
    with pytest.raises(RolloutRefused, match="QEXPLORER_ROLLOUT_BASE_URLS"):
        rollout_settings(settings, ModelRollout(extractor="openai",
                                                base_url="http://evil.example/v1"))
    with pytest.raises(RolloutRefused, match="needs a model"):
        rollout_settings(settings, ModelRollout(extractor="transformers"))


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


async def test_apply_probes_the_new_model_then_switches(settings, monkeypatch):
    import agents.rollout as rollout_module

    monkeypatch.setattr(rollout_module.asyncio, "sleep", _instant)
    closed: list[str] = []
    explorer = Explorer(settings, StubReplica(None), Probed({}, version="old", closed=closed),
                        Sink())
    built: list[Settings] = []
    new = Probed({PROBE.id: ["rollout probe"]}, failures=2, version="new", closed=closed)

    def build(s: Settings):
        built.append(s)
        return new

    dead: list[DeadLetter] = []
    follower = RolloutFollower(settings, explorer, _collect(dead), build=build)
    record = ModelRollout(extractor="openai", base_url="http://10.0.0.3:8000/v1")
    assert await follower.apply(_message(record), record)
    assert explorer.extractor is new and new.calls == 3  # two failed probes, then a good one
    assert closed == ["old"] and not dead
    assert built[0].openai_base_url == "http://10.0.0.3:8000/v1"


async def test_a_model_that_never_answers_is_refused_and_the_old_one_serves(settings,
                                                                            monkeypatch):
    import agents.rollout as rollout_module

    monkeypatch.setattr(rollout_module.asyncio, "sleep", _instant)
    old = Probed({}, version="old")
    explorer = Explorer(settings, StubReplica(None), old, Sink())
    broken = Probed({}, failures=10**9, version="broken")
    dead: list[DeadLetter] = []
    follower = RolloutFollower(settings, explorer, _collect(dead), build=lambda s: broken)
    record = ModelRollout(extractor="openai")
    assert not await follower.apply(_message(record), record)
    assert explorer.extractor is old and broken.closed == ["broken"]
    assert [d.stage for d in dead] == ["rollout"] and "probe" in dead[0].error
    assert dead[0].offset == 7 and follower.refused == 1


async def test_an_untrusted_server_is_refused_before_anything_is_built(settings):
    explorer = Explorer(settings, StubReplica(None), Probed({}, version="old"), Sink())
    dead: list[DeadLetter] = []

    def build(_):
        raise AssertionError("must not build an extractor for an untrusted URL")

    follower = RolloutFollower(settings, explorer, _collect(dead), build=build)
    record = ModelRollout(extractor="openai", base_url="http://evil.example/v1")
    assert not await follower.apply(_message(record), record)
    assert "not one this worker may use" in dead[0].error


def _collect(out: list):
    async def send(record: DeadLetter) -> None:
        out.append(record)
    return send


async def _instant(_delay: float) -> None:
    return None

