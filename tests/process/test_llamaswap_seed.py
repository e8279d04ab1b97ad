"""The llama-swap speech tour's config.yaml (../shared/seeds/llama-swap-speech-tour.md), read through
TALKIES_MODELS_FILE and served.

The file below is the tour's, key for key, with only what a migration to talkies needs changed (the same
steps docs/process-engines.md shows):

- the speech entries gain `modality:` (talkies cannot guess what an arbitrary server does);
- their commands run what exists here, a second talkies on the weight-free engines, instead of
  whisper.cpp's server and the Kokoro-FastAPI container (`docker stop ${MODEL_ID}` becomes a stop command
  that records its macros and sends SIGTERM to `${PID}`);
- `checkEndpoint` is `/healthz` (talkies' health check) on both: whisper's was whisper-server's path,
  kokoro-tts had none (Kokoro-FastAPI answers llama-swap's default, `/health`).

The LLM entries, the `llama-server` macro and the `rag` group stay exactly as in the tour: talkies leaves
out models without a modality (with a warning naming them) and drops the group they empty.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import wave
from pathlib import Path

import httpx
import pytest

from talkies.api.app import create_app
from talkies.settings import load_settings
from tests.api.audio_helpers import SENTENCE_A, VOICE, speak, word_overlap, write_wav
from tests.process.conftest import UPSTREAM, pid_gone, ps_row, wait_for
from tests.server import serve

pytestmark = pytest.mark.slow

SEED_CONFIG = """\
macros:
  llama-server: |
    /path/to/llama-server
      --host 127.0.0.1 --port ${PORT}
      -ngl 99
  # adapted: the speech servers below are a second talkies (whisper-server / Kokoro-FastAPI in the tour)
  talkies-server: |
    ${env.TEST_PYTHON} ${env.TEST_UPSTREAM} serve
      --host 127.0.0.1 --port ${PORT}

models:
  llama-8B:
    name: "Llama 8B"
    env:
      - CUDA_VISIBLE_DEVICES=0
    cmd: |
      ${llama-server}
        --model /path/to/models/Meta-Llama-3.1-8B-Instruct-Q8_0.gguf
        --ctx-size 32768

  qwen3-4B:
    name: "Qwen3 4B"
    env:
      - CUDA_VISIBLE_DEVICES=0
    cmd: |
      ${llama-server}
        --model /path/to/models/Qwen3-4B-Instruct-Q8_0.gguf
        --ctx-size 40960

  gpt-oss-20B:
    name: "GPT-OSS 20B"
    env:
      - CUDA_VISIBLE_DEVICES=0
    cmd: |
      ${llama-server}
        --model /path/to/models/gpt-oss-20B-Q8_0.gguf
        --ctx-size 8192

  embedding:
    unlisted: true
    env:
      - CUDA_VISIBLE_DEVICES=0
    cmd: |
      ${llama-server}
        --model /path/to/models/nomic-embed-text-v1.5.Q8_0.gguf
        --ctx-size 8192
        --batch-size 8192
        --embeddings

  reranker:
    unlisted: true
    env:
      - CUDA_VISIBLE_DEVICES=0
    cmd: |
      ${llama-server}
        --model /path/to/models/bge-reranker-v2-m3-Q4_K_M.gguf
        --ctx-size 8192
        --reranking

  whisper:
    unlisted: true
    modality: asr
    checkEndpoint: /healthz
    env:
      - CUDA_VISIBLE_DEVICES=0
      - TALKIES_MODELS_FILE=${env.TEST_UPSTREAM_MODELS}
      - TALKIES_DATA_DIR=${env.TEST_DIR}/${MODEL_ID}-data
      - TALKIES_LOG_LEVEL=warning
    cmd: |
      ${talkies-server}
        # was: --model /path/to/models/ggml-large-v3-turbo-q8_0.bin --flash-attn

  kokoro-tts:
    name: "Kokoro TTS"
    modality: tts
    useModelName: "tts-1"
    checkEndpoint: /healthz
    env:
      - TALKIES_MODELS_FILE=${env.TEST_UPSTREAM_MODELS}
      - TALKIES_DATA_DIR=${env.TEST_DIR}/${MODEL_ID}-data
      - TALKIES_LOG_LEVEL=warning
    cmd: |
      ${talkies-server}
        # was: docker run --rm --name ${MODEL_ID} -p ${PORT}:8880 --gpus 'device=0'
        #      ghcr.io/remsky/kokoro-fastapi-gpu:latest
    cmdStop: sh -c 'echo "$0 $1" > ${env.TEST_DIR}/stopped; kill -TERM $1' ${MODEL_ID} ${PID}

