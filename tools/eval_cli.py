"""The ``alignserve eval`` command: its own flags (the engine, model and reward flags are
``serve``'s), then load the runtime once, warm it up, run :func:`tools.evaluation.evaluate`
with a progress bar and write the report. See ``tools/evaluation.py`` for what it measures.

    alignserve eval --algorithms bon,rbon_kl --budgets 4,8 --limit 20 --out results/
    alignserve eval --algorithms bon,beam_search --truth math \
        --prompts ../shared/data/gsm8k_test.jsonl --sample 100 --option beam_search.beam_width=2
    alignserve eval --tail-check --tail-n 16 --tail-samples 4,8 --limit 20

``--tail-check`` instead measures how well adaptive_bon's reward-tail estimators predict
Best-of-N from m samples (see ``tools/tail_check.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from rewards.spec import CONSTRAINTS
from search.errors import InvalidRequest
from search.types import SamplingConfig
from server.logs import setup_logging
from server.runtime import Runtime, load_runtime
from server.settings import Settings
from tools.eval_report import write_results
from tools.evaluation import (
    DEFAULT_ALGORITHMS,
    MATH_PROMPTS,
    MATH_TRUTH,
    EvalConfig,
    Prompt,
    Row,
    check_truth,
    evaluate,
    load_prompts,
    options_of,
    reward_for,
)
from tools.prompt_sets import HUB_SETS, MATH_DEFAULT
from tools.tail_check import error_table, tail_check

DEFAULT_OUT = Path(tempfile.gettempdir()) / "alignserve-eval"
RuntimeLoader = Callable[[Settings], Awaitable[Runtime]]


def _names(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in _names(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"want comma-separated integers, got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("evaluation")
    group.add_argument(
        "--algorithms",
        type=_names,
        default=DEFAULT_ALGORITHMS,
        help=f"comma-separated registered algorithms (default {','.join(DEFAULT_ALGORITHMS)})",
    )
    group.add_argument(
        "--budgets", type=_ints, default=(4, 8), help="comma-separated search n (default 4,8)"
    )
    group.add_argument(
        "--prompts",
        default=None,
        help='a JSONL file with "turns", "prompt" or "messages" per row, or GSM8K\'s, '
        "MATH-500's or IFEval's rows (tools/prompt_sets.py), or one of the hub datasets "
        f"{', '.join(HUB_SETS)} by name (default: the project's own verifiable prompts, "
        f"tools/data/verifiable_prompts.jsonl; with --truth math, {MATH_DEFAULT})",
    )
    group.add_argument(
        "--sample",
        type=int,
        default=None,
        help="use this many prompts drawn at random (by --sample-seed), before --offset/--limit",
    )
    group.add_argument("--sample-seed", type=int, default=0, help="the --sample draw's seed")
    group.add_argument("--offset", type=int, default=0, help="skip this many prompts first")
    group.add_argument("--limit", type=int, default=None, help="use at most this many prompts")
    group.add_argument("--max-tokens", type=int, default=64)
    group.add_argument("--temperature", type=float, default=0.8)
    group.add_argument(
        "--seed", type=int, default=0, help="request seed of prompt i is SEED + i (default 0)"
    )
    group.add_argument(
        "--option",
        dest="options",
        action="append",
        default=[],
        metavar="ALGO.KEY=VALUE",
        help="a strategy option, VALUE parsed as JSON when it is JSON (repeatable)",
    )
    group.add_argument(
        "--search-reward",
        type=_reward_choice,
        default=None,
        metavar="NAME|JSON",
        help='the searches\' reward, as search.reward: a name, or {"judge": 1, "constraints": 1} '
        "(default: the server's default reward); prompts' constraints go with it",
    )
    group.add_argument(
        "--truth",
        default=None,
        metavar="NAME",
        help="score every answer also with this reward, which the search does not optimise "
        "(constraints: pass rate and mean fraction of the prompts' checks met); or math: "
        "accuracy against each problem's gold answer, checked with math-verify (GSM8K's or "
        f"MATH-500's file, e.g. --prompts {MATH_PROMPTS})",
    )
    group.add_argument(
        "--best-of-1",
        action="store_true",
        help="also run one sample per prompt (bon, n=1) as the no-search baseline",
    )
    group.add_argument(
        "--cold-cache",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="empty the engine's prefix cache before every run (default on)",
    )
    group.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"folder for eval.json, eval.md, eval.png (default {DEFAULT_OUT})",
    )
    group.add_argument(
        "--tail-check",
        action="store_true",
        help="predicted vs observed best-of-N reward per tail estimator (tail_check.json)",
    )
    group.add_argument("--tail-n", type=int, default=16, help="the N to predict (default 16)")
    group.add_argument(
        "--tail-samples", type=_ints, default=(4, 8), help="samples m the estimators see"
    )


def _reward_choice(text: str) -> str | dict[str, float]:
    if not text.lstrip().startswith("{"):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"--search-reward: bad JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("--search-reward wants a name or a JSON object")
    return value


def check_rewards(settings: Settings, config: EvalConfig, prompts: list[Prompt]) -> None:
    """The reward names exist and prompts carry the constraints a constraints reward needs
    (and the answers --truth math needs); checked before any engine starts (ValueError)."""
    specs, default = settings.reward_specs
    known = {s.name for s in specs}
    search = config.search_reward or default
    names = set(search if isinstance(search, dict) else [search])
    check_truth(config.truth, prompts)
    if config.truth is not None and config.truth != MATH_TRUTH:
        names.add(config.truth)
    unknown = sorted(names - known)
    if unknown:
        raise ValueError(f"no reward named {unknown[0]!r}: have {', '.join(sorted(known))}")
    if CONSTRAINTS in names:
        missing = [p.id for p in prompts if not p.constraints]
        if missing:
            raise ValueError(
                f"the constraints reward needs prompts with constraints; {missing[0]} has none "
                "(use --prompts tools/data/verifiable_prompts.jsonl)"
            )


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(
        algorithms=tuple(args.algorithms),
        budgets=tuple(args.budgets),
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        seed=args.seed,
        options=options_of(args.options),
        cold_cache=args.cold_cache,
        search_reward=args.search_reward,
        truth=args.truth,
        best_of_1=args.best_of_1,
    )


async def warm_up(runtime: Runtime, prompt: Prompt, config: EvalConfig) -> None:
    """The first engine steps are slow; one small request keeps that out of the first run."""
    ids = runtime.tokenizer.render_chat(prompt.conversation)
    [completion] = await runtime.generator.generate(ids, SamplingConfig(max_tokens=8, seed=0), 1)
    reward = reward_for(runtime, config.search_reward, prompt)
    await reward.score(prompt.conversation, [completion.text])


async def run_eval(
    settings: Settings,
    config: EvalConfig,
    prompts: list[Prompt],
    out: Path,
    *,
    source: str,
    loader: RuntimeLoader = load_runtime,
) -> str:
    """Load the runtime, run every search, write the report; returns the markdown table."""
    from tqdm import tqdm

    runtime = await loader(settings)
    try:
        await warm_up(runtime, prompts[0], config)
        total = len(prompts) * len(config.strategies())
        with tqdm(total=total, unit="run", desc="eval", file=sys.stderr) as bar:

            def progress(row: Row) -> None:
                bar.set_postfix_str(f"{row.algorithm} n={row.n} prompt {row.prompt_id}")
                bar.update()

            rows = await evaluate(runtime, prompts, config, progress=progress)
        model = runtime.model_name
    finally:
        await runtime.close()
    record = {
        "eval": {
            "algorithms": list(config.algorithms),
            "budgets": list(config.budgets),
            "max_tokens": config.max_tokens,
            "temperature": config.temperature,
            "seed": config.seed,
            "options": {k: dict(v) for k, v in config.options.items()},
            "cold_cache": config.cold_cache,
            "search_reward": config.search_reward,
            "truth": config.truth,
            "best_of_1": config.best_of_1,
            "prompts": source,
            "prompt_ids": [p.id for p in prompts],
        },
        "model": model,
        "reward": settings.reward,
        "server": settings.model_dump(mode="json", exclude={"remote_api_key"}),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    title = (
        f"{model}, reward {config.search_reward or settings.default_reward or settings.reward[0]}"
        f"{f', truth {config.truth}' if config.truth else ''}: {len(prompts)} prompts, "
        f"max_tokens {config.max_tokens}, temperature {config.temperature}, seed {config.seed}"
    )
    _, table = write_results(out, record, rows, title)
    return table


async def run_tail_check(
    settings: Settings, args: argparse.Namespace, prompts: list[Prompt]
) -> str:
    from tqdm import tqdm

    runtime = await load_runtime(settings)
    try:
        await warm_up(runtime, prompts[0], EvalConfig())
        with tqdm(total=len(prompts), unit="prompt", desc="tail", file=sys.stderr) as bar:
            rows = await tail_check(
                runtime,
                prompts,
                n=args.tail_n,
                samples=args.tail_samples,
                max_tokens=args.max_tokens,
                temperature=args.temperature,
                seed=args.seed,
                progress=bar.update,
            )
    finally:
        await runtime.close()
    summary, table = error_table(rows, args.tail_n)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"n": args.tail_n, "max_tokens": args.max_tokens, "summary": summary, "rows": rows}
    (args.out / "tail_check.json").write_text(json.dumps(record, indent=2) + "\n")
    return table


def prompt_source(args: argparse.Namespace) -> str | None:
    """--prompts, or with --truth math and none given GSM8K on the hub."""
    if args.prompts is None and args.truth == MATH_TRUTH:
        return MATH_DEFAULT
    return None if args.prompts is None else str(args.prompts)


def prompts_of(args: argparse.Namespace) -> list[Prompt]:
    return load_prompts(
        prompt_source(args),
        offset=args.offset,
        limit=args.limit,
        sample=args.sample,
        sample_seed=args.sample_seed,
    )


def main(settings: Settings, args: argparse.Namespace) -> int:
    if args.tail_check:
        setup_logging(settings.log_level)
        prompts = prompts_of(args)
        print(asyncio.run(run_tail_check(settings, args, prompts)), end="")
        print(f"wrote {args.out / 'tail_check.json'}", file=sys.stderr)
        return 0
    try:
        config = config_from_args(args)
        config.strategies()  # bad algorithms or options fail here, before the engine starts
        prompts = prompts_of(args)
        check_rewards(settings, config, prompts)
    except (ValueError, OSError, InvalidRequest) as exc:
        print(f"alignserve eval: error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    source = prompt_source(args) or "verifiable prompts (tools/data)"
    if args.sample is not None:
        source += f", {args.sample} drawn with seed {args.sample_seed}"
    table = asyncio.run(run_eval(settings, config, prompts, args.out, source=source))
    print(table, end="")
    print(f"wrote {args.out / 'eval.json'}, eval.md and eval.png", file=sys.stderr)
    return 0
