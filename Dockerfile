# alignserve image. The environment is built by scripts/setup_env.sh, the same script the
# README's `make serve` / `make test` run, so CI exercises what the image installs.
#   CPU (embedded default model):  docker build -t alignserve:cpu .
#   GPU:  docker build -t alignserve:gpu --build-arg FLAVOR=gpu \
#           --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 .
#         (the GPU base must provide python3.11+ with venv; see deploy/README.md)
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ARG FLAVOR=cpu
# The CPU lock pins torch==2.13.0+cpu, which lives on PyTorch's CPU index.
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VENV=/opt/alignserve/.venv \
    XDG_CACHE_HOME=/cache \
    ALIGNSERVE_HOST=0.0.0.0 \
    ALIGNSERVE_PORT=8000
RUN apt-get update && apt-get install -y --no-install-recommends curl make libnuma1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/alignserve
COPY pyproject.toml README.md Makefile ./
COPY requirements ./requirements
COPY scripts ./scripts
COPY server ./server
COPY search ./search
COPY rewards ./rewards
RUN scripts/setup_env.sh ${FLAVOR}
RUN useradd --create-home --uid 1000 alignserve && mkdir -p /cache && chown alignserve /cache
USER alignserve
# Converted models (and any hub downloads) live here: mount a volume to keep them.
VOLUME ["/cache"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s \
    CMD curl -fsS http://127.0.0.1:8000/health || exit 1
# Every setting is also an ALIGNSERVE_* environment variable.
ENTRYPOINT ["/opt/alignserve/.venv/bin/alignserve", "serve"]
