"""A second talkies (espeak-ng + pocketsphinx) as the external server: the real thing through the proxy."""

from __future__ import annotations

import io
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.api.audio_helpers import SENTENCE_A, speak, word_overlap, write_wav
from tests.process.conftest import ps_row, upstream_model

pytestmark = pytest.mark.slow


@pytest.fixture
def pair(tmp_path: Path) -> dict[str, Any]:
    """One upstream talkies serving both models, registered twice (an ASR and a TTS entry)."""
    return {
        "ears": upstream_model(tmp_path, "asr", useModelName="whisper-1"),
        "voice": upstream_model(tmp_path, "tts", useModelName="tts-1", aliases=["kokoro-tts"]),
    }


def test_transcription_speech_and_voices_through_an_upstream_talkies(
    outer: Callable[..., Any], pair: dict[str, Any], tmp_path: Path
) -> None:
    wav = write_wav(tmp_path / "a.wav", [speak(SENTENCE_A)])
    with outer(pair, max_loaded_models=2) as url, httpx.Client(base_url=url, timeout=120) as client:
        # multipart upload, file before model (curl's usual order), response_format passed through
        with wav.open("rb") as audio:
            answer = client.post(
                "/v1/audio/transcriptions",
                files=[("file", ("a.wav", audio, "audio/wav")), ("model", (None, "ears"))],
                data={"response_format": "verbose_json"},
            )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert word_overlap(SENTENCE_A, body["text"]) >= 0.5
        assert body["segments"], "verbose_json comes from the upstream unchanged"

        # speech streamed back, as the upstream encodes it
        with client.stream(
            "POST",
            "/v1/audio/speech",
            json={"model": "kokoro-tts", "input": SENTENCE_A, "response_format": "wav"},
        ) as speech:
            assert speech.status_code == 200
            assert speech.headers["content-type"] == "audio/wav"
            audio_bytes = b"".join(speech.iter_bytes())
        with wave.open(io.BytesIO(audio_bytes)) as spoken:
            assert spoken.getnframes() > 0

        # the upstream's voice list, asked for through the process model
        voices = client.get("/v1/audio/voices", params={"model": "voice"})
        assert voices.status_code == 200
        assert voices.json()["voices"], voices.text
        assert {v["model"] for v in voices.json()["voices"]} == {"espeak-ng"}

        # the upstream's own errors come back as they are (4xx) ...
        wrong = client.post(
            "/v1/audio/speech", json={"model": "voice", "input": "hi", "voice": "nobody-here"}
        )
        assert wrong.status_code == 400
        assert "nobody-here" in wrong.json()["detail"]

        rows = {row["model"]: row for row in client.get("/api/ps").json()["models"]}
        assert rows["ears"]["loaded"]
        assert rows["voice"]["loaded"]
        assert rows["voice"]["pid"] != rows["ears"]["pid"]


def test_openai_sdk_against_process_models(
    outer: Callable[..., Any], pair: dict[str, Any], tmp_path: Path
) -> None:
    wav = write_wav(tmp_path / "b.wav", [speak(SENTENCE_A)])
    with outer(pair, max_loaded_models=2) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        with wav.open("rb") as audio:
            text = client.audio.transcriptions.create(model="ears", file=audio, response_format="text")
        assert word_overlap(SENTENCE_A, str(text)) >= 0.5
        with client.audio.speech.with_streaming_response.create(
            model="voice", voice="en-us", input="Streaming through two servers.", response_format="pcm"
        ) as speech:
            pcm = b"".join(speech.iter_bytes())
        assert len(pcm) > 4800


def test_a_killed_upstream_is_marked_unloaded_and_restarted(
    outer: Callable[..., Any], pair: dict[str, Any]
) -> None:
    import os
    import signal

    from tests.process.conftest import pid_gone, wait_for

    with outer({"voice": pair["voice"]}) as url, httpx.Client(base_url=url, timeout=120) as client:
        assert client.post("/v1/audio/speech", json={"model": "voice", "input": "one"}).status_code == 200
        row = ps_row(client, "voice")
        assert row is not None
        first = row["pid"]
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: pid_gone(first))
        wait_for(lambda: (ps_row(client, "voice") or {}).get("loaded") is False)
        row = ps_row(client, "voice")
        assert row is not None
        assert "exited on its own" in row["exited"]
        assert client.post("/v1/audio/speech", json={"model": "voice", "input": "two"}).status_code == 200
        row = ps_row(client, "voice")
        assert row is not None
        assert row["loaded"]
        assert row["pid"] != first
