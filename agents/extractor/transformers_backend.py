"""In-process extraction with a Hugging Face causal language model (on the device plan's
device and precision: a GPU when there is one, else the CPU in float32).

This module owns :class:`TransformersExtractor`: it loads any causal LM by Hugging Face id
or from a local directory (a fine-tuned QExplorer model saved by the trainer), builds
prompts with :mod:`agents.prompt` (through the chat template when the tokenizer has one:
:mod:`agents.extractor.model_input`, the tokens training used), generates in a worker thread
so the event loop never blocks, and cleans the output with :mod:`agents.queries`. torch and
transformers are imported on first use, so importing this module is cheap.

Model versions: a model directory with ``qexplorer.json`` or ``model_card.json`` holding a
``"version"`` key is recorded under that version; any other directory as
``<dirname>@<hash of config.json, tokenizer and weight file sizes/mtimes>``; a hub id as
``<id>@<revision>`` (the cached snapshot's commit).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    span_rows,
    spans_of,
)
from agents.extractor.device import Device, detect, plan
from agents.extractor.model_input import prompt_ids
from agents.prompt import END_MARKER

if TYPE_CHECKING:
    from collections.abc import Mapping

    from agents.extractor.priors import WithToxic
    from qexplorer.config import ExtractorSettings
    from qexplorer.search.protocol import TermStats

log = logging.getLogger(__name__)

#: The registry checks that ``QEXPLORER_MODEL`` names one.
NEEDS_MODEL = True

#: Seeds whose span scores an extractor keeps (sampling a seed again, or ranking it with
#: other priors, reads them instead of running the model).
SCORED_SEEDS = 4096

#: Files whose content or size/mtime identify a model directory's version.
CARD_FILES = ("qexplorer.json", "model_card.json")
_HASHED_CONTENT = ("config.json", "generation_config.json", "tokenizer_config.json")
_HASHED_STAT_GLOBS = ("*.safetensors", "*.bin", "*.pt", "*.gguf", "tokenizer.json",
                      "tokenizer.model", "vocab.json", "merges.txt")


def card_version(path: Path) -> str | None:
    """The ``"version"`` of a model card file in directory ``path``, if there is one."""
    for name in CARD_FILES:
        card = path / name
        if not card.is_file():
            continue
        try:
            data = json.loads(card.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("ignoring unreadable model card %s: %s", card, exc)
            continue
        version = data.get("version") if isinstance(data, dict) else None
        if isinstance(version, (str, int, float)) and str(version).strip():
            return str(version).strip()
    return None


def directory_fingerprint(path: Path) -> str:
    """A short hash of a model directory: config contents plus weight/tokenizer file
    names, sizes and modification times (weights are not read: they can be gigabytes)."""
    digest = hashlib.sha256()
    for name in _HASHED_CONTENT:
        f = path / name
        if f.is_file():
            digest.update(name.encode() + b"\0" + f.read_bytes() + b"\0")
    seen: set[Path] = set()
    for pattern in _HASHED_STAT_GLOBS:
        for f in sorted(path.glob(pattern)):
            if f in seen or not f.is_file():
                continue
            seen.add(f)
            st = f.stat()
            digest.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:12]


def local_model_version(path: Path) -> str:
    """The version of a model directory: its card's, else ``<dirname>@<fingerprint>``."""
    return card_version(path) or f"{path.resolve().name}@{directory_fingerprint(path)}"


