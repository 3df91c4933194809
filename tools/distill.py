"""``alignserve distill RECORDS --out DIR``: train a model on what the searches found,
with Hugging Face TRL's trainers, and write a plain Hugging Face folder that ``alignserve
serve --model DIR`` loads.

``--method sft`` (the default) fine-tunes on the answers the server chose (the export's
``distill.jsonl``), the loss on the answer tokens only. That maximises E_{y ~ pi_BoN}
[log pi(y|x)] = -KL(pi_BoN || pi) - H(pi_BoN), H not depending on pi: it minimises the
forward KL to the Best-of-N policy, maximum-likelihood distillation of the target of
BOND (Sessa et al. 2024) and of variational BoN (Amini et al. 2024). It is neither
paper's method. BOND minimises a Jeffreys divergence (forward plus reverse KL) to the
BoN distribution of an anchor policy, whose likelihood it estimates from the policy's
own fresh samples by their reward quantiles, and iterates with a moving anchor
(J-BOND). vBoN minimises the reverse KL(pi || pi_BoN), an RL objective on the reward's
CDF under the reference policy, so it needs the reward model and on-policy samples
while training. Here the samples are the recorded ones, drawn once from the policy that
served them (off-policy, a fixed sample), and the reward model is never called; without
the reverse term the model spreads over the chosen answers (mass-covering) rather than
seeking their mode. The target is the selection the recorded searches made: pi_BoN for
``bon``, that algorithm's own answer distribution for the others.

``--method dpo`` runs TRL's DPOTrainer (the sigmoid loss, ``--beta``) on the exported
pairs: the highest-reward candidate (``--pairs best``, or the algorithm's choice with
``--pairs choice``) against the lowest-reward one of the same search, the base model as
the frozen reference (DPO, Rafailov et al. 2023). Searches without rewards give no pair.

Full fine-tuning (float32) suits small models on a CPU; ``--lora`` trains a peft LoRA
adapter (``--lora-r``, ``--lora-alpha``, every linear layer) on a GPU-sized model and
merges it before saving, so the folder is always a plain model. The folder holds
model.safetensors, config.json, generation_config.json and the tokenizer with its chat
template. It is written beside ``--out`` and renamed into place when complete.

Rows are read and checked before any model loads (``tools.distill_data``); a refusal is
one line and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from server.runtime import resolve_model
from tools.distill_data import DistillDataError, Rows, load_rows

# TRL's own defaults: SFT 2e-5, DPO 1e-6; a LoRA adapter takes about ten times more.
LEARNING_RATES = {
    ("sft", False): 2e-5,
    ("sft", True): 2e-4,
    ("dpo", False): 1e-6,
    ("dpo", True): 1e-5,
}
DEFAULT_MIN_ROWS = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("records", help="a --record directory, or an `alignserve export` --out one")
    parser.add_argument("--out", required=True, help="the model folder to write")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    parser.add_argument("--method", choices=["sft", "dpo"], default="sft")
    parser.add_argument(
        "--model", help="the base model (folder or hub id); default: the embedded default model"
    )
    parser.add_argument(
        "--model-cache-dir",
        default=os.environ.get("ALIGNSERVE_MODEL_CACHE_DIR"),
        help="where the embedded default model is converted (as serve's --model-cache-dir)",
    )
    parser.add_argument(
        "--pairs",
        choices=["best", "choice"],
        default="best",
        help="dpo pairs from records: highest reward (best) or the algorithm's choice vs lowest",
    )
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-steps", type=int, default=-1, help="stop here (overrides --epochs)")
    parser.add_argument(
        "--learning-rate",
        type=float,
        help="default: sft 2e-5, dpo 1e-6; with --lora sft 2e-4, dpo 1e-5",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="rows (pairs) per step")
    parser.add_argument("--max-length", type=int, default=1024, help="tokens per sequence")
    parser.add_argument("--beta", type=float, default=0.1, help="dpo: the KL strength")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logging-steps", type=int, default=10, help="print the loss this often")
    parser.add_argument(
        "--min-rows",
        type=int,
        default=DEFAULT_MIN_ROWS,
        help=f"refuse fewer usable rows (default {DEFAULT_MIN_ROWS})",
    )
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter, then merge it")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument(
        "--lora-target-modules", default="all-linear", help="peft target_modules (comma list)"
    )


def main(args: argparse.Namespace) -> int:
    try:
        run(args)
    except DistillDataError as exc:
        print(f"alignserve distill: {exc}", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace) -> None:
    out = check_out(Path(args.out), overwrite=args.overwrite)
    data = load_rows(args.records, args.method, pairs=args.pairs, min_rows=args.min_rows)
    print(f"{args.records} ({data.source}): {data.summary()}", flush=True)
    try:
        model_path = resolve_model(args.model, args.model_cache_dir)
    except RuntimeError as exc:  # the embedded default model's package is missing
        raise DistillDataError(str(exc)) from None
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.distill-", dir=out.parent))
    try:
        train(args, data, model_path, work)
        replace(work / "model", out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {out}: serve it with `alignserve serve --model {out}`", flush=True)


def check_out(out: Path, *, overwrite: bool) -> Path:
    """``out`` made absolute (a symbolic link is not followed), its parent created;
    refuses an existing path without --overwrite, and never replaces anything but a
    model folder or an empty one."""
    out = Path(os.path.abspath(out))
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise DistillDataError(f"{out} exists; pass --overwrite to replace it")
        if not out.is_dir() or out.is_symlink():
            raise DistillDataError(f"{out} is a link or not a folder; not replacing it")
        if any(out.iterdir()) and not (out / "config.json").is_file():
            raise DistillDataError(f"{out} is no model folder (no config.json); not replacing it")
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def replace(built: Path, out: Path) -> None:
    """Move the finished folder into place; an old one goes only once the new is there."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    built.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def trainer_config(args: argparse.Namespace, output_dir: Path, *, on_gpu: bool) -> Any:
    """The TRL config of ``args.method``. One seed for everything: weights (LoRA init),
    TRL/transformers' own seeding, and the order the sampler draws rows in."""
    from trl import DPOConfig, SFTConfig

    learning_rate = args.learning_rate
    if learning_rate is None:
        learning_rate = LEARNING_RATES[(args.method, args.lora)]
    common: dict[str, Any] = {
        "output_dir": str(output_dir),
        "seed": args.seed,
        "data_seed": args.seed,
        "num_train_epochs": args.epochs,
        "max_steps": args.max_steps,
        "learning_rate": learning_rate,
        "per_device_train_batch_size": args.batch_size,
        "max_length": args.max_length,
        "logging_steps": args.logging_steps,
        "save_strategy": "no",  # the folder is written once, at the end
        "report_to": "none",
        # bfloat16 autocast and activation checkpointing pay off on a GPU only; on a CPU
        # they make a small model slower.
        "bf16": on_gpu and bf16_supported(),
        "gradient_checkpointing": on_gpu,
        "dataloader_pin_memory": on_gpu,
    }
    if args.method == "sft":
        return SFTConfig(**common)
    return DPOConfig(beta=args.beta, **common)


