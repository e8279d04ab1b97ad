# CPU image: a thin wrapper around the install script and `talkies serve` that CI exercises.
FROM python:3.11-slim-bookworm

ENV TALKIES_DATA_DIR=/data \
    TALKIES_HOST=0.0.0.0 \
    TALKIES_PORT=8000 \
    TALKIES_DEVICE=cpu \
    HF_HUB_OFFLINE=1 \
    PYTHONUNBUFFERED=1 \
    TALKIES_EXTRAS=cpu
# torch 2.13.0 must be the CPU build: give pip a CPU wheel index at build time.
ARG PIP_EXTRA_INDEX_URL
ENV PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL}

WORKDIR /app
COPY pyproject.toml uv.lock constraints-cpu.txt README.md models.json models-cpu.json entrypoint.sh ./
COPY scripts ./scripts
COPY src ./src
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends make \
    && ./scripts/install.sh \
    && rm -rf /var/lib/apt/lists/* /root/.cache \
    && useradd --uid 1000 --create-home talkies \
    && mkdir -p /data && chown talkies /data

USER talkies
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)" || exit 1
ENTRYPOINT ["/app/entrypoint.sh"]
