"""The extractor interface: one confirmed toxic item in, K cleaned search queries out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SeedText:
    """The text of a seed as the extractor sees it."""

    id: str
    title: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class Extraction:
    """Queries extracted for one seed, already cleaned and validated."""

    seed_id: str
    queries: list[str]
    raw: list[str]  # the backend's raw outputs, kept for feedback and debugging


class ExtractorError(RuntimeError):
    """The backend could not produce queries (server down, timeout, load failure)."""


class Extractor(ABC):
    """Turns seeds into search queries. Implementations are safe to call from the event loop."""

    #: short backend name: keywords, transformers, openai
    name: str

    @property
    @abstractmethod
    def model_version(self) -> str:
        """Identifies the model (or algorithm) and its version; recorded with every output."""

    @abstractmethod
    async def extract(self, seeds: list[SeedText], k: int) -> list[Extraction]:
        """Return one Extraction per seed, in order, each with at most k queries."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources (HTTP clients, models)."""
