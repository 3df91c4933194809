"""End to end: POST /v1/completions on the real engine, driven by the official openai
client's ``completions`` resource (the server started as the README starts it)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.e2e

PROMPT = "The three primary colors are"


@pytest.fixture(scope="module")
def tokenizer(model_path: str) -> Iterator[object]:
    from transformers import AutoTokenizer

    yield AutoTokenizer.from_pretrained(model_path)


def ids_of(tokenizer: object, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))  # type: ignore[attr-defined]


def test_best_of_is_best_of_n_with_the_report(client: openai.OpenAI, tokenizer: object) -> None:
    r = client.completions.create(model=MODEL, prompt=PROMPT, best_of=4, max_tokens=24)
    assert r.object == "text_completion" and r.id.startswith("cmpl-")
    assert len(r.choices) == 1 and r.choices[0].text.strip()
    assert r.choices[0].finish_reason in ("stop", "length")
    search = r.model_extra["search"]
    assert search["algorithm"] == "bon"
    assert search["candidates_generated"] == 4 and search["engine_calls"] == 1
    assert search["reward_calls"] >= 1 and search["chosen_reward"] is not None
    # The prompt went to the engine as it is: no chat template around it.
    assert r.usage.prompt_tokens == len(ids_of(tokenizer, PROMPT))
    assert 0 < r.usage.completion_tokens <= 24


def test_a_token_id_prompt_answers_as_its_text(client: openai.OpenAI, tokenizer: object) -> None:
    ids = ids_of(tokenizer, PROMPT)
    # Greedy (temperature 0, no search): one answer, the same for the text and its ids.
    by_ids = client.completions.create(model=MODEL, prompt=ids, temperature=0, max_tokens=12)
    by_text = client.completions.create(model=MODEL, prompt=PROMPT, temperature=0, max_tokens=12)
    assert by_ids.usage.prompt_tokens == len(ids)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.choices[0].text.strip()
    assert by_ids.model_extra["search"]["algorithm"] == "none"


def test_stream_equals_the_non_streamed_answer(client: openai.OpenAI) -> None:
    prompt = "Here is a short poem about the sea:\n"
    plain = client.completions.create(model=MODEL, prompt=prompt, temperature=0, max_tokens=16)
    pieces, report, usage = [], None, None
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt=prompt,
            temperature=0,
            max_tokens=16,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    for chunk in chunks:
        assert chunk.object == "text_completion"
        pieces.extend(c.text for c in chunk.choices)
        if chunk.usage is not None:
            usage = chunk.usage
        if "search" in (chunk.model_extra or {}):
            report = chunk.model_extra["search"]
    # As OpenAI's: only the usage chunk, last, has no choices; the report rides on the
    # finish chunk before it.
    assert [c for c in chunks if not c.choices] == [chunks[-1]] and chunks[-1].usage
    assert chunks[-2].choices[0].finish_reason and "search" in chunks[-2].model_extra
    assert len([p for p in pieces if p]) > 1, "the answer came in one piece"
    assert "".join(pieces) == plain.choices[0].text
    assert usage is not None and usage.completion_tokens == plain.usage.completion_tokens
    assert report is not None and report["algorithm"] == "none"


def test_several_prompts_answer_prompt_major(client: openai.OpenAI) -> None:
    prompts = ["The capital of France is", "One plus one equals"]
    r = client.completions.create(model=MODEL, prompt=prompts, best_of=2, n=2, max_tokens=8)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    reports = r.model_extra["search"]
    assert [s["candidates_generated"] for s in reports] == [2, 2]
    each = [
        client.completions.create(model=MODEL, prompt=p, max_tokens=1, temperature=0)
        for p in prompts
    ]
    assert r.usage.prompt_tokens == sum(e.usage.prompt_tokens for e in each)


@pytest.mark.parametrize(
    ("fields", "param"),
    [({"suffix": "end"}, "suffix"), ({"best_of": 2, "n": 3}, "best_of")],
)
def test_refusals_come_back_as_bad_requests(
    client: openai.OpenAI, fields: dict[str, object], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model=MODEL, prompt=PROMPT, max_tokens=4, **fields)  # type: ignore[call-overload]
    assert refused.value.param == param
