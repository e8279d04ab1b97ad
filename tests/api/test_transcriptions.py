"""POST /v1/audio/transcriptions with the real pocketsphinx engine, over a real uvicorn socket."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from talkies.api.app import create_app
from tests.api.audio_helpers import (
    RATE,
    SENTENCE_A,
    SENTENCE_B,
    silence,
    speak,
    weightfree_settings,
    word_overlap,
    write_wav,
)
from tests.server import serve

pytestmark = [pytest.mark.slow, pytest.mark.pinned_isolation]

MODEL = "pocketsphinx-en-us"


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("audio")
    a, b = speak(SENTENCE_A), speak(SENTENCE_B)
    gap = silence(0.6)
    left = np.concatenate([a, gap, np.zeros_like(b), gap])
    right = np.concatenate([np.zeros_like(a), gap, b, gap])
    two = np.concatenate([a, silence(2.5), b])
    (tmp / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(range(256)) * 8)
    (tmp / "empty.wav").write_bytes(b"")
    return {
        "mono": write_wav(tmp / "mono.wav", [a]),
        "stereo": write_wav(tmp / "stereo.wav", [left, right]),
        "three": write_wav(tmp / "three.wav", [a, a, a]),
        "long": write_wav(tmp / "long.wav", [two]),
        "corrupt": tmp / "corrupt.wav",
        "empty": tmp / "empty.wav",
    }


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = weightfree_settings(tmp_path_factory.mktemp("server"), vad_chunk_threshold=4.0)
    with serve(create_app(settings)) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120) as client:
        yield client


def transcribe(client: httpx.Client, path: Path, **fields: Any) -> httpx.Response:
    data: dict[str, Any] = {"model": MODEL, **fields}
    with path.open("rb") as f:
        return client.post("/v1/audio/transcriptions", data=data, files={"file": (path.name, f)})


def test_json_is_the_default(client: httpx.Client, audio: dict[str, Path]) -> None:
    response = transcribe(client, audio["mono"])
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["text"]
    assert word_overlap(SENTENCE_A, body["text"]) >= 0.6, body["text"]


@pytest.mark.parametrize("fmt", ["text", "txt"])
def test_text(client: httpx.Client, audio: dict[str, Path], fmt: str) -> None:
    response = transcribe(client, audio["mono"], response_format=fmt)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert word_overlap(SENTENCE_A, response.text) >= 0.6
    assert not response.text.startswith("{")


def test_verbose_json(client: httpx.Client, audio: dict[str, Path]) -> None:
    response = transcribe(
        client, audio["mono"], response_format="verbose_json", **{"timestamp_granularities[]": "word"}
    )
    body = response.json()
    assert body["task"] == "transcribe"
    assert body["language"] == "en"
    assert body["duration"] == pytest.approx(1.6, abs=1.0)
    assert body["segments"]
    assert body["words"]
    for seg in body["segments"]:
        assert {"id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob"} <= seg.keys()
        assert 0 <= seg["start"] <= seg["end"] <= body["duration"]
    assert [w["start"] for w in body["words"]] == sorted(w["start"] for w in body["words"])
    assert set(body["words"][0]) == {"word", "start", "end"}


def test_srt_and_vtt(client: httpx.Client, audio: dict[str, Path]) -> None:
    srt = transcribe(client, audio["mono"], response_format="srt")
    assert srt.headers["content-type"].startswith("application/x-subrip")
    assert srt.text.startswith("1\n00:00:0")
    assert " --> " in srt.text
    assert "," in srt.text.splitlines()[1]
    vtt = transcribe(client, audio["mono"], response_format="vtt")
    assert vtt.headers["content-type"].startswith("text/vtt")
    assert vtt.text.startswith("WEBVTT\n\n00:00:0")
    assert "." in vtt.text.splitlines()[2]


def test_long_audio_is_sliced_by_vad_with_absolute_times(
    client: httpx.Client, audio: dict[str, Path]
) -> None:
    # The server's VAD threshold is 4 s: this 6 s clip is cut into two regions and the results stitched.
    body = transcribe(client, audio["long"], response_format="verbose_json").json()
    assert word_overlap(f"{SENTENCE_A} {SENTENCE_B}", body["text"]) >= 0.6, body["text"]
    second_start = (len(speak(SENTENCE_A)) / RATE) + 2.5
    late = [w for w in body["words"] if w["start"] >= second_start - 0.5]
    assert late, body["words"]  # the second sentence's words keep their place in the file
    assert word_overlap(SENTENCE_B, " ".join(w["word"] for w in late)) >= 0.5


def test_stereo_diarization(client: httpx.Client, audio: dict[str, Path]) -> None:
    body = transcribe(client, audio["stereo"], response_format="verbose_json", diarization="true").json()
    lines = body["text"].splitlines()
    assert [line[:3] for line in lines] == ["L: ", "R: "], body["text"]
    assert word_overlap(SENTENCE_A, lines[0]) >= 0.6
    assert word_overlap(SENTENCE_B, lines[1]) >= 0.6
    assert [s["id"] for s in body["segments"]] == list(range(len(body["segments"])))
    assert {s["channel"] for s in body["segments"]} == {"L", "R"}
    assert all(w["channel"] in ("L", "R") for w in body["words"])
    srt = transcribe(client, audio["stereo"], response_format="srt", diarization="true").text
    cues = [block.splitlines()[2] for block in srt.strip().split("\n\n")]
    assert cues[0].startswith("L: ")
    assert cues[-1].startswith("R: ")
    text = transcribe(client, audio["stereo"], response_format="text", diarization="true").text
    assert text.splitlines()[0].startswith("L: ")


@pytest.mark.parametrize(("name", "reason"), [("mono", "mono"), ("three", "3-channel")])
def test_diarization_needs_exactly_two_channels(
    client: httpx.Client, audio: dict[str, Path], name: str, reason: str
) -> None:
    response = transcribe(client, audio[name], diarization="true")
    assert response.status_code == 400
    assert reason in response.json()["detail"]


@pytest.mark.parametrize("name", ["corrupt", "empty"])
def test_bad_audio_is_a_400_with_one_line(client: httpx.Client, audio: dict[str, Path], name: str) -> None:
    response = transcribe(client, audio[name])
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "\n" not in detail
    assert detail


def test_request_errors(client: httpx.Client, audio: dict[str, Path]) -> None:
    unknown_format = transcribe(client, audio["mono"], response_format="docx")
    assert unknown_format.status_code == 400
    assert "verbose_json" in unknown_format.json()["detail"]
    unknown_model = transcribe(client, audio["mono"], model="nope")
    assert unknown_model.status_code == 404
    tts_model = transcribe(client, audio["mono"], model="espeak-ng")
    assert tts_model.status_code == 400
    assert "speech" in tts_model.json()["detail"]
    no_file = client.post("/v1/audio/transcriptions", data={"model": MODEL}, files={"x": ("", b"")})
    assert no_file.status_code == 400
    assert "file" in no_file.json()["detail"]
    bad_type = transcribe(client, audio["mono"], temperature="warm")
    assert bad_type.status_code == 422
    assert bad_type.json()["detail"][0]["loc"] == ["body", "temperature"]
    # no model: the default ASR model (issue 11), so the bad audio is what is refused
    missing_model = client.post("/v1/audio/transcriptions", files={"file": ("a.wav", b"x")})
    assert missing_model.status_code == 400
    not_multipart = client.post("/v1/audio/transcriptions", json={"model": MODEL})
    assert not_multipart.status_code == 400


def test_unsupported_language_is_refused(client: httpx.Client, audio: dict[str, Path]) -> None:
    response = transcribe(client, audio["mono"], language="de")
    assert response.status_code == 400
    assert transcribe(client, audio["mono"], language="en").status_code == 200


def test_openai_client(base_url: str, audio: dict[str, Path]) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    with audio["mono"].open("rb") as f:
        plain = client.audio.transcriptions.create(model=MODEL, file=f)
    assert word_overlap(SENTENCE_A, plain.text) >= 0.6
    with audio["mono"].open("rb") as f:
        verbose = client.audio.transcriptions.create(
            model=MODEL, file=f, response_format="verbose_json", timestamp_granularities=["word", "segment"]
        )
    assert verbose.words
    assert verbose.segments
    assert verbose.language == "en"
    with audio["mono"].open("rb") as f:
        srt = client.audio.transcriptions.create(model=MODEL, file=f, response_format="srt")
    assert isinstance(srt, str)
    assert "-->" in srt
    with pytest.raises(openai.NotFoundError), audio["mono"].open("rb") as f:
        client.audio.transcriptions.create(model="nope", file=f)


def test_openai_error_envelope(client: httpx.Client, audio: dict[str, Path]) -> None:
    body = transcribe(client, audio["mono"], diarization="true").json()
    assert body["error"]["param"] == "diarization"
    assert json.dumps(body)
