"""Behaviour every Generator must show on the real model; run against both engines."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

import pytest

from engines.tokenizer import HFChatTokenizer
from search.protocols import Generator, PromptScorer
from search.types import SamplingConfig

QUESTION = "Compose an engaging travel blog post about a recent trip to Hawaii."


def prompt(tokenizer: HFChatTokenizer, text: str = QUESTION) -> list[int]:
    return tokenizer.render_chat([{"role": "user", "content": text}])


async def check_n_and_max_tokens(gen: Generator, tok: HFChatTokenizer) -> None:
    out = await gen.generate(prompt(tok), SamplingConfig(max_tokens=8, seed=1), n=4)
    assert len(out) == 4
    for c in out:
        assert 1 <= c.num_tokens <= 8
        assert c.text == tok.decode(c.token_ids)
        assert c.finish_reason in ("stop", "length")
    assert len({c.text for c in out}) > 1, "four samples at temperature 1 were identical"


async def check_seed(gen: Generator, tok: HFChatTokenizer) -> None:
    ids = prompt(tok)
    a = await gen.generate(ids, SamplingConfig(max_tokens=12, seed=7), n=2)
    b = await gen.generate(ids, SamplingConfig(max_tokens=12, seed=7), n=2)
    c = await gen.generate(ids, SamplingConfig(max_tokens=12, seed=8), n=2)
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]


async def check_greedy_and_sampling_params(gen: Generator, tok: HFChatTokenizer) -> None:
    ids = prompt(tok)
    greedy = await gen.generate(ids, SamplingConfig(max_tokens=10, temperature=0.0))
    again = await gen.generate(ids, SamplingConfig(max_tokens=10, temperature=0.0, seed=5))
    assert greedy[0].token_ids == again[0].token_ids
    # top_k=1 is greedy too: the parameter must reach the engine to make this hold.
    top1 = await gen.generate(ids, SamplingConfig(max_tokens=10, top_k=1, seed=3), n=2)
    assert {c.token_ids for c in top1} == {greedy[0].token_ids}


async def check_epsilon(gen: Generator, tok: HFChatTokenizer) -> None:
    """epsilon reaches the sampler: at 0.99 only the likeliest token can stay (no other has
    p >= 0.99), so temperature 1.5 samples the greedy answer; at 0 they differ."""
    ids = prompt(tok)
    greedy = await gen.generate(ids, SamplingConfig(max_tokens=10, temperature=0.0))
    hot = SamplingConfig(max_tokens=10, temperature=1.5, seed=3, epsilon=0.99)
    cut = await gen.generate(ids, hot, n=3)
    assert {c.token_ids for c in cut} == {greedy[0].token_ids}
    free = await gen.generate(ids, SamplingConfig(max_tokens=10, temperature=1.5, seed=3), n=3)
    assert {c.token_ids for c in free} != {greedy[0].token_ids}


async def check_stop(gen: Generator, tok: HFChatTokenizer) -> None:
    ids = prompt(tok)
    free = await gen.generate(ids, SamplingConfig(max_tokens=24, temperature=0.0))
    words = free[0].text.split()
    assert len(words) > 3, free[0].text
    stop = " " + words[2]
    cut = await gen.generate(ids, SamplingConfig(max_tokens=24, temperature=0.0, stop=(stop,)))
    assert cut[0].finish_reason == "stop"
    assert stop not in cut[0].text
    assert free[0].text.startswith(cut[0].text)


async def check_kept_stop_and_stop_reason(gen: Generator, tok: HFChatTokenizer) -> None:
    """With include_stop the matched stop string ends the text, and stop_reason names it
    (the step searches tell a step's end from the response's end by it)."""
    ids = prompt(tok)
    free = await gen.generate(ids, SamplingConfig(max_tokens=24, temperature=0.0))
    stop = " " + free[0].text.split()[2]
    params = SamplingConfig(max_tokens=24, temperature=0.0, stop=(stop,), include_stop=True)
    kept = (await gen.generate(ids, params))[0]
    assert kept.finish_reason == "stop" and kept.stop_reason == stop
    assert kept.text.endswith(stop) and free[0].text.startswith(kept.text)
    cut = (await gen.generate(ids, SamplingConfig(max_tokens=24, temperature=0.0, stop=(stop,))))[0]
    assert cut.stop_reason == stop and kept.text == cut.text + stop
    assert free[0].stop_reason is None  # a length cut or the end-of-sequence token


async def check_logprobs(gen: Generator, tok: HFChatTokenizer) -> None:
    out = await gen.generate(prompt(tok), SamplingConfig(max_tokens=6, logprobs=True, seed=2))
    c = out[0]
    assert c.logprobs is not None and len(c.logprobs) == c.num_tokens
    assert all(lp <= 0.0 for lp in c.logprobs)
    assert c.cumulative_logprob is not None
    assert math.isclose(sum(c.logprobs), c.cumulative_logprob, rel_tol=1e-3, abs_tol=1e-3)
    top = await gen.generate(prompt(tok), SamplingConfig(max_tokens=1, top_logprobs=5, seed=2))
    steps = top[0].top_logprobs
    assert steps is not None and len(steps) == 1
    assert len(steps[0]) >= 5 and all(isinstance(k, int) for k in steps[0])


async def check_prompt_logprobs(gen: Any, tok: HFChatTokenizer) -> None:
    """A prompt's own tokens scored: none for the first, then each token's with the top
    alternatives (itself among them); the scores of an answer's tokens, with the prompt
    before them, are the logprobs the engine gave them when it sampled them."""
    assert isinstance(gen, PromptScorer)
    ids = prompt(tok)
    scored = await gen.prompt_logprobs(ids, 3)
    assert scored.token_ids == tuple(ids)
    assert scored.logprobs[0] is None and scored.top_logprobs[0] == {}
    assert all(lp is not None and lp <= 0.0 for lp in scored.logprobs[1:])
    for tok_id, lp, top in zip(ids[1:], scored.logprobs[1:], scored.top_logprobs[1:], strict=True):
        assert top[tok_id] == lp and 3 <= len(top) <= 4
        assert max(top.values()) >= lp
    (answer,) = await gen.generate(
        ids, SamplingConfig(max_tokens=8, temperature=0.0, logprobs=True)
    )
    assert answer.logprobs is not None
    again = await gen.prompt_logprobs([*ids, *answer.token_ids], 0)
    tail = again.logprobs[len(ids) :]
    assert list(tail) == pytest.approx(list(answer.logprobs), abs=2e-3)


async def check_cancel_aborts(
    gen: Generator, tok: HFChatTokenizer, running: Callable[[], object]
) -> None:
    """Cancelling the caller aborts the engine work: the running count returns to zero."""
    task = asyncio.ensure_future(
        gen.generate(prompt(tok), SamplingConfig(max_tokens=1500, seed=4), n=4)
    )
    for _ in range(100):
        await asyncio.sleep(0.1)
        if await _value(running()) > 0:
            break
    assert await _value(running()) > 0, "the request never started"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    for _ in range(50):
        if await _value(running()) == 0:
            break
        await asyncio.sleep(0.1)
    assert await _value(running()) == 0, "engine requests left running after cancel"


async def _value(x: object) -> float:
    if asyncio.iscoroutine(x):
        x = await x
    return float(x)  # type: ignore[arg-type]
