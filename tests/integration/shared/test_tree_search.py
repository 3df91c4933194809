"""Tree searches on the real engine, in-process: continuations on prompt + partial ids,
and TreeBoN's implicit DPO reward from two scoring engines (the default model and a
seeded perturbation of it) checked against transformers on the same token ids."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from engines.tokenizer import HFChatTokenizer
from engines.vllm_local import EngineConfig, VLLMGenerator
from rewards.judge import JudgeReward
from search.context import SearchContext
from search.partial import Partial
from search.treebon import TreeBoN
from search.types import SamplingConfig
from tests.integration.engine_checks import prompt

pytestmark = pytest.mark.integration


async def test_prompt_logprobs_match_the_sampled_logprobs(engine, tokenizer) -> None:
    ids = prompt(tokenizer)
    (sample,) = await engine.generate(ids, SamplingConfig(max_tokens=12, seed=3, logprobs=True))
    ref = await engine.token_logprobs([*ids, *sample.token_ids])
    assert ref[0] is None and len(ref) == len(ids) + sample.num_tokens
    # The same model scoring its own sample: the reference's logprobs of those tokens are
    # the policy's (raw logprobs on both sides, before temperature).
    assert ref[len(ids) :] == pytest.approx(list(sample.logprobs), abs=1e-3)


async def test_continuation_text_joins_to_the_whole_response(engine, tokenizer) -> None:
    ids = prompt(tokenizer)
    params = SamplingConfig(max_tokens=6, seed=5)
    (head,) = await engine.generate(ids, params)
    (tail,) = await engine.generate([*ids, *head.token_ids], params)
    joined = Partial().extend(head, 12).extend(tail, 12)
    assert joined.text == tokenizer.decode(joined.token_ids)


class RecordingScorer:
    """A scoring engine that remembers the token ids it was asked to score."""

    def __init__(self, engine: VLLMGenerator) -> None:
        self.engine = engine
        self.seen: list[list[int]] = []

    async def token_logprobs(self, token_ids: Sequence[int]) -> list[float | None]:
        self.seen.append(list(token_ids))
        return await self.engine.token_logprobs(token_ids)


@pytest.fixture(scope="module")
async def perturbed() -> AsyncIterator[tuple[str, VLLMGenerator]]:
    """A second engine on the default model with seeded noise on its weights."""
    from engines.default_model import ensure_perturbed_model

    path = str(ensure_perturbed_model())
    engine = VLLMGenerator.start(EngineConfig(model=path, max_model_len=4096))
    yield path, engine
    engine.shutdown()


def transformers_dpo_scores(
    dpo_path: str, ref_path: str, sequences: list[list[int]], prompt_len: int
) -> list[float]:
    """sum_k (1/k) (log pi_dpo(y_k | ...) - log pi_ref(y_k | ...)) over the response tokens
    of each sequence, computed with transformers: independent of vLLM and of alignserve."""
    import torch
    from transformers import AutoModelForCausalLM

    def response_logprobs(path: str) -> list[list[float]]:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        rows = []
        with torch.no_grad():
            for ids in sequences:
                x = torch.tensor([ids])
                logp = torch.log_softmax(model(x).logits[0, :-1], dim=-1)
                # Row i predicts token i + 1; the response starts at token prompt_len.
                rows.append(logp.gather(1, x[0, 1:, None])[prompt_len - 1 :, 0].tolist())
        return rows

    dpo, ref = response_logprobs(dpo_path), response_logprobs(ref_path)
    return [
        sum((d - r) / k for k, (d, r) in enumerate(zip(ds, rs, strict=True), start=1))
        for ds, rs in zip(dpo, ref, strict=True)
    ]


async def test_treebon_dpo_scores_from_two_engines_match_transformers(
    engine: VLLMGenerator,
    perturbed: tuple[str, VLLMGenerator],
    tokenizer: HFChatTokenizer,
    model_path: str,
) -> None:
    # The served engine as the DPO model ("policy"), the perturbed model as its reference.
    perturbed_path, perturbed_engine = perturbed
    dpo, reference = RecordingScorer(engine), RecordingScorer(perturbed_engine)
    conversation = [{"role": "user", "content": "Name three colours of the rainbow."}]
    prompt_ids = tokenizer.render_chat(conversation)
    ctx = SearchContext(
        generator=engine,
        reward=JudgeReward(engine, tokenizer),
        tokenizer=tokenizer,
        conversation=conversation,
        prompt_ids=prompt_ids,
        sampling=SamplingConfig(max_tokens=24, seed=11),
        dpo=dpo,
        reference=reference,
    )
    result = await TreeBoN(n=4, branching=2, layers=3).run(ctx)
    assert result.details["partial_score"] == "dpo"
    assert result.budget.generated_tokens <= 4 * 24
    # Both scorers scored the same sequences: the prompt and each live partial response.
    assert sorted(dpo.seen) == sorted(reference.seen)
    assert all(ids[: len(prompt_ids)] == prompt_ids for ids in dpo.seen)
    reported = [s for layer in result.details["layers"] for s in layer["partial_scores"]]
    assert len(reported) == len(dpo.seen) >= 4

    expected = await asyncio.to_thread(
        transformers_dpo_scores, model_path, perturbed_path, dpo.seen, len(prompt_ids)
    )
    assert sorted(reported) == pytest.approx(sorted(expected), abs=1e-2)
    # Two different models: the scores are far from 0 (one model in both roles gives ~0).
    assert max(abs(s) for s in reported) > 0.05
    assert result.best.reward == max(c.reward for c in result.candidates)
