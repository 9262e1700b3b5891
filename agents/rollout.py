"""Model rollout, the logic: which extractor a rollout asks for, and the probe it must pass.

:func:`rollout_settings` derives the new extractor's settings slice from a
:class:`schemas.models.ModelRollout` (validated like the environment's, and refused when it
names a backend this worker does not have, a model it lacks, or a server URL the worker is not
configured to trust: its API key would go there). :func:`probe` runs one real extraction with
the new extractor before it is swapped in. ``streams.rollouts`` follows the topic and applies
them.
"""

from __future__ import annotations

import asyncio
import logging

from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from agents.extractor import registry
from agents.extractor.base import Extractor, ExtractorError, SeedText
from qexplorer.config import ExtractorSettings
from schemas.models import ModelRollout

log = logging.getLogger(__name__)

#: The seed a new model must handle before it goes live.
PROBE = SeedText("rollout-probe", "rollout probe listing", "checking the new model answers")


class RolloutRefused(ValueError):
    """A rollout that cannot be applied (untrusted URL, unknown backend, failed probe)."""


def rollout_settings(settings: ExtractorSettings, rollout: ModelRollout) -> ExtractorSettings:
    """The worker's extractor settings with the rollout's backend, model, URL and version."""
    base_url = (rollout.base_url or settings.openai_base_url).rstrip("/")
    if rollout.extractor == "openai" and base_url not in settings.allowed_model_urls:
        raise RolloutRefused(
            f"model server {base_url!r} is not one this worker may use: add it to "
            "QEXPLORER_ROLLOUT_BASE_URLS")
    try:
        new = settings.changed(backend=rollout.extractor, model=rollout.model,
                               openai_base_url=base_url, model_version=rollout.model_version)
        registry.check(new)
    except ValueError as exc:  # pydantic's ValidationError is one too
        raise RolloutRefused(f"rollout to {rollout.extractor}: {exc}") from exc
    return new


async def probe(extractor: Extractor, attempts: int = 5, backoff_s: float = 1.0) -> None:
    """One real extraction with the new extractor; raises RolloutRefused if it never works."""
    retrying = AsyncRetrying(
        retry=retry_if_exception_type(ExtractorError), stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=backoff_s), sleep=lambda s: asyncio.sleep(s),
        before_sleep=lambda state: log.warning(
            "rollout probe failed (%s); retrying in %.1fs",
            state.outcome.exception() if state.outcome else "?", state.upcoming_sleep))
    try:
        await retrying(extractor.extract, [PROBE], 1)
    except RetryError as exc:
        raise RolloutRefused(f"the new model failed its probe {attempts} times: "
                             f"{exc.last_attempt.exception()}") from exc
