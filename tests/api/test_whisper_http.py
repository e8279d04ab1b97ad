"""Whisper end to end over HTTP: real faster-whisper on generated models, behind a real uvicorn socket.

Random weights decode nonsense, so the engine factory bounds decoding (greedy, a few tokens) and the
tests check shapes, timing invariants and error answers, not words.
"""

from __future__ import annotations

import gc
import io
import json
import math
import weakref
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from fastapi import FastAPI
from faster_whisper import BatchedInferencePipeline

from talkies.api.app import create_app
from talkies.engines import create_engine
from talkies.engines.base import Engine, EngineContext
from talkies.registry import ModelSpec
from talkies.settings import load_settings
from tests.fixtures.cache import install_snapshot
from tests.fixtures.speech import long_speech, speech_clip, write_wav
from tests.fixtures.whisper import build_whisper
from tests.server import serve

pytestmark = pytest.mark.slow

WHISPER = "whisper-micro"
ENGLISH_ONLY = "whisper-micro-en"
SPHINX = "pocketsphinx-en-us"
TTS = "espeak-ng"
BOUNDED = {"beam_size": 1, "max_new_tokens": 10, "condition_on_previous_text": False}
FORMATS = ("json", "text", "srt", "verbose_json", "vtt")


def bounded_engine(spec: ModelSpec, context: EngineContext) -> Engine:
    """The real engines; whisper ones with bounded decoding (random weights never stop on their own)."""
    if spec.executor == "whisper":
        context = replace(context, options={**context.options, **BOUNDED})
    return create_engine(spec, context)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    tmp = tmp_path_factory.mktemp("whisper-http")
    data_dir = tmp / "data"
    install_snapshot(build_whisper("micro"), data_dir, WHISPER)
    install_snapshot(build_whisper("micro-en"), data_dir, ENGLISH_ONLY)
    registry = {
        "models": {
            WHISPER: {"executor": "whisper", "repo": "test/whisper-micro"},
            ENGLISH_ONLY: {"executor": "whisper", "repo": "test/whisper-micro.en"},
            SPHINX: {"executor": "pocketsphinx"},
            TTS: {"executor": "espeak"},
        }
    }
    (tmp / "models.json").write_text(json.dumps(registry))
    settings = load_settings(
        models_file=tmp / "models.json",
        data_dir=data_dir,
        device="cpu",
        cpu_threads=1,
        engine_isolation="inprocess",
        sweeper_interval=0,
        max_loaded_models=1,
    )
    return create_app(settings, engine_factory=bounded_engine)


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
        "long": write_wav(tmp / "long.wav", long_speech(150.0).audio),
    }


def post(client: httpx.Client, endpoint: str, path: Path, **fields: Any) -> httpx.Response:
    data = {"model": WHISPER, "temperature": "0", **fields}
    if fields.get("response_format") == "verbose_json" and endpoint == "transcriptions":
        data.setdefault("timestamp_granularities[]", "word")  # words only when asked (issue 11)
    with path.open("rb") as f:
        return client.post(f"/v1/audio/{endpoint}", data=data, files={"file": (path.name, f, "audio/wav")})


def check_verbose(body: dict[str, Any], task: str) -> None:
    assert body["task"] == task
    assert isinstance(body["language"], str)
    assert body["language"]
    assert body["segments"], body
    previous_end = 0.0
    for seg in body["segments"]:
        assert 0.0 <= seg["start"] <= seg["end"] <= body["duration"] + 1e-3
        assert seg["start"] >= previous_end - 1e-3
        previous_end = seg["end"]
        for key in ("avg_logprob", "compression_ratio", "no_speech_prob", "temperature"):
            assert isinstance(seg[key], float), (key, seg)
            assert math.isfinite(seg[key])
        assert 0.0 <= seg["no_speech_prob"] <= 1.0
    # translations have no timestamp_granularities[]: no word pass (issue 11)
    assert bool(body["words"]) == (task == "transcribe"), "word timestamps only when asked"
    for word in body["words"]:
        assert isinstance(word["probability"], float)
        assert 0.0 <= word["probability"] <= 1.0
        assert any(
            s["start"] - 1e-3 <= word["start"] <= word["end"] <= s["end"] + 1e-3 for s in body["segments"]
        )


