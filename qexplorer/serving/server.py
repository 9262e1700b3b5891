"""Run vLLM's OpenAI-compatible server for a model directory: command, environment, lifecycle.

:func:`server_command` and :func:`server_env` are pure (what would run); :class:`ModelServer`
starts it as a child process in its own session, waits until ``GET /v1/models`` answers,
and stops it (SIGTERM, then SIGKILL). The model is served under its version (the model
card's, see :func:`agents.extractor.transformers_backend.local_model_version`), so the name
the worker records in every detection is the version of the weights that produced it.

The API key reaches the server through ``VLLM_API_KEY``, never the command line (which any
local user can read in the process list).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import subprocess
import time
from pathlib import Path

import httpx

from agents.extractor.transformers_backend import local_model_version
from qexplorer.config import ServingSettings, Settings

log = logging.getLogger(__name__)

#: Cap on the default context length: the prompt is bounded far below it.
DEFAULT_MAX_MODEL_LEN = 4096


def served_name(model: str) -> str:
    """The name a model is served under: a directory's version, else the hub id itself."""
    path = Path(model).expanduser()
    return local_model_version(path) if path.is_dir() else model


def max_model_len(settings: ServingSettings, model: str) -> int | None:
    """The configured context length, else the model's (capped), else None (vLLM decides)."""
    if settings.max_model_len:
        return settings.max_model_len
    config = Path(model).expanduser() / "config.json"
    try:
        positions = json.loads(config.read_text())["max_position_embeddings"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return min(int(positions), DEFAULT_MAX_MODEL_LEN)


def server_command(settings: ServingSettings, python: Path, model: str, *, device: str,
                   seed: int, port: int | None = None, name: str | None = None) -> list[str]:
    """The command line of a vLLM server for ``model`` (a directory or a hub id).

    ``vllm serve`` fails on a metadata lookup with the CPU build, the module entry point
    works on both builds (../shared/ENGINEERING.md §6).
    """
    command = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", str(model),
        "--served-model-name", name or served_name(model),
        "--host", settings.host,
        "--port", str(port or settings.port),
        "--seed", str(seed),
    ]
    length = max_model_len(settings, model)
    if length:
        command += ["--max-model-len", str(length)]
    if device == "cpu":
        # float32 like the in-process backend; the NUMA node reports ~9.5 GiB, 0.3 of it
        command += ["--dtype", "float32", "--gpu-memory-utilization", "0.3"]
    return command + shlex.split(settings.extra_args)


def server_env(settings: ServingSettings, model: str, *, device: str, home: Path,
               api_key: str | None) -> dict[str, str]:
    """Environment variables of the server process (on top of this process's); its caches
    live in ``home``."""
    cache = home
    env = {
        "HF_HOME": str(cache / "hf"),
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "XDG_CACHE_HOME": str(cache / "xdg"),
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    if Path(model).expanduser().is_dir():
        env["HF_HUB_OFFLINE"] = "1"  # a local model needs no hub, and there may be none
    if device == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(settings.kv_cache_gib)
    if api_key:
        env["VLLM_API_KEY"] = api_key
    return env


class ModelServer:
    """One vLLM server process for one model."""

    def __init__(self, settings: ServingSettings, python: Path, model: str, *, device: str,
                 home: Path, api_key: str | None = None, seed: int = 1234,
                 port: int | None = None, log_path: Path | None = None) -> None:
        """``home`` holds the server's caches and log; ``api_key`` is what clients must
        send (None: no key)."""
        self.settings = settings
        self.model = model
        self.name = served_name(model)
        self.port = port or settings.port
        self._api_key = api_key
        self.command = server_command(settings, python, model, device=device, seed=seed,
                                      port=self.port, name=self.name)
        self.env = server_env(settings, model, device=device, home=home, api_key=api_key)
        self.log_path = log_path or home / f"vllm-{self.port}.log"
        self.process: subprocess.Popen | None = None

    @classmethod
    def of(cls, settings: Settings, python: Path, model: str, *, device: str,
           port: int | None = None, log_path: Path | None = None) -> ModelServer:
        """The server of these settings: the serving slice, the extractor's API key and seed,
        caches under ``<cache_dir>/serving``."""
        return cls(settings.serving, python, model, device=device,
                   home=settings.paths.cache_dir / "serving",
                   api_key=settings.extractor.api_key_value(), seed=settings.extractor.seed,
                   port=port, log_path=log_path)

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible API root, as the worker's ``openai_base_url`` wants it."""
        host = self.settings.host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        return f"http://{host}:{self.port}/v1"

    def __repr__(self) -> str:
        return f"ModelServer(model={self.model!r}, name={self.name!r}, url={self.base_url!r})"

    def start(self) -> ModelServer:
        """Start the process (returns at once; see :meth:`wait_ready`)."""
        if self.process is not None and self.process.poll() is None:
            return self
        for path in (self.log_path.parent, *(Path(v) for k, v in self.env.items()
                                              if k.endswith(("_HOME", "_ROOT")))):
            path.mkdir(parents=True, exist_ok=True)
        log.info("starting vLLM for %s as %s on %s (log %s)", self.model, self.name,
                 self.base_url, self.log_path)
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, env={**os.environ, **self.env}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def ready(self) -> bool:
        """True when the server answers ``GET /models`` listing this model."""
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        try:
            resp = httpx.get(f"{self.base_url}/models", headers=headers, timeout=2.0)
            return resp.status_code == 200 and any(
                m.get("id") == self.name for m in resp.json().get("data", []))
        except (httpx.HTTPError, ValueError):
            return False

    def wait_ready(self, timeout_s: float | None = None) -> ModelServer:
        """Block until the server is ready; raise RuntimeError (with the log's tail) if the
        process exits or ``timeout_s`` (default ``QEXPLORER_SERVE_READY_TIMEOUT_S``) passes."""
        timeout_s = timeout_s or self.settings.ready_timeout_s
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.process.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"vLLM not ready after {timeout_s}s:\n{self.tail()}")
            time.sleep(1.0)
        return self

    def tail(self, chars: int = 3000) -> str:
        """The end of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the server's process group (vLLM runs its engine in a child process),
        SIGKILL it if it lingers."""
        if self.process is None:
            return
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.process.wait()
        self._signal_group(signal.SIGKILL)  # an orphaned engine process, if any

    def kill(self) -> None:
        """SIGKILL the whole server at once (a crash, for fault tests)."""
        if self.process is not None:
            self._signal_group(signal.SIGKILL)
            self.process.wait()

    def _signal_group(self, sig: int) -> None:
        # the process leads its own session, so its group id is its pid
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def __enter__(self) -> ModelServer:
        return self.start().wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()
