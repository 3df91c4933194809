"""``alignserve eval``: what each search algorithm buys for what it spends.

Measures, per algorithm and budget ``n``, the mean reward of the answer against the mean
number of tokens the engine generated (and wall time, engine and reward calls) over a
prompt set: any JSONL of prompts (``--prompts``), by default the project's own verifiable
prompts in ``tools/data`` (third-party sets such as MT-Bench are not shipped: pass their
file).

How: one in-process runtime (the server's engine and reward model, from the same
flags). For every prompt, every budget, every algorithm in turn (interleaved, so drift
of a shared machine hits all algorithms alike) a strategy runs exactly as a chat
request would run it. The request seed of prompt i is ``seed + i``, the same for every
algorithm and budget, so they draw comparable samples and a rerun repeats the rewards.
Before each run the engine's prefix cache is emptied (when it has one), so no run finds
the previous algorithm's prompt or judge calls cached. The answer's reward is always
re-scored with the reward model on its own: algorithms rank by different objectives (or,
like MBR or unweighted majority, never call the reward), so their own reported reward
is kept beside it but not compared.

Ground truth the search does not optimise (``truth``): a reward name (``constraints``: the
prompts' own checks, pass rate and fraction met), or ``math``: whether the answer equals the
prompt's ``answer`` (rewards/math_truth, math-verify), reported as accuracy.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rewards.choice import RequestReward, RewardOptions
from rewards.math_truth import is_correct
from search.context import SearchContext
from search.protocols import PrefixCached
from search.registry import parse_strategy
from search.strategy import SearchStrategy
from search.types import Message, SamplingConfig
from server.runtime import Runtime
from tools.prompt_sets import fields_of, read_rows
from tools.prompt_sets import sample as sample_rows

DEFAULT_ALGORITHMS = ("bon", "rbon_wd", "treebon", "darwin", "spec_rejection")
# The project's own prompts (bench/make_verifiable_prompts.py), the default prompt set.
DEFAULT_PROMPTS = "verifiable_prompts.jsonl"
# --truth math: the answer checked against the prompt's gold answer, not a reward.
MATH_TRUTH = "math"
# What to pass offline: GSM8K's test file (or MATH-500's, math500_test.jsonl), kept outside
# the repository; with no --prompts, --truth math reads GSM8K from the hub.
MATH_PROMPTS = "../shared/data/gsm8k_test.jsonl"


@dataclass(frozen=True)
class Prompt:
    """One conversation to answer; ``index`` is its line in the file (it fixes the seed)."""

    index: int
    id: str
    conversation: list[Message]
    # Checks of the answer (rewards/constraints), for --truth constraints or as a reward.
    constraints: list[Any] | None = None
    # The gold final answer, for --truth math (a number or a LaTeX expression).
    answer: str | None = None


@dataclass(frozen=True)
class EvalConfig:
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    budgets: tuple[int, ...] = (4, 8)
    max_tokens: int = 64
    temperature: float = 0.8
    seed: int = 0
    # Per-algorithm strategy options, e.g. {"treebon": {"layers": 4}}.
    options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    cold_cache: bool = True
    # The search's reward: a name or {name: weight} (search.reward); None: the default.
    search_reward: str | dict[str, float] | None = None
    # Ground truth the search does not optimise: a reward scoring each answer, or "math"
    # (the answer checked against the prompt's gold answer).
    truth: str | None = None
    # Also run bon with n = 1 (one sample, no search) on every prompt, as the baseline.
    best_of_1: bool = False

    def __post_init__(self) -> None:
        if not self.algorithms or not self.budgets:
            raise ValueError("give at least one algorithm and one budget")
        if min(self.budgets) < 1 or self.max_tokens < 1:
            raise ValueError("budgets and max tokens must be positive")
        if self.temperature < 0 or (self.temperature == 0 and max(self.budgets) > 1):
            raise ValueError("temperature 0 (greedy) has one answer: use a temperature above 0")
        unused = set(self.options) - set(self.algorithms)
        if unused:
            raise ValueError(f"--option names algorithms not evaluated: {sorted(unused)}")
        if any("n" in opts for opts in self.options.values()):
            raise ValueError("set n with --budgets, not --option")

    def strategies(self) -> dict[tuple[str, int], SearchStrategy]:
        """Every (algorithm, n) validated before any engine starts; bad options raise
        ``search.errors.InvalidRequest`` naming the option."""
        # The Best-of-1 baseline is plain bon, whatever options bon is evaluated with.
        baseline = {("bon", 1): parse_strategy({"algorithm": "bon", "n": 1})}
        return {
            **(baseline if self.best_of_1 else {}),
            **{
                (name, n): parse_strategy(
                    {"algorithm": name, "n": n, **self.options.get(name, {})},
                    param_prefix=f"option {name}",
                )
                for n in self.budgets
                for name in self.algorithms
            },
        }


@dataclass(frozen=True)
class Row:
    """One search run: the answer's re-scored reward and what the search spent."""

    algorithm: str
    n: int
    prompt_id: str
    seed: int
    reward: float  # the chosen answer re-scored alone by the reward model
    search_reward: float  # the chosen candidate's reward as the strategy reported it
    generated_tokens: int
    engine_calls: int
    reward_calls: int
    wall_s: float
    candidates: int
    answer_tokens: int
    answer: str
    # Seconds per phase of the search (generate, score, score_partial, ...).
    timings: dict[str, float] = field(default_factory=dict)
    # The --truth reward of the answer, and (constraints) whether it meets every check.
    truth: float | None = None
    truth_pass: bool | None = None
    # --truth math: whether the answer equals the prompt's gold answer.
    correct: bool | None = None


