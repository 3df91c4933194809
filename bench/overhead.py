"""Best-of-8 overhead: the HTTP server against the raw engine doing the same work.

In one process and on one engine: for each MT-Bench first turn, (a) raw: one n=8
generation on the engine plus one judge call scoring the 8 responses (the continuation
layout, as the server's); (b) the same request through the HTTP server (uvicorn on
127.0.0.1) with the official openai client; (c) the floor: the n=8 generation alone, no
scoring. All use the same seed, so they generate the same tokens and score the same texts;
each starts with an empty prefix cache, and the order of (a) and (b) alternates. Prints
each row, the median ratios HTTP / raw and HTTP / floor, and the median of the HTTP
report's ``timings.score / timings.generate``. Ratios, not absolute times: this machine
is shared and noisy.

    .venv/bin/python bench/overhead.py [--questions 10] [--max-tokens 64] [--n 8]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# FastChat's questions, kept outside the repository (../shared/data/README.md).
MT_BENCH = ROOT.parent / "shared" / "data" / "mt_bench_questions.jsonl"


def first_turns(skip: int, limit: int) -> list[str]:
    from tools.evaluation import load_prompts

    prompts = load_prompts(MT_BENCH, offset=skip, limit=limit)
    return [p.conversation[-1]["content"] for p in prompts]


async def main(args: argparse.Namespace) -> None:
    import openai
    import uvicorn

    from engines.default_model import DEFAULT_MODEL_NAME, ensure_default_model
    from engines.tokenizer import HFChatTokenizer
    from engines.vllm_local import EngineConfig, VLLMGenerator
    from rewards.judge import JudgeReward
    from search.types import SamplingConfig
    from server.app import create_app
    from server.runtime import Runtime
    from server.settings import Settings
    from tests.conftest import free_port

    model = str(ensure_default_model())
    engine = VLLMGenerator.start(EngineConfig(model=model, max_model_len=4096))
    tokenizer = HFChatTokenizer.load(model)
    judge = JudgeReward(engine, tokenizer)
    runtime = Runtime(engine, tokenizer, judge, DEFAULT_MODEL_NAME, engine.max_model_len)
    port = free_port()
    settings = Settings(port=port)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, runtime=runtime), port=port, log_level="warning")
    )
    serving = asyncio.ensure_future(server.serve())
    while not server.started:
        await asyncio.sleep(0.05)
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x")

    async def cold() -> None:
        # The second run of a pair would find the first's judge prompts in the prefix
        # cache; start both from an empty cache so they do the same work.
        await engine.engine.reset_prefix_cache()

    async def raw(question: str, seed: int, score: bool = True) -> float:
        await cold()
        start = time.perf_counter()
        conversation = [{"role": "user", "content": question}]
        ids = tokenizer.render_chat(conversation)
        params = SamplingConfig(max_tokens=args.max_tokens, seed=seed)
        completions = await engine.generate(ids, params, args.n)
        if score:
            texts = [c.text for c in completions]
            await judge.score(
                conversation, texts, token_ids=[[*ids, *c.token_ids] for c in completions]
            )
        return time.perf_counter() - start

    async def http(question: str, seed: int) -> tuple[float, float]:
        """Seconds, and the report's score time over its generate time."""
        await cold()
        start = time.perf_counter()
        reply = await client.chat.completions.create(
            model=DEFAULT_MODEL_NAME,
            messages=[{"role": "user", "content": question}],
            max_tokens=args.max_tokens,
            seed=seed,
            extra_body={"search": {"algorithm": "bon", "n": args.n}},
        )
        seconds = time.perf_counter() - start
        timings = (reply.model_extra or {})["search"]["timings"]
        return seconds, timings.get("score", 0.0) / timings["generate"]

    await raw("Hello!", 0)  # warm-up: first engine steps are slow
    await http("Hello!", 0)
    ratios, floors, shares = [], [], []
    print(f"Best-of-{args.n}, {args.max_tokens} tokens, MT-Bench first turns")
    print(
        f"{'q':>3} {'floor s':>7} {'raw s':>7} {'http s':>7} {'http/raw':>8} "
        f"{'http/floor':>10} {'score/gen':>9}"
    )
    for i, question in enumerate(first_turns(args.skip, args.questions)):
        seed = 1000 + i
        if i % 2 == 0:
            t_raw, (t_http, share) = await raw(question, seed), await http(question, seed)
        else:
            (t_http, share), t_raw = await http(question, seed), await raw(question, seed)
        t_floor = await raw(question, seed, score=False)
        ratios.append(t_http / t_raw)
        floors.append(t_http / t_floor)
        shares.append(share)
        print(
            f"{i:>3} {t_floor:7.2f} {t_raw:7.2f} {t_http:7.2f} {ratios[-1]:8.3f} "
            f"{floors[-1]:10.3f} {share:9.3f}"
        )
    for name, values in (("HTTP/raw", ratios), ("HTTP/floor", floors), ("score/generate", shares)):
        print(
            f"median {name}: {statistics.median(values):.3f} "
            f"(min {min(values):.3f}, max {max(values):.3f}, {len(values)} questions)"
        )
    server.should_exit = True
    await serving
    engine.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=10)
    parser.add_argument("--skip", type=int, default=0, help="index of the first MT-Bench question")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--n", type=int, default=8)
    asyncio.run(main(parser.parse_args()))
