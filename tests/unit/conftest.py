"""Fixtures the unit tests share."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No QExplorer variable from the caller, and a working directory without a .env file:
    the settings a test sees are the defaults and what it sets itself."""
    for name in list(os.environ):
        if name.upper().startswith("QEXPLORER_") or name.upper() == "KAFKA_BOOTSTRAP":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch
