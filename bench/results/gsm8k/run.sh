#!/usr/bin/env bash
# GSM8K Best-of-1 on the CPU (docs/ifeval.md, issue 26): a seeded 100-problem sample of the
# test set (../shared/data/gsm8k_test.jsonl, --sample 100 --sample-seed 0), greedy, 256
# tokens, answers checked with math-verify; the embedded SmolLM2-135M-Instruct.
set -euo pipefail
cd "$(dirname "$0")/../../.."
# The figure: the 100 problems as concurrent requests to a running server (port 8731, as in
# bench/results/ifeval/run.sh), so one engine batches them (about 15 minutes on the shared
# machine, beside the IFEval run).
.venv/bin/python bench/gsm8k_http.py http://127.0.0.1:8731 bench/results/gsm8k/bo1-greedy-http.json \
    --prompts ../shared/data/gsm8k_test.jsonl --sample 100 --sample-seed 0 \
    --max-tokens 256 --temperature 0 --concurrency 8
# The same problems, prompt and check through alignserve eval (its own engine, one problem
# at a time; the first two gave the same answers, token for token, as the run above).
nice -n 15 .venv/bin/alignserve eval --truth math --prompts ../shared/data/gsm8k_test.jsonl \
    --sample 100 --sample-seed 0 --algorithms bon --budgets 1 --temperature 0 \
    --max-tokens 256 --out bench/results/gsm8k
