#!/usr/bin/env bash
# Ground truth for the searches (issue 12): the verifiable prompts' own constraints score
# every answer. Prompts 72-87 of tools/data/verifiable_prompts.jsonl (8 MT-Bench first
# turns with added instructions, 8 of the project's own); nothing was tuned on them.
#   a) the judge is the search's reward, the constraints are the truth
#   b) the constraints are the search's reward (and the truth)
#   c) judge + constraints combined are the search's reward
set -euo pipefail
cd "$(dirname "$0")/../.."
eval_=(.venv/bin/alignserve eval --prompts tools/data/verifiable_prompts.jsonl --offset 72
       --max-tokens 64 --best-of-1 --truth constraints --log-level warning)
run() {  # run NAME ARGS...: one eval, its three files copied here as NAME.{json,md,png}
  local name=$1; shift
  "${eval_[@]}" "$@" --out "/tmp/truth-$name"
  for ext in json md png; do cp "/tmp/truth-$name/eval.$ext" "bench/results/truth/$name.$ext"; done
}
run judge-reward --limit 12 --algorithms bon,rbon_wd,treebon,spec_rejection,adaptive_bon \
  --budgets 4,8,16
run constraints-reward --limit 16 --algorithms bon,treebon,spec_rejection,adaptive_bon \
  --budgets 4,8,16,32 --search-reward constraints
run judge-plus-constraints --limit 6 --algorithms bon,treebon,spec_rejection,adaptive_bon \
  --budgets 4,8,16 --search-reward '{"judge": 1, "constraints": 1}'
