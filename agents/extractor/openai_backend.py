"""Extraction through an OpenAI-compatible server: vLLM in production (``qexplorer serve-model``).

This module owns :class:`OpenAIExtractor`. Two decoding modes, the same as the in-process
``transformers`` backend so a model behaves alike wherever it runs:

* extractive (default): the seed's own word spans are ranked by the model's probability of
  each as the first query line. One batched ``/v1/completions`` request a seed carries every
  span as a token-id prompt (prompt + span + newline) with ``echo`` and ``logprobs``, so the
  server returns the log-probabilities of the prompt tokens; the prompt and the spans are
  tokenised by the server's ``/tokenize``, exactly as the in-process backend tokenises them
  (the prompt through the chat template when the served tokenizer has one:
  :mod:`agents.extractor.model_input`).
* free text: the completion is generated under a grammar (vLLM ``structured_outputs``
  regex) that only admits a list of at most k short printable lines, with ``n`` samples.

Seeds are requested concurrently (bounded), each request has a timeout and retries with
exponential backoff on connection errors, timeouts, 429 and 5xx. When the retries are spent
it raises :class:`ExtractorError` and the explorer keeps the seeds unacknowledged until the
server answers again. Only the HTTP API is used, never server internals. The API key is sent
as a bearer token and never logged or shown in reprs.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import SecretStr
from tenacity import (
    AsyncRetrying,
    RetryError,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from agents.extractor.base import Extraction, Extractor, ExtractorError, SeedText
from agents.extractor.combination import Combination
from agents.extractor.decoding import (
    SPAN_ROOM,
    blend,
    blend_stats,
    blend_version,
    blend_weights,
    from_completions,
    keep_end,
    prompt_budget,
    ranked,
    spans_of,
)
from agents.extractor.model_input import tokenize_request
from agents.prompt import END_MARKER
from agents.queries import MAX_QUERY_CHARS

if TYPE_CHECKING:
    from collections.abc import Mapping

    from agents.extractor.priors import WithToxic
    from qexplorer.config import ExtractorSettings
    from qexplorer.search.protocol import TermStats

log = logging.getLogger(__name__)


class _Retryable(Exception):
    """A failure worth retrying (connection, timeout, 429, 5xx)."""


class _Refused(ExtractorError):
    """The server refused the request (HTTP 4xx other than 429): asking again will not help."""


def query_list_regex(k: int, max_chars: int = MAX_QUERY_CHARS) -> str:
    """The grammar of a free-text completion: 1..k lines of 1..max_chars printable
    characters. It bounds the output and leaves no room for anything but a query list."""
    return f"(?:[^\\x00-\\x1f\\x7f<>]{{1,{max_chars}}}\\n){{1,{k}}}"


@dataclass
class ServerUsage:
    """Token counts reported by the server (``usage``), for throughput figures."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _short_model_id(model_id: str) -> str:
    """vLLM names a model served from a directory by its path: keep the last part."""
    trimmed = model_id.rstrip("/")
    return trimmed.rsplit("/", 1)[-1] if trimmed.startswith(("/", ".", "~")) else trimmed


