"""``alignserve distill`` end to end on the CPU: a few search records in the recorder's
format, a few steps of sft and of dpo on the default model (run as a user runs the
command), the folders checked file by file and against the base model (sft raised the
chosen answers' likelihood, dpo the chosen-over-rejected margin), and the sft folder
served by ``alignserve serve --model FOLDER`` answering a chat request."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.recording import Recorder
from tests.conftest import ROOT, free_port, running_server

pytestmark = pytest.mark.integration

# (question, candidates best first, their rewards): what a Best-of-3 search records.
SEARCHES = [
    (
        "What is the capital of France?",
        ["The capital of France is Paris.", "It is Lyon, I think.", "Marseille."],
        [0.92, 0.31, 0.12],
    ),
    (
        "How many legs does a spider have?",
        ["A spider has eight legs.", "Spiders have six legs.", "Ten."],
        [0.88, 0.24, 0.15],
    ),
    (
        "What is 7 times 6?",
        ["7 times 6 is 42.", "7 times 6 is 36.", "It is 76."],
        [0.95, 0.2, 0.05],
    ),
    (
        "Which planet is closest to the Sun?",
        ["Mercury is the closest planet to the Sun.", "Venus.", "The Earth is closest."],
        [0.9, 0.35, 0.1],
    ),
    (
        "What do bees make?",
        ["Bees make honey and beeswax.", "Bees make milk.", "Nothing."],
        [0.86, 0.12, 0.08],
    ),
    (
        "Name the largest ocean on Earth.",
        ["The Pacific Ocean is the largest.", "The Atlantic.", "The Arctic Ocean."],
        [0.9, 0.4, 0.2],
    ),
]
STEPS = ["--max-steps", "3", "--batch-size", "2", "--logging-steps", "1", "--min-rows", "4"]


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("records")
    recorder = Recorder(directory)
    for i, (question, answers, rewards) in enumerate(SEARCHES):
        recorder.submit(
            {
                "id": f"chatcmpl-{i}",
                "algorithm": "bon",
                "options": {"n": 3},
                "conversation": [{"role": "user", "content": question}],
                "candidates": [
                    {
                        "text": text,
                        "token_ids": [1, 2],
                        "logprobs": [-0.5, -0.5],
                        "reward": reward,
                        "finish_reason": "stop",
                    }
                    for text, reward in zip(answers, rewards, strict=True)
                ],
                "chosen_index": 0,
                "rewarded": True,
            }
        )
    recorder.close()
    return directory


def distill(records: Path, out: Path, *extra: str) -> str:
    """Run the command as a user would; its output (stdout then stderr)."""
    done = subprocess.run(
        [str(ROOT / ".venv/bin/alignserve"), "distill", str(records), "--out", str(out), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def trained(records: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    base = tmp_path_factory.mktemp("models")
    folders = {"sft": base / "sft", "dpo": base / "dpo"}
    out = distill(records, folders["sft"], *STEPS, "--learning-rate", "1e-4")
    assert out.count("'loss'") == 3 and f"wrote {folders['sft']}" in out
    out = distill(records, folders["dpo"], "--method", "dpo", *STEPS, "--learning-rate", "5e-6")
    assert out.count("'loss'") == 3 and "'rewards/margins'" in out
    yield folders


def answer_logprobs(folder: str | Path, which: int) -> list[float]:
    """Summed log-probability of candidate ``which`` of each search, after its prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    sums = []
    for question, answers, _ in SEARCHES:
        conversation = [{"role": "user", "content": question}]
        prompt = tokenizer.apply_chat_template(conversation, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(
            [*conversation, {"role": "assistant", "content": answers[which]}]
        )
        prompt_ids, ids = list(prompt["input_ids"]), list(full["input_ids"])
        assert ids[: len(prompt_ids)] == prompt_ids
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1]
        logprobs = torch.log_softmax(logits, dim=-1)
        targets = torch.tensor(ids[1:])
        token = logprobs.gather(1, targets[:, None])[:, 0]
        sums.append(float(token[len(prompt_ids) - 1 :].sum()))
    return sums


