"""In-process process reward model with Hugging Face transformers.

Expects a model that gives two logits per token and a tokenizer with a chat template:

- a ``*ForTokenClassification`` checkpoint with two labels (TRL's stepwise PRMs, or any
  decoder fine-tuned so), loaded with ``AutoModelForTokenClassification``;
- Qwen2.5-Math-PRM-7B/-72B and Qwen2.5-Math-7B-PRM800K (``Qwen2ForProcessRewardModel``,
  not part of transformers): loaded with ``AutoModel`` from the model repo's own code,
  only when ``trust_remote_code=True`` is passed, since that runs the repo's Python.

The input and score follow rewards.prm_format (Qwen's convention): the rendered chat ends
each step with the separator, and a response's score is the softmax probability of the
positive class at its last separator. The rendered text is tokenized without adding
special tokens (the template already holds them; Qwen's tokenizer adds none either).

Where this differs from the reference usage, and why:

- A tokenizer without the separator gets it as a new special token and the model's
  embeddings are resized, the new row set to the mean of the others (deterministic).
  That makes any token classifier usable (the tests' fixture), but its scores at a token
  it never saw mean little: a warning is logged.
- A checkpoint whose head is missing from its weights is refused rather than given a
  random head, which would score every step at random without any error.
- Inputs over ``max_length`` tokens are cut from the left: the last step's separator is
  at the end, and the start of the system prompt goes first.
- Responses are batched (right padding; the model is causal, so padding after a token
  never changes its logits) and run on one worker thread, never on the event loop; bf16
  on CUDA, float32 on CPU.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from rewards.judge import render_conversation
from rewards.prm_format import DEFAULT_SEPARATOR, prm_messages
from search.errors import RewardUnavailable
from search.protocols import AsyncClosable
from search.types import Message

logger = logging.getLogger(__name__)


def load_prm_model(path: str, *, trust_remote_code: bool, dtype: Any) -> Any:
    """The PRM with its trained head (module docstring), or ValueError."""
    from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    architectures = list(getattr(config, "architectures", None) or [])
    if any(a.endswith("ForTokenClassification") for a in architectures):
        if config.num_labels != 2:
            raise ValueError(f"{path}: a PRM needs 2 labels, not {config.num_labels}")
        model, info = AutoModelForTokenClassification.from_pretrained(
            path, dtype=dtype, output_loading_info=True
        )
    elif trust_remote_code and "AutoModel" in (getattr(config, "auto_map", None) or {}):
        model, info = AutoModel.from_pretrained(
            path, dtype=dtype, trust_remote_code=True, output_loading_info=True
        )
    else:
        raise ValueError(
            f"{path} ({', '.join(architectures) or 'no architecture'}) is not a token "
            "classification PRM; a PRM with its own model class (Qwen2.5-Math-PRM) runs "
            "the repository's code and needs trust_remote_code=True"
        )
    if info.get("missing_keys"):
        raise ValueError(f"{path}: weights missing from the checkpoint: {info['missing_keys']}")
    return model


class LocalPRM(AsyncClosable):
    bounds = (0.0, 1.0)
    # Renders the steps as text with its own tokenizer: token ids are not read.
    takes_token_ids = False

    def __init__(
        self,
        path_or_id: str,
        *,
        batch_size: int = 8,
        max_length: int = 4096,
        separator: str = DEFAULT_SEPARATOR,
        trust_remote_code: bool = False,
    ) -> None:
        import torch
        from transformers import AutoTokenizer

        self._torch = torch
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        self.tokenizer: Any = AutoTokenizer.from_pretrained(
            path_or_id, trust_remote_code=trust_remote_code
        )
        self.model: Any = load_prm_model(
            path_or_id, trust_remote_code=trust_remote_code, dtype=dtype
        )
        self.separator = separator
        self.separator_id = self._ensure_separator(path_or_id)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "left"
        self.model.to(self.device).eval()
        self.batch_size = batch_size
        self.max_length = max_length
        # One thread: torch already uses every core, and batches must not interleave.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prm")

    def _ensure_separator(self, path: str) -> int:
        if self.separator not in self.tokenizer.get_vocab():
            logger.warning(
                "the PRM %s has no token %r: added, with a mean embedding", path, self.separator
            )
            self.tokenizer.add_tokens([self.separator], special_tokens=True)
            embeddings = self.model.get_input_embeddings()
            old = embeddings.weight.shape[0]
            self.model.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
            weight = self.model.get_input_embeddings().weight
            with self._torch.no_grad():
                weight[old:] = weight[:old].mean(dim=0)
        ids = self.tokenizer(self.separator, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(f"{path}: the separator {self.separator!r} is not one token")
        return int(ids[0])

    def render(self, conversation: Sequence[Message], steps: Sequence[str]) -> str:
        messages = prm_messages(conversation, steps, self.separator)
        if self.tokenizer.chat_template:
            return str(self.tokenizer.apply_chat_template(messages, tokenize=False))
        return render_conversation(messages)

    async def score_last_steps(
        self,
        conversation: Sequence[Message],
        steps: Sequence[Sequence[str]],
        *,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]:
        texts = [self.render(conversation, s) for s in steps]
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.score_texts, texts)

    def score_texts(self, texts: Sequence[str]) -> list[float]:
        """The positive-class probability at the last separator of each rendered text."""
        torch = self._torch
        scores: list[float] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    list(texts[start : start + self.batch_size]),
                    return_tensors="pt",
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    add_special_tokens=False,
                ).to(self.device)
                output = self.model(**batch)
                logits = output.logits if hasattr(output, "logits") else output[0]
                if logits.shape[-1] != 2:
                    raise RewardUnavailable(
                        "the process reward model did not return two logits per token",
                        reason="bad_value",
                    )
                is_separator = (batch["input_ids"] == self.separator_id) & (
                    batch["attention_mask"] > 0
                )
                if not bool(is_separator.any(dim=1).all()):
                    raise RewardUnavailable(
                        "the process reward model's input lost its last step", reason="bad_value"
                    )
                positions = torch.arange(is_separator.shape[1], device=logits.device)
                last = torch.where(is_separator, positions, -1).max(dim=1).values
                rows = logits[torch.arange(logits.shape[0], device=logits.device), last]
                scores.extend(torch.softmax(rows.float(), dim=-1)[:, 1].cpu().tolist())
        if not all(math.isfinite(s) for s in scores):
            raise RewardUnavailable(
                "the process reward model returned a non-finite score", reason="non_finite"
            )
        return scores

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False)
