"""An IFEval row sent to the default server as it is (`make serve`, the official openai
client): its ``instruction_id_list`` + ``kwargs`` as ``search.constraints`` with the
``constraints`` reward. The report's verdicts for every candidate must be IFEval's own,
recomputed here with lm-eval's ``test_instruction_following_strict`` on the candidate's
text. IFEval's prompts stay outside the repository (../shared/data); without them the
test is skipped, saying so."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from rewards.constraints.reference import load
from tests.conftest import SHARED_DATA
from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.e2e

PROMPTS = SHARED_DATA / "ifeval_input_data.jsonl"
# no_comma, number_highlighted_sections (at least 3) and number_words (at least 300): at 48
# tokens the word count always fails, the others go either way.
KEY = 1000


def ifeval_row(key: int) -> dict[str, Any]:
    if not PROMPTS.is_file():
        pytest.skip(f"IFEval's prompts not found at {PROMPTS} (../shared/data beside the repo)")
    rows = (json.loads(line) for line in PROMPTS.read_text().splitlines() if line.strip())
    return next(row for row in rows if row["key"] == key)


def ifeval_strict(row: dict[str, Any], response: str) -> list[bool]:
    load()  # nltk's punkt data offline, before lm-eval's module looks for it
    from lm_eval.tasks.ifeval.utils import InputExample, test_instruction_following_strict

    example = InputExample(row["key"], row["instruction_id_list"], row["prompt"], row["kwargs"])
    return list(test_instruction_following_strict(example, response).follow_instruction_list)


def test_an_ifeval_row_as_search_constraints_gets_ifevals_verdicts(client: openai.OpenAI) -> None:
    row = ifeval_row(KEY)
    constraints = [
        {"instruction_id": i, "kwargs": k}
        for i, k in zip(row["instruction_id_list"], row["kwargs"], strict=True)
    ]
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": row["prompt"]}],
        max_tokens=48,
        temperature=1.0,
        seed=7,
        extra_body={
            "search": {
                "algorithm": "bon",
                "n": 4,
                "reward": "constraints",
                "constraints": constraints,
                "return_candidates": True,
            }
        },
    )
    report = r.model_extra["search"]
    checks = report["constraints"]["checks"]
    assert [(c["instruction_id"], c["kwargs"]) for c in checks] == [
        (c["instruction_id"], c["kwargs"]) for c in constraints
    ]
    cands = report["candidates"]
    assert len(cands) == 4
    expected = [ifeval_strict(row, c["text"]) for c in cands]
    assert report["constraints"]["met"] == expected
    assert [c["reward"] for c in cands] == pytest.approx([sum(e) / 3 for e in expected])
    answer = r.choices[0].message.content
    assert answer == cands[report["chosen_index"]]["text"]
    assert report["constraints"]["met"][report["chosen_index"]] == ifeval_strict(row, answer)
    assert not any(m[2] for m in expected)  # 48 tokens are never 300 words
