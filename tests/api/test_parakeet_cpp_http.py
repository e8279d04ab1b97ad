"""parakeet_cpp end to end over HTTP: tiny NeMo TDT models exported to ONNX, run by onnx-asr in a worker
process (the default isolation), behind a real uvicorn socket, driven by httpx and the official `openai`
client.

Random weights decode nonsense (one token every other frame), so the tests check shapes, timing
invariants, language handling and error answers, not words. The `tagged` model always emits `<fr-FR>`
unless the language is pinned to something else (tests/fixtures/parakeet_onnx.py).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from fastapi import FastAPI

from talkies.api.app import create_app
from talkies.settings import load_settings
from talkies.workers import ProcessEngine
from tests.fixtures.cache import install_snapshot
from tests.fixtures.parakeet_onnx import LANGUAGES, build_parakeet_onnx
from tests.fixtures.speech import long_speech, speech_clip, write_wav
from tests.fixtures.whisper import build_whisper
from tests.server import serve

pytestmark = pytest.mark.slow

NEMOTRON = "nemotron-3.5-asr-0.6b"
ENGLISH = "parakeet-tdt-0.6b-v2-onnx"
TAGGED = "parakeet-tagged"
CTC = "parakeet-ctc"
WHISPER = "whisper-micro"
FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    tmp = tmp_path_factory.mktemp("parakeet-http")
    data_dir = tmp / "data"
    install_snapshot(build_parakeet_onnx("tdt"), data_dir, NEMOTRON)
    install_snapshot(build_parakeet_onnx("tdt"), data_dir, ENGLISH)
    install_snapshot(build_parakeet_onnx("tdt", tagged=True), data_dir, TAGGED)
    install_snapshot(build_parakeet_onnx("ctc", tagged=True), data_dir, CTC)
    install_snapshot(build_whisper("micro"), data_dir, WHISPER)
    models = json.loads((Path(__file__).parents[2] / "models-cpu.json").read_text())["models"]
    registry = {
        "models": {
            NEMOTRON: {**models[NEMOTRON], "languages": list(LANGUAGES)},  # the test model's tags
            ENGLISH: models[ENGLISH],
            TAGGED: {"executor": "parakeet_cpp", "repo": "test/tagged"},
            CTC: {"executor": "parakeet_cpp", "repo": "test/ctc"},
            WHISPER: {"executor": "whisper", "repo": "test/whisper-micro"},
        }
    }
    for slug in (NEMOTRON, ENGLISH):  # the registry's int8 choice: the test models are full precision
        registry["models"][slug].pop("compute_type", None)
    (tmp / "models.json").write_text(json.dumps(registry))
    settings = load_settings(
        models_file=tmp / "models.json",
        data_dir=data_dir,
        device="cpu",
        cpu_threads=1,
        sweeper_interval=0,
        max_loaded_models=2,
    )
    assert settings.engine_isolation == "process"
    return create_app(settings)


@pytest.fixture(scope="module")
def base_url(app: FastAPI) -> Iterator[str]:
    with serve(app) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=300) as client:
        yield client


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("audio")
    clip = speech_clip(6.0)
    silent = np.zeros_like(clip)
    stereo = np.stack([np.concatenate([clip, silent]), np.concatenate([silent, clip])], axis=1)
    return {
        "short": write_wav(tmp / "short.wav", clip),
        "stereo": write_wav(tmp / "stereo.wav", stereo.reshape(-1), channels=2),
        "long": write_wav(tmp / "long.wav", long_speech(100.0).audio),
    }


def post(client: httpx.Client, endpoint: str, path: Path, **fields: Any) -> httpx.Response:
    data = {"model": NEMOTRON, **fields}
    with path.open("rb") as f:
        return client.post(f"/v1/audio/{endpoint}", data=data, files={"file": (path.name, f, "audio/wav")})


def check_timeline(body: dict[str, Any]) -> None:
    """Whisper's verbose_json shape; segments and words in order, inside the file, words inside segments."""
    assert body["task"] == "transcribe"
    assert body["segments"], body
    assert body["words"], "word timestamps"
    previous = 0.0
    for seg in body["segments"]:
        assert previous - 1e-3 <= seg["start"] <= seg["end"] <= body["duration"] + 1e-3
        previous = seg["end"]
        assert seg["text"].strip()
    previous = 0.0
    for word in body["words"]:
        assert previous - 1e-3 <= word["start"] <= word["end"] <= body["duration"] + 1e-3, word
        previous = word["end"]
        assert 0.0 <= word["probability"] <= 1.0
        assert any(
            s["start"] - 1e-3 <= word["start"] <= word["end"] <= s["end"] + 1e-3 for s in body["segments"]
        )
    assert body["text"].strip() == " ".join(s["text"].strip() for s in body["segments"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_transcription_in_every_format(client: httpx.Client, audio: dict[str, Path], fmt: str) -> None:
    response = post(client, "transcriptions", audio["short"], response_format=fmt)
    assert response.status_code == 200, response.text
    if fmt == "json":
        assert list(response.json()) == ["text"]
        assert response.json()["text"].strip()
    elif fmt == "verbose_json":
        body = response.json()
        check_timeline(body)
        assert body["duration"] == pytest.approx(6.0, abs=0.01)
    elif fmt == "text":
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text.strip()
    elif fmt == "srt":
        first = response.text.split("\n\n")[0].splitlines()
        assert first[0] == "1"
        assert " --> " in first[1]
    else:
        assert response.text.startswith("WEBVTT")


def test_the_model_runs_in_a_worker_process(
    app: FastAPI, client: httpx.Client, audio: dict[str, Path], request: pytest.FixtureRequest
) -> None:
    """A worker process by default; the `--engine-isolation=inprocess` pass keeps it in the server."""
    assert post(client, "transcriptions", audio["short"]).status_code == 200
    in_worker = request.config.getoption("--engine-isolation") != "inprocess"
    assert isinstance(app.state.pool.peek_engine(NEMOTRON), ProcessEngine) is in_worker


def test_long_file_goes_through_vad_with_absolute_word_times(
    client: httpx.Client, audio: dict[str, Path]
) -> None:
    response = post(client, "transcriptions", audio["long"], response_format="verbose_json")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["duration"] == pytest.approx(100.0, abs=0.01)
    check_timeline(body)
    assert body["words"][-1]["end"] > 70.0, "absolute timestamps across the whole file"
    gaps = [b["start"] - a["end"] for a, b in zip(body["words"], body["words"][1:], strict=False)]
    assert max(gaps) >= 0.8, "silences between VAD regions stay silences"
    assert len(body["segments"]) >= 3, "one segment or more per speech region"


def test_language_tag_is_detected_and_stripped(client: httpx.Client, audio: dict[str, Path]) -> None:
    body = post(client, "transcriptions", audio["short"], model=TAGGED, response_format="verbose_json").json()
    assert body["language"] == "fr", "the model's trailing <fr-FR> tag names the language"
    assert "<" not in body["text"]
    assert body["words"] == []


@pytest.mark.parametrize("model", [TAGGED, CTC])
def test_pinned_language_steers_the_decoder(client: httpx.Client, audio: dict[str, Path], model: str) -> None:
    body = post(
        client, "transcriptions", audio["short"], model=model, language="de", response_format="verbose_json"
    ).json()
    assert body["language"] == "de"
    assert body["words"], "with <fr-FR> masked out the decoder must say something else"
    assert "<" not in body["text"]


def test_unknown_language_is_a_400_listing_valid_codes(client: httpx.Client, audio: dict[str, Path]) -> None:
    response = post(client, "transcriptions", audio["short"], language="ja")
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["param"] == "language"
    assert "valid codes: en, de, fr, es" in body["detail"]
    english = post(client, "transcriptions", audio["short"], model=ENGLISH, language="de")
    assert english.status_code == 400
    assert "valid codes: en" in english.json()["detail"]
    ok = post(client, "transcriptions", audio["short"], model=ENGLISH, response_format="verbose_json")
    assert ok.json()["language"] == "en"


def test_translation_is_refused_naming_the_models_that_can(
    client: httpx.Client, audio: dict[str, Path]
) -> None:
    for model in (NEMOTRON, ENGLISH):
        response = post(client, "translations", audio["short"], model=model)
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["error"]["param"] == "model"
        assert f"models that can: {WHISPER}" in body["detail"]


def test_stereo_diarization(client: httpx.Client, audio: dict[str, Path]) -> None:
    response = post(
        client, "transcriptions", audio["stereo"], response_format="verbose_json", diarization="true"
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert {s["channel"] for s in body["segments"]} == {"L", "R"}
    assert all(w["channel"] in ("L", "R") for w in body["words"])
    starts = [s["start"] for s in body["segments"]]
    assert starts == sorted(starts)
    assert all(0.0 <= s["start"] <= s["end"] <= body["duration"] + 1e-3 for s in body["segments"])
    assert body["text"].splitlines()[0].startswith("L: ")


def test_official_openai_client(base_url: str, audio: dict[str, Path]) -> None:
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)
    data = audio["short"].read_bytes()
    verbose = sdk.audio.transcriptions.create(
        model=NEMOTRON,
        file=("short.wav", io.BytesIO(data)),
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert verbose.duration == pytest.approx(6.0, abs=0.01)
    assert verbose.segments
    assert verbose.words
    assert all(a.start <= b.start for a, b in zip(verbose.words, verbose.words[1:], strict=False))
    plain = sdk.audio.transcriptions.create(
        model=ENGLISH, file=("short.wav", io.BytesIO(data)), language="en"
    )
    assert plain.text.strip()
    srt = sdk.audio.transcriptions.create(
        model=NEMOTRON, file=("short.wav", io.BytesIO(data)), response_format="srt"
    )
    assert " --> " in str(srt)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.audio.translations.create(model=NEMOTRON, file=("short.wav", io.BytesIO(data)))
    assert "models that can" in str(caught.value)
