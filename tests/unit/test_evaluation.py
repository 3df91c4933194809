"""alignserve eval on fakes: rows, aggregates and ratios on a hand-computed example, prompt
files, option parsing and the written report."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

import pytest

from search.bon import BestOfN
from search.context import SearchContext
from search.errors import InvalidRequest
from search.fakes import CharTokenizer, ScriptedGenerator, TablePRM, TableReward
from search.protocols import PrefixCached
from search.registry import STRATEGIES
from search.types import SearchResult
from server.cli import settings_from_args
from server.runtime import Runtime
from tests.conftest import ROOT
from tools import eval_cli
from tools.cli import build_parser
from tools.eval_report import aggregate, markdown_table, write_results
from tools.evaluation import EvalConfig, Prompt, Row, evaluate, load_prompts, parse_option

# Each prompt's candidates, in generation order; a budget n takes the first n.
TEXTS = {
    "p0": ["x 5", "yy 9", "zzz 9"],
    "p1": ["a 1", "b 2", "cc 2"],
}
REWARDS = {"x 5": 0.9, "yy 9": 0.3, "zzz 9": 0.6, "a 1": 0.2, "b 2": 0.4, "cc 2": 0.1}
PROMPTS = [
    Prompt(0, "q0", [{"role": "user", "content": "p0"}]),
    Prompt(1, "q1", [{"role": "user", "content": "p1"}]),
]


def by_prompt(prompt_ids: Sequence[int], n: int) -> list[str]:
    text = CharTokenizer().decode(prompt_ids)
    return TEXTS["p0" if "p0" in text else "p1"][:n]


def fake_runtime(calls: int = 50) -> Runtime:
    return Runtime(
        generator=ScriptedGenerator([by_prompt] * calls),
        tokenizer=CharTokenizer(),
        reward=TableReward(REWARDS),
        model_name="fake",
        max_model_len=1000,
    )


def ticking_clock(step: float = 1.0) -> Callable[[], float]:
    now = [0.0]

    def clock() -> float:
        now[0] += step
        return now[0]

    return clock


async def test_rows_follow_prompt_budget_algorithm_order_and_rescore() -> None:
    runtime = fake_runtime()
    config = EvalConfig(algorithms=("bon", "majority"), budgets=(2, 3), seed=10)
    seen: list[Row] = []
    rows = await evaluate(runtime, PROMPTS, config, progress=seen.append)
    assert seen == rows
    got = [(r.prompt_id, r.n, r.algorithm, r.answer, r.reward, r.search_reward) for r in rows]
    # bon takes the best reward. majority (unweighted) votes on the last number: a tie goes
    # to the answer seen first, and it never calls the reward, so its own reward is 0.0.
    assert got == [
        ("q0", 2, "bon", "x 5", 0.9, 0.9),
        ("q0", 2, "majority", "x 5", 0.9, 0.0),
        ("q0", 3, "bon", "x 5", 0.9, 0.9),
        ("q0", 3, "majority", "yy 9", 0.3, 0.0),
        ("q1", 2, "bon", "b 2", 0.4, 0.4),
        ("q1", 2, "majority", "a 1", 0.2, 0.0),
        ("q1", 3, "bon", "b 2", 0.4, 0.4),
        ("q1", 3, "majority", "b 2", 0.4, 0.0),
    ]
    assert [r.generated_tokens for r in rows] == [7, 7, 12, 12, 6, 6, 10, 10]
    assert [(r.engine_calls, r.reward_calls) for r in rows[:2]] == [(1, 1), (1, 0)]
    assert [r.candidates for r in rows] == [2, 2, 3, 3, 2, 2, 3, 3]
    assert [r.seed for r in rows] == [10] * 4 + [11] * 4
    # Every engine call carries the prompt's seed, whatever the algorithm and budget.
    generator = runtime.generator
    assert isinstance(generator, ScriptedGenerator)
    assert [params.seed for _, params, _ in generator.calls] == [10] * 4 + [11] * 4
    # The answer is re-scored alone after each run (bon's own scoring call precedes it).
    reward = runtime.reward
    assert isinstance(reward, TableReward)
    assert reward.calls[:3] == [(["x 5", "yy 9"], False), (["x 5"], False), (["x 5"], False)]


class ColdEngine(ScriptedGenerator, PrefixCached):
    """An engine whose prefix cache can be emptied (``VLLMGenerator``)."""

    resets = 0

    async def reset_prefix_cache(self) -> None:
        self.resets += 1


async def test_cold_cache_resets_the_engines_cache_before_each_run() -> None:
    engine = ColdEngine([by_prompt] * 10)
    runtime = fake_runtime()
    runtime.generator = engine
    config = EvalConfig(algorithms=("bon",), budgets=(2,), cold_cache=True)
    await evaluate(runtime, PROMPTS, config)
    assert engine.resets == 2
    await evaluate(fake_runtime(), PROMPTS, config)  # an engine without one: no reset


async def test_aggregates_and_ratios_to_bon() -> None:
    config = EvalConfig(algorithms=("bon", "majority"), budgets=(2, 3))
    rows = await evaluate(fake_runtime(), PROMPTS, config, clock=ticking_clock())
    aggs = {(a.algorithm, a.n): a for a in aggregate(rows)}
    assert list(aggs) == [("bon", 2), ("majority", 2), ("bon", 3), ("majority", 3)]
    assert aggs["bon", 2].reward == pytest.approx(0.65)
    assert aggs["majority", 2].reward == pytest.approx(0.55)
    assert aggs["majority", 3].reward == pytest.approx(0.35)
    # Two rewards 0.3 and 0.4: stdev 0.0707, standard error 0.05.
    assert aggs["majority", 3].reward_se == pytest.approx(0.05)
    assert aggs["bon", 3].generated_tokens == 11.0
    assert aggs["majority", 3].reward_calls == 0.0 and aggs["bon", 3].reward_calls == 1.0
    assert aggs["majority", 2].tokens_vs_bon == 1.0 and aggs["bon", 2].wall_vs_bon == 1.0
    assert aggs["majority", 2].wall_s == 1.0  # the clock ticks once per read


def row(algorithm: str, n: int, reward: float, tokens: int, wall: float) -> Row:
    return Row(algorithm, n, "q", 0, reward, reward, tokens, 2, 3, wall, n, 1, "a")


def test_ratios_are_ratios_of_means_at_the_same_n() -> None:
    rows = [
        row("bon", 4, 0.5, 100, 2.0),
        row("tree", 4, 0.7, 60, 3.0),
        row("bon", 4, 0.7, 300, 2.0),
        row("tree", 4, 0.9, 140, 5.0),
        row("tree", 8, 0.8, 100, 1.0),
    ]
    aggs = {(a.algorithm, a.n): a for a in aggregate(rows)}
    tree = aggs["tree", 4]
    assert (tree.generated_tokens, tree.wall_s) == (100.0, 4.0)
    assert tree.tokens_vs_bon == pytest.approx(0.5)  # 100 / 200
    assert tree.wall_vs_bon == pytest.approx(2.0)  # 4 / 2
    # No bon at n=8: no ratio.
    assert aggs["tree", 8].tokens_vs_bon is None and aggs["tree", 8].wall_vs_bon is None
    table = markdown_table(list(aggs.values()))
    assert "| tree | 4 | 2 | 0.800 ± 0.100 | 100.0 | 4.00 | 2.0 | 3.0 | 0.50x | 2.00x |" in table
    assert "| tree | 8 | 1 | 0.800 ± 0.000 | 100.0 | 1.00 | 2.0 | 3.0 | – | – |" in table


def test_default_prompts_are_the_projects_own() -> None:
    # Third-party prompt sets (MT-Bench) are not shipped: the default is the project's own
    # verifiable prompts, each with its constraints.
    prompts = load_prompts()
    assert len(prompts) == 84
    assert prompts[0].id == "alignserve_001" and prompts[-1].id == "alignserve_084"
    assert prompts[0].conversation[0]["content"].startswith("Write a short email to your")
    assert all(p.constraints for p in prompts)
    sliced = load_prompts(offset=2, limit=3)
    assert [p.id for p in sliced] == ["alignserve_003", "alignserve_004", "alignserve_005"]
    assert [p.index for p in sliced] == [2, 3, 4]  # the seed follows the prompt, not the slice


def test_prompt_file_formats(tmp_path: Path) -> None:
    path = tmp_path / "prompts.jsonl"
    lines = [
        {"question_id": 7, "turns": ["first", "second"]},
        {"prompt": "plain", "id": "x"},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    prompts = load_prompts(path)
    assert [p.id for p in prompts] == ["7", "x", "2"]
    assert prompts[0].conversation == [{"role": "user", "content": "first"}]
    assert prompts[1].conversation == [{"role": "user", "content": "plain"}]
    assert prompts[2].conversation[0] == {"role": "system", "content": "s"}
    path.write_text('{"question": "no known field"}\n')
    with pytest.raises(ValueError, match="prompt 0: a prompt row needs"):
        load_prompts(path)
    with pytest.raises(ValueError, match="no prompts left"):
        load_prompts(offset=84)


def test_options_parse_per_algorithm() -> None:
    assert parse_option("treebon.layers=4") == ("treebon", "layers", 4)
    assert parse_option("majority.weighting=reward") == ("majority", "weighting", "reward")
    assert parse_option('majority.answer_regex="(\\\\d+)"') == (
        "majority",
        "answer_regex",
        "(\\d+)",
    )
    with pytest.raises(ValueError, match=r"ALGO\.KEY=VALUE"):
        parse_option("layers=4")
    argv = ["eval", "--algorithms", "bon,rbon_kl", "--budgets", "2,4", "--max-tokens", "16"]
    argv += ["--option", "rbon_kl.beta=0.5", "--reward", "judge", "--dtype", "float32"]
    args = build_parser().parse_args(argv)
    config = eval_cli.config_from_args(args)
    assert config.algorithms == ("bon", "rbon_kl") and config.budgets == (2, 4)
    strategies = config.strategies()
    assert strategies["rbon_kl", 4].model_dump() == {"n": 4, "beta": 0.5, "logprob": "mean"}
    assert settings_from_args(args).dtype == "float32"
    bad = EvalConfig(algorithms=("rbon_kl",), budgets=(2,), options={"rbon_kl": {"beta": "x"}})
    with pytest.raises(InvalidRequest, match=r"rbon_kl\.beta"):
        bad.strategies()
    with pytest.raises(InvalidRequest, match="unknown search algorithm 'nope'"):
        EvalConfig(algorithms=("nope",), budgets=(2,)).strategies()
    with pytest.raises(ValueError, match="not evaluated"):
        EvalConfig(algorithms=("bon",), options={"treebon": {"layers": 4}})
    with pytest.raises(ValueError, match="greedy"):
        EvalConfig(algorithms=("bon",), temperature=0.0)


def test_bad_options_fail_before_the_engine_starts(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(["eval", "--algorithms", "bon", "--option", "bon.k=1"])
    assert eval_cli.main(settings_from_args(args), args) == 2
    assert "invalid option bon.k" in capsys.readouterr().err


def test_outputs_are_written_and_reload(tmp_path: Path) -> None:
    rows = [row("bon", 2, 0.5, 10, 1.0), row("bon", 4, 0.6, 20, 2.0)]
    rows += [row("majority", 2, 0.4, 10, 0.5), row("majority", 4, 0.7, 20, 1.0)]
    aggs, table = write_results(tmp_path / "out", {"seed": 0}, rows, "title")
    document = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert document["settings"] == {"seed": 0}
    assert len(document["rows"]) == 4 and document["rows"][0]["algorithm"] == "bon"
    assert [a["wall_vs_bon"] for a in document["aggregates"]] == [1.0, 1.0, 0.5, 0.5]
    assert (tmp_path / "out" / "eval.md").read_text() == f"title\n\n{table}"
    assert (tmp_path / "out" / "eval.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert len(aggs) == 4


async def test_run_eval_end_to_end_on_fakes(tmp_path: Path) -> None:
    args = build_parser().parse_args(["eval", "--reward", "judge"])
    settings = settings_from_args(args)
    config = EvalConfig(algorithms=("bon", "rbon_kl"), budgets=(2,), seed=3)

    async def loader(_: object) -> Runtime:
        return fake_runtime()

    table = await eval_cli.run_eval(
        settings, config, PROMPTS, tmp_path, source="test", loader=loader
    )
    document = json.loads((tmp_path / "eval.json").read_text())
    record = document["settings"]
    assert record["model"] == "fake" and record["eval"]["prompt_ids"] == ["q0", "q1"]
    assert record["eval"]["seed"] == 3 and "remote_api_key" not in record["server"]
    assert [(r["algorithm"], r["prompt_id"]) for r in document["rows"]] == [
        ("bon", "q0"),
        ("rbon_kl", "q0"),
        ("bon", "q1"),
        ("rbon_kl", "q1"),
    ]
    assert "| rbon_kl | 2 | 2 |" in table


def test_eval_parser_keeps_serve_flags() -> None:
    args = build_parser().parse_args(["eval", "--model", "/m", "--engine-arg", "seed=1"])
    assert isinstance(args, argparse.Namespace)
    settings = settings_from_args(args)
    assert settings.model == "/m" and settings.engine_args == {"seed": 1}
    assert args.out == eval_cli.DEFAULT_OUT and args.algorithms == eval_cli.DEFAULT_ALGORITHMS


async def test_truth_scores_answers_with_a_reward_the_search_does_not_optimise() -> None:
    from rewards.choice import RewardSet
    from rewards.spec import parse_specs

    specs, default = parse_specs(["judge"], None)
    runtime = fake_runtime()
    runtime.rewards = RewardSet({"judge": runtime.reward}, specs, default)
    # "x 5" (the judge's best for p0) has a digit and no "yy"; p1's best "b 2" too.
    checks = [{"type": "forbidden_words", "words": ["x", "b"]}]
    prompts = [Prompt(p.index, p.id, p.conversation, checks) for p in PROMPTS]
    config = EvalConfig(algorithms=("bon",), budgets=(3,), truth="constraints", best_of_1=True)
    rows = await evaluate(runtime, prompts, config, clock=ticking_clock())
    assert [(r.prompt_id, r.n, r.answer) for r in rows] == [
        ("q0", 1, "x 5"),
        ("q0", 3, "x 5"),
        ("q1", 1, "a 1"),
        ("q1", 3, "b 2"),
    ]
    assert [r.truth_pass for r in rows] == [False, False, True, False]
    assert [r.truth for r in rows] == [0.0, 0.0, 1.0, 0.0]
    # Searching on the constraints instead finds the passing candidates.
    config = EvalConfig(
        algorithms=("bon",), budgets=(3,), truth="constraints", search_reward="constraints"
    )
    rows = await evaluate(runtime, prompts, config, clock=ticking_clock())
    assert [(r.answer, r.truth_pass, r.reward) for r in rows] == [
        ("yy 9", True, 1.0),
        ("a 1", True, 1.0),
    ]
    [bon] = aggregate(rows)
    assert (bon.pass_rate, bon.pass_rate_se, bon.truth) == (1.0, 0.0, 1.0)
    table = markdown_table(aggregate(rows))
    assert "| truth pass (± se) | truth (± se) | reward (± se) |" in table
    assert "| bon | 3 | 2 | 1.000 ± 0.000 | 1.000 ± 0.000 | 1.000 ± 0.000 |" in table


def test_truth_and_search_reward_names_are_checked_before_the_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = build_parser().parse_args(["eval", "--truth", "gold", "--limit", "1"])
    assert eval_cli.main(settings_from_args(args), args) == 2
    assert "no reward named 'gold'" in capsys.readouterr().err
    plain = tmp_path / "plain.jsonl"
    plain.write_text('{"prompt": "hi"}\n')
    command = ["eval", "--truth", "constraints", "--prompts", str(plain), "--limit", "1"]
    args = build_parser().parse_args(command)
    assert eval_cli.main(settings_from_args(args), args) == 2
    assert "needs prompts with constraints" in capsys.readouterr().err
    args = build_parser().parse_args(["eval", "--search-reward", '{"judge": 1, "constraints": 1}'])
    assert args.search_reward == {"judge": 1, "constraints": 1}


def math_prompts() -> list[Prompt]:
    # Gold answers: q0's is 9 (bon's best "x 5" misses it, the majority's "yy 9" has it),
    # q1's is 2 (both choose "b 2" at n=3).
    golds = {"q0": "9", "q1": "2"}
    return [Prompt(p.index, p.id, p.conversation, answer=golds[p.id]) for p in PROMPTS]


async def test_truth_math_is_the_accuracy_of_the_chosen_answers(tmp_path: Path) -> None:
    config = EvalConfig(algorithms=("bon", "majority"), budgets=(3,), truth="math")
    rows = await evaluate(fake_runtime(), math_prompts(), config, clock=ticking_clock())
    got = [(r.prompt_id, r.algorithm, r.answer, r.correct) for r in rows]
    assert got == [
        ("q0", "bon", "x 5", False),
        ("q0", "majority", "yy 9", True),
        ("q1", "bon", "b 2", True),
        ("q1", "majority", "b 2", True),
    ]
    assert all(r.truth is None and r.truth_pass is None for r in rows)
    aggs = {a.algorithm: a for a in aggregate(rows)}
    assert (aggs["bon"].accuracy, aggs["majority"].accuracy) == (0.5, 1.0)
    assert aggs["bon"].accuracy_se == pytest.approx(0.5)
    # Accuracy sits beside the tokens it cost; no constraints columns.
    _, table = write_results(tmp_path, {"eval": {"truth": "math"}}, rows, "math")
    assert "| reward (± se) | accuracy (± se) | tokens |" in table
    assert "truth pass" not in table
    assert "| bon | 3 | 2 | 0.650 ± 0.250 | 0.500 ± 0.500 | 11.0 |" in table
    assert "| majority | 3 | 2 | 0.350 ± 0.050 | 1.000 ± 0.000 | 11.0 |" in table
    document = json.loads((tmp_path / "eval.json").read_text())
    assert [r["correct"] for r in document["rows"]] == [False, True, True, True]
    assert document["aggregates"][1]["accuracy"] == 1.0


async def test_truth_math_refuses_prompts_without_answers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = EvalConfig(algorithms=("bon",), budgets=(2,), truth="math")
    with pytest.raises(ValueError, match=r"--truth math needs prompts with an 'answer'.*q0"):
        await evaluate(fake_runtime(), PROMPTS, config)
    # From the command line: refused before any engine starts, the verifiable prompts have
    # no answers (with no --prompts, --truth math reads GSM8K: tests/unit/test_prompt_sets).
    verifiable = str(ROOT / "tools" / "data" / "verifiable_prompts.jsonl")
    args = build_parser().parse_args(
        ["eval", "--truth", "math", "--limit", "2", "--prompts", verifiable]
    )
    assert eval_cli.main(settings_from_args(args), args) == 2
    err = capsys.readouterr().err
    assert "--truth math needs prompts with an 'answer'; prompt alignserve_001 has none" in err
    assert "../shared/data/gsm8k_test.jsonl" in err
    # A file where one row lacks its answer names that row.
    path = tmp_path / "math.jsonl"
    path.write_text('{"prompt": "1+1?", "answer": 2}\n{"prompt": "2+2?", "id": "no-gold"}\n')
    args = build_parser().parse_args(["eval", "--truth", "math", "--prompts", str(path)])
    assert eval_cli.main(settings_from_args(args), args) == 2
    assert "prompt no-gold has none" in capsys.readouterr().err


def test_truth_math_is_not_a_reward_name() -> None:
    # "math" needs no --reward of that name; the prompts' answers are all it needs.
    args = build_parser().parse_args(["eval", "--truth", "math", "--reward", "judge"])
    config = eval_cli.config_from_args(args)
    prompts = load_prompts(ROOT / "tools" / "data" / "math_problems.jsonl", limit=4)
    eval_cli.check_rewards(settings_from_args(args), config, prompts)
    assert [p.answer for p in prompts] == [
        json.loads(line)["answer"]
        for line in (ROOT / "tools/data/math_problems.jsonl").read_text().splitlines()[:4]
    ]


class PRMProbe(BestOfN):
    """bon that records the process reward model its context carries and takes an option,
    standing in for the step searches (beam_search, dvts, particle_filtering)."""

    name: ClassVar[str] = "prm_probe"
    tag: str = ""
    seen: ClassVar[list[tuple[str, object]]] = []

    async def run(self, ctx: SearchContext) -> SearchResult:
        PRMProbe.seen.append((self.tag, ctx.prm))
        return await super().run(ctx)


async def test_the_search_gets_the_runtime_prm_and_its_options(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(STRATEGIES, "prm_probe", PRMProbe)
    monkeypatch.setattr(PRMProbe, "seen", [])
    prm = TablePRM({})
    runtime = fake_runtime()
    runtime.prms, runtime.default_prm = {"judge": prm}, "judge"
    argv = ["eval", "--algorithms", "prm_probe", "--budgets", "2", "--truth", "math"]
    argv += ["--option", "prm_probe.tag=wide"]
    config = eval_cli.config_from_args(build_parser().parse_args(argv))
    rows = await evaluate(runtime, math_prompts(), config)
    assert PRMProbe.seen == [("wide", prm), ("wide", prm)]
    assert [r.algorithm for r in rows] == ["prm_probe", "prm_probe"]
    # Without a --prm the context carries none (a step search then answers 503).
    fake = fake_runtime()
    await evaluate(fake, math_prompts()[:1], config)
    assert PRMProbe.seen[-1] == ("wide", None)
