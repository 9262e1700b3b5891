"""Start and stop worker processes and other ``qexplorer`` commands (for the demo, the
replay, the benchmarks, the tests and local runs).

A worker is the same process a deployment runs (``qexplorer worker``); settings reach it as
environment variables, exactly as in a container.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
from pathlib import Path

from qexplorer.config import PROJECT_ROOT

#: Linux's prctl(PR_SET_PDEATHSIG): the child gets a signal when its parent dies.
_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:  # runs in the child between fork and exec: no imports here
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def command(*args: str) -> list[str]:
    """The command line of ``qexplorer ARGS...`` run by this interpreter."""
    return [sys.executable, "-m", "qexplorer.cli.main", *args]


def spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start ``qexplorer ARGS...`` with ``env`` on top of this process's environment, in a
    session of its own (a Ctrl-C in the terminal reaches only this process, which stops it
    in order); its output goes to ``log_path``. It is sent SIGTERM when this process dies,
    even by SIGKILL, so no worker outlives the demo, a replay or a test run (Linux; call it
    from the main thread: the signal follows the thread that started the child)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    with log_path.open("ab") as log:
        return subprocess.Popen(command(*args), cwd=PROJECT_ROOT, env=full_env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=_die_with_parent)


def spawn_worker(env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start a worker (``qexplorer worker``) with ``env``; output to ``log_path``."""
    return spawn(["worker"], env, log_path)


def stop_worker(process: subprocess.Popen, timeout_s: float = 30.0) -> int:
    """Stop a worker gracefully (SIGTERM), killing it if it does not stop in time."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def kill_worker(process: subprocess.Popen) -> None:
    """SIGKILL a worker: no chance to commit or flush anything."""
    if process.poll() is None:
        process.kill()
        process.wait()
