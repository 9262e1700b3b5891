"""Builds the configured extractor from the settings object.

This module owns the mapping from :class:`streams.settings.Settings` to an
:class:`~agents.extractor.base.Extractor`:

* ``extractor=keywords``: :class:`KeywordsExtractor`; ``model`` may name the method
  (``yake`` default, ``tfidf``, ``first_words``).
* ``extractor=transformers``: :class:`TransformersExtractor` on ``model`` (hub id or dir).
* ``extractor=openai``: :class:`OpenAIExtractor` on ``openai_base_url``; ``model`` is the
  served model name (discovered from ``GET /models`` when unset). ``qexplorer serve-model``
  serves a model directory under its version, so the served name is the model version.

``settings.model_version``, when set, overrides the recorded version for every backend.
Backends are imported lazily so choosing one never imports the others' dependencies.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from agents.extractor.base import Extractor

if TYPE_CHECKING:
    from streams.settings import Settings

log = logging.getLogger(__name__)


def build_extractor(
    settings: Settings,
    *,
    doc_freq: Callable[[str], int] | None = None,
    num_docs: int | Callable[[], int] | None = None,
) -> Extractor:
    """The extractor selected by ``settings.extractor``.

    ``doc_freq`` (document frequency of a lowercased term in the index) and ``num_docs``
    (an int or a callable; may also be an attribute of ``doc_freq``) are used only by the
    ``keywords`` backend's ``tfidf`` method.
    """
    backend = str(settings.extractor)
    override = settings.model_version or None
    if backend == "keywords":
        from agents.extractor.keywords import METHODS, KeywordsExtractor

        method = "yake"
        if settings.model in METHODS:
            method = settings.model
        elif settings.model:
            log.warning(
                "extractor=keywords ignores model=%r (not one of %s); using %s",
                settings.model, ", ".join(METHODS), method,
            )
        return KeywordsExtractor(
            method,
            doc_freq=doc_freq if method == "tfidf" else None,
            num_docs=num_docs if method == "tfidf" else None,
            model_version=override,
        )
    if backend == "transformers":
        from agents.extractor.transformers_backend import TransformersExtractor

        if not settings.model:
            raise ValueError("extractor=transformers needs settings.model (hub id or dir)")
        return TransformersExtractor(
            settings.model,
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            seed=settings.seed,
            model_version=override,
            extractive=settings.extractive,
        )
    if backend == "openai":
        from agents.extractor.openai_backend import OpenAIExtractor

        return OpenAIExtractor(
            settings.openai_base_url,
            model=settings.model,
            api_key=settings.openai_api_key,
            timeout_s=settings.openai_timeout_s,
            concurrency=settings.openai_concurrency,
            max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            seed=settings.seed,
            model_version=override,
            extractive=settings.extractive,
            structured=settings.openai_structured,
        )
    raise ValueError(f"unknown extractor backend {backend!r}: keywords, transformers, openai")
