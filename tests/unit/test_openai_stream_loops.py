"""OpenAI's documented stream loops, verbatim, with the official ``openai`` client over
the in-process app: ``chunk.choices[0]`` must hold on every chunk unless the client asked
for ``stream_options.include_usage`` (then only the last chunk, OpenAI's usage chunk,
has no choices). The ``search`` report rides on the last finish chunk as an extension
field.

The default runtime (conftest) answers "three" (reward 0.8) under Best-of-N.
"""

from __future__ import annotations

import pytest

from tests.unit.conftest import openai_client

MESSAGES = [{"role": "user", "content": "hi"}]


async def test_the_documented_chat_stream_loop(capsys: pytest.CaptureFixture[str]) -> None:
    async with openai_client() as client:
        stream = await client.chat.completions.create(
            model="m",
            messages=MESSAGES,
            stream=True,  # type: ignore[arg-type]
        )
        async for chunk in stream:
            print(chunk.choices[0].delta.content or "", end="")
        assert capsys.readouterr().out == "three"

        # The report is on the last chunk, the one with the finish_reason.
        chunks = [
            c
            async for c in await client.chat.completions.create(
                model="m",
                messages=MESSAGES,
                stream=True,  # type: ignore[arg-type]
            )
        ]
        assert all(len(c.choices) == 1 for c in chunks)
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert chunks[-1].model_extra is not None
        assert chunks[-1].model_extra["search"]["chosen_reward"] == 0.8


async def test_the_documented_chat_stream_loop_with_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with openai_client() as client:
        stream = await client.chat.completions.create(
            model="m",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"search": {"algorithm": "bon", "n": 4}},
        )
        usage = search = None
        async for chunk in stream:
            if chunk.choices:
                print(chunk.choices[0].delta.content or "", end="")
            else:
                usage = chunk.usage
                search = (chunk.model_extra or {}).get("search")
        assert capsys.readouterr().out == "three"
        assert usage is not None and usage.completion_tokens == 5
        assert search is None  # the report went out on the finish chunk


async def test_the_documented_completions_stream_loop(capsys: pytest.CaptureFixture[str]) -> None:
    async with openai_client() as client:
        stream = await client.completions.create(model="m", prompt="hi", stream=True)
        async for chunk in stream:
            print(chunk.choices[0].text, end="")
        assert capsys.readouterr().out == "three"

        chunks = [
            c
            async for c in await client.completions.create(
                model="m", prompt="hi", stream=True, best_of=4
            )
        ]
        assert all(len(c.choices) == 1 for c in chunks)
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert chunks[-1].model_extra is not None
        assert chunks[-1].model_extra["search"]["candidates_generated"] == 4


async def test_the_documented_completions_stream_loop_with_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with openai_client() as client:
        stream = await client.completions.create(
            model="m", prompt="hi", stream=True, stream_options={"include_usage": True}
        )
        chunks = []
        async for chunk in stream:
            chunks.append(chunk)
            if chunk.choices:
                print(chunk.choices[0].text, end="")
        assert capsys.readouterr().out == "three"
        assert chunks[-1].choices == [] and chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens == 5
        assert all(c.choices for c in chunks[:-1])
        assert chunks[-2].model_extra is not None and "search" in chunks[-2].model_extra