def check_format(response: httpx.Response, fmt: str, task: str) -> None:
    assert response.status_code == 200, response.text
    content_type = response.headers["content-type"]
    if fmt == "json":
        assert content_type.startswith("application/json")
        assert list(response.json()) == ["text"]
    elif fmt == "verbose_json":
        check_verbose(response.json(), task)
    elif fmt == "text":
        assert content_type.startswith("text/plain")
        assert response.text.strip()
    elif fmt == "srt":
        first = response.text.split("\n\n")[0].splitlines()
        assert first[0] == "1"
        assert " --> " in first[1]
        assert "," in first[1]
    else:
        assert response.text.startswith("WEBVTT")
        assert " --> " in response.text


@pytest.mark.parametrize("fmt", FORMATS)
def test_transcription_in_every_format(client: httpx.Client, audio: dict[str, Path], fmt: str) -> None:
    check_format(
        post(client, "transcriptions", audio["short"], language="en", response_format=fmt), fmt, "transcribe"
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_translation_in_every_format(client: httpx.Client, audio: dict[str, Path], fmt: str) -> None:
    check_format(post(client, "translations", audio["short"], response_format=fmt), fmt, "translate")


def test_translation_prompt_and_source_language(client: httpx.Client, audio: dict[str, Path]) -> None:
    fields = {"response_format": "verbose_json", "prompt": "A talk about cheese.", "language": "fr"}
    body = post(client, "translations", audio["short"], **fields).json()
    assert body["task"] == "translate"
    assert body["language"] == "fr"


def test_language_is_detected_when_omitted(client: httpx.Client, audio: dict[str, Path]) -> None:
    body = post(client, "transcriptions", audio["short"], response_format="verbose_json").json()
    assert isinstance(body["language"], str)
    assert len(body["language"]) in (2, 3)


def test_unknown_language_is_a_400_listing_valid_codes(client: httpx.Client, audio: dict[str, Path]) -> None:
    response = post(client, "transcriptions", audio["short"], language="xx")
    assert response.status_code == 400
    body = response.json()
    assert body["error"]["param"] == "language"
    assert "valid codes: en, zh, de" in body["detail"]


@pytest.mark.parametrize("model", [ENGLISH_ONLY, SPHINX])
def test_translation_on_a_model_that_cannot_translate(
    app: FastAPI, client: httpx.Client, audio: dict[str, Path], model: str
) -> None:
    response = post(client, "translations", audio["short"], model=model)
    assert not app.state.pool.is_loaded(model), "refused from the snapshot, without loading the model"
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["error"]["param"] == "model"
    assert f"models that can: {WHISPER}" in body["detail"]
    assert ENGLISH_ONLY not in body["detail"].split("models that can:")[1]


def test_translation_refuses_tts_and_unknown_models(client: httpx.Client, audio: dict[str, Path]) -> None:
    assert post(client, "translations", audio["short"], model=TTS).status_code == 400
    assert post(client, "translations", audio["short"], model="nope").status_code == 404
    no_file = client.post("/v1/audio/translations", data={"model": WHISPER})
    assert no_file.status_code == 400


def test_multi_minute_file_goes_through_vad_and_the_batched_path(
    client: httpx.Client, audio: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    # the forward pass of both paths (per request, and across requests: engines/whisper/batched.py)
    generate = BatchedInferencePipeline.generate_segment_batched

    def counting(self: Any, features: Any, *args: Any) -> Any:
        batches.append(len(features))
        return generate(self, features, *args)

    monkeypatch.setattr(BatchedInferencePipeline, "generate_segment_batched", counting)
    response = post(client, "transcriptions", audio["long"], language="en", response_format="verbose_json")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["duration"] == pytest.approx(150.0, abs=0.01)
    check_verbose(body, "transcribe")
    assert batches, "the batched pipeline decoded the file"
    assert sum(batches) >= 4, "packed VAD clips of a 150 s file"
    assert body["segments"][-1]["end"] > 120.0, "absolute timestamps across the whole file"
    assert body["segments"][0]["start"] < 30.0


def test_diarization_with_whisper(client: httpx.Client, audio: dict[str, Path]) -> None:
    response = post(
        client,
        "transcriptions",
        audio["stereo"],
        language="en",
        response_format="verbose_json",
        diarization="true",
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert {s["channel"] for s in body["segments"]} == {"L", "R"}
    assert all(w["channel"] in ("L", "R") for w in body["words"])
    starts = [s["start"] for s in body["segments"]]
    assert starts == sorted(starts)
    assert all(0.0 <= s["start"] <= s["end"] <= body["duration"] + 1e-3 for s in body["segments"])
    assert body["text"].splitlines()[0][:3] in ("L: ", "R: ")


def test_eviction_between_whisper_and_tts_releases_the_model(
    app: FastAPI, client: httpx.Client, audio: dict[str, Path]
) -> None:
    pool = app.state.pool
    assert post(client, "transcriptions", audio["short"], language="en").status_code == 200
    engine = pool.peek_engine(WHISPER)
    assert engine is not None
    ct2_model = weakref.ref(engine._model.model)
    del engine

    speech = client.post(
        "/v1/audio/speech", json={"model": TTS, "input": "Hello there.", "response_format": "wav"}
    )
    assert speech.status_code == 200
    assert speech.content[:4] == b"RIFF"
    assert [row["model"] for row in client.get("/api/ps").json()["models"]] == [TTS]
    gc.collect()
    assert ct2_model() is None, "whisper's CTranslate2 weights were freed on eviction"

    again = post(client, "transcriptions", audio["short"], language="en", response_format="verbose_json")
    assert again.status_code == 200
    check_verbose(again.json(), "transcribe")
    assert [row["model"] for row in client.get("/api/ps").json()["models"]] == [WHISPER]
    assert client.delete(f"/api/ps/{WHISPER}").status_code == 200


def test_official_openai_client_transcription_and_translation(base_url: str, audio: dict[str, Path]) -> None:
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=120)
    data = audio["short"].read_bytes()
    verbose = sdk.audio.transcriptions.create(
        model=WHISPER,
        file=("short.wav", io.BytesIO(data)),
        response_format="verbose_json",
        language="en",
        temperature=0.0,
        timestamp_granularities=["word", "segment"],
    )
    assert verbose.language == "en"
    assert verbose.duration == pytest.approx(6.0, abs=0.01)
    assert verbose.segments
    assert verbose.segments[0].avg_logprob <= 0.0
    assert verbose.words
    plain = sdk.audio.transcriptions.create(
        model=WHISPER, file=("short.wav", io.BytesIO(data)), temperature=0.0
    )
    assert isinstance(plain.text, str)
    translated = sdk.audio.translations.create(
        model=WHISPER, file=("short.wav", io.BytesIO(data)), prompt="Hello.", temperature=0.0
    )
    assert isinstance(translated.text, str)
    assert translated.text.strip()
    srt = sdk.audio.translations.create(
        model=WHISPER, file=("short.wav", io.BytesIO(data)), response_format="srt", temperature=0.0
    )
    assert " --> " in str(srt)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.audio.translations.create(model=ENGLISH_ONLY, file=("short.wav", io.BytesIO(data)))
    assert "models that can" in str(caught.value)


@pytest.mark.parametrize("endpoint", ["translations", "transcriptions"])
def test_the_language_is_checked_before_reading_audio(
    app: FastAPI, client: httpx.Client, audio: dict[str, Path], endpoint: str
) -> None:
    assert post(client, endpoint, audio["short"], language="en").status_code == 200  # now resident
    assert app.state.pool.is_loaded(WHISPER)
    # an unreadable file: only a check made before decoding can answer about the language
    response = client.post(
        f"/v1/audio/{endpoint}",
        data={"model": WHISPER, "language": "klingon"},
        files={"file": ("x.wav", b"not audio at all", "audio/wav")},
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "language"


def test_translation_of_a_staged_file_path(client: httpx.Client, audio: dict[str, Path]) -> None:
    assert client.put("/v1/files/clips/short.wav", content=audio["short"].read_bytes()).status_code == 201
    form = {
        "model": WHISPER,
        "file_path": "clips/short.wav",
        "temperature": "0",
        "response_format": "verbose_json",
    }
    response = client.post("/v1/audio/translations", data=form, files={"x": ("", b"")})
    assert response.status_code == 200, response.text
    check_verbose(response.json(), "translate")
    missing = client.post(
        "/v1/audio/translations", data={**form, "file_path": "clips/missing.wav"}, files={"x": ("", b"")}
    )
    assert missing.status_code == 404
    both = post(client, "translations", audio["short"], file_path="clips/short.wav")
    assert both.status_code == 400


def test_translation_checks_the_language_of_a_worker_process_engine(tmp_path: Path) -> None:
    """Default isolation: the model is preloaded into a worker process; its languages still answer early."""
    data_dir = tmp_path / "data"
    install_snapshot(build_whisper("micro"), data_dir, WHISPER)
    registry = tmp_path / "models.json"
    registry.write_text(
        json.dumps({"models": {WHISPER: {"executor": "whisper", "repo": "test/whisper-micro"}}})
    )
    settings = load_settings(
        models_file=registry,
        data_dir=data_dir,
        device="cpu",
        cpu_threads=1,
        sweeper_interval=0,
        preload=(WHISPER,),
    )
    assert settings.engine_isolation == "process"
    with serve(create_app(settings)) as url, httpx.Client(base_url=url, timeout=120) as http:
        assert [row["model"] for row in http.get("/api/ps").json()["models"]] == [WHISPER]
        response = http.post(
            "/v1/audio/translations",
            data={"model": WHISPER, "language": "klingon"},
            files={"file": ("x.wav", b"not audio at all", "audio/wav")},
        )
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "language"
        assert "valid codes: en, zh" in response.json()["detail"]


def bounded_process_engine(spec: ModelSpec, context: EngineContext) -> Engine:
    """Every engine in a worker process (the host streams transcription segments back), whisper bounded."""
    from talkies.registry.schema import EXECUTORS
    from talkies.workers import ProcessEngine

    if spec.executor == "whisper":
        context = replace(context, options={**context.options, **BOUNDED})
    target = EXECUTORS[spec.executor].target
    assert target is not None
    return ProcessEngine(spec, context, target=target)


def check_stream_matches_plain(sdk: openai.OpenAI, path: Path, **kwargs: Any) -> None:
    with path.open("rb") as f:
        plain = sdk.audio.transcriptions.create(model=WHISPER, file=f, temperature=0, **kwargs).text
    with path.open("rb") as f:
        events = list(
            sdk.audio.transcriptions.create(model=WHISPER, file=f, temperature=0, stream=True, **kwargs)
        )
    assert events[-1].type == "transcript.text.done"
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert events[-1].text == plain
    assert "".join(deltas) == plain
    assert bool(deltas) == bool(plain)
    assert events[-1].usage.type == "duration"


def test_streamed_transcription_in_process(base_url: str, audio: dict[str, Path]) -> None:
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300)
    check_stream_matches_plain(sdk, audio["short"], language="en")
    check_stream_matches_plain(sdk, audio["long"], language="en")  # VAD regions, batched path


def test_streamed_transcription_through_the_worker_host(tmp_path: Path, audio: dict[str, Path]) -> None:
    data_dir = tmp_path / "data"
    install_snapshot(build_whisper("micro"), data_dir, WHISPER)
    registry = tmp_path / "models.json"
    registry.write_text(
        json.dumps({"models": {WHISPER: {"executor": "whisper", "repo": "test/whisper-micro"}}})
    )
    settings = load_settings(
        models_file=registry, data_dir=data_dir, device="cpu", cpu_threads=1, sweeper_interval=0
    )
    with serve(create_app(settings, engine_factory=bounded_process_engine)) as url:
        sdk = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
        check_stream_matches_plain(sdk, audio["short"], language="en")


def test_logprobs_and_words_only_when_asked(base_url: str, audio: dict[str, Path]) -> None:
    sdk = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=300)
    with audio["short"].open("rb") as f:
        verbose = sdk.audio.transcriptions.create(
            model=WHISPER,
            file=f,
            language="en",
            response_format="verbose_json",
            timestamp_granularities=["segment"],
        )
    assert not verbose.words  # no word pass unless asked
    with audio["short"].open("rb") as f:
        with_probs = sdk.audio.transcriptions.create(
            model=WHISPER, file=f, language="en", temperature=0, include=["logprobs"]
        )
    assert with_probs.logprobs is not None
    for entry in with_probs.logprobs:
        assert isinstance(entry.token, str)
        assert entry.logprob <= 0.0
        assert entry.bytes == list(entry.token.encode())
    assert "".join(e.token for e in with_probs.logprobs).strip() == with_probs.text.strip()
    with (
        audio["short"].open("rb") as f,
        pytest.raises(openai.BadRequestError, match=f"models that can: {WHISPER}"),
    ):
        sdk.audio.transcriptions.create(model=SPHINX, file=f, include=["logprobs"])
