"""The extractor backends by name, and how each is built from its settings slice.

:data:`BACKENDS` maps a name (``QEXPLORER_EXTRACTOR``, a rollout's ``extractor``) to the module
that implements it. Each such module has ``from_settings(settings, stats) -> Extractor``, and
``NEEDS_MODEL = True`` when ``QEXPLORER_MODEL`` must name one. ``stats`` is the search index's
term statistics (:class:`search.protocol.TermStats`), so ``tfidf`` weighs terms by the real
document frequencies wherever it runs. Modules are imported on first use: choosing a backend
never imports the others' dependencies. A new backend is a module and one line here.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agents.extractor.base import Extractor
    from qexplorer.config import ExtractorSettings
    from qexplorer.search.protocol import TermStats

#: Backend name -> the module that builds it.
BACKENDS: dict[str, str] = {
    "keywords": "agents.extractor.keywords",
    "transformers": "agents.extractor.transformers_backend",
    "openai": "agents.extractor.openai_backend",
}


def _module(settings: ExtractorSettings) -> ModuleType:
    name = BACKENDS.get(settings.backend)
    if name is None:
        raise ValueError(f"QEXPLORER_EXTRACTOR={settings.backend!r} is not an extractor "
                         f"backend: one of {', '.join(BACKENDS)}")
    return importlib.import_module(name)


def check(settings: ExtractorSettings) -> None:
    """Raise ValueError (naming the setting) unless ``settings`` can build an extractor."""
    module = _module(settings)
    if getattr(module, "NEEDS_MODEL", False) and not settings.model:
        raise ValueError(f"QEXPLORER_EXTRACTOR={settings.backend} needs a model: set "
                         "QEXPLORER_MODEL to a Hugging Face model id or a model directory")


def build_extractor(settings: ExtractorSettings, stats: TermStats) -> Extractor:
    """The extractor ``settings`` name, weighing terms by ``stats`` where it needs to."""
    check(settings)
    return _module(settings).from_settings(settings, stats)
