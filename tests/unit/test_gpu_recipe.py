"""bench/gpu_search_and_learn.py is import-safe (no openai, datasets or GPU at import) and
its arguments, search objects and table are right; the run itself needs a GPU."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from types import ModuleType

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "bench" / "gpu_search_and_learn.py"


def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_search_and_learn", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses resolve annotations through it
    spec.loader.exec_module(module)
    return module


def test_imports_without_its_heavy_dependencies() -> None:
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1], run_name='probe'); "
        "print(sorted({'openai', 'datasets', 'torch', 'vllm'} & set(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(SCRIPT)], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_help_and_defaults() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=True
    )
    assert "--methods" in done.stdout and "--jsonl" in done.stdout
    args = script().build_parser().parse_args([])
    assert (args.n, args.methods) == ([4, 16], ["best_of_n", "beam_search"])
    assert (args.max_tokens, args.temperature, args.model) == (
        2048,
        0.8,
        "meta-llama/Llama-3.2-1B-Instruct",
    )
    assert args.dataset == "HuggingFaceH4/MATH-500" and args.split == "test"


def test_search_objects_and_options() -> None:
    module = script()
    argv = ["--n", "4,16", "--option", "beam_search.beam_width=2", "--jsonl", "m.jsonl"]
    args = module.build_parser().parse_args(argv)
    options = module.parse_options(args.options, args.methods)
    bon = module.search_object("best_of_n", 16, 2048, options)
    assert bon == {"algorithm": "beam_search", "n": 16, "beam_width": 16, "max_steps": 1}
    beam = module.search_object("beam_search", 16, 2048, options)
    assert (beam["beam_width"], beam["max_steps"], beam["max_step_tokens"]) == (2, 40, 2048)
    with pytest.raises(ValueError, match="not run"):
        module.parse_options(["dvts.beam_width=2"], args.methods)


def test_table_is_accuracy_beside_tokens() -> None:
    module = script()
    results = [
        module.Result("beam_search", 4, "a", True, 100, 1.0, "x"),
        module.Result("beam_search", 4, "b", False, 300, 3.0, "y"),
        module.Result("best_of_n", 4, "a", True, 50, 1.0, "x", error=None),
        module.Result("best_of_n", 4, "b", False, 0, 1.0, "", error="APIError: 503"),
    ]
    text = module.table(results)
    assert "| beam_search | 4 | 2 | 0.500 ± 0.500 | – | 200 | 2.0 | 0 |" in text
    assert "| best_of_n | 4 | 2 | 0.500 ± 0.500 | – | 25 | 1.0 | 1 |" in text