groups:
  rag:
    swap: false
    members:
      - embedding
      - reranker
      - gpt-oss-20B
"""


@pytest.fixture
def seed_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The adapted tour config, with the environment its `${env.*}` macros read."""
    upstream_models = tmp_path / "upstream-models.json"
    upstream_models.write_text(
        json.dumps(
            {
                "models": {  # the names the tour's clients send: whisper (no useModelName) and tts-1
                    "pocketsphinx-en-us": {"executor": "pocketsphinx", "aliases": ["whisper", "whisper-1"]},
                    "espeak-ng": {"executor": "espeak", "default_voice": VOICE, "aliases": ["tts-1"]},
                }
            }
        )
    )
    monkeypatch.setenv("TEST_PYTHON", sys.executable)
    monkeypatch.setenv("TEST_UPSTREAM", UPSTREAM)
    monkeypatch.setenv("TEST_UPSTREAM_MODELS", str(upstream_models))
    monkeypatch.setenv("TEST_DIR", str(tmp_path))
    config = tmp_path / "config.yaml"
    config.write_text(SEED_CONFIG)
    monkeypatch.setenv("TALKIES_MODELS_FILE", str(config))
    return config


def test_the_tours_config_is_served(
    seed_file: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="talkies.registry.llamaswap"):
        settings = load_settings(data_dir=tmp_path / "outer-data", sweeper_interval=0, device="cpu")
        app = create_app(settings)
    assert settings.models_file == seed_file
    for llm in ("llama-8B", "qwen3-4B", "gpt-oss-20B", "embedding", "reranker"):
        assert f"model {llm!r} has no 'modality'" in caplog.text

    wav = write_wav(tmp_path / "a.wav", [speak(SENTENCE_A)])
    with serve(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        listed = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
        assert set(listed) == {"kokoro-tts"}, "whisper is unlisted; the LLMs are not served"
        assert listed["kokoro-tts"]["name"] == "Kokoro TTS"

        # whisper: unlisted but routable; the upstream sees the model name as the client sent it
        with wav.open("rb") as audio:
            heard = client.post(
                "/v1/audio/transcriptions",
                files=[("file", ("a.wav", audio, "audio/wav")), ("model", (None, "whisper"))],
            )
        assert heard.status_code == 200, heard.text
        assert word_overlap(SENTENCE_A, heard.json()["text"]) >= 0.5
        whisper_pid = ps_row(client, "whisper")["pid"]  # type: ignore[index]

        # kokoro-tts: speech streamed back from the upstream, which was asked for tts-1 (useModelName)
        with client.stream(
            "POST",
            "/v1/audio/speech",
            json={"model": "kokoro-tts", "input": SENTENCE_A, "response_format": "wav"},
        ) as speech:
            assert speech.status_code == 200, speech.read()
            audio_bytes = b"".join(speech.iter_bytes())
        with wave.open(io.BytesIO(audio_bytes)) as spoken:
            assert spoken.getnframes() > 0
        voices = client.get("/v1/audio/voices", params={"model": "kokoro-tts"})
        assert voices.status_code == 200
        assert {v["model"] for v in voices.json()["voices"]} == {"espeak-ng"}

        # the models without a group share llama-swap's default group (swap): kokoro-tts replaced whisper
        assert ps_row(client, "kokoro-tts")["loaded"]  # type: ignore[index]
        assert (ps_row(client, "whisper") or {"loaded": False})["loaded"] is False
        wait_for(lambda: pid_gone(whisper_pid))

        # cmdStop ran with ${MODEL_ID} and ${PID} filled in
        kokoro_pid = ps_row(client, "kokoro-tts")["pid"]  # type: ignore[index]
        assert client.delete("/api/ps/kokoro-tts").status_code == 200
        assert (tmp_path / "stopped").read_text().split() == ["kokoro-tts", str(kokoro_pid)]
        assert pid_gone(kokoro_pid)
