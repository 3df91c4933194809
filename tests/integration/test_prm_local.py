"""LocalPRM on the default model's weights.

The fixture is the default model's transformer with a fixed, seeded two-label token
classification head (torch.manual_seed(0), normal std 0.02): a real
AutoModelForTokenClassification loaded from a folder like any PRM. Its tokenizer has no
``<extra_0>``, so LocalPRM adds it (the path a real Qwen PRM never takes).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rewards.prm_format import QWEN_PRM_SYSTEM
from rewards.prm_local import LocalPRM
from search.errors import RewardUnavailable
from tests.conftest import LoopTicks

pytestmark = pytest.mark.integration

SEP = "<extra_0>"
CONV = [{"role": "user", "content": "Janet has 3 apples and buys 2 more. How many now?"}]
STEPS = [
    ["Janet starts with 3 apples.\n\n", "She buys 2 more, so 3 + 2 = 5.\n\n", "\\boxed{5}"],
    ["Janet starts with 3 apples.\n\n"],
    ["Janet has 3 apples.\n\n", "3 * 2 = 6, so she has \\boxed{6}."],
]


@pytest.fixture(scope="session")
def prm_path(model_path: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import AutoConfig, AutoTokenizer, LlamaForTokenClassification

    config = AutoConfig.from_pretrained(model_path, num_labels=2)
    model = LlamaForTokenClassification.from_pretrained(model_path, config=config)
    torch.manual_seed(0)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 0.02)
        model.score.bias.zero_()
    out = tmp_path_factory.mktemp("prm")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(model_path).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def prm(prm_path: Path) -> LocalPRM:
    return LocalPRM(str(prm_path), batch_size=2)


async def test_scores_are_read_at_the_last_separator(prm: LocalPRM) -> None:
    import torch

    batched = await prm.score_last_steps(CONV, STEPS)
    assert prm.bounds == (0.0, 1.0) and not prm.takes_token_ids

    # Reference: each text alone (no padding), a plain forward pass, softmax index 1 at
    # the position of the last separator token; and at every other position, to show the
    # choice of row matters.
    sep_id = prm.tokenizer.convert_tokens_to_ids(SEP)
    for steps, score in zip(STEPS, batched, strict=True):
        text = prm.render(CONV, steps)
        assert text.count(SEP) == len(steps)
        assert QWEN_PRM_SYSTEM in text and "<|im_start|>assistant" in text
        ids = prm.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        positions = (ids[0] == sep_id).nonzero().flatten().tolist()
        assert len(positions) == len(steps)
        with torch.no_grad():
            probs = torch.softmax(prm.model(input_ids=ids).logits[0].float(), dim=-1)[:, 1]
        assert score == pytest.approx(float(probs[positions[-1]]), abs=1e-4)
        others = [float(p) for i, p in enumerate(probs) if i != positions[-1]]
        assert min(abs(score - p) for p in others) > 1e-4
    assert len({round(s, 4) for s in batched}) == 3


async def test_a_prefix_scores_as_its_own_last_step(prm: LocalPRM) -> None:
    # The PRM is causal: the score of step 1 of a three-step response is the score of
    # the one-step response, and an empty trailing step changes nothing.
    one = await prm.score_last_steps(CONV, [STEPS[0][:1], [*STEPS[0][:1], "\n\n"]])
    assert one[0] == pytest.approx(one[1], abs=1e-5)
    assert one[0] == pytest.approx((await prm.score_last_steps(CONV, STEPS[1:2]))[0], abs=1e-5)


async def test_the_added_separator_is_deterministic(prm_path: Path, prm: LocalPRM) -> None:
    again = LocalPRM(str(prm_path), batch_size=8)
    assert await again.score_last_steps(CONV, STEPS) == pytest.approx(
        await prm.score_last_steps(CONV, STEPS), abs=1e-4
    )


async def test_runs_off_the_event_loop(prm: LocalPRM) -> None:
    async with LoopTicks() as ticks:
        await prm.score_last_steps(CONV, STEPS * 6)
    assert ticks.count > 3, "the event loop was blocked while the PRM ran"


async def test_truncation_keeps_the_last_step(prm_path: Path, prm: LocalPRM) -> None:
    short = LocalPRM(str(prm_path), max_length=48)
    long_conv = [{"role": "user", "content": "word " * 200 + "How many apples?"}]
    scores = await short.score_last_steps(long_conv, STEPS)
    assert all(0.0 <= s <= 1.0 for s in scores)
    with pytest.raises(RewardUnavailable) as info:
        await LocalPRM(str(prm_path), max_length=1).score_last_steps(CONV, STEPS[:1])
    assert info.value.reason == "bad_value"


def test_refuses_a_model_it_cannot_read(prm_path: Path, tmp_path: Path) -> None:
    # Qwen2.5-Math-PRM's own class: only with trust_remote_code.
    remote = tmp_path / "remote"
    shutil.copytree(prm_path, remote)
    config = json.loads((remote / "config.json").read_text())
    config["architectures"] = ["Qwen2ForProcessRewardModel"]
    (remote / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="trust_remote_code"):
        LocalPRM(str(remote))

    # A checkpoint without its head would get a random one.
    headless = tmp_path / "headless"
    shutil.copytree(prm_path, headless)
    from safetensors.torch import load_file, save_file

    weights = load_file(headless / "model.safetensors")
    del weights["score.weight"]
    save_file(weights, headless / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"score\.weight"):
        LocalPRM(str(headless))
