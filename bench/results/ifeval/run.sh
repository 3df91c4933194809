#!/usr/bin/env bash
# The IFEval figures of docs/ifeval.md (issue 26), on the 2-core development machine, the
# embedded SmolLM2-135M-Instruct. Run from the repository root with IFEval's prompts in
# ../shared/data. Each lm-eval run writes results_*.json and samples_*.jsonl (the samples
# hold IFEval's prompts: keep them out of the repository; summarise.py keeps the verdicts).
set -euo pipefail
VLLM_CPU_KVCACHE_SPACE=2 nice -n 15 .venv/bin/alignserve serve --port 8731 \
    --max-concurrent-searches 16 &
until curl -sf http://127.0.0.1:8731/ready >/dev/null; do sleep 5; done
# 20 rows at lm-eval's max_gen_toks 1280, to time it (stopped after 12 of 20 in 9.5 min)
CONCURRENCY=8 bench/ifeval/run.sh http://127.0.0.1:8731 /tmp/ifeval-est20 --limit 20
# 20 rows at 256 tokens (1 min 17 s)
CONCURRENCY=16 bench/ifeval/run.sh http://127.0.0.1:8731 /tmp/ifeval-est20-256 --limit 20 \
    --gen_kwargs max_gen_toks=256
# Best-of-1 greedy on all 541 rows, 256 tokens
CONCURRENCY=16 bench/ifeval/run.sh http://127.0.0.1:8731 /tmp/ifeval-greedy-256 \
    --gen_kwargs max_gen_toks=256
# the seeded subset (150 rows, seed 26): Best-of-1 sampled, verifier-guided Best-of-4;
# run in halves (time): the subset's first 75 rows, then the rest
for part in "--first 75" "--skip 75"; do
    name=subset-$([ "$part" = "--first 75" ] && echo a || echo b)
    .venv/bin/python bench/ifeval/subset.py http://127.0.0.1:8731 \
        bench/results/ifeval/$name.json $part \
        --sample 150 --seed 26 --max-tokens 256 --temperature 0.7 --concurrency 16 \
        --config bo1-sampled:1 --config bo4-verifier:4:constraints
done
# the greedy run's verdicts, without the prompts
.venv/bin/python bench/ifeval/summarise.py /tmp/ifeval-greedy-256/*/samples_ifeval_local_*.jsonl \
    bench/results/ifeval/greedy-256-verdicts.jsonl
# greedy-256-results.json: lm-eval's results_*.json with its metrics, counts, versions and
# the task's dataset and generation settings kept (the machine's description and lm-eval's
# function sources left out)
# the two halves as one table over the 150 rows
.venv/bin/python bench/ifeval/subset_merge.py bench/results/ifeval/subset.json \
    bench/results/ifeval/subset-a.json bench/results/ifeval/subset-b.json
# judge-guided Best-of-4 on the subset's first 75 rows (time), in two pieces
.venv/bin/python bench/ifeval/subset.py http://127.0.0.1:8731 bench/results/ifeval/subset-judge-a1.json \
    --first 30 --sample 150 --seed 26 --max-tokens 256 --temperature 0.7 --concurrency 16 \
    --config bo4-judge:4:judge
.venv/bin/python bench/ifeval/subset.py http://127.0.0.1:8731 bench/results/ifeval/subset-judge-a2.json \
    --skip 30 --first 45 --sample 150 --seed 26 --max-tokens 256 --temperature 0.7 \
    --concurrency 16 --config bo4-judge:4:judge
.venv/bin/python bench/ifeval/subset_merge.py bench/results/ifeval/subset-judge-a.json \
    bench/results/ifeval/subset-judge-a1.json bench/results/ifeval/subset-judge-a2.json
