#!/usr/bin/env bash
# The distillation loop of issue 17 on the embedded default (SmolLM2-135M-Instruct), CPU:
#   1. record verifier-guided Best-of-16 on the training split (verifiable prompts 0-63):
#      each prompt's own constraints are the search's reward, --record keeps the searches
#   2. distil: sft on the chosen answers, dpo on best-vs-worst pairs (alignserve distill)
#   3. on the held-out split (prompts 96-127, never seen in training nor used to pick any
#      setting), Best-of-1 and Best-of-4 of the base and both tuned models against the
#      base model's Best-of-16, scored by the constraints (the truth, also the reward)
# The training settings (3 epochs, learning rate 5e-5 for sft, TRL's dpo defaults) were
# fixed before any held-out number was seen.
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=${OUT:-/tmp/loop}
port=18777
mkdir -p "$out"

.venv/bin/alignserve serve --port $port --record "$out/records" --log-level warning &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
until curl -sf localhost:$port/ready >/dev/null; do sleep 2; done
.venv/bin/python bench/results/distill/record.py http://127.0.0.1:$port 0 64
kill $server; wait $server || true

.venv/bin/alignserve distill "$out/records" --method sft --epochs 3 --learning-rate 5e-5 \
    --out "$out/sft" --overwrite
.venv/bin/alignserve distill "$out/records" --method dpo --epochs 3 --out "$out/dpo" --overwrite

eval_=(.venv/bin/alignserve eval --prompts tools/data/verifiable_prompts.jsonl --offset 96
       --limit 32 --max-tokens 64 --truth constraints --search-reward constraints
       --algorithms bon --log-level warning)
"${eval_[@]}" --budgets 4,16 --best-of-1 --out "$out/eval-base"
"${eval_[@]}" --budgets 4 --best-of-1 --model "$out/sft" --out "$out/eval-sft"
"${eval_[@]}" --budgets 4 --best-of-1 --model "$out/dpo" --out "$out/eval-dpo"
for name in base sft dpo; do
  cp "$out/eval-$name/eval.json" "bench/results/distill/eval-$name.json"
  cp "$out/eval-$name/eval.md" "bench/results/distill/eval-$name.md"
done
