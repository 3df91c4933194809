# alignserve image. The environment is built by scripts/setup_env.sh, the same script the
# README's `make serve` / `make test` run, so CI exercises what the image installs.
#   CPU, embedded default model:  docker build -t alignserve:cpu .
#   GPU (CUDA vllm, pinned in requirements/gpu.txt):
#                                  docker build -t alignserve:gpu --build-arg FLAVOR=gpu .
# Every server setting is an ALIGNSERVE_* environment variable (see the README).
ARG FLAVOR=cpu
ARG PYTHON_IMAGE=python:3.11-slim
ARG CUDA_IMAGE=nvidia/cuda:12.9.1-runtime-ubuntu24.04

FROM ${PYTHON_IMAGE} AS cpu-base
# The CPU lock pins torch==2.13.0+cpu, which lives on PyTorch's CPU index.
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends curl make libnuma1 \
    && rm -rf /var/lib/apt/lists/*

FROM ${CUDA_IMAGE} AS gpu-base
# Ubuntu 24.04's python3 is 3.12; vllm's wheel brings its own CUDA torch and libraries.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev gcc curl make libnuma1 \
    && rm -rf /var/lib/apt/lists/*

# hadolint ignore=DL3006
FROM ${FLAVOR}-base
ARG FLAVOR
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VENV=/opt/alignserve/.venv \
    XDG_CACHE_HOME=/cache \
    ALIGNSERVE_HOST=0.0.0.0 \
    ALIGNSERVE_PORT=8000
WORKDIR /opt/alignserve
COPY pyproject.toml README.md Makefile ./
COPY requirements ./requirements
COPY scripts ./scripts
COPY server ./server
COPY search ./search
COPY rewards ./rewards
COPY engines ./engines
COPY transport ./transport
COPY tools ./tools
RUN scripts/setup_env.sh "${FLAVOR}"
RUN useradd --create-home --uid 1000 alignserve && mkdir -p /cache && chown alignserve /cache
USER 1000:1000
# Converted models and hub downloads live here: mount a volume to keep them across restarts.
VOLUME ["/cache"]
EXPOSE 8000
# /health is liveness: local, it answers while the model loads. A failed load or a dead
# engine ends the process with status 1 (readiness, /ready, covers the dependencies).
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s \
    CMD ["/bin/sh", "-c", "curl -fsS http://127.0.0.1:8000/health || exit 1"]
# SIGTERM drains (see server/shutdown.py); give `docker stop -t` more than the grace.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/alignserve/.venv/bin/alignserve", "serve"]
