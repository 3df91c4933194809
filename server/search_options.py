"""The request's ``search`` object, validated against the server: which strategy runs with
which options (the registry validates those), the keys that steer serving rather than the
algorithm (``ServingOptions``), the reward choice (``RewardOptions``) and the process
reward model of a step search."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, StrictBool

from rewards.choice import RewardOptions
from search.errors import InvalidRequest
from search.protocols import ProcessRewardModel
from search.registry import STRATEGIES, parse_strategy, validate_options
from search.strategy import SearchStrategy
from server.protocol import ChatCompletionRequest
from server.runtime import Runtime
from server.settings import Settings


class ServingOptions(BaseModel):
    """Keys of the ``search`` object that steer serving rather than the algorithm."""

    return_candidates: StrictBool = False
    timeout_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    on_timeout: Literal["best", "error"] = "best"
    # Record this search (default: whether the server records, --record); true on a
    # server that does not record is a 400.
    record: StrictBool | None = None
    # Stream the text a search has committed to while it runs (false: all at the end).
    stream_committed: StrictBool = True

    @classmethod
    def pop_from(cls, options: dict[str, Any]) -> ServingOptions:
        given = {key: options.pop(key) for key in cls.model_fields if key in options}
        return validate_options(cls, given, "search")


def search_options(
    request: ChatCompletionRequest, settings: Settings
) -> tuple[SearchStrategy, ServingOptions, RewardOptions]:
    """The request's strategy, serving keys and reward choice, from its ``search`` object
    and the server's defaults; a 400 naming the field for what this server refuses."""
    options: dict[str, Any] = {"algorithm": settings.default_algorithm}
    if request.search is None and request.temperature == 0:
        # What clients send for determinism: greedy decoding has one answer, so the
        # server's default search (n > 1) has nothing to choose from. One greedy
        # response, no search; the report's algorithm says "none".
        options["algorithm"] = "none"
        if request.n > 1:
            # The client sent n, not a search: the error names what it sent.
            raise InvalidRequest(
                f"temperature 0 (greedy) yields a single answer, but n is {request.n}: "
                "send n = 1 or a temperature above 0",
                param="n",
            )
    options.update(request.search or {})
    chosen = STRATEGIES.get(options["algorithm"]) if isinstance(options["algorithm"], str) else None
    if "n" not in options and (chosen is None or chosen.takes_default_n):
        options["n"] = settings.default_n
    serving = ServingOptions.pop_from(options)
    reward = RewardOptions.pop_from(options)
    strategy = parse_strategy(options)
    strategy.fit_live_limit(settings.max_live_candidates)
    if strategy.n > settings.max_n:
        raise InvalidRequest(f"search.n must be at most {settings.max_n}", param="search.n")
    if strategy.peak_candidates() > settings.max_live_candidates:
        raise InvalidRequest(
            f"this search keeps {strategy.peak_candidates()} candidates alive at once; "
            f"the server allows at most {settings.max_live_candidates}",
            param="search",
        )
    if request.temperature == 0 and strategy.parallel_samples() > 1:
        # Greedy decoding has one answer; vLLM rejects n > 1 with it rather than repeat
        # it. Checked against what the search samples from one context (speculative
        # rejection starts n_initial responses, a step search N paths from the prompt), so
        # it never fails mid-search nor runs N identical paths.
        raise InvalidRequest(
            f"temperature 0 (greedy) yields a single candidate, but this search samples "
            f"{strategy.parallel_samples()} from the same text: use search.n = 1 "
            "or a temperature above 0",
            param="temperature",
        )
    if request.n > strategy.n:
        if request.search is None:  # the server's default search: name what the client sent
            raise InvalidRequest(
                f"n ({request.n}) cannot exceed the {strategy.n} candidates of the server's "
                "default search: ask for at least n candidates (a search object's n, or "
                "best_of on /v1/completions)",
                param="n",
            )
        raise InvalidRequest(
            f"n ({request.n}) cannot exceed the number of candidates search.n ({strategy.n})",
            param="n",
        )
    return strategy, serving, reward


def process_reward(
    runtime: Runtime, strategy: SearchStrategy, name: str | None
) -> ProcessRewardModel | None:
    """The PRM a step search scores with (search.prm, else the server's default); a
    400 naming search.prm for an unknown name or a search that scores no steps."""
    prms = runtime.prms
    if not strategy.scores_steps:
        if name is not None:
            raise InvalidRequest(
                "search.prm chooses the process reward model of the step searches "
                "(beam_search, dvts, particle_filtering), not of this one",
                param="search.prm",
            )
        return None
    chosen = name or runtime.default_prm
    if chosen is None or chosen not in prms:
        have = ", ".join(sorted(prms)) or "none (start it with --prm)"
        raise InvalidRequest(
            f"search.prm: no process reward model named {chosen!r} here; this server has {have}",
            param="search.prm",
        )
    return prms[chosen]
