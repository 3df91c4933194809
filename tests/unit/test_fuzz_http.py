"""The HTTP layer fuzzed at full size, in-process: schemathesis over the app's own OpenAPI
document, its requests sent through the ASGI interface of the app built by the production
factory, over the fake runtime (a generator that answers any prompt, a deterministic
reward and PRM). No 5xx, every status, content type, header and body as documented, on
thousands of generated requests, and valid ``search`` objects for every algorithm run
as real searches over the fakes. tests/e2e/test_fuzz.py runs the same cases, fewer of
them, against the real engine.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from schemathesis.python import asgi

from search.fakes import (
    CharTokenizer,
    LogprobGenerator,
    TablePRM,
    TableReward,
    WordOverlapUtility,
    stepped,
)
from search.registry import STRATEGIES
from search.types import Completion, SamplingConfig
from server.app import create_app
from server.runtime import Runtime
from server.settings import Settings
from tests.fuzz_cases import API_KEY, LIMITS, OPTIONS, fuzz_schema, fuzz_searches

EXAMPLES = 500  # per operation and mode: about 5,000 requests in all
SEARCH_EXAMPLES = 50  # valid search objects per algorithm

# What the fake model writes from any prompt, by sample index: steps, a number to vote on.
TEXTS = ["First, 2 and 2.\n\nThe answer: 4.", "So 3.\n\nanswer: 5", "Hi. The answer is 4."]


@dataclass
class AnyPromptGenerator:
    """Answers every call: sample i writes TEXTS[i % 3] (cut by the call's stop strings and
    max_tokens as vLLM would), one token per character, a logprob per token."""

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]:
        out = []
        for i in range(n):
            done = stepped(TEXTS[i % len(TEXTS)], params)
            logprobs = tuple(-0.1 * (i + 1) for _ in done.token_ids)
            out.append(
                Completion(
                    done.token_ids,
                    done.text,
                    done.finish_reason,
                    cumulative_logprob=sum(logprobs),
                    logprobs=logprobs,
                    stop_reason=done.stop_reason,
                )
            )
        return out


class VocabCharTokenizer(CharTokenizer):
    """The fakes' tokenizer (one token per character) with a vocabulary, as real ones list
    theirs: every code point, so a prompt of token ids beyond it is refused as on the
    real server."""

    def vocab(self) -> dict[str, int]:
        return {chr(i): i for i in range(0x110000)}


@pytest.fixture(scope="module")
def app_client() -> Iterator[tuple[Any, Any]]:
    """(the schema, an in-process client of the app): one app, its lifespan run once."""
    runtime = Runtime(
        # The logprobs each call asks for, and prompts scored (echo with logprobs).
        generator=LogprobGenerator(AnyPromptGenerator()),
        tokenizer=VocabCharTokenizer(),
        reward=TableReward({text: 0.1 * i for i, text in enumerate(TEXTS)}, default=0.5),
        model_name="m",
        max_model_len=3000,
        utilities={"chrf": WordOverlapUtility(), "embedding": WordOverlapUtility()},
        prms={"judge": TablePRM({}, default=0.5)},
        default_prm="judge",
    )
    app = create_app(Settings(api_key=[API_KEY], **LIMITS), runtime=runtime)
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.app = app
    with asgi.get_client(app) as client:
        yield schema, client


def test_the_search_options_cover_the_registry() -> None:
    assert set(OPTIONS) == set(STRATEGIES)
    for name, options in OPTIONS.items():
        assert set(options) <= set(STRATEGIES[name].model_fields), name


@pytest.mark.slow
@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=str)
def test_api_never_fails_and_matches_its_schema(
    app_client: tuple[Any, Any], mode: schemathesis.GenerationMode
) -> None:
    schema, client = app_client
    fuzz_schema(schema, mode, EXAMPLES, session=client)


@pytest.mark.parametrize("algorithm", sorted(OPTIONS))
def test_valid_search_objects_never_fail_and_match_the_schema(
    app_client: tuple[Any, Any], algorithm: str
) -> None:
    schema, client = app_client
    fuzz_searches(schema, algorithm, SEARCH_EXAMPLES, session=client)
