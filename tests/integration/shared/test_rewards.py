"""The judge on the real engine and the classifier on the default model's weights.

The classifier fixture is the default model's transformer with a fixed, seeded linear
head (torch.manual_seed(0), normal std 0.02, one label): a real
AutoModelForSequenceClassification that loads from a folder like any reward model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rewards.judge import JudgeReward
from tests.conftest import LoopTicks

pytestmark = pytest.mark.integration

CONVERSATION = [{"role": "user", "content": "What is the capital of France?"}]
RESPONSES = [
    "The capital of France is Paris.",
    "I like turtles.",
    "Paris is the capital and largest city of France, on the Seine.",
]


@pytest.fixture(scope="session")
def classifier_path(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForSequenceClassification

    config = AutoConfig.from_pretrained(model_path, num_labels=1)
    model = LlamaForSequenceClassification.from_pretrained(model_path, config=config)
    torch.manual_seed(0)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 0.02)
    out = tmp_path_factory.mktemp("classifier")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_path).save_pretrained(out)
    return out


async def test_judge_scores_are_graded_and_deterministic(engine, tokenizer) -> None:
    judge = JudgeReward(engine, tokenizer)
    first = await judge.score(CONVERSATION, RESPONSES)
    again = await judge.score(CONVERSATION, RESPONSES)
    assert len(first) == 3 and all(0.0 <= r <= 1.0 for r in first)
    assert first == pytest.approx(again, abs=1e-4)
    assert len({round(r, 4) for r in first}) == 3, "the judge gave no graded signal"
    alone = await judge.score(CONVERSATION, RESPONSES[1:2])
    assert alone[0] == pytest.approx(first[1], abs=0.02)


async def test_judge_partial_prompt_differs(engine, tokenizer) -> None:
    judge = JudgeReward(engine, tokenizer)
    full = await judge.score(CONVERSATION, RESPONSES[:1])
    partial = await judge.score(CONVERSATION, RESPONSES[:1], partial=True)
    assert full != partial


async def test_classifier_matches_a_plain_forward_pass(classifier_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    from rewards.classifier import ClassifierReward

    reward = ClassifierReward(str(classifier_path), batch_size=2)
    batched = await reward.score(CONVERSATION, RESPONSES)

    # Reference: each text alone (no padding), the same chat-template rendering.
    reference_model = AutoModelForSequenceClassification.from_pretrained(classifier_path)
    expected = []
    for response in RESPONSES:
        text = reward.render(CONVERSATION, response)
        ids = reward.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            expected.append(float(reference_model(**ids).logits[0, 0]))
    assert batched == pytest.approx(expected, abs=1e-3)
    assert len(set(batched)) == 3
    assert "<|im_start|>assistant" in reward.render(CONVERSATION, RESPONSES[0])


async def test_classifier_runs_off_the_event_loop(classifier_path: Path) -> None:
    from rewards.classifier import ClassifierReward

    reward = ClassifierReward(str(classifier_path))
    async with LoopTicks() as ticks:
        await reward.score(CONVERSATION, RESPONSES * 8)
    assert ticks.count > 3, "the event loop was blocked while the classifier ran"