def hub_revision(model_id: str) -> str | None:
    """The commit of the locally cached snapshot of hub model ``model_id`` (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return None
    try:
        found = try_to_load_from_cache(model_id, "config.json")
    except Exception:  # invalid repo id and the like
        return None
    if isinstance(found, str):
        parent = Path(found).parent
        if parent.parent.name == "snapshots":
            return parent.name
    return None


class TransformersExtractor(Extractor):
    """Query extraction with a causal LM running in this process."""

    name = "transformers"

    def __init__(
        self,
        model: str,
        *,
        max_new_tokens: int = 48,
        temperature: float = 0.0,
        seed: int = 1234,
        batch_size: int = 8,
        device: Device = "auto",
        model_version: str | None = None,
        extractive: bool = True,
        max_spans: int = 200,
        stats: WithToxic | None = None,
        blend: Mapping[str, float] | None = None,
        combination: Combination | None = None,
    ) -> None:
        """``model`` is a Hugging Face model id or a local directory. Greedy decoding when
        ``temperature`` is 0, else sampling seeded with ``seed`` on every batch. Seeds are
        generated ``batch_size`` at a time. ``device``: auto (a GPU when there is one), cpu or
        cuda; the precision follows (``agents.extractor.device.plan``). ``extractive`` makes
        the model choose among the seed's own word spans (ranked by the probability of each
        as the completion's first line) instead of writing free text: queries stay evidence
        from the item and cannot drift to one that fits every item (what a small model
        trained on precision learns); at most ``max_spans`` spans are ranked (a fixed sample
        of longer texts), each span's log-probability plus, for each prior -> weight of
        ``blend`` (contrast, probe), the weight times the span's prior under ``stats`` (the
        index's and the confirmed items' term statistics; ``decoding.blend``), or, with a
        learned ``combination`` instead, its score of the span's features under ``stats``.
        Loading happens on first use or :meth:`load`."""
        if not model:
            raise ValueError("TransformersExtractor needs a model id or directory")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got batch_size={batch_size}")
        self.model_ref = model
        self.path = Path(model).expanduser()
        self.is_local = self.path.is_dir()
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self.batch_size = batch_size
        self.device = device
        self.extractive = extractive
        self.max_spans = max_spans
        self.blend = blend_weights(blend or {})
        self.combination = combination
        self.stats = None if stats is None and combination is None else \
            blend_stats(stats, self.blend, combination)
        self._override = model_version
        self._version: str | None = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._scored: OrderedDict[tuple, tuple[list[str], list[float]]] = OrderedDict()
        self._instruction: dict[int, tuple[list[int], Any]] = {}  # k -> tokens, KV cache
        self._lock = asyncio.Lock()

    # --- identity --------------------------------------------------------------------------
    @property
    def model_version(self) -> str:
        """The override, the model card version, or ``<name>@<fingerprint|revision>``; with
        ``+<prior><weight>`` a prior the ranking blends in."""
        if self._override:
            return blend_version(self._override, self.stats, self.blend,
                                 self.combination)
        if self._version is None or self._version.endswith("@unknown"):
            self._version = self._compute_version()
        return blend_version(self._version, self.stats, self.blend, self.combination)

    def _compute_version(self) -> str:
        if self.is_local:
            return local_model_version(self.path)
        revision = hub_revision(self.model_ref)
        if revision is None and self._model is not None:
            revision = getattr(self._model.config, "_commit_hash", None)
        return f"{self.model_ref}@{(revision or 'unknown')[:12]}"

    # --- loading ---------------------------------------------------------------------------
    def load_sync(self) -> None:
        """Load tokenizer and model (blocking). Raises ExtractorError when loading fails."""
        if self._model is not None:
            return
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ExtractorError(f"transformers backend needs torch and transformers: {exc}") \
                from exc
        source = str(self.path) if self.is_local else self.model_ref
        chosen = plan(0, detect(), self.device)  # serving reads its device and dtype only
        attempts = [True] if self.is_local else [True, False]  # hub: cache first, then fetch
        last: Exception | None = None
        for local_only in attempts:
            try:
                tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
                model = AutoModelForCausalLM.from_pretrained(
                    source, dtype=getattr(torch, chosen.dtype), local_files_only=local_only
                )
                break
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                last = exc
        else:
            raise ExtractorError(f"cannot load model {self.model_ref!r}: {last}") from last
        model.to(chosen.device)
        model.eval()
        tokenizer.padding_side = "left"
        tokenizer.truncation_side = "left"  # keep the end: listing and "Queries:" cue
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        self._tokenizer = tokenizer
        self._model = model
        log.info("loaded %s (%s) for query extraction on %s in %s", self.model_ref,
                 self.model_version, chosen.device, chosen.dtype)

    async def load(self) -> None:
        """Load the model in a worker thread (idempotent)."""
        async with self._lock:
            await asyncio.to_thread(self.load_sync)

    # --- generation ------------------------------------------------------------------------
    def _prompt_ids(self, seed: SeedText, k: int, room: int = 0) -> list[int]:
        """The seed's prompt tokens, cut from the front to leave ``room`` (and the answer)."""
        return keep_end(prompt_ids(self._tokenizer, seed.title, seed.description, k),
                        prompt_budget(self._context(), self.max_new_tokens, room))

    def _context(self) -> int | None:
        limit = getattr(self._model.config, "max_position_embeddings", None)
        return limit if isinstance(limit, int) else None

    def generate_sync(self, prompts: list[list[int]]) -> list[str]:
        """Raw completions for the token ids ``prompts`` (blocking; one batch, left padded)."""
        import torch

        tok, model = self._tokenizer, self._model
        enc = tok.pad({"input_ids": prompts}, return_tensors="pt").to(model.device)
        sampling = self.temperature > 0
        kwargs: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "do_sample": sampling,
            "pad_token_id": tok.pad_token_id,
            "stop_strings": [END_MARKER],
            "tokenizer": tok,
        }
        if sampling:
            kwargs["temperature"] = self.temperature
            torch.manual_seed(self.seed)
        else:  # neutralise sampling defaults a generation_config.json may carry
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = model.generate(**enc, **kwargs)
        new_tokens = out[:, enc["input_ids"].shape[1] :]
        return tok.batch_decode(new_tokens, skip_special_tokens=True)

    def extract_sync(self, seeds: list[SeedText], k: int) -> list[Extraction]:
        """The blocking implementation of :meth:`extract`."""
        self.load_sync()
        # without a pad token a batch cannot be padded: generate one seed at a time
        size = self.batch_size if self._tokenizer.pad_token is not None else 1
        results: list[Extraction] = []
        for start in range(0, len(seeds), size):
            batch = seeds[start : start + size]
            try:
                if self.extractive:
                    results += [self.rank_spans_sync(s, k) for s in batch]
                    continue
                texts = self.generate_sync([self._prompt_ids(s, k) for s in batch])
            except (RuntimeError, ValueError, IndexError, MemoryError) as exc:
                raise ExtractorError(f"generation failed with {self.model_ref!r}: {exc}") \
                    from exc
            results += [from_completions(seed, [text], k)
                        for seed, text in zip(batch, texts, strict=True)]
        return results

    def rank_spans_sync(self, seed: SeedText, k: int) -> Extraction:
        """Extractive decoding: score each span of the seed as the first query line, keep the
        ``k`` best distinct ones (by log-probability, blended with the priors when set)."""
        spans, scores = self.span_scores_sync(seed, k)
        if not spans:
            return Extraction(seed_id=seed.id, queries=[], raw=[])
        scores = blend(seed, spans, scores, self.stats, self.blend, self.combination)
        return ranked(seed, spans, scores,
                      k, temperature=self.temperature, sample_seed=self.seed)

    def span_scores_sync(self, seed: SeedText, k: int) -> tuple[list[str], list[float]]:
        """The seed's spans and the log-probability of each as the first query line. The
        prompt runs once and its KV cache serves every span; spans that extend one another
        share a row (:func:`agents.extractor.decoding.span_rows`), and the vocabulary's
        distribution is computed only where a score reads it; the instruction's cache is
        made once (:meth:`_run_prompt`). The last :data:`SCORED_SEEDS` seeds' scores are
        kept."""
        key = (seed.title, seed.description, k)
        if key in self._scored:
            self._scored.move_to_end(key)
            return self._scored[key]
        spans, scores = self._score_spans(seed, k)
        self._scored[key] = spans, scores
        if len(self._scored) > SCORED_SEEDS:
            self._scored.popitem(last=False)
        return spans, scores

    def _score_spans(self, seed: SeedText, k: int, chunk: int = 32
                     ) -> tuple[list[str], list[float]]:
        import torch

        self.load_sync()
        spans = spans_of(seed, self.max_spans)
        if not spans:
            return [], []
        tok = self._tokenizer
        prompt = self._prompt_ids(seed, k, SPAN_ROOM)
        conts = [tok(f"{span}\n", add_special_tokens=False)["input_ids"] for span in spans]
        rows, row_of = span_rows(conts)
        with torch.inference_mode():
            out = self._run_prompt(prompt, k)
            first = torch.log_softmax(out.logits[0, -1].float(), -1)
            scores = [first[c[0]].item() for c in conts]
            # (row, position) -> the distribution after that prefix of the row
            reads = {(row_of[i], j - 1) for i, c in enumerate(conts) for j in range(1, len(c))}
            logp: dict[tuple[int, int], Any] = {}
            for start in range(0, len(rows), chunk):
                logp.update(self._row_logprobs(out.past_key_values, len(prompt),
                                               rows[start:start + chunk], start, reads))
        for i, cont in enumerate(conts):
            scores[i] += sum(logp[row_of[i], j - 1][cont[j]].item()
                             for j in range(1, len(cont)))
        return spans, scores

    def _run_prompt(self, prompt: list[int], k: int) -> Any:
        """The model's output after ``prompt`` (its last position's logits and the KV cache).
        The instruction every seed's prompt starts with runs once: its cache is kept and
        only the listing's tokens run (a prompt cut from the front runs whole)."""
        import copy

        import torch

        model = self._model
        if k not in self._instruction:
            ids = [prompt_ids(self._tokenizer, title, None, k) for title in ("a", "b")]
            shared = next((n for n, (x, y) in enumerate(zip(*ids, strict=False))
                          if x != y), 0)
            head = ids[0][:shared]
            cache = model(input_ids=torch.tensor([head], device=model.device),
                          use_cache=True, logits_to_keep=1).past_key_values if head else None
            self._instruction[k] = head, cache
        head, cache = self._instruction[k]
        if not head or len(prompt) <= len(head) or prompt[:len(head)] != head:
            return model(input_ids=torch.tensor([prompt], device=model.device), use_cache=True,
                         logits_to_keep=1)
        return model(input_ids=torch.tensor([prompt[len(head):]], device=model.device),
                     past_key_values=copy.deepcopy(cache), use_cache=True, logits_to_keep=1)

    def _row_logprobs(self, prompt_cache: Any, prompt_len: int, rows: list[list[int]],
                      first_row: int, reads: set[tuple[int, int]]) -> dict[tuple[int, int], Any]:
        """Log-probabilities after each position of ``reads`` in these ``rows`` (numbered
        from ``first_row``), run as one right-padded batch after the prompt's KV cache."""
        import copy

        import torch

        model = self._model
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self._tokenizer.pad_token_id or 0)
        mask = torch.zeros((len(rows), prompt_len + width), dtype=torch.long)
        mask[:, :prompt_len] = 1
        for n, row in enumerate(rows):
            ids[n, : len(row)] = torch.tensor(row)
            mask[n, prompt_len: prompt_len + len(row)] = 1
        cache = copy.deepcopy(prompt_cache)
        cache.batch_repeat_interleave(len(rows))
        wanted = sorted((r - first_row, j) for r, j in reads
                        if first_row <= r < first_row + len(rows))
        hidden = model.get_decoder()(input_ids=ids.to(model.device),
                                     attention_mask=mask.to(model.device),
                                     past_key_values=cache).last_hidden_state
        at = torch.tensor(wanted, device=model.device)
        logits = model.get_output_embeddings()(hidden[at[:, 0], at[:, 1]])
        logp = torch.log_softmax(logits.float(), -1)
        return {(r + first_row, j): logp[n] for n, (r, j) in enumerate(wanted)}

    async def extract(self, seeds: list[SeedText], k: int) -> list[Extraction]:
        """One Extraction per seed (at most ``k`` queries, possibly none when the output is
        unusable). Batches run one at a time in a worker thread."""
        if not seeds:
            return []
        async with self._lock:
            return await asyncio.to_thread(self.extract_sync, seeds, k)

    async def aclose(self) -> None:
        """Drop the model so its memory can be freed."""
        async with self._lock:
            self._model = None
            self._tokenizer = None
            self._scored.clear()
            self._instruction.clear()



def from_settings(settings: ExtractorSettings, stats: TermStats) -> TransformersExtractor:
    """The registry's builder (the term statistics serve the blended priors or the learned
    combination, when set)."""
    combination = Combination.load(settings.combination) if settings.combination else None
    assert settings.model  # the registry checks NEEDS_MODEL
    return TransformersExtractor(settings.model, max_new_tokens=settings.max_new_tokens,
                                 temperature=settings.temperature, seed=settings.seed,
                                 model_version=settings.model_version,
                                 extractive=settings.extractive, device=settings.device,
                                 stats=blend_stats(stats, settings.blend, combination),
                                 blend=settings.blend, combination=combination)
