#!/usr/bin/env bash
# lm-eval's IFEval (bench/ifeval/ifeval_local.yaml) against a running alignserve, through
# lm-eval's local-chat-completions with the model's chat template. Run from the repository
# root, with IFEval's prompts in ../shared/data (see the task YAML).
#
#   bench/ifeval/run.sh URL OUT [lm_eval run flags...]
#   bench/ifeval/run.sh http://127.0.0.1:8000 results/ifeval-greedy
#   bench/ifeval/run.sh http://127.0.0.1:8000 results/ifeval-bon4 --limit 20 \
#       --gen_kwargs '{"temperature": 0.7, "search": {"algorithm": "bon", "n": 4}}'
#
# The hub is switched off (the task reads a local file); OPENAI_API_KEY is only a
# placeholder unless the server was started with --api-key.
set -euo pipefail
url=${1:?the server URL, e.g. http://127.0.0.1:8000}
out=${2:?an output folder}
shift 2
here=$(cd "$(dirname "$0")" && pwd)
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OPENAI_API_KEY=${OPENAI_API_KEY:-unused}
model=${MODEL:-SmolLM2-135M-Instruct}
exec "${LM_EVAL:-.venv/bin/lm_eval}" run --model local-chat-completions \
    --model_args "model=$model,base_url=$url/v1/chat/completions,num_concurrent=${CONCURRENCY:-8},max_retries=1,timeout=3600" \
    --apply_chat_template --include_path "$here" --tasks ifeval_local \
    --output_path "$out" --log_samples "$@"
