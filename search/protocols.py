"""The two swap points of the search layer. Engines and reward models implement these."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from search.types import Completion, Message, SamplingConfig


class Generator(Protocol):
    """Token ids in, completions out. Cancelling the awaiting task aborts the engine work.

    Optional, found with getattr: ``generate_batch(prompts, params)`` (one completion per
    prompt, in one call: see search.context.generate_each) and
    ``generate_stream(prompt_ids, params, n)``, an async iterator of lists of
    ``(index, Completion)`` yielded as the samples finish (every index once), so scoring
    can start before the last sample ends."""

    async def generate(
        self, prompt_ids: Sequence[int], params: SamplingConfig, n: int = 1
    ) -> list[Completion]: ...


class RewardModel(Protocol):
    """Scores responses to a conversation; implementations batch internally.

    A model that can read each response's token ids (the generation prompt's ids then the
    response's: the judge continues that context) says so with ``takes_token_ids = True``
    and then accepts ``token_ids=`` in ``score``; see ``takes_token_ids``."""

    async def score(
        self, conversation: Sequence[Message], responses: Sequence[str], *, partial: bool = False
    ) -> list[float]: ...


def reward_bounds(reward: object) -> tuple[float, float] | None:
    """The range a reward model's scores can take, when it is known (the judge's [0, 1]);
    None for unbounded ones (a classifier's logits). A reward model (or a process reward
    model) declares it with an optional ``bounds`` attribute, so fakes and third-party
    models need not."""
    bounds = getattr(reward, "bounds", None)
    return None if bounds is None else (float(bounds[0]), float(bounds[1]))


def takes_token_ids(reward: object) -> bool:
    """Whether ``reward.score`` accepts ``token_ids=`` (see RewardModel)."""
    return bool(getattr(reward, "takes_token_ids", False))


class ProcessRewardModel(Protocol):
    """Scores the reasoning steps of responses built step by step (a process reward model,
    PRM), kept apart from the outcome rewards above.

    ``score_last_steps`` gives, per response (its steps so far, texts that join into the
    response), the score of its last step given the conversation and the steps before it.
    A PRM is causal (a step's score never depends on later steps), so a search keeps each
    step's score from the round that added it and aggregates them (search.steps). Scores
    are the PRM's raw values (a PRM's probability that the step is correct, the judge's
    [0, 1] rating); ``bounds`` as for RewardModel. ``token_ids`` as for the judge: per
    response, the generation prompt's ids then the response's; a PRM that reads them says
    so with ``takes_token_ids = True``."""

    async def score_last_steps(
        self,
        conversation: Sequence[Message],
        steps: Sequence[Sequence[str]],
        *,
        token_ids: Sequence[Sequence[int]] | None = None,
    ) -> list[float]: ...


class Utility(Protocol):
    """Similarity of responses to each other, for minimum-Bayes-risk selection."""

    async def matrix(self, texts: Sequence[str]) -> list[list[float]]:
        """U[i][j] = utility of texts[i] measured against texts[j] as the reference."""
        ...


class TokenScorer(Protocol):
    """A model that only scores: log p of each token of a sequence given the tokens before
    it (vLLM prompt logprobs). Entry 0 has no context and is None. TreeBoN's DPO model and
    its reference are two of these (either may be the served engine itself)."""

    async def token_logprobs(self, token_ids: Sequence[int]) -> list[float | None]: ...


# The protocol's first name, from when the reference was the only scoring role.
ReferenceModel = TokenScorer


class ChatTokenizer(Protocol):
    """The policy model's tokenizer: renders the chat template once and decodes token ids."""

    def render_chat(self, messages: Sequence[Message]) -> list[int]: ...

    def decode(self, token_ids: Sequence[int]) -> str: ...

    def encode(self, text: str) -> list[int]: ...