class OpenAIExtractor(Extractor):
    """Query extraction by an OpenAI-compatible ``/completions`` endpoint."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: SecretStr | str | None = None,
        timeout_s: float = 30.0,
        concurrency: int = 8,
        max_new_tokens: int = 48,
        temperature: float = 0.0,
        seed: int | None = 1234,
        n: int = 1,
        attempts: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        model_version: str | None = None,
        client: httpx.AsyncClient | None = None,
        extractive: bool = True,
        max_spans: int = 200,
        structured: bool = True,
        stats: WithToxic | None = None,
        blend: Mapping[str, float] | None = None,
        combination: Combination | None = None,
    ) -> None:
        """``base_url`` ends in ``/v1`` (e.g. ``http://127.0.0.1:8000/v1``). ``model`` is the
        served model name; when None the first model of ``GET /models`` is used. ``n`` > 1
        asks for several samples a seed (useful with ``temperature`` > 0); their queries are
        merged in order (free-text mode). Each request is tried ``attempts`` times with
        exponential backoff starting at ``backoff_s``. A ``client`` may be injected (its
        lifetime is then the caller's). ``extractive`` ranks at most ``max_spans`` spans of
        the seed instead of generating free text (plus the priors of ``blend`` under ``stats``,
        or a learned ``combination``, as in process); ``structured`` constrains free text to the
        query-list grammar."""
        if concurrency < 1 or n < 1 or attempts < 1:
            raise ValueError(
                f"concurrency, n and attempts must be >= 1 (got concurrency={concurrency}, "
                f"n={n}, attempts={attempts})"
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.blend = blend_weights(blend or {})
        self.combination = combination
        self.stats = None if stats is None and combination is None else \
            blend_stats(stats, self.blend, combination)
        if isinstance(api_key, str):
            api_key = SecretStr(api_key)
        self._api_key = api_key
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self.n = n
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.extractive = extractive
        self.max_spans = max_spans
        self.structured = structured
        self.usage = ServerUsage()
        self._override = model_version
        self._max_model_len: int | None = None
        self._server_model: str | None = None
        self._chat: bool | None = None  # the served tokenizer has a chat template (None: ask)
        self._client = client
        self._owns_client = client is None
        self._semaphore: asyncio.Semaphore | None = None
        self._model_lock: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return (
            f"OpenAIExtractor(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key={'set' if self._api_key else 'unset'})"
        )

    # --- identity --------------------------------------------------------------------------
    @property
    def model_version(self) -> str:
        """The override, else the served model id (known after the first request or
        :meth:`resolve_model`; ``openai:unresolved`` before)."""
        if self._override:
            return blend_version(self._override, self.stats, self.blend,
                                 self.combination)
        model_id = self._server_model or self.model
        return blend_version(_short_model_id(model_id) if model_id else "openai:unresolved",
                             self.stats, self.blend, self.combination)

    # --- HTTP ------------------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._api_key is not None and self._api_key.get_secret_value():
            headers["Authorization"] = f"Bearer {self._api_key.get_secret_value()}"
        return headers

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout_s),
                limits=httpx.Limits(max_connections=self.concurrency,
                                    max_keepalive_connections=self.concurrency),
            )
        return self._client

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One request with retries; returns the decoded JSON body. ``path`` is relative to
        ``base_url``, or to the server's root when it starts with ``//`` (vLLM serves
        ``/tokenize`` beside ``/v1``, not under it)."""
        if path.startswith("//"):
            url = f"{self.base_url.removesuffix('/v1')}{path[1:]}"
        else:
            url = f"{self.base_url}{path}"

        async def once() -> Any:
            try:
                async with asyncio.timeout(self.timeout_s):  # whole request, not per read
                    resp = await self._http().request(
                        method, url, json=body, headers=self._headers(),
                        timeout=self.timeout_s,
                    )
            except (httpx.TransportError, TimeoutError) as exc:
                raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
            if resp.status_code == 429 or resp.status_code >= 500:
                raise _Retryable(f"HTTP {resp.status_code}: {resp.text[:200]}")
            if resp.status_code >= 400:
                raise _Refused(
                    f"{method} {path} refused: HTTP {resp.status_code}: {resp.text[:300]}"
                )
            try:
                return resp.json()
            except ValueError as exc:
                raise ExtractorError(f"{method} {path}: response is not JSON") from exc

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s),
            retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
            before_sleep=lambda state: log.warning(
                "%s %s failed (attempt %d/%d): %s; retrying", method, url,
                state.attempt_number, self.attempts,
                state.outcome.exception() if state.outcome else "?",
            ),
            reraise=False,
        )
        try:
            return await retrying(once)
        except RetryError as exc:
            last = exc.last_attempt.exception()
            raise ExtractorError(
                f"{method} {url} failed after {self.attempts} attempts: {last}"
            ) from last

    async def resolve_model(self) -> str:
        """The model name to request: the configured one, else the first served model."""
        if self.model:
            self._server_model = self._server_model or self.model
            return self.model
        if self._server_model:
            return self._server_model
        if self._model_lock is None:
            self._model_lock = asyncio.Lock()
        async with self._model_lock:
            if self._server_model is None:
                data = await self._call("GET", "/models")
                try:
                    self._server_model = str(data["data"][0]["id"])
                except (KeyError, IndexError, TypeError) as exc:
                    raise ExtractorError(f"GET /models lists no model: {data!r:.300}") from exc
                log.info("using served model %s", self._server_model)
        return self._server_model

    def _count(self, data: Any) -> None:
        usage = data.get("usage") if isinstance(data, dict) else None
        self.usage.requests += 1
        if isinstance(usage, dict):
            self.usage.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.usage.completion_tokens += int(usage.get("completion_tokens") or 0)

    async def _tokenize(self, model: str, request: dict[str, Any]) -> list[int]:
        data = await self._call("POST", "//tokenize", {"model": model, **request})
        try:
            if self._max_model_len is None and data.get("max_model_len"):
                self._max_model_len = int(data["max_model_len"])
            return [int(t) for t in data["tokens"]]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ExtractorError(f"/tokenize answered without tokens: {data!r:.300}") from exc

    async def _prompt_ids(self, model: str, seed: SeedText, k: int, room: int) -> list[int]:
        """The seed's prompt tokens from the served tokenizer (through its chat template when
        it has one: a server without one refuses chat messages, and is asked once), cut from
        the front to leave ``room`` and the answer within the context."""
        ids: list[int] | None = None
        if self._chat is not False:
            try:
                ids = await self._tokenize(model, tokenize_request(True, seed.title,
                                                                   seed.description, k))
                self._chat = True
            except _Refused as exc:
                if self._chat:
                    raise
                log.info("the served model takes no chat messages (%s): plain prompts", exc)
                self._chat = False
        if ids is None:
            ids = await self._tokenize(model, tokenize_request(False, seed.title,
                                                               seed.description, k))
        return keep_end(ids, prompt_budget(self._max_model_len, self.max_new_tokens, room))

    async def span_scores(self, seed: SeedText, k: int) -> tuple[list[str], list[float]]:
        """The seed's spans and the log-probability the served model gives each as the first
        query line (as ``TransformersExtractor.span_scores_sync`` does in process)."""
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency)
        return await self._span_scores(await self.resolve_model(), seed, k)

    async def _span_scores(self, model: str, seed: SeedText, k: int
                           ) -> tuple[list[str], list[float]]:
        spans = spans_of(seed, self.max_spans)
        if not spans:
            return [], []
        assert self._semaphore is not None
        async with self._semaphore:
            prompt_ids, *conts = await asyncio.gather(
                self._prompt_ids(model, seed, k, SPAN_ROOM),
                *(self._tokenize(model, {"prompt": f"{span}\n", "add_special_tokens": False})
                  for span in spans))
            data = await self._call("POST", "/completions", {
                "model": model, "prompt": [prompt_ids + cont for cont in conts],
                "max_tokens": 1, "temperature": 0.0, "echo": True, "logprobs": 0})
        self._count(data)
        start = len(prompt_ids)
        try:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            scores = [float(sum(c["logprobs"]["token_logprobs"][start:start + len(cont)]))
                      for c, cont in zip(choices, conts, strict=True)]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ExtractorError(
                f"completion without prompt log-probabilities: {data!r:.300}") from exc
        return spans, scores

    async def _rank(self, model: str, seed: SeedText, k: int) -> Extraction:
        """Extractive decoding: score every span as the first query line, keep the best."""
        spans, scores = await self._span_scores(model, seed, k)
        if not spans:
            return Extraction(seed_id=seed.id, queries=[], raw=[])
        # the probe prior searches the index: off the event loop
        scores = await asyncio.to_thread(blend, seed, spans, scores, self.stats,
                                         self.blend, self.combination)
        return ranked(seed, spans, scores,
                      k, temperature=self.temperature, sample_seed=self.seed)

    async def _complete(self, model: str, seed: SeedText, k: int) -> Extraction:
        """Free-text decoding, constrained to the query-list grammar when ``structured``."""
        body: dict[str, Any] = {
            "model": model,
            "prompt": await self._prompt_ids(model, seed, k, 0),
            "max_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "n": self.n,
            "stop": [END_MARKER],
        }
        if self.structured:
            body["structured_outputs"] = {"regex": query_list_regex(k)}
        if self.seed is not None:
            body["seed"] = self.seed
        async with self._semaphore:
            data = await self._call("POST", "/completions", body)
        self._count(data)
        try:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            texts = [str(c.get("text") or "") for c in choices]
        except (KeyError, TypeError, AttributeError) as exc:
            raise ExtractorError(f"completion response without choices: {data!r:.300}") from exc
        return from_completions(seed, texts, k)

    async def extract(self, seeds: list[SeedText], k: int) -> list[Extraction]:
        """One Extraction per seed, requested concurrently (at most ``concurrency`` in
        flight). Raises ExtractorError when any seed's request fails after its retries; the
        other requests of the batch are cancelled."""
        if not seeds:
            return []
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.concurrency)
        model = await self.resolve_model()
        one = self._rank if self.extractive else self._complete
        tasks = [asyncio.create_task(one(model, s, k)) for s in seeds]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def aclose(self) -> None:
        """Close the HTTP client if this extractor created it."""
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None


def from_settings(settings: ExtractorSettings, stats: TermStats) -> OpenAIExtractor:
    """The registry's builder (the term statistics serve the blended priors or the learned
    combination, when set)."""
    combination = Combination.load(settings.combination) if settings.combination else None
    return OpenAIExtractor(settings.openai_base_url, model=settings.model,
                           api_key=settings.openai_api_key, timeout_s=settings.openai_timeout_s,
                           concurrency=settings.openai_concurrency,
                           max_new_tokens=settings.max_new_tokens,
                           temperature=settings.temperature, seed=settings.seed,
                           model_version=settings.model_version,
                           extractive=settings.extractive, structured=settings.openai_structured,
                           stats=blend_stats(stats, settings.blend, combination),
                           blend=settings.blend, combination=combination)