def test_the_folders_are_plain_hugging_face_models(trained: dict[str, Path]) -> None:
    for folder in trained.values():
        files = {p.name for p in folder.iterdir()}
        assert files == {
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
            "chat_template.jinja",
        }
        config = json.loads((folder / "config.json").read_text())
        assert config["architectures"] == ["LlamaForCausalLM"] and config["use_cache"]
        assert "<|im_start|>assistant" in (folder / "chat_template.jinja").read_text()
        assert not list(folder.parent.glob(".*distill-*")), "a work folder was left behind"


def test_sft_raises_the_chosen_answers_and_dpo_the_margin(
    trained: dict[str, Path], model_path: str
) -> None:
    base_chosen = answer_logprobs(model_path, 0)
    sft_chosen = answer_logprobs(trained["sft"], 0)
    assert all(s > b for s, b in zip(sft_chosen, base_chosen, strict=True)), (
        sft_chosen,
        base_chosen,
    )
    base_margin = [c - r for c, r in zip(base_chosen, answer_logprobs(model_path, 2), strict=True)]
    dpo_margin = [
        c - r
        for c, r in zip(
            answer_logprobs(trained["dpo"], 0), answer_logprobs(trained["dpo"], 2), strict=True
        )
    ]
    assert sum(dpo_margin) > sum(base_margin), (dpo_margin, base_margin)


def test_serve_loads_the_sft_folder_and_answers(
    trained: dict[str, Path], cpu_env: dict[str, str]
) -> None:
    folder = trained["sft"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [str(ROOT / ".venv/bin/alignserve"), "serve", "--model", str(folder)]
    cmd += ["--port", str(port), "--max-model-len", "1024", "--log-level", "warning"]
    with running_server(cmd, cpu_env, url, "/ready", timeout_s=400):
        models = httpx.get(f"{url}/v1/models", timeout=30).json()
        assert [m["id"] for m in models["data"]] == [str(folder)]  # not the default model
        body = {
            "model": str(folder),
            "messages": [{"role": "user", "content": SEARCHES[0][0]}],
            "max_tokens": 16,
            "temperature": 0,
        }
        reply = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    choice = reply.json()["choices"][0]
    assert choice["message"]["content"].strip()
    assert reply.json()["usage"]["completion_tokens"] > 0


def test_a_seed_repeats_a_run_and_another_seed_does_not(
    records: Path, trained: dict[str, Path]
) -> None:
    from safetensors.torch import load_file

    again = trained["sft"].parent / "again"
    again.mkdir()
    (again / "config.json").write_text("{}")  # an older model folder: replaced with --overwrite
    distill(records, again, *STEPS, "--learning-rate", "1e-4", "--overwrite")
    other = trained["sft"].parent / "seed1"
    distill(records, other, *STEPS, "--learning-rate", "1e-4", "--seed", "1")
    first = load_file(trained["sft"] / "model.safetensors")
    repeated = load_file(again / "model.safetensors")
    reseeded = load_file(other / "model.safetensors")
    assert first.keys() == repeated.keys() == reseeded.keys()
    assert all(first[k].equal(repeated[k]) for k in first)
    # Another seed draws the rows in another order, so Adam ends elsewhere.
    assert not all(first[k].equal(reseeded[k]) for k in first)


def test_lora_is_merged_into_a_plain_model(
    records: Path, trained: dict[str, Path], model_path: str
) -> None:
    from safetensors.torch import load_file

    folder = trained["sft"].parent / "lora"
    out = distill(records, folder, *STEPS, "--max-steps", "2", "--lora", "--lora-r", "4")
    assert "LoRA r=4" in out
    base = load_file(Path(model_path) / "model.safetensors")
    merged = load_file(folder / "model.safetensors")
    assert merged.keys() == base.keys()  # no adapter tensors: a plain model
    changed = {k for k in base if not base[k].equal(merged[k])}
    assert changed and all(k.endswith("proj.weight") for k in changed), changed
