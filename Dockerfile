# syntax=docker/dockerfile:1.4
# talkies, CPU image. The same install script as `make install`, with the image's extras.
#
#   docker build -t talkies .                                   # official Python slim base, PyPI
#   docker build --secret id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt -t talkies .   # TLS proxy
#   podman build --format docker --build-arg BASE_IMAGE=localhost/talkies-base:bookworm -t talkies .
#   docker build --build-arg TALKIES_RAY=1 -t talkies:ray .    # with Ray Serve (docs/scale-out.md)
#
# torch must be the CPU build here: put a torch-*+cpu wheel in ./wheels/ (used as pip --find-links, never
# copied into the image), or pass PIP_EXTRA_INDEX_URL=<a CPU wheel index>. Without either, pip takes
# PyPI's CUDA build (gigabytes). See docs/containers.md.
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TALKIES_EXTRAS=cpu
# 1: also the `ray` extra (Ray Serve, ~300 MB; `talkies serve --ray`, docs/scale-out.md). Off by default.
ARG TALKIES_RAY=0
ARG PIP_EXTRA_INDEX_URL=""
ENV TALKIES_DATA_DIR=/data \
    TALKIES_HOST=0.0.0.0 \
    TALKIES_PORT=8000 \
    TALKIES_DEVICE=cpu \
    HF_HUB_OFFLINE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# 1. Dependencies: this layer changes only with the dependency files, not with the source.
COPY pyproject.toml constraints-cpu.txt README.md models.json models-cpu.json ./
COPY scripts ./scripts
COPY src/talkies/__init__.py ./src/talkies/__init__.py
RUN --mount=type=secret,id=ca_bundle,required=false \
    --mount=type=bind,source=wheels,target=/wheels \
    --mount=type=cache,target=/root/.cache/pip \
    set -eu; \
    if [ -s /run/secrets/ca_bundle ]; then export PIP_CERT=/run/secrets/ca_bundle; fi; \
    extras="$TALKIES_EXTRAS"; if [ "$TALKIES_RAY" = 1 ]; then extras="$extras,ray"; fi; \
    PIP_FIND_LINKS=/wheels PIP_EXTRA_INDEX_URL="$PIP_EXTRA_INDEX_URL" TALKIES_EXTRAS="$extras" \
        ./scripts/install.sh; \
    .venv/bin/python -c "import torch; assert not torch.version.cuda or '$TALKIES_EXTRAS' == 'cuda', torch.__version__"; \
    rm -rf /var/lib/apt/lists/*

# 2. The source (an editable install: .venv already points at /app/src).
COPY src ./src
COPY entrypoint.sh ./
RUN useradd --uid 1000 --user-group --create-home --shell /usr/sbin/nologin talkies \
    && mkdir -p /data && chown talkies:talkies /data

USER talkies
VOLUME ["/data"]
EXPOSE 8000
STOPSIGNAL SIGTERM
# Readiness (/readyz: started, preloads done, not draining), not bare liveness: Docker's one health status is
# read as "send traffic here?" (compose service_healthy, proxies). docs/operations.md says why.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/app/.venv/bin/python", "-m", "talkies.healthcheck"]
ENTRYPOINT ["/app/entrypoint.sh"]
