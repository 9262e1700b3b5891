"""The setup installs what the project was tested with: constraints.txt pins every dependency
of pyproject.toml (the dev tools included) to one version, and the setup installs from it."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned to one version"
            pins[name.lower().replace("_", "-")] = version
    return pins


def test_every_dependency_is_pinned():
    project = PYPROJECT["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    missing = {_name(r) for r in wanted} - set(_pins())
    assert not missing, f"add to constraints.txt: {sorted(missing)}"


def test_the_setup_installs_from_the_constraints():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert re.search(r"pip install .*-c constraints\.txt .*-e \"\.\[dev\]\"", setup)
    assert "constraints.txt" in (ROOT / "Makefile").read_text()  # a new pin re-runs it
    assert "-c constraints.txt" in (ROOT / "Dockerfile").read_text()
