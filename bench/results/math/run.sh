#!/usr/bin/env bash
# The math-set accuracy table of the README (issue 15): five algorithms at N = 4, 8, 16 on
# problems 100-119 of tools/data/math_problems.jsonl (none used to choose any default),
# the embedded SmolLM2-135M-Instruct as policy and, through --prm judge (the default), as
# the PRM of the step searches; bon's reward is the judge too. About 50 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../../.."
.venv/bin/alignserve eval --algorithms majority,bon,beam_search,dvts,particle_filtering \
    --budgets 4,8,16 --truth math --prompts tools/data/math_problems.jsonl \
    --offset 100 --limit 20 --max-tokens 128 --out bench/results/math