def parse_option(text: str) -> tuple[str, str, Any]:
    """``ALGO.KEY=VALUE`` -> (algo, key, value); VALUE is JSON when it parses, else text."""
    target, sep, raw = text.partition("=")
    algorithm, dot, key = target.partition(".")
    if not (sep and dot and algorithm and key):
        raise ValueError(f"--option wants ALGO.KEY=VALUE, got {text!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return algorithm, key, value


def options_of(texts: Sequence[str]) -> dict[str, dict[str, Any]]:
    options: dict[str, dict[str, Any]] = {}
    for text in texts:
        algorithm, key, value = parse_option(text)
        options.setdefault(algorithm, {})[key] = value
    return options


def load_prompts(
    path: Path | str | None = None,
    *,
    offset: int = 0,
    limit: int | None = None,
    sample: int | None = None,
    sample_seed: int = 0,
) -> list[Prompt]:
    """Prompts from a JSONL file or a hub dataset's name (tools/prompt_sets.py: the row
    forms, GSM8K's, MATH-500's and IFEval's included), by default the project's own
    verifiable prompts in tools/data. A row's id is its own ("question_id", "id",
    "unique_id", "key") when it has one, else its 0-based line number among the rows.
    ``sample``: that many rows drawn by ``sample_seed`` (in file order) before ``offset``
    and ``limit`` slice them."""
    if offset < 0 or (limit is not None and limit < 1):
        raise ValueError("--offset must be at least 0 and --limit at least 1")
    if path is None:
        data = resources.files("tools").joinpath("data", DEFAULT_PROMPTS)
        source = f"tools/data/{DEFAULT_PROMPTS}"
        text = data.read_text(encoding="utf-8")
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        source = str(path)
        rows = read_rows(path)
    prompts = []
    for index, row in enumerate(rows):
        try:
            fields = fields_of(row)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ValueError(f"{source}: prompt {index}: {exc}") from None
        prompt_id = str(index) if fields.id is None else fields.id
        prompts.append(
            Prompt(index, prompt_id, fields.conversation, fields.constraints, fields.answer)
        )
    if sample is not None:
        prompts = [prompts[i] for i in sample_rows(len(prompts), sample, sample_seed)]
    chosen = prompts[offset:] if limit is None else prompts[offset : offset + limit]
    if not chosen:
        raise ValueError(f"{source}: no prompts left after offset {offset} and limit {limit}")
    return chosen


def check_truth(truth: str | None, prompts: Sequence[Prompt]) -> None:
    """``math`` needs every prompt's gold answer: a ValueError naming the first without."""
    if truth != MATH_TRUTH:
        return
    missing = [p.id for p in prompts if p.answer is None]
    if missing:
        raise ValueError(
            f"--truth math needs prompts with an 'answer'; prompt {missing[0]} has none "
            f"({len(missing)} of {len(prompts)} lack one; use --prompts {MATH_PROMPTS})"
        )


def cache_resetter(runtime: Runtime) -> Callable[[], Awaitable[None]] | None:
    """The in-process engine's prefix-cache reset (``PrefixCached``); None for engines
    without one (remote)."""
    generator = runtime.generator
    return generator.reset_prefix_cache if isinstance(generator, PrefixCached) else None


def render(runtime: Runtime, prompt: Prompt, max_tokens: int) -> list[int]:
    ids = runtime.tokenizer.render_chat(prompt.conversation)
    if len(ids) + max_tokens > runtime.max_model_len:
        raise ValueError(
            f"prompt {prompt.id}: {len(ids)} tokens plus max tokens {max_tokens} exceed "
            f"the model's context length {runtime.max_model_len}"
        )
    return ids


async def run_one(
    runtime: Runtime,
    strategy: SearchStrategy,
    prompt: Prompt,
    prompt_ids: list[int],
    config: EvalConfig,
    clock: Callable[[], float] = time.perf_counter,
) -> Row:
    """One search as serving.py runs it, then the answer re-scored alone."""
    seed = config.seed + prompt.index
    sampling = SamplingConfig(
        max_tokens=config.max_tokens,
        temperature=config.temperature,
        seed=seed,
        logprobs=strategy.wants_logprobs(),
    )
    search_reward = reward_for(runtime, config.search_reward, prompt)
    context = SearchContext(
        generator=runtime.generator,
        reward=search_reward,
        tokenizer=runtime.tokenizer,
        conversation=prompt.conversation,
        prompt_ids=prompt_ids,
        sampling=sampling,
        utilities=runtime.utilities,
        dpo=runtime.dpo,
        reference=runtime.reference,
        # The step searches (beam_search, dvts, particle_filtering) score steps with it.
        prm=runtime.prm,
    )
    start = clock()
    result = await strategy.run(context)
    wall = clock() - start
    best = result.best
    # With the token ids the search's judge saw (its continuation layout reads them).
    ids = [[*prompt_ids, *best.completion.token_ids]] if search_reward.takes_token_ids else None
    [reward] = await search_reward.score(prompt.conversation, [best.text], token_ids=ids)
    truth = truth_pass = correct = None
    if config.truth == MATH_TRUTH:
        assert prompt.answer is not None  # check_truth ran before the searches
        # A thread: sympy's first import and a long answer's parse stay off the loop.
        correct = await asyncio.to_thread(is_correct, best.text, prompt.answer)
    elif config.truth is not None:
        truth_reward = reward_for(runtime, config.truth, prompt)
        [truth] = await truth_reward.score(prompt.conversation, [best.text])
        checks = truth_reward.constraints if isinstance(truth_reward, RequestReward) else None
        truth_pass = None if checks is None else checks.passed(best.text)
    budget = result.budget
    return Row(
        algorithm=strategy.name,
        n=strategy.n,
        prompt_id=prompt.id,
        seed=seed,
        reward=reward,
        search_reward=best.reward,
        generated_tokens=budget.generated_tokens,
        engine_calls=budget.engine_calls,
        reward_calls=budget.reward_calls,
        wall_s=wall,
        candidates=len(result.candidates),
        answer_tokens=best.completion.num_tokens,
        answer=best.text,
        timings={k: round(v, 4) for k, v in budget.phase_seconds.items()},
        truth=truth,
        truth_pass=truth_pass,
        correct=correct,
    )


def reward_for(runtime: Runtime, reward: str | dict[str, float] | None, prompt: Prompt) -> Any:
    """The named (or combined) reward with the prompt's constraints, as a request gets it."""
    if runtime.rewards is None:
        return runtime.reward
    options = RewardOptions(reward=reward, constraints=prompt.constraints)
    return runtime.rewards.for_request(options)


async def evaluate(
    runtime: Runtime,
    prompts: Sequence[Prompt],
    config: EvalConfig,
    *,
    progress: Callable[[Row], None] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> list[Row]:
    """All runs, in order prompt -> budget -> algorithm (Best-of-1 first when asked);
    ``progress`` sees each row."""
    strategies = config.strategies()
    check_truth(config.truth, prompts)
    reset = cache_resetter(runtime) if config.cold_cache else None
    rows = []
    for prompt in prompts:
        prompt_ids = render(runtime, prompt, config.max_tokens)
        for strategy in strategies.values():  # budget by budget, algorithms interleaved
            if reset is not None:
                await reset()
            row = await run_one(runtime, strategy, prompt, prompt_ids, config, clock)
            rows.append(row)
            if progress is not None:
                progress(row)
    return rows


def row_dicts(rows: Sequence[Row]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]
