"""tools/prompt_sets.py: GSM8K's, MATH-500's and IFEval's rows as eval prompts, the seeded
sample, and the hub names. Rows written here are made up in the datasets' shapes; the real
files (../shared/data, outside the repository) are read when present, every gold answer
checked against itself with math-verify, and skipped, saying so, when absent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rewards.math_truth import is_correct
from server.cli import settings_from_args
from tests.conftest import SHARED_DATA
from tools import eval_cli, prompt_sets
from tools.cli import build_parser
from tools.evaluation import load_prompts
from tools.prompt_sets import MATH_INSTRUCTION, fields_of, read_rows, sample

GSM8K = SHARED_DATA / "gsm8k_test.jsonl"
MATH500 = SHARED_DATA / "math500_test.jsonl"
IFEVAL = SHARED_DATA / "ifeval_input_data.jsonl"


def shared(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path.name} not found in {SHARED_DATA} (../shared/data beside the repo)")
    return path


def test_a_gsm8k_row_asks_for_a_box_and_keeps_the_number_after_the_mark() -> None:
    row = {"question": "Ann has 1,200 beads.", "answer": "So 1,200 + 5 = 1,205.\n#### 1,205"}
    fields = fields_of(row)
    assert fields.answer == "1205"
    assert fields.conversation == [
        {"role": "user", "content": f"Ann has 1,200 beads. {MATH_INSTRUCTION}"}
    ]
    assert fields.id is None and fields.constraints is None
    # A "question" without GSM8K's mark is no GSM8K row.
    with pytest.raises(ValueError, match="needs 'turns', 'prompt' or 'messages'"):
        fields_of({"question": "no mark", "answer": "4"})


def test_a_math500_row_keeps_its_latex_answer_and_id() -> None:
    row = {"problem": "Find $x$.", "answer": "\\frac{1}{2}", "unique_id": "test/algebra/1.json"}
    fields = fields_of(row)
    assert (fields.answer, fields.id) == ("\\frac{1}{2}", "test/algebra/1.json")
    assert fields.conversation[0]["content"] == f"Find $x$.\n\n{MATH_INSTRUCTION}"


def test_an_ifeval_row_becomes_its_own_checks_in_ifevals_form() -> None:
    # The hub's copy has every kwarg of every instruction, null where unused.
    row = {
        "key": 9,
        "prompt": "Write a poem.",
        "instruction_id_list": ["punctuation:no_comma", "length_constraints:number_words"],
        "kwargs": [{"num_words": None}, {"num_words": 50, "relation": "at least"}],
    }
    fields = fields_of(row)
    assert fields.id == "9" and fields.answer is None
    assert fields.constraints == [
        {"instruction_id": "punctuation:no_comma", "kwargs": {}},
        {
            "instruction_id": "length_constraints:number_words",
            "kwargs": {"num_words": 50, "relation": "at least"},
        },
    ]


def test_the_sample_is_seeded_in_file_order_and_bounded() -> None:
    drawn = sample(541, 150, seed=26)
    assert drawn == sample(541, 150, seed=26) and drawn == sorted(set(drawn))
    assert len(drawn) == 150 and drawn != sample(541, 150, seed=27)
    for bad in (0, 542):
        with pytest.raises(ValueError, match="between 1 and the 541 rows"):
            sample(541, bad, seed=0)


def test_a_sampled_prompt_keeps_its_line_index(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(10)))
    prompts = load_prompts(path, sample=4, sample_seed=3)
    assert [p.index for p in prompts] == sample(10, 4, seed=3)
    assert [p.conversation[0]["content"] for p in prompts] == [f"p{i}" for i in sample(10, 4, 3)]
    assert [p.index for p in load_prompts(path, sample=4, sample_seed=3, offset=1, limit=2)] == [
        p.index for p in prompts[1:3]
    ]


def test_a_name_is_a_hub_dataset_only_when_it_is_a_known_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ValueError, match="no such file, nor one of the hub datasets openai/gsm8k"):
        read_rows("someone/gsm8k")
    asked: list[Any] = []

    def hub_rows(hub: prompt_sets.HubSet) -> list[dict[str, Any]]:
        asked.append(hub)
        return [{"question": "1 + 1?", "answer": "#### 2"}]

    monkeypatch.setattr(prompt_sets, "_hub_rows", hub_rows)
    assert read_rows("openai/gsm8k") == [{"question": "1 + 1?", "answer": "#### 2"}]
    assert asked == [prompt_sets.HubSet("openai/gsm8k", "main", "test")]


def test_truth_math_with_no_prompts_reads_gsm8k_from_the_hub(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def offline(hub: prompt_sets.HubSet) -> list[dict[str, Any]]:
        raise ValueError(f"cannot load {hub.name} from the hub (offline); pass the data file")

    monkeypatch.setattr(prompt_sets, "_hub_rows", offline)
    args = build_parser().parse_args(["eval", "--truth", "math", "--limit", "2"])
    assert eval_cli.prompt_source(args) == "openai/gsm8k"
    assert eval_cli.main(settings_from_args(args), args) == 2
    assert "cannot load openai/gsm8k from the hub" in capsys.readouterr().err


def test_every_gsm8k_test_answer_is_read_and_matches_itself() -> None:
    prompts = load_prompts(shared(GSM8K))
    assert len(prompts) == 1319 and prompts[0].id == "0"
    for p in prompts:
        assert p.answer is not None and p.answer.lstrip("-").replace(".", "").isdigit(), p
        assert is_correct(f"The answer is \\boxed{{{p.answer}}}.", p.answer), p
    assert not is_correct("\\boxed{17}", prompts[0].answer or "")  # Janet's ducks: 18


def test_every_math500_answer_is_read_and_matches_itself() -> None:
    prompts = load_prompts(shared(MATH500))
    assert len(prompts) == 500 and len({p.id for p in prompts}) == 500
    unreadable = [p.id for p in prompts if not is_correct(f"\\boxed{{{p.answer}}}", p.answer or "")]
    assert unreadable == []


def test_ifeval_rows_load_with_their_checks() -> None:
    prompts = load_prompts(shared(IFEVAL))
    assert len(prompts) == 541 and all(p.constraints for p in prompts)
    assert sum(len(p.constraints or []) for p in prompts) == 834  # IFEval's instructions