def bf16_supported() -> bool:
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def train(args: argparse.Namespace, data: Rows, model_path: str, work: Path) -> None:
    import torch
    import transformers
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    transformers.set_seed(args.seed)
    on_gpu = torch.cuda.is_available()
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path)
        # A LoRA base is frozen, so bfloat16 weights lose nothing; full fine-tuning keeps
        # float32 master weights (mixed precision on a GPU).
        dtype = torch.bfloat16 if on_gpu and args.lora and bf16_supported() else torch.float32
        model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    except OSError as exc:
        raise DistillDataError(f"cannot load the model {model_path}: {exc}") from None
    if not tokenizer.chat_template:
        raise DistillDataError(f"{model_path} has no chat template; the rows are conversations")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    peft_config = None
    if args.lora:
        from peft import LoraConfig

        targets = args.lora_target_modules
        peft_config = LoraConfig(
            r=args.lora_r,
            lora_alpha=args.lora_alpha,
            target_modules=targets if targets == "all-linear" else targets.split(","),
            task_type="CAUSAL_LM",
        )
    config = trainer_config(args, work / "run", on_gpu=on_gpu)
    how = f"LoRA r={args.lora_r}" if args.lora else "full fine-tuning"
    print(
        f"{args.method} on {len(data.rows)} rows, base {model_path}, {how}, "
        f"{'cuda' if on_gpu else 'cpu'}, learning rate {config.learning_rate:g}, seed {args.seed}",
        flush=True,
    )
    trainer = make_trainer(
        args.method, model, tokenizer, config, Dataset.from_list(data.rows), peft_config
    )
    trainer.train()
    trained = trainer.accelerator.unwrap_model(trainer.model)
    if args.lora:
        trained = trained.merge_and_unload()
    trained.config.use_cache = True  # training turned the KV cache off; generation wants it
    trained.save_pretrained(work / "model", safe_serialization=True)
    tokenizer.save_pretrained(work / "model")


def make_trainer(
    method: str,
    model: Any,
    tokenizer: Any,
    config: Any,
    dataset: Any,
    peft_config: Any = None,
) -> Any:
    from trl import DPOTrainer, SFTTrainer

    trainer_class = SFTTrainer if method == "sft" else DPOTrainer
    return trainer_class(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
