#!/usr/bin/env bash
# Best-of-N against speculative rejection started with the same N (issue 11, point 4).
# One alignserve eval per N, because spec_rejection's n_initial is an option, not the budget.
set -euo pipefail
# Usage: bench/results/eval-spec-rejection.sh [N ...]   (default: 8 16 32 64)
cd "$(dirname "$0")/../.."
budgets=("$@")
[ ${#budgets[@]} -gt 0 ] || budgets=(8 16 32 64)
for N in "${budgets[@]}"; do
  .venv/bin/alignserve eval --algorithms bon,spec_rejection --budgets "$N" \
    --option spec_rejection.n_initial="$N" --option spec_rejection.decision_tokens=16 \
    --option spec_rejection.alpha=0.5 --max-tokens 64 --offset 60 --limit 8 \
    --out "/tmp/eval-spec-rejection-n$N"
  for ext in json md png; do
    cp "/tmp/eval-spec-rejection-n$N/eval.$ext" "bench/results/eval-spec-rejection-n$N.$ext"
  done
done
