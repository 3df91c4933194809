"""Write tests/data/ifeval_responses.jsonl: the default model's answers to IFEval's prompts.

The conformance test (tests/unit/test_ifeval_conformance.py) scores these answers with the
server's ``constraints`` verifier and with lm-eval's IFEval checks and requires the same
verdicts. Real answers of the real model give the checks the text they meet in practice
(markdown bullets, ``***`` dividers, half-followed formats), which hand-made cases miss.

Only the model's answers are written, keyed by IFEval's ``key``: the prompts are
third-party text and stay in ``../shared/data/ifeval_input_data.jsonl``. Sampled with the
in-process engine (the server's own), ``--samples`` answers per prompt at temperature 1.0,
seed = the prompt's key, so a rerun on the same engine build writes the same answers.

    .venv/bin/python scripts/make_ifeval_corpus.py [--samples 2] [--max-tokens 256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT.parent / "shared" / "data" / "ifeval_input_data.jsonl"
OUTPUT = ROOT / "tests" / "data" / "ifeval_responses.jsonl"


async def generate(rows: list[dict[str, Any]], samples: int, max_tokens: int, out: Path) -> None:
    """Answers in the prompts' order; each row is also appended to ``out.partial`` as it
    finishes, so an interrupted run keeps what it generated."""
    from engines.tokenizer import HFChatTokenizer
    from engines.vllm_local import VLLMGenerator
    from search.types import SamplingConfig
    from server.runtime import engine_config, resolve_model
    from server.settings import Settings

    settings = Settings()
    model = resolve_model(settings.model, settings.model_cache_dir)
    tokenizer = HFChatTokenizer.load(model)
    generator = await asyncio.to_thread(VLLMGenerator.start, engine_config(settings, model))
    limit = asyncio.Semaphore(48)
    done = 0
    started = time.monotonic()

    async def one(row: dict[str, Any]) -> str:
        nonlocal done
        ids = tokenizer.render_chat([{"role": "user", "content": row["prompt"]}])
        params = SamplingConfig(max_tokens=max_tokens, temperature=1.0, seed=int(row["key"]))
        async with limit:
            completions = await generator.generate(ids, params, n=samples)
        done += 1
        if done % 50 == 0:
            print(f"{done}/{len(rows)} prompts, {time.monotonic() - started:.0f} s", flush=True)
        line = json.dumps(
            {"key": row["key"], "responses": [c.text for c in completions]}, ensure_ascii=False
        )
        with partial.open("a", encoding="utf-8") as f:
            f.write(line + "\n")
        return line

    partial = out.with_name(out.name + ".partial")
    partial.unlink(missing_ok=True)
    try:
        lines = await asyncio.gather(*(one(r) for r in rows))
        out.write_text("\n".join(lines) + "\n", encoding="utf-8")
        partial.unlink()
        print(f"wrote {len(lines)} rows to {out}")
    finally:
        generator.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=Path, default=PROMPTS)
    parser.add_argument("--out", type=Path, default=OUTPUT)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()
    rows = [json.loads(ln) for ln in args.prompts.read_text(encoding="utf-8").splitlines() if ln]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    asyncio.run(generate(rows, args.samples, args.max_tokens, args.out))


if __name__ == "__main__":
    main()
