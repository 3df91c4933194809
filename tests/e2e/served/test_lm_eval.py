"""lm-eval (pinned, a test dependency) as a real client of the server, run as its users
run it: the ``lm_eval`` command, ``--model local-completions`` with its default tokenizer
backend (no ``tokenizer_backend`` argument: it finds /tokenizer_info and /tokenize and
uses the server's tokenizer) on a generate_until and a multiple_choice task; and its
Python API, ``lm_eval.simple_evaluate``, for a search in ``gen_kwargs`` and for
``local-chat-completions`` with the chat template (the command builds an index of every
built-in task first, about 10 s a run, which the API's TaskManager can skip).

The tasks are local and tiny: their documents are a few lines of our own text, written
to a temporary folder with the task YAMLs; lm-eval reads them through ``datasets``' json
builder with the hub switched off (HF_HUB_OFFLINE, HF_DATASETS_OFFLINE), so it reaches
no network. Each run evaluates at most 5 documents per task; the assertions are that it
completes and reports its metrics as numbers (the 135M model's scores are not the point).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import MODEL

pytestmark = pytest.mark.e2e

LIMIT = 5
# Our own questions and answers (no third-party prompt text).
ARITHMETIC = [
    ("What is two plus two?", "4"),
    ("What is three plus four?", "7"),
    ("What is five minus one?", "4"),
    ("What is two times three?", "6"),
    ("What is ten minus two?", "8"),
]
COLOURS = [
    ("The colour of fresh grass is", [" green", " purple", " orange"], 0),
    ("The colour of a clear daytime sky is", [" black", " blue", " pink"], 1),
    ("The colour of fresh snow is", [" red", " brown", " white"], 2),
    ("The colour of a ripe lemon is", [" yellow", " grey", " violet"], 0),
    ("The colour of coal is", [" white", " black", " green"], 1),
]

GENERATE = """\
task: alignserve_arithmetic
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 8
  do_sample: false
  temperature: 0
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
    ignore_case: true
    ignore_punctuation: true
"""

CHOICE = """\
task: alignserve_colours
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The task folder for ``--include_path``: two task YAMLs and their data."""
    folder = tmp_path_factory.mktemp("lm_eval_tasks")
    arithmetic = folder / "arithmetic.jsonl"
    arithmetic.write_text(
        "".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in ARITHMETIC)
    )
    colours = folder / "colours.jsonl"
    colours.write_text(
        "".join(
            json.dumps({"question": q, "choices": c, "label": label}) + "\n"
            for q, c, label in COLOURS
        )
    )
    (folder / "alignserve_arithmetic.yaml").write_text(GENERATE.format(data=arithmetic))
    (folder / "alignserve_colours.yaml").write_text(CHOICE.format(data=colours))
    return folder


def offline_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets"),
        "OPENAI_API_KEY": "unused",
        "TOKENIZERS_PARALLELISM": "false",
    }


def lm_eval_command(
    tmp_path: Path, tasks: Path, model: str, model_args: str, task_names: str
) -> tuple[dict[str, Any], str]:
    """Run the ``lm_eval`` command; its results JSON and its log."""
    out = tmp_path / "out"
    command = [
        str(Path(sys.executable).with_name("lm_eval")),
        "run",
        "--model",
        model,
        "--model_args",
        model_args,
        "--include_path",
        str(tasks),
        "--tasks",
        task_names,
        "--limit",
        str(LIMIT),
        "--output_path",
        str(out),
    ]
    done = subprocess.run(
        command,
        env=offline_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    found = sorted(out.rglob("results_*.json"))
    assert found, log[-2000:]
    return json.loads(found[-1].read_text()), log


# lm_eval.simple_evaluate over our task folder alone, in a process of its own (the hub
# switched off before datasets is imported): its results as JSON.
EVALUATE = """
import json, sys
import lm_eval
from lm_eval.tasks import TaskManager

args = json.loads(sys.argv[1])
tasks = TaskManager(include_path=args.pop("include_path"), include_defaults=False)
results = lm_eval.simple_evaluate(task_manager=tasks, **args)
keep = {key: results[key] for key in ("results", "configs", "n-samples")}
print("RESULTS " + json.dumps(keep, default=str))
"""


def simple_evaluate(tmp_path: Path, folder: Path, **args: Any) -> dict[str, Any]:
    """``lm_eval.simple_evaluate(**args)`` over the tasks in ``folder``."""
    done = subprocess.run(
        [sys.executable, "-c", EVALUATE, json.dumps({"include_path": str(folder), **args})],
        env=offline_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULTS "))
    return dict(json.loads(line.removeprefix("RESULTS ")))


def metric(results: dict[str, Any], task: str, name: str) -> float:
    value = results["results"][task][f"{name},none"]
    assert isinstance(value, int | float) and not isinstance(value, bool), results["results"]
    assert 0.0 <= value <= 1.0
    return float(value)


def completions_args(server: str) -> str:
    # No tokenizer_backend: lm-eval's default probes the server's tokenizer routes.
    return f"model={MODEL},base_url={server}/v1/completions,num_concurrent=2,max_retries=1"


def test_local_completions_generate_until_and_multiple_choice(
    server: str, tasks: Path, tmp_path: Path
) -> None:
    results, log = lm_eval_command(
        tmp_path,
        tasks,
        "local-completions",
        completions_args(server),
        "alignserve_arithmetic,alignserve_colours",
    )
    assert "Using remote tokenizer backend" in log, log[-3000:]
    metric(results, "alignserve_arithmetic", "exact_match")
    # The choices' loglikelihoods, from the prompts' logprobs (echo).
    metric(results, "alignserve_colours", "acc")
    assert results["n-samples"]["alignserve_colours"]["effective"] == LIMIT


def test_local_completions_with_a_search(server: str, tasks: Path, tmp_path: Path) -> None:
    """A search in gen_kwargs, as lm-eval's users give it (the task's greedy decoding
    would run no search)."""
    search = {"algorithm": "bon", "n": 2}
    results = simple_evaluate(
        tmp_path,
        tasks,
        model="local-completions",
        model_args=completions_args(server),
        tasks=["alignserve_arithmetic"],
        limit=LIMIT,
        gen_kwargs={"temperature": 0.7, "search": search},
    )
    metric(results, "alignserve_arithmetic", "exact_match")
    assert results["configs"]["alignserve_arithmetic"]["generation_kwargs"]["search"] == search


def test_local_chat_completions_with_the_chat_template(
    server: str, tasks: Path, tmp_path: Path
) -> None:
    results = simple_evaluate(
        tmp_path,
        tasks,
        model="local-chat-completions",
        model_args=f"model={MODEL},base_url={server}/v1/chat/completions,num_concurrent=2",
        tasks=["alignserve_arithmetic"],
        limit=LIMIT,
        apply_chat_template=True,
    )
    metric(results, "alignserve_arithmetic", "exact_match")
